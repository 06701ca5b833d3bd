//! Temporary folders for test servers and test data.
//!
//! Job: create uniquely named folders that are removed when their [`TempDir`] handle is
//! dropped (also while a panicking test unwinds).
//!
//! Invariants:
//! - folders live under `$STRONGBOX_TEST_TMPDIR` if set, else the system temp dir (`/tmp`);
//!   names start with `strongbox-` plus a caller-chosen prefix, so leftovers of a test process
//!   that was killed with SIGKILL (drop never ran) are easy to find and delete;
//! - a folder meant for a server that runs as another system user (the `postgres` or `mysql`
//!   user when tests run as root) is chowned to that user with mode 0700 before it is handed
//!   out. Its parent must be traversable by that user, which holds for `/tmp`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
pub use tempfile::TempDir;

use crate::error::{HarnessError, Result};

/// Environment variable that overrides the base folder for all harness temp folders.
pub const TMPDIR_ENV: &str = "STRONGBOX_TEST_TMPDIR";

/// The base folder under which temp folders are created.
pub fn base_dir() -> PathBuf {
    match std::env::var_os(TMPDIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir(),
    }
}

/// Creates a new temp folder named `strongbox-<prefix>-XXXXXX`, removed when the returned
/// handle is dropped.
pub fn temp_dir(prefix: &str) -> Result<TempDir> {
    let base = base_dir();
    tempfile::Builder::new()
        .prefix(&format!("strongbox-{prefix}-"))
        .tempdir_in(&base)
        .map_err(|e| {
            HarnessError::io(
                format!(
                    "creating a temp folder in {} (set {TMPDIR_ENV} to use another place)",
                    base.display()
                ),
                e,
            )
        })
}

/// Like [`temp_dir`], then hands the folder to `owner` (if given) with mode 0700.
pub fn temp_dir_owned_by(prefix: &str, owner: Option<(Uid, Gid)>) -> Result<TempDir> {
    let dir = temp_dir(prefix)?;
    if let Some((uid, gid)) = owner {
        chown(dir.path(), uid, gid)?;
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HarnessError::io(format!("chmod 0700 {}", dir.path().display()), e))?;
    Ok(dir)
}

/// Changes the owner of one path (not recursive).
pub fn chown(path: &Path, uid: Uid, gid: Gid) -> Result<()> {
    nix::unistd::chown(path, Some(uid), Some(gid))
        .map_err(|e| HarnessError::sys(format!("chown {}:{} {}", uid, gid, path.display()), e))
}

/// Changes the owner of `path` and everything below it. Symlinks are not followed.
pub fn chown_recursive(path: &Path, uid: Uid, gid: Gid) -> Result<()> {
    nix::unistd::fchownat(
        None,
        path,
        Some(uid),
        Some(gid),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| HarnessError::sys(format!("chown {}:{} {}", uid, gid, path.display()), e))?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| HarnessError::io(format!("stat {}", path.display()), e))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| HarnessError::io(format!("listing {}", path.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| HarnessError::io(format!("listing {}", path.display()), e))?;
            chown_recursive(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}
