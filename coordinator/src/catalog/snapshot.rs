//! The catalog's snapshots as files (issue 17, point 3): exported while applies go on, and
//! loaded into a new tree, then swapped in atomically.
//!
//! **Export.** [`Catalog::begin_export`] takes a [`View`] of the store (an apply step is one
//! atomic batch, so the view is the catalog exactly at the applied index it holds);
//! [`Export::write_to`] then walks it in key order on its own thread while the node keeps
//! applying, and writes the file in pieces of about [`PIECE_BYTES`].
//!
//! **Install.** [`Catalog::prepare_install`] checks a received file (size, BLAKE3, format,
//! index, key order) while it loads it, piece by piece, into a new tree
//! (`catalog-<index>-<ns>`, bulk-loaded as tables); [`Catalog::install_prepared`] then names
//! that tree the catalog (the key `catalog-active` of the tree `meta`) in one atomic batch with
//! the Raft log's new start, so a node that crashes at any point restarts with either its old
//! catalog and log or the new ones. Every other catalog tree (a load left over, the catalog
//! replaced) is dropped when the catalog opens, and a replaced one at once.
//!
//! Invariants: neither side holds the catalog in memory (a piece at a time); a file is
//! installed only if its every byte is the one its reference names; the active tree changes
//! only in [`Catalog::install_prepared`].

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use prost::Message;
use strongbox_proto::catalog::{KeyValue, SnapshotFileHeader, SnapshotPiece};

use super::{applied_value, format, Catalog, KEY_APPLIED};
use crate::error::{Error, Result};
use crate::store::{self, IngestError, Store, View};

/// About how many bytes of entries one piece of a snapshot file holds.
pub const PIECE_BYTES: usize = 1 << 20;
/// The most one frame of a snapshot file may declare: a piece and one entry beyond it (an
/// entry is bounded by a Raft entry, itself bounded by the largest message).
const MAX_FRAME: usize = PIECE_BYTES + 16 * (1 << 20);

/// The store's tree of the node's own settings, where [`KEY_ACTIVE`] is.
const META_TREE: &str = "meta";
/// The key in [`META_TREE`] naming the catalog's active tree.
const KEY_ACTIVE: &[u8] = b"catalog-active";
/// The name of the catalog's first tree; every tree of the catalog is named with this prefix
/// (a snapshot at index N is loaded into `catalog-N-<nanoseconds>`).
const FIRST_TREE: &str = "catalog";

/// The name of the catalog's active tree.
fn active_name(store: &Store) -> Result<String> {
    match store.tree(META_TREE)?.get(KEY_ACTIVE)? {
        None => Ok(FIRST_TREE.to_string()),
        Some(v) => match std::str::from_utf8(&v) {
            Ok(name) if name.starts_with(FIRST_TREE) => Ok(name.to_string()),
            _ => Err(Error::corrupt("catalog-active", "names no catalog tree")),
        },
    }
}

/// The catalog's active tree, after dropping any other catalog tree (one an unfinished
/// install left, or the one an install replaced).
pub(super) fn open_active(store: &Store) -> Result<store::Tree> {
    let active = active_name(store)?;
    for name in store.tree_names() {
        if name.starts_with(FIRST_TREE) && name != active {
            tracing::info!(tree = %name, "dropping a catalog tree an unfinished snapshot install or a finished one left");
            store.drop_tree(store.tree(&name)?)?;
        }
    }
    Ok(store.tree(&active)?)
}

/// A snapshot fixed at an applied index, to be written to a file.
pub struct Export {
    view: View,
    tree: store::Tree,
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
    /// Writes the snapshot to `path` (a new file, fsynced), walking the view while applies go
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
        for kv in self.view.iter(&self.tree) {
            let (k, v) = kv?;
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
    /// Fixes a snapshot at the applied index, then write it with [`Export::write_to`]. The
    /// store keeps what the export reads until it is dropped.
    pub fn begin_export(&self) -> Result<Export> {
        let tree = self.tree();
        let view = self.store.view();
        let index = applied_value(view.get(&tree, KEY_APPLIED)?)?;
        Ok(Export { view, tree, index })
    }

    /// Checks the snapshot file at `path` against what its reference says (`facts`, `index`)
    /// and loads it into a new tree (dropping one prepared before). Blocking. The catalog in use
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
        let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = prepared.take() {
            self.store.drop_tree(old)?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let spare = self.store.tree(&format!("{FIRST_TREE}-{index}-{nanos}"))?;
        let loaded = self.load(&spare, path, index);
        if loaded.is_err() {
            self.store.drop_tree(spare)?;
            return loaded;
        }
        *prepared = Some((index, spare));
        Ok(())
    }

    /// Loads the file at `path`, checked to be a snapshot at `index`, into the empty `spare`.
    fn load(&self, spare: &store::Tree, path: &Path, index: u64) -> Result<()> {
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
        // Entry by entry, a piece in memory at a time.
        let pieces = std::iter::from_fn(|| r.next::<SnapshotPiece>("snapshot piece").transpose());
        let entries = pieces.flat_map(|piece| -> Box<dyn Iterator<Item = Result<_>>> {
            match piece {
                Ok(p) => Box::new(
                    p.entries
                        .into_iter()
                        .map(|kv| Ok((kv.key.to_vec(), kv.value.to_vec()))),
                ),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        });
        match spare.ingest(entries) {
            Ok(_) => {}
            Err(IngestError::Source(e)) => return Err(e),
            Err(IngestError::Store(e)) => return Err(e.into()),
            Err(IngestError::Order) => {
                return Err(Error::corrupt("snapshot file", "its keys are out of order"))
            }
        }
        let applied = spare.get(KEY_APPLIED)?.map(|v| v.to_vec());
        if applied.as_deref() != Some(&index.to_be_bytes()[..]) {
            return Err(Error::corrupt(
                "snapshot file",
                format!("its catalog is not at index {index}"),
            ));
        }
        Ok(())
    }

    /// Makes the tree prepared at `index` the catalog, in one atomic batch with `raft_writes`
    /// (the Raft log's new start, which may write to other trees): both happen or neither,
    /// durably. The old catalog's tree is dropped afterwards.
    pub fn install_prepared(&self, index: u64, mut raft_writes: store::Batch) -> Result<()> {
        let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        let spare = match prepared.take() {
            Some((i, spare)) if i == index => spare,
            other => {
                let at = other.as_ref().map(|(i, _)| *i);
                *prepared = other;
                return Err(Error::Refused(format!(
                    "no snapshot at index {index} was prepared (prepared: {at:?})"
                )));
            }
        };
        raft_writes.insert(
            &self.store.tree(META_TREE)?,
            KEY_ACTIVE,
            spare.name().as_bytes(),
        );
        raft_writes.commit()?;
        self.store.flush()?;
        let old = std::mem::replace(
            &mut *self.tree.write().unwrap_or_else(|p| p.into_inner()),
            spare,
        );
        self.pass_cache.all_changed();
        if let Err(e) = self.store.drop_tree(old) {
            // Dropped at the next start instead.
            tracing::warn!(error = %e, "dropping the catalog tree a snapshot replaced");
        }
        Ok(())
    }
}
