//! Where the PostgreSQL programs of one service are: its configured `bin_dir` (and nothing
//! else then), else `PATH`, else the newest `/usr/lib/postgresql/<version>/bin`, as
//! [`crate::tools`] finds them.
//!
//! Invariant: a program is found only where it is an executable file; a missing one is an
//! error naming it, where it was looked for, and how to install it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::process::ToolCommand;
use crate::tools;

/// Where the PostgreSQL tools are.
#[derive(Clone, Debug)]
pub struct PgTools {
    bin_dir: Option<PathBuf>,
}

impl PgTools {
    pub fn new(bin_dir: Option<&Path>) -> Result<PgTools> {
        if let Some(dir) = bin_dir {
            if !dir.is_dir() {
                return Err(Error::Other(format!(
                    "the PostgreSQL bin_dir {} is not a folder: set bin_dir to the folder \
                     holding pg_dump, psql, initdb (e.g. /usr/lib/postgresql/15/bin)",
                    dir.display()
                )));
            }
        }
        Ok(PgTools {
            bin_dir: bin_dir.map(Path::to_path_buf),
        })
    }

    /// The path of `tool`: in the configured bin_dir, else on PATH, else in the newest
    /// `/usr/lib/postgresql/*/bin` ([`tools::postgres_program`]).
    pub fn path(&self, tool: &str) -> Result<PathBuf> {
        tools::postgres_program(tool, self.bin_dir.as_deref())
            .map_err(|e| not_found(tool, &e.searched))
    }

    pub fn command(&self, tool: &str) -> Result<ToolCommand> {
        Ok(ToolCommand::new(&self.path(tool)?))
    }
}

fn not_found(tool: &str, searched: &str) -> Error {
    Error::Spawn {
        tool: tool.to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("not found in {searched}; install PostgreSQL (apt-get install postgresql) or set bin_dir"),
        ),
    }
}
