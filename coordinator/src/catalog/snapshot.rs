//! The catalog's snapshots as files (issue 17, point 3): exported while applies go on, and
//! installed into the spare tree, then swapped in atomically.
//!
//! **Export.** [`Catalog::begin_export`] (called between two applies) fixes the snapshot at the
//! applied index; [`Export::write_to`] then walks the tree in key order on its own thread while
//! the node keeps applying: each write to a key the walk has not reached yet first keeps the
//! key's value from before ([`Batch`] names the keys), and the walk uses that value instead. The
//! file is the catalog exactly as of the index, written in pieces of about [`PIECE_BYTES`].
//!
//! **Install.** [`Catalog::prepare_install`] checks a received file (size, BLAKE3, format,
//! index) while it writes it, piece by piece, into the spare tree (`catalog` and `catalog-b`
//! take turns); [`Catalog::install_prepared`] then makes the spare the catalog in one sled
//! transaction with the Raft log's new start, so a node that crashes at any point restarts with
//! either its old catalog and log or the new ones (a spare left over is cleared at the next
//! open).
//!
//! Invariants: neither side holds the catalog in memory (a piece at a time, plus the values of
//! the keys written during an export); a file is installed only if its every byte is the one
//! its reference names; the active tree changes only in [`Catalog::install_prepared`].

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use prost::Message;
use sled::IVec;
use strongbox_proto::catalog::{KeyValue, SnapshotFileHeader, SnapshotPiece};

use super::batch::Batch;
use super::{format, Catalog, KEY_APPLIED};
use crate::error::{Error, Result};

/// About how many bytes of entries one piece of a snapshot file holds.
pub const PIECE_BYTES: usize = 1 << 20;
/// The most one frame of a snapshot file may declare: a piece and one entry beyond it (an
/// entry is bounded by a Raft entry, itself bounded by the largest message).
const MAX_FRAME: usize = PIECE_BYTES + 16 * (1 << 20);

/// The key in the database's default tree naming the catalog's active tree.
const KEY_ACTIVE: &[u8] = b"catalog-active";
const TREES: [&str; 2] = ["catalog", "catalog-b"];

/// The catalog's active tree and the spare one, by name.
pub(super) fn trees(db: &sled::Db) -> Result<(&'static str, &'static str)> {
    let active = match db.get(KEY_ACTIVE)? {
        Some(v) if v.as_ref() == TREES[1].as_bytes() => TREES[1],
        Some(v) if v.as_ref() == TREES[0].as_bytes() => TREES[0],
        None => TREES[0],
        Some(_) => return Err(Error::corrupt("catalog-active", "names no catalog tree")),
    };
    let spare = if active == TREES[0] {
        TREES[1]
    } else {
        TREES[0]
    };
    Ok((active, spare))
}

/// The values keys had when an export began, for the keys written since that the export has
/// not reached yet.
#[derive(Default)]
pub(super) struct Capture {
    state: Mutex<CaptureState>,
}

#[derive(Default)]
struct CaptureState {
    /// The last key the export walked past (`None`: none yet).
    cursor: Option<IVec>,
    /// Keys written since the export began, beyond the cursor then: their value before
    /// (`None`: the key did not exist).
    before: BTreeMap<IVec, Option<IVec>>,
    done: bool,
}

impl Capture {
    fn lock(&self) -> std::sync::MutexGuard<'_, CaptureState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `batch` to `tree`, first keeping the values of the keys the export has not
    /// reached.
    pub(super) fn write(&self, tree: &sled::Tree, batch: Batch) -> Result<()> {
        let mut st = self.lock();
        if !st.done {
            for k in batch.keys() {
                let ahead = st.cursor.as_ref().is_none_or(|c| k > c);
                if ahead && !st.before.contains_key(k) {
                    let old = tree.get(k)?;
                    st.before.insert(k.clone(), old);
                }
            }
        }
        // Applied under the lock, so the walk never reads a key between its keeping and its
        // write.
        tree.apply_batch(batch.into_sled())?;
        Ok(())
    }
}

/// A snapshot fixed at an applied index, to be written to a file.
pub struct Export {
    tree: sled::Tree,
    capture: Arc<Capture>,
    slot: Arc<Mutex<Option<Arc<Capture>>>>,
    pub index: u64,
}

/// A snapshot file as written: its size and BLAKE3 hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub bytes: u64,
    pub blake3: [u8; 32],
}

/// Writes frames to a file, hashing and counting them.
struct FrameWriter<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    fn frame(&mut self, m: &impl Message) -> std::io::Result<()> {
        let body = m.encode_to_vec();
        let len = (body.len() as u32).to_be_bytes();
        for part in [&len[..], &body] {
            self.out.write_all(part)?;
            self.hasher.update(part);
            self.bytes += part.len() as u64;
        }
        Ok(())
    }
}

impl Export {
    /// Writes the snapshot to `path` (a new file, fsynced), walking the tree while applies go
    /// on. Blocking: run it on its own thread.
    pub fn write_to(self, path: &Path) -> Result<FileFacts> {
        let io = |e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = FrameWriter {
            out: BufWriter::new(file),
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        w.frame(&SnapshotFileHeader {
            format: format::FORMAT,
            index: self.index,
        })
        .map_err(io)?;
        let mut piece = SnapshotPiece::default();
        let mut piece_bytes = 0usize;
        let mut iter = self.tree.iter();
        loop {
            let item = iter.next().transpose()?;
            let last = item.is_none();
            let mut emitted: Vec<(IVec, IVec)> = Vec::new();
            {
                let mut st = self.capture.lock();
                let lower = match &st.cursor {
                    Some(c) => Bound::Excluded(c.clone()),
                    None => Bound::Unbounded,
                };
                let upper = match &item {
                    Some((k, _)) => Bound::Excluded(k.clone()),
                    None => Bound::Unbounded,
                };
                // Keys removed since the export began, which the walk no longer meets.
                for (k, v) in st.before.range((lower, upper)) {
                    if let Some(v) = v {
                        emitted.push((k.clone(), v.clone()));
                    }
                }
                match item {
                    Some((k, v)) => {
                        let v = match st.before.get(&k) {
                            Some(before) => before.clone(),
                            None => Some(v),
                        };
                        if let Some(v) = v {
                            emitted.push((k.clone(), v));
                        }
                        st.cursor = Some(k);
                    }
                    None => st.done = true,
                }
            }
            for (k, v) in emitted {
                piece_bytes += k.len() + v.len() + 8;
                piece.entries.push(KeyValue {
                    key: k.to_vec().into(),
                    value: v.to_vec().into(),
                });
                if piece_bytes >= PIECE_BYTES {
                    w.frame(&piece).map_err(io)?;
                    piece.entries.clear();
                    piece_bytes = 0;
                }
            }
            if last {
                break;
            }
        }
        if !piece.entries.is_empty() {
            w.frame(&piece).map_err(io)?;
        }
        let facts = FileFacts {
            bytes: w.bytes,
            blake3: *w.hasher.finalize().as_bytes(),
        };
        let file = w.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(facts)
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        self.capture.lock().done = true;
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.capture)) {
            *slot = None;
        }
    }
}

/// Reads the frames of a snapshot file.
struct FrameReader<R: Read> {
    input: R,
}

impl<R: Read> FrameReader<R> {
    /// The next frame's message, `None` at the end of the file.
    fn next<M: Message + Default>(&mut self, what: &'static str) -> Result<Option<M>> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::corrupt("snapshot file", e)),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(Error::corrupt(
                "snapshot file",
                format!("a frame of {len} bytes (at most {MAX_FRAME})"),
            ));
        }
        let mut body = vec![0u8; len];
        self.input
            .read_exact(&mut body)
            .map_err(|e| Error::corrupt("snapshot file", e))?;
        M::decode(body.as_slice())
            .map(Some)
            .map_err(|e| Error::corrupt(what, e))
    }
}

/// The size and BLAKE3 hash of the file at `path`, read in pieces.
pub fn file_facts(path: &Path) -> Result<FileFacts> {
    let io = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileFacts {
        bytes,
        blake3: *hasher.finalize().as_bytes(),
    })
}

impl Catalog {
    /// Fixes a snapshot at the applied index: call between two applies (on the Raft thread),
    /// then write it with [`Export::write_to`]. One export at a time: a second one replaces
    /// the first's capture (the first then fails its walk's consistency, so it must be
    /// dropped unwritten).
    pub fn begin_export(&self) -> Result<Export> {
        let capture = Arc::new(Capture::default());
        *self.export.lock().unwrap_or_else(|p| p.into_inner()) = Some(capture.clone());
        Ok(Export {
            tree: self.tree(),
            capture,
            slot: self.export.clone(),
            index: self.applied_index()?,
        })
    }

    /// Checks the snapshot file at `path` against what its reference says (`facts`, `index`)
    /// and writes it into the spare tree, which it empties first. Blocking. The catalog in use
    /// is untouched until [`Catalog::install_prepared`].
    pub fn prepare_install(&self, path: &Path, index: u64, facts: &FileFacts) -> Result<()> {
        let got = file_facts(path)?;
        if &got != facts {
            return Err(Error::corrupt(
                "snapshot file",
                format!(
                    "{} bytes with another hash than the {} bytes the leader made",
                    got.bytes, facts.bytes
                ),
            ));
        }
        let _spare_lock = self.spare_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_, spare_name) = trees(&self.db)?;
        let spare = self.db.open_tree(spare_name)?;
        spare.clear()?;
        let file = std::fs::File::open(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut r = FrameReader {
            input: BufReader::new(file),
        };
        let header: SnapshotFileHeader = r
            .next("snapshot header")?
            .ok_or_else(|| Error::corrupt("snapshot file", "empty"))?;
        format::check(header.format, "the snapshot from the leader")?;
        if header.index != index {
            return Err(Error::corrupt(
                "snapshot file",
                format!("made at index {}, not {index}", header.index),
            ));
        }
        while let Some(piece) = r.next::<SnapshotPiece>("snapshot piece")? {
            let mut b = sled::Batch::default();
            for kv in piece.entries {
                b.insert(kv.key.as_ref(), kv.value.as_ref());
            }
            spare.apply_batch(b)?;
        }
        let applied = spare.get(KEY_APPLIED)?.map(|v| v.to_vec());
        if applied.as_deref() != Some(&index.to_be_bytes()[..]) {
            return Err(Error::corrupt(
                "snapshot file",
                format!("its catalog is not at index {index}"),
            ));
        }
        spare.flush()?;
        *self.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(index);
        Ok(())
    }

    /// Makes the spare tree prepared at `index` the catalog, in one transaction with
    /// `raft_writes` on `raft_tree` (the Raft log's new start): both happen or neither. The
    /// old catalog's tree is emptied afterwards, on a thread of its own.
    pub fn install_prepared(
        &self,
        index: u64,
        raft_tree: &sled::Tree,
        raft_writes: impl Fn(
            &sled::transaction::TransactionalTree,
        ) -> sled::transaction::ConflictableTransactionResult<(), ()>,
    ) -> Result<()> {
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if prepared != Some(index) {
            return Err(Error::Refused(format!(
                "no snapshot at index {index} was prepared (prepared: {prepared:?})"
            )));
        }
        let spare_lock = self.spare_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (active_name, spare_name) = trees(&self.db)?;
        let spare = self.db.open_tree(spare_name)?;
        let default: &sled::Tree = &self.db;
        use sled::Transactional;
        (default, raft_tree)
            .transaction(|(d, r)| {
                d.insert(KEY_ACTIVE, spare_name.as_bytes())?;
                raft_writes(r)
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => Error::Storage(e),
                sled::transaction::TransactionError::Abort(()) => {
                    Error::Refused("the Raft log refused the snapshot".into())
                }
            })?;
        self.db.flush()?;
        *self.tree.write().unwrap_or_else(|p| p.into_inner()) = spare;
        drop(spare_lock);
        // The old catalog goes, unless an install began meanwhile (it clears the spare itself).
        let (db, lock) = (self.db.clone(), self.spare_lock.clone());
        std::thread::spawn(move || {
            let _l = lock.lock().unwrap_or_else(|p| p.into_inner());
            if trees(&db).is_ok_and(|(_, spare)| spare == active_name) {
                if let Err(e) = db.open_tree(active_name).and_then(|t| t.clear()) {
                    tracing::warn!(error = %e, "clearing the catalog a snapshot replaced");
                }
            }
        });
        Ok(())
    }
}
