//! The node's key-value store: named trees of sorted byte keys, atomic batches across trees,
//! consistent read views, and bulk loading, on [fjall](https://docs.rs/fjall) (an LSM tree).
//! The catalog ([`crate::catalog`]) and the Raft log ([`crate::raft::storage`]) are its only
//! users, and nothing else names the engine.
//!
//! Why fjall (issue 17, point 6; `docs/ARCHITECTURE.md`, "Dependencies"): sled, used before,
//! grew to about 14 times the catalog's size on disk under churn and gigabytes of memory. An
//! LSM tree compacts away what retention deletes, compresses its files, and gives
//! cross-tree atomic batches and snapshots, which the catalog's streamed snapshots use as they
//! are (an export reads a [`View`] while the node keeps applying).
//!
//! Invariants: a [`Batch`] is applied whole or not at all, also across a crash; every write is
//! durable after [`Store::flush`] (the Raft loop calls it before it answers for what it wrote);
//! a [`View`] sees the store as of its making, whatever is written after; the store never
//! panics on what a file or a peer gave it ([`Tree::ingest`] checks the order itself).

use std::ops::RangeBounds;
use std::path::Path;

/// A key or value read from the store (cheap to clone; derefs to `[u8]`).
pub type Bytes = fjall::Slice;

/// A failure of the storage engine (I/O, a damaged file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One entry of a scan: key and value.
pub type Entry = Result<(Bytes, Bytes)>;

/// One tree's in-memory table before it is sealed and written as a table (with the few
/// trees written, this bounds the memory of writes not yet in tables).
const MEMTABLE_BYTES: u64 = 16 << 20;
/// Most bytes of journal kept before trees are flushed (bounds the disk beside the tables).
const JOURNAL_BYTES: u64 = 128 << 20;

/// An open store (one folder). Clones share it.
#[derive(Clone)]
pub struct Store {
    db: fjall::Database,
}

impl Store {
    /// Opens or creates the store in `path`, with a block cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store> {
        let db = fjall::Database::builder(path)
            .cache_size(cache_bytes)
            .max_journaling_size(JOURNAL_BYTES)
            .open()?;
        Ok(Store { db })
    }

    /// The tree `name` (1 to 255 bytes), created empty if it does not exist.
    pub fn tree(&self, name: &str) -> Result<Tree> {
        if name.is_empty() || name.len() > 255 {
            return Err(StoreError(format!(
                "a tree's name has 1 to 255 bytes, not {}",
                name.len()
            )));
        }
        let ks = self.db.keyspace(name, || {
            fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
        })?;
        Ok(Tree { ks })
    }

    /// The names of the trees that exist.
    pub fn tree_names(&self) -> Vec<String> {
        self.db
            .list_keyspace_names()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    /// Deletes a tree with everything in it; its files go once the last handle is dropped.
    /// (The store has no "clear": fjall 3.1 replays a journaled clear at recovery over
    /// whatever was loaded into the tree after it, so a tree to empty is dropped and a new
    /// one, of another name, made instead.)
    pub fn drop_tree(&self, tree: Tree) -> Result<()> {
        self.db.delete_keyspace(tree.ks)?;
        Ok(())
    }

    /// A new, empty batch of writes.
    pub fn batch(&self) -> Batch {
        Batch {
            inner: self.db.batch(),
        }
    }

    /// Makes every write so far durable (fsync of the journal).
    pub fn flush(&self) -> Result<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// A consistent view of every tree as of now.
    pub fn view(&self) -> View {
        View {
            snap: self.db.snapshot(),
        }
    }

    /// Bytes the store takes on disk (tables and journal).
    pub fn disk_bytes(&self) -> Result<u64> {
        Ok(self.db.disk_space()?)
    }
}

/// One named tree of a [`Store`].
#[derive(Clone)]
pub struct Tree {
    ks: fjall::Keyspace,
}

fn entry(g: fjall::Guard) -> Entry {
    Ok(g.into_inner()?)
}

impl Tree {
    pub fn name(&self) -> String {
        self.ks.name().to_string()
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        Ok(self.ks.get(key)?)
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.ks.contains_key(key)?)
    }

    /// Writes one key alone (several writes that belong together go in a [`Batch`]).
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.ks.insert(key.as_ref(), value.as_ref())?;
        Ok(())
    }

    /// The entries whose key starts with `prefix`, in key order (`.rev()` for the other way).
    pub fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl DoubleEndedIterator<Item = Entry> + 'static {
        self.ks.prefix(prefix).map(entry)
    }

    /// The entries with keys in `range`, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = Entry> + 'static {
        self.ks.range(range).map(entry)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Entry> + 'static {
        self.ks.iter().map(entry)
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.ks.is_empty()?)
    }

    /// Bytes this tree's tables take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.ks.disk_space()
    }

    /// Loads `entries`, which must come in strictly increasing key order, into this tree,
    /// which must be empty: written as tables directly, far faster than batches. An entry out
    /// of order is refused (nothing of it is loaded then; the tree should be cleared).
    pub fn ingest<E>(
        &self,
        entries: impl IntoIterator<Item = std::result::Result<(Vec<u8>, Vec<u8>), E>>,
    ) -> std::result::Result<u64, IngestError<E>> {
        let mut ingestion = self.ks.start_ingestion().map_err(StoreError::from)?;
        let mut last: Option<Vec<u8>> = None;
        let mut n = 0u64;
        for e in entries {
            let (k, v) = e.map_err(IngestError::Source)?;
            if last.as_ref().is_some_and(|l| k <= *l) {
                return Err(IngestError::Order);
            }
            ingestion.write(k.as_slice(), v).map_err(StoreError::from)?;
            last = Some(k);
            n += 1;
        }
        ingestion.finish().map_err(StoreError::from)?;
        Ok(n)
    }
}

/// Why [`Tree::ingest`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("keys out of order")]
    Order,
    /// The entries' source failed.
    #[error(transparent)]
    Source(E),
}

/// Writes to one or more trees, applied together by [`Batch::commit`].
pub struct Batch {
    inner: fjall::OwnedWriteBatch,
}

impl Batch {
    pub fn insert(&mut self, tree: &Tree, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.insert(&tree.ks, key.as_ref(), value.as_ref());
    }

    pub fn remove(&mut self, tree: &Tree, key: impl AsRef<[u8]>) {
        self.inner.remove(&tree.ks, key.as_ref());
    }

    /// Applies every write at once (durable after [`Store::flush`]).
    pub fn commit(self) -> Result<()> {
        if self.inner.is_empty() {
            return Ok(());
        }
        self.inner.commit()?;
        Ok(())
    }
}

/// The store as of one instant: reads never see a later write. Keep it short-lived; what it
/// sees is kept on disk until it is dropped.
#[derive(Clone)]
pub struct View {
    snap: fjall::Snapshot,
}

impl View {
    pub fn get(&self, tree: &Tree, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        use fjall::Readable;
        Ok(self.snap.get(&tree.ks, key)?)
    }

    /// Every entry of `tree`, in key order.
    pub fn iter(&self, tree: &Tree) -> impl DoubleEndedIterator<Item = Entry> + 'static {
        use fjall::Readable;
        self.snap.iter(&tree.ks).map(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        (dir, store)
    }

    #[test]
    fn a_view_does_not_see_later_writes() {
        let (_dir, store) = open();
        let t = store.tree("t").unwrap();
        t.insert(b"a", b"1").unwrap();
        let view = store.view();
        let mut b = store.batch();
        b.insert(&t, b"a", b"2");
        b.insert(&t, b"b", b"3");
        b.commit().unwrap();
        assert_eq!(view.get(&t, b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(view.iter(&t).count(), 1);
        assert_eq!(t.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
        let rev: Vec<_> = t.scan_prefix(b"").rev().map(|e| e.unwrap().0).collect();
        assert_eq!(rev, vec![Bytes::from(&b"b"[..]), Bytes::from(&b"a"[..])]);
    }

    #[test]
    fn ingest_refuses_keys_out_of_order() {
        let (_dir, store) = open();
        let t = store.tree("t").unwrap();
        let entries = [
            (b"b".to_vec(), b"1".to_vec()),
            (b"a".to_vec(), b"2".to_vec()),
        ];
        let got = t.ingest(entries.into_iter().map(Ok::<_, std::convert::Infallible>));
        assert!(matches!(got, Err(IngestError::Order)), "{got:?}");
        let ok = [
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ];
        let u = store.tree("u").unwrap();
        assert_eq!(
            u.ingest(ok.into_iter().map(Ok::<_, std::convert::Infallible>))
                .unwrap(),
            2
        );
        assert_eq!(u.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn a_batch_across_trees_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            let (t, u) = (store.tree("t").unwrap(), store.tree("u").unwrap());
            let mut b = store.batch();
            b.insert(&t, b"k", b"1");
            b.insert(&u, b"k", b"2");
            b.commit().unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        assert!(store.tree("t").unwrap().get(b"k").unwrap().is_some());
        assert!(store.tree("u").unwrap().get(b"k").unwrap().is_some());
    }
}
