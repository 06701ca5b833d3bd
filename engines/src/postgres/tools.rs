//! Where the PostgreSQL programs of one service are: its configured `bin_dir` (and nothing
//! else then), else `PATH`, else the newest `/usr/lib/postgresql/<version>/bin`.
//!
//! Invariant: a program is found only where it is an executable file; a missing one is an
//! error naming it, where it was looked for, and how to install it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::process::{self, ToolCommand};

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
    /// `/usr/lib/postgresql/*/bin`.
    pub fn path(&self, tool: &str) -> Result<PathBuf> {
        if let Some(dir) = &self.bin_dir {
            let p = dir.join(tool);
            return if process::is_executable(&p) {
                Ok(p)
            } else {
                Err(not_found(tool, &dir.display().to_string()))
            };
        }
        if let Some(p) = process::find_program(&[tool], &[]) {
            return Ok(p);
        }
        for dir in versioned_bin_dirs() {
            let p = dir.join(tool);
            if process::is_executable(&p) {
                return Ok(p);
            }
        }
        Err(not_found(tool, "PATH, /usr/lib/postgresql/*/bin"))
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

/// `/usr/lib/postgresql/<version>/bin` folders, newest version first.
fn versioned_bin_dirs() -> Vec<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(version) = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<std::result::Result<Vec<u32>, _>>()
            {
                found.push((version, entry.path().join("bin")));
            }
        }
    }
    found.sort();
    found.into_iter().rev().map(|(_, p)| p).collect()
}
