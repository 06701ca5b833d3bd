//! Writing files that must not be half-written or world-readable: keys, certificates.
//!
//! Invariant: a file written here is complete or absent (temp file, fsync, rename, fsync of the
//! folder), and a secret file is created with mode 0600 before any byte is written to it.
//! Folders it has to make for the file are made 0700 (see [`crate::private`]); the mode of the
//! file itself is the caller's, given to `open`, and narrowed further by the process umask
//! (0o077 in every strongbox binary).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Whether an existing file may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Replace,
}

/// Writes `bytes` to `path` atomically with the given Unix mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: Overwrite) -> Result<()> {
    if overwrite == Overwrite::Refuse && path.exists() {
        return Err(Error::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::private::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid("path", path.display().to_string(), "it names no file"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        if overwrite == Overwrite::Refuse {
            // hard_link fails if the target exists: no race with a concurrent writer.
            fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                    path: path.to_path_buf(),
                },
                _ => Error::io(path, e),
            })?;
            fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
        } else {
            fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        }
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn missing_folders_of_a_written_file_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys/fleet/fleet.key");
        write_atomic(&path, b"secret", 0o600, Overwrite::Refuse).unwrap();
        for d in [tmp.path().join("keys"), tmp.path().join("keys/fleet")] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }
}
