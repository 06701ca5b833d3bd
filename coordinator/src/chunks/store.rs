//! The local chunk store: sealed chunks (and manifests) as files `chunks/ab/<id hex>`, in 256
//! folders made when the store opens (a put never makes a folder: each new inode costs, and a
//! new folder would need its own parent fsynced too). Stores of the earlier two-level layout
//! (`chunks/ab/cd/<hex>`) are moved into this one when they open.
//!
//! Coordinators cannot check a chunk's keyed id or its GCM tag (they hold no key), so each file
//! ends with 32 bytes of unkeyed BLAKE3 over the sealed bytes: a read checks it, and a file that
//! fails is reported corrupt (the caller then fetches a good copy from a peer).
//!
//! **Held means held intact.** Every decision that depends on a copy being here (an agent's
//! dedup question, a commit's majority count, repair, whether a write may skip a chunk it
//! finds) asks [`ChunkStore::held_intact`], never whether a file exists: a copy that fails its
//! checksum counts as missing, so it is uploaded or copied again and replaced. To keep that
//! cheap, the store remembers which files it checked (or wrote) by their stamp (inode, size,
//! modification and change times): any write to a file, or another file in its place, changes
//! the stamp and the next question reads and checks the file again. Decay that changes no
//! stamp (bit rot under the file system) is found by the maintenance pass, which reads every
//! live chunk.
//!
//! Invariants: a chunk file is complete or absent (temp file in `chunks/tmp`, fsync, rename,
//! fsync of the folder — a *lazy* write skips both fsyncs: the kernel writes it back later, and
//! a copy torn by a crash fails its checksum and is repaired; a durable put of a chunk held
//! lazily fsyncs it); a good file is never rewritten (chunks are written once); a read never
//! returns bytes that fail their checksum; all I/O here is blocking — call it from the blocking
//! pool, never the reactor; a write that would leave the disk with less than `min_free` bytes
//! is refused before it starts (`Error::DiskFull`), so the Raft log and the catalog on the same
//! disk keep room to work.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use strongbox_core::ids::ChunkId;

use crate::error::{Error, Result};

const SUM_LEN: usize = 32;
/// Made once the store's 256 folders exist and no chunk is left in the two-level layout.
const LAYOUT_MARKER: &str = "layout-one-level";
/// The largest sealed chunk or manifest a node stores.
pub const MAX_SEALED_LEN: usize = strongbox_core::chunk::MAX_PLAIN_LEN + 4096;
/// Files whose checked stamp the store remembers (about 48 bytes each: 1 TiB of 1 MiB chunks
/// in about 50 MB). Past it the memory is cleared and files are checked again as asked.
const MAX_CHECKED: usize = 1 << 20;
/// A stamp learned by reading is remembered only for a file last changed at least this long
/// before the read (a file this store wrote is remembered at once):
/// file times come from a coarse clock (a few milliseconds), so a write in the same tick as
/// the check would leave the stamp unchanged (git's "racily clean" rule).
const RACY: std::time::Duration = std::time::Duration::from_secs(2);

pub struct ChunkStore {
    root: PathBuf,
    node: String,
    min_free: u64,
    /// Files and bytes held: exact after each maintenance pass (`set_totals`), adjusted by
    /// writes and removals in between.
    count: AtomicU64,
    bytes: AtomicU64,
    /// Durable writes go around the page cache (`O_DIRECT`) until the file system refuses it.
    direct: AtomicBool,
    /// Whether writes are being refused for the disk reserve: the refusal is logged once when
    /// an episode starts and once when it ends, not once a chunk.
    refusing: AtomicBool,
    /// Stamps of the files known intact: written here, or read and checked (see the module doc).
    checked: Mutex<HashMap<ChunkId, u64>>,
}

/// A file's stamp: a hash of its device, inode, size, and modification and change times (in
/// nanoseconds). A write through the file system changes the change time at least, which no
/// user can set back.
fn stamp(meta: &fs::Metadata) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
        .hash(&mut h);
    h.finish()
}

/// What a read found.
#[derive(Debug)]
pub enum Lookup {
    Found(Vec<u8>),
    Missing,
    Corrupt(String),
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

impl ChunkStore {
    /// Opens (creating) the store under `root`; `node` names this node in errors.
    pub fn open(root: &Path, node: &str, min_free: u64) -> Result<Self> {
        let root = root.join("chunks");
        fs::create_dir_all(root.join("tmp")).map_err(|e| io(&root, e))?;
        // The one-level layout is marked once made, so later opens do not list every folder.
        let marker = root.join(LAYOUT_MARKER);
        if !marker.exists() {
            for prefix in 0..=255u8 {
                let dir = root.join(format!("{prefix:02x}"));
                if !dir.is_dir() {
                    fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
                }
                flatten_two_level(&dir)?;
            }
            File::create(&marker)
                .and_then(|f| f.sync_all())
                .and_then(|()| File::open(&root)?.sync_all())
                .map_err(|e| io(&marker, e))?;
        }
        // Leftovers of writes cut short by a crash.
        if let Ok(entries) = fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(ChunkStore {
            root,
            node: node.to_string(),
            min_free,
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            direct: AtomicBool::new(true),
            refusing: AtomicBool::new(false),
            checked: Mutex::default(),
        })
    }

    fn checked(&self) -> MutexGuard<'_, HashMap<ChunkId, u64>> {
        self.checked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the stamp of a file this store just wrote (its bytes are the ones written): no
    /// racy-time rule, as nothing else wrote it since.
    fn remember_written(&self, id: &ChunkId, meta: &fs::Metadata) {
        let mut checked = self.checked();
        if checked.len() >= MAX_CHECKED && !checked.contains_key(id) {
            checked.clear();
        }
        checked.insert(*id, stamp(meta));
    }

    /// Remembers the stamp of a file read and found intact, unless the file changed within
    /// [`RACY`] (then the next question reads it again).
    fn remember_intact(&self, id: &ChunkId, meta: &fs::Metadata) {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(meta.ctime()).unwrap_or(0),
                u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            );
        if std::time::SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age < RACY)
        {
            self.checked().remove(id);
            return;
        }
        self.remember_written(id, meta);
    }

    /// (files, bytes) held.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    pub fn set_totals(&self, count: u64, bytes: u64) {
        self.count.store(count, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Bytes free for an unprivileged writer on the store's disk.
    pub fn free_bytes(&self) -> Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| io(&self.root, std::io::Error::from(e)))?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }

    pub fn path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[0..2]).join(hex)
    }

    /// Whether this node holds an intact copy of `id`: a file that passes its checksum. Reads
    /// and checks the file unless its stamp is the one last found intact. An error reading it
    /// counts as not held (and is logged): the chunk is then uploaded or copied again.
    pub fn held_intact(&self, id: &ChunkId) -> bool {
        let path = self.path(id);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return false,
            Err(e) => {
                tracing::warn!(node = %self.node, chunk = %id, error = %io(&path, e), "chunk file unreadable; counted as missing");
                return false;
            }
        };
        if self.checked().get(id) == Some(&stamp(&meta)) {
            return true;
        }
        match self.get(id) {
            Ok(Lookup::Found(_)) => true,
            Ok(Lookup::Missing) => false,
            Ok(Lookup::Corrupt(why)) => {
                tracing::warn!(node = %self.node, chunk = %id, why, "chunk copy is corrupt; counted as missing until it is replaced");
                false
            }
            Err(e) => {
                tracing::warn!(node = %self.node, chunk = %id, error = %e, "chunk file unreadable; counted as missing");
                false
            }
        }
    }

    /// Stores a sealed chunk; `durable`: on disk (fsynced) when this returns. Returns false when
    /// a good copy was there already (then made durable if asked).
    pub fn put(&self, id: &ChunkId, sealed: &[u8], durable: bool) -> Result<bool> {
        Ok(self.put_many(&[(*id, sealed)], durable)? == 1)
    }

    /// Stores sealed chunks as [`ChunkStore::put`] does, one folder fsync for each folder
    /// touched rather than one a chunk; returns how many were new. On an error, the chunks
    /// before the failing one are stored (and durable when asked), the rest are not.
    pub fn put_many(&self, chunks: &[(ChunkId, &[u8])], durable: bool) -> Result<usize> {
        // Room for the whole batch, asked once (chunks held already count too: a little
        // conservative, never short).
        let free = self.free_bytes()?;
        let need: u64 = chunks
            .iter()
            .map(|(_, sealed)| sealed.len() as u64 + SUM_LEN as u64 + 8192)
            .sum();
        if free < self.min_free.saturating_add(need) {
            let e = Error::DiskFull {
                node: self.node.clone(),
                free,
                reserve: self.min_free,
            };
            if !self.refusing.swap(true, Ordering::Relaxed) {
                tracing::error!(node = %self.node, free, reserve = self.min_free, error = %e, "chunk writes refused: the disk reserve is reached (logged once until writes are taken again)");
            }
            return Err(e);
        }
        if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::warn!(node = %self.node, free, reserve = self.min_free, "chunk writes taken again: the disk has room above its reserve");
        }
        let mut dirs = std::collections::BTreeSet::new();
        let mut written = 0;
        let result = chunks.iter().try_for_each(|(id, sealed)| {
            if self.put_file(id, sealed, durable)? {
                written += 1;
            }
            if durable {
                dirs.insert(self.root.join(&id.to_hex()[0..2]));
            }
            Ok(())
        });
        for dir in dirs {
            File::open(&dir)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&dir, e))?;
        }
        result.map(|()| written)
    }

    /// One chunk's file (fsynced when `durable`); the room for it and its folder's fsync are
    /// the caller's.
    fn put_file(&self, id: &ChunkId, sealed: &[u8], durable: bool) -> Result<bool> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(Error::Refused(format!(
                "chunk {id} is {} bytes, over the limit of {MAX_SEALED_LEN}",
                sealed.len()
            )));
        }
        let path = self.path(id);
        if self.held_intact(id) {
            if durable {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io(&path, e))?;
            }
            return Ok(false);
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}", id.to_hex(), uuid::Uuid::now_v7()));
        let write = || -> std::io::Result<()> {
            write_new(&tmp, sealed, durable, &self.direct)?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io(&path, e));
        }
        if let Ok(meta) = fs::metadata(&path) {
            self.remember_written(id, &meta);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(sealed.len() as u64 + SUM_LEN as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Reads and checks a chunk.
    pub fn get(&self, id: &ChunkId) -> Result<Lookup> {
        let path = self.path(id);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Lookup::Missing),
            Err(e) => return Err(io(&path, e)),
        };
        // The stamp before the read: a write during the read leaves a newer one, so what is
        // remembered never outlives the bytes checked.
        let meta = f.metadata().map_err(|e| io(&path, e))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(|e| io(&path, e))?;
        let corrupt = |why: String| {
            self.checked().remove(id);
            Ok(Lookup::Corrupt(why))
        };
        if bytes.len() < SUM_LEN {
            return corrupt(format!("{} is truncated", path.display()));
        }
        let (sealed, sum) = bytes.split_at(bytes.len() - SUM_LEN);
        if blake3::hash(sealed).as_bytes() != sum {
            return corrupt(format!("{} fails its checksum", path.display()));
        }
        self.remember_intact(id, &meta);
        bytes.truncate(bytes.len() - SUM_LEN);
        Ok(Lookup::Found(bytes))
    }

    pub fn remove(&self, id: &ChunkId) -> Result<()> {
        self.checked().remove(id);
        let path = self.path(id);
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                let _ = self
                    .count
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                        Some(c.saturating_sub(1))
                    });
                let _ = self
                    .bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_sub(len))
                    });
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Every chunk id held, with its file's size and modification time.
    pub fn list(&self) -> Result<Vec<(ChunkId, u64, std::time::SystemTime)>> {
        let mut out = Vec::new();
        for a in fs::read_dir(&self.root).map_err(|e| io(&self.root, e))? {
            let a = a.map_err(|e| io(&self.root, e))?;
            if a.file_name() == "tmp" || !a.path().is_dir() {
                continue;
            }
            for f in fs::read_dir(a.path()).map_err(|e| io(&a.path(), e))? {
                let f = f.map_err(|e| io(&a.path(), e))?;
                let Ok(id) = f.file_name().to_string_lossy().parse::<ChunkId>() else {
                    continue;
                };
                let meta = f.metadata().map_err(|e| io(&f.path(), e))?;
                let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                out.push((id, meta.len(), mtime));
            }
        }
        Ok(out)
    }
}

/// Alignment of direct writes (memory, length and file offset): the largest logical block size
/// a disk may have.
const DIRECT_ALIGN: usize = 4096;

thread_local! {
    /// Each blocking thread's buffer for direct writes (reused: no fresh pages per chunk).
    static ALIGNED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes `sealed` and its checksum to the new file `tmp`, fsynced when `durable`.
///
/// The 4 KiB-aligned part goes around the page cache (`O_DIRECT`), from a reused aligned
/// buffer, and only the tail through it: a node writes each chunk once and rarely reads it
/// soon, and copying every byte into fresh page-cache pages is what bounds an upload's speed.
/// A lazy write skips only the fsync (its tail is flushed by the kernel, later). Where the file
/// system has no direct I/O (tmpfs), `direct` is cleared and every write goes through the page
/// cache.
fn write_new(tmp: &Path, sealed: &[u8], durable: bool, direct: &AtomicBool) -> std::io::Result<()> {
    let sum = blake3::hash(sealed);
    let aligned = (sealed.len() + SUM_LEN) / DIRECT_ALIGN * DIRECT_ALIGN;
    if aligned > 0 && direct.load(Ordering::Relaxed) {
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(tmp);
        let written =
            opened.and_then(|f| write_direct(f, sealed, sum.as_bytes(), aligned, durable));
        match written {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(path = %tmp.display(), "the file system has no direct I/O; chunk writes go through the page cache");
                direct.store(false, Ordering::Relaxed);
                let _ = fs::remove_file(tmp);
            }
            Err(e) => return Err(e),
        }
    }
    let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    f.write_all(sealed)?;
    f.write_all(sum.as_bytes())?;
    if durable {
        f.sync_all()?;
    }
    Ok(())
}

/// The direct part of [`write_new`]: the first `aligned` bytes of `sealed` + `sum` with
/// `O_DIRECT`, the rest through the page cache, then fsync when `durable`.
fn write_direct(
    mut f: File,
    sealed: &[u8],
    sum: &[u8],
    aligned: usize,
    durable: bool,
) -> std::io::Result<()> {
    ALIGNED.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < aligned + DIRECT_ALIGN {
            buf.resize(aligned + DIRECT_ALIGN, 0);
        }
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let region = buf
            .get_mut(at..at + aligned)
            .ok_or_else(|| std::io::Error::other("direct write buffer too small"))?;
        let from_sealed = aligned.min(sealed.len());
        let (head, rest) = region.split_at_mut(from_sealed);
        head.copy_from_slice(&sealed[..from_sealed]);
        rest.copy_from_slice(&sum[..aligned - from_sealed]);
        f.write_all(region)
    })?;
    // The unaligned tail through the page cache: clear O_DIRECT on this descriptor.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own change only its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let from_sealed = aligned.min(sealed.len());
    f.write_all(&sealed[from_sealed..])?;
    f.write_all(&sum[aligned.saturating_sub(sealed.len())..])?;
    if durable {
        f.sync_all()?;
    }
    Ok(())
}

/// Moves the chunks of the earlier layout's `ab/cd/` folders under `dir` (`ab/`) up into `dir`,
/// and removes the emptied folders. Each move is a rename on one disk, so a crash part way
/// leaves every chunk in one place or the other, and the next open finishes the move.
fn flatten_two_level(dir: &Path) -> Result<()> {
    let mut moved = false;
    for sub in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let sub = sub.map_err(|e| io(dir, e))?.path();
        if !sub.is_dir() {
            continue;
        }
        for f in fs::read_dir(&sub).map_err(|e| io(&sub, e))? {
            let f = f.map_err(|e| io(&sub, e))?;
            let to = dir.join(f.file_name());
            fs::rename(f.path(), &to).map_err(|e| io(&to, e))?;
            moved = true;
        }
        fs::remove_dir(&sub).map_err(|e| io(&sub, e))?;
    }
    if moved {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn put_get_once_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), "test", 0).unwrap();
        assert!(matches!(s.get(&id(1)).unwrap(), Lookup::Missing));
        assert!(!s.held_intact(&id(1)));
        assert!(s.put(&id(1), b"sealed bytes", true).unwrap());
        assert!(s.held_intact(&id(1)));
        assert!(
            !s.put(&id(1), b"sealed bytes", true).unwrap(),
            "a good copy is not rewritten"
        );
        assert!(matches!(s.get(&id(1)).unwrap(), Lookup::Found(b) if b == b"sealed bytes"));
        let path = s.path(&id(1));
        let mut raw = fs::read(&path).unwrap();
        raw[3] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert!(matches!(s.get(&id(1)).unwrap(), Lookup::Corrupt(_)));
        assert!(!s.held_intact(&id(1)), "a corrupt copy is not held");
        assert!(
            s.put(&id(1), b"sealed bytes", true).unwrap(),
            "a corrupt copy is replaced"
        );
        assert!(s.held_intact(&id(1)));
        assert!(matches!(s.get(&id(1)).unwrap(), Lookup::Found(_)));
        fs::write(&path, b"short").unwrap();
        assert!(matches!(s.get(&id(1)).unwrap(), Lookup::Corrupt(_)));
        assert!(!s.held_intact(&id(1)), "a truncated copy is not held");
        assert_eq!(s.list().unwrap().len(), 1);
        assert_eq!(
            s.totals().0,
            2,
            "two writes (the second replaced a bad copy)"
        );
        s.remove(&id(1)).unwrap();
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn a_write_that_would_eat_the_reserve_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), "n1", u64::MAX / 2).unwrap();
        let e = s.put(&id(2), b"sealed", true).unwrap_err();
        assert!(matches!(e, Error::DiskFull { .. }), "{e}");
        assert!(e.to_string().contains("free space"), "{e}");
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn a_store_of_the_two_level_layout_moves_into_one_level() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), "n1", 0).unwrap();
        s.put(&id(3), b"kept across layouts", true).unwrap();
        let hex = id(3).to_hex();
        let old = dir.path().join("chunks").join(&hex[0..2]).join(&hex[2..4]);
        fs::create_dir(&old).unwrap();
        fs::rename(s.path(&id(3)), old.join(&hex)).unwrap();
        // A store of the earlier layout has no marker.
        fs::remove_file(dir.path().join("chunks").join(LAYOUT_MARKER)).unwrap();
        drop(s);

        let s = ChunkStore::open(dir.path(), "n1", 0).unwrap();
        assert!(!old.exists(), "the old folder is gone");
        assert!(matches!(s.get(&id(3)).unwrap(), Lookup::Found(b) if b == b"kept across layouts"));
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn durable_writes_of_any_length_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), "n1", 0).unwrap();
        // Around the direct-write alignment: no aligned part, an exact one, a tail of each size.
        for (n, len) in [1usize, 4063, 4064, 4065, 4096, 10_000, 1 << 20]
            .into_iter()
            .enumerate()
        {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8).collect();
            let id = id(10 + n as u8);
            assert!(s.put(&id, &bytes, true).unwrap());
            assert!(
                matches!(s.get(&id).unwrap(), Lookup::Found(b) if b == bytes),
                "length {len}"
            );
        }
    }
}
