//! Where the MariaDB/MySQL programs of one service are: its configured `bin_dir` (and nothing
//! else then), else `PATH` and the usual sbin/bin folders, as [`crate::tools`] finds them;
//! `mariadb*` names first, `mysql*` names as fallback.
//!
//! Invariant: a program is found only where it is an executable file; a missing one is an
//! error naming it, where it was looked for, and how to install it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tools;

/// Where the MariaDB/MySQL tools are.
#[derive(Clone, Debug)]
pub struct MyTools {
    bin_dir: Option<PathBuf>,
}

impl MyTools {
    pub fn new(bin_dir: Option<&Path>) -> Result<MyTools> {
        if let Some(dir) = bin_dir {
            if !dir.is_dir() {
                return Err(Error::Other(format!(
                    "the MariaDB bin_dir {} is not a folder: set bin_dir to the folder holding \
                     mariadb-dump and mariadb (or remove it to use PATH)",
                    dir.display()
                )));
            }
        }
        Ok(MyTools {
            bin_dir: bin_dir.map(Path::to_path_buf),
        })
    }

    /// The first of `names` found (in bin_dir when configured, else PATH and the usual places:
    /// [`tools::mariadb_program`]).
    pub fn path(&self, names: &[&str]) -> Result<PathBuf> {
        tools::mariadb_program(names, self.bin_dir.as_deref()).map_err(|e| Error::Spawn {
            tool: e.program,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "not found in {}; install mariadb-client and mariadb-server or set bin_dir",
                    e.searched
                ),
            ),
        })
    }

    pub(super) fn client(&self) -> Result<PathBuf> {
        self.path(&["mariadb", "mysql"])
    }
}
