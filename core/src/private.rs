//! Files and folders only their owner may read: what strongbox writes holds database contents,
//! passwords or keys, so nothing it creates is readable by other users at any instant.
//!
//! Two layers, so that neither alone is trusted:
//! - [`set_private_umask`] makes the process's file creation mask 0o077 first thing in every
//!   `main` (agent, coordinator, CLI). Whatever the process or its children create (the store's
//!   files, the chunk store, `initdb`, `mariadb-install-db`, `mariadbd`, `pg_restore`, a
//!   restored SQLite file) is then born without group or other bits.
//! - The folders and files strongbox's own code makes are created with an explicit mode
//!   ([`create_dir_all`], [`create_dir`], [`create_file`]): 0700 folders, 0600 files, so a
//!   library user that never set the umask is safe too. A mode is given to `mkdir`/`open`
//!   itself, never applied by a `chmod` afterwards, which would leave a window in which the
//!   folder or file is readable.
//!
//! [`TRAVERSE_DIR`] (0711: others may pass through, not list) is only for folders that a
//! server running as another system user (`postgres`, `mysql`, when the agent is root) must
//! pass through to reach its own 0700 folder, such as the agent's data root and its `r/`.
//!
//! Invariant: no function here creates anything with group or other read or write bits.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The file creation mask of every strongbox process: no group or other bits.
pub const PRIVATE_UMASK: u32 = 0o077;
/// A folder only its owner may enter or list.
pub const PRIVATE_DIR: u32 = 0o700;
/// A folder others may pass through to a folder below (whose name they must know) but not
/// list: for the parents of a server's folder when the server runs as another user.
pub const TRAVERSE_DIR: u32 = 0o711;
/// A file only its owner may read or write.
pub const PRIVATE_FILE: u32 = 0o600;

/// Sets the process's file creation mask to [`PRIVATE_UMASK`] and returns the one before.
/// Call it first thing in `main`, before any thread or child exists: the mask is per process
/// and children inherit it.
pub fn set_private_umask() -> u32 {
    // SAFETY: umask(2) only replaces this process's creation mask; it cannot fail.
    let old = unsafe { libc::umask(PRIVATE_UMASK as libc::mode_t) };
    old as u32
}

/// Creates `path` and every missing parent with mode 0700. Existing folders are left as they
/// are (they belong to whoever made them).
pub fn create_dir_all(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        .map_err(|e| Error::io(path, e))
}

/// Creates the folder `path` (its parent must exist) with `mode`, one of [`PRIVATE_DIR`] and
/// [`TRAVERSE_DIR`]; fails if it exists.
pub fn create_dir(path: &Path, mode: u32) -> Result<()> {
    let mode = checked_dir_mode(mode)?;
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io(path, e))?;
    widen_to(path, mode)
}

/// The private umask turns a new 0711 folder into 0700; this adds the traverse bits back.
/// It only ever goes from stricter to the wanted mode, so there is no moment at which the
/// folder is more open than wanted.
fn widen_to(path: &Path, mode: u32) -> Result<()> {
    if mode == PRIVATE_DIR {
        return Ok(());
    }
    let now = fs::metadata(path).map_err(|e| Error::io(path, e))?.mode() & 0o7777;
    if now != mode && now & !mode == 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Makes sure the folder `path` exists with exactly `mode` ([`PRIVATE_DIR`] or
/// [`TRAVERSE_DIR`]): a missing one is created with it (missing parents 0700); an existing
/// folder owned by this process's user whose mode differs is set to it. That narrows a
/// folder an earlier version made too open; its contents keep their own modes. A folder
/// owned by someone else is left alone.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    let mode = checked_dir_mode(mode)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(mode).create(path) {
        Ok(()) => return widen_to(path, mode),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "folder",
            path.display().to_string(),
            "it exists and is not a folder",
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == me && meta.mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Creates the new file `path` for writing with mode 0600; fails if it exists.
pub fn create_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to the new file `path`, created with mode 0600; fails if it exists.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = create_file(path)?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))
}

fn checked_dir_mode(mode: u32) -> Result<u32> {
    if mode == PRIVATE_DIR || mode == TRAVERSE_DIR {
        Ok(mode)
    } else {
        Err(Error::invalid(
            "folder mode",
            format!("{mode:o}"),
            "strongbox makes folders 0700, or 0711 where a server user passes through",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The umask is per process: tests that set it take turns.
    static UMASK: Mutex<()> = Mutex::new(());

    /// Runs `f` with the umask set to `mask`, then puts the old one back.
    fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
        let _turn = UMASK.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: umask(2) only replaces this process's creation mask.
        let old = unsafe { libc::umask(mask as libc::mode_t) };
        let out = f();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        out
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn folders_and_files_are_private_under_the_common_umask_022() {
        let tmp = tempfile::tempdir().unwrap();
        let (deep, one, traverse, file, written) = with_umask(0o022, || {
            let deep = tmp.path().join("a/b/c");
            create_dir_all(&deep).unwrap();
            let one = tmp.path().join("one");
            create_dir(&one, PRIVATE_DIR).unwrap();
            let traverse = tmp.path().join("r");
            create_dir(&traverse, TRAVERSE_DIR).unwrap();
            let file = one.join("secret");
            drop(create_file(&file).unwrap());
            let written = one.join("password");
            write_new(&written, b"hunter2\n").unwrap();
            (deep, one, traverse, file, written)
        });
        for d in [tmp.path().join("a"), tmp.path().join("a/b"), deep, one] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&traverse), 0o711);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&written), 0o600);
        assert_eq!(fs::read(&written).unwrap(), b"hunter2\n");
        // New means new: nothing is truncated or reused.
        assert!(create_file(&file).is_err());
        assert!(write_new(&written, b"x").is_err());
    }

    #[test]
    fn ensure_dir_creates_and_narrows_its_own_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("root/r");
        with_umask(0o022, || ensure_dir(&r, TRAVERSE_DIR)).unwrap();
        assert_eq!(mode(&r), 0o711);
        assert_eq!(mode(&tmp.path().join("root")), 0o700);
        // Made too open by an earlier version: narrowed.
        fs::set_permissions(&r, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&r, TRAVERSE_DIR).unwrap();
        assert_eq!(mode(&r), 0o711);
        ensure_dir(&r, PRIVATE_DIR).unwrap();
        assert_eq!(mode(&r), 0o700);
        // Not a folder, or a mode strongbox never uses: refused.
        let f = tmp.path().join("file");
        fs::write(&f, b"").unwrap();
        assert!(ensure_dir(&f, PRIVATE_DIR).is_err());
        assert!(ensure_dir(&tmp.path().join("x"), 0o755).is_err());
        assert!(create_dir(&tmp.path().join("y"), 0o777).is_err());
    }

    #[test]
    fn a_traverse_folder_is_0711_under_the_private_umask_too() {
        let tmp = tempfile::tempdir().unwrap();
        let (one, two) = with_umask(PRIVATE_UMASK, || {
            let one = tmp.path().join("one");
            create_dir(&one, TRAVERSE_DIR).unwrap();
            let two = tmp.path().join("two/r");
            ensure_dir(&two, TRAVERSE_DIR).unwrap();
            (one, two)
        });
        assert_eq!(mode(&one), 0o711);
        assert_eq!(mode(&two), 0o711);
        assert_eq!(mode(&tmp.path().join("two")), 0o700);
    }

    #[test]
    fn the_private_umask_reaches_children() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg("umask");
        // Set in the child only (between fork and exec), so this process's mask is untouched.
        // SAFETY: the hook calls umask(2) alone, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                set_private_umask();
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0077");
    }
}
