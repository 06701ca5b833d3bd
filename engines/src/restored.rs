//! What a restore gives back: how to reach the server it delivered ([`Connection`]), and what
//! verification found there ([`Verification`], [`FailedObject`]), with the row counts compared
//! to the backup's ([`compare_stats`]).
//!
//! Invariant: a connection names a password *file*, never a password.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::{EngineKind, TableStat};

/// How a client reaches a server that a restore provisioned (or, in place, the service's own
/// server).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Connection {
    pub engine: EngineKind,
    /// Address or socket path; for SQLite the file.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// A file (mode 0600) holding that user's password; None when the server needs none
    /// (SQLite). In place: the service's `password_file`, if it has one.
    pub password_file: Option<PathBuf>,
    /// The server's data folder (or the SQLite file), under the agent's data root. In place:
    /// the SQLite file, and empty for PostgreSQL and MariaDB (the live server's data folder is
    /// not the agent's to name).
    pub data_dir: PathBuf,
}

impl Connection {
    /// The connection as a restore's result carries it.
    pub fn wire(&self) -> strongbox_proto::v1::Connection {
        strongbox_proto::v1::Connection {
            engine: self.engine.wire().into(),
            host: self.host.clone(),
            port: u32::from(self.port),
            user: self.user.clone(),
            password_file: self
                .password_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            data_dir: self.data_dir.display().to_string(),
        }
    }
}

/// What verification after a restore found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verification {
    pub tables_checked: u64,
    pub rows_checked: u64,
    /// Tables whose row count differs from the backup's: (table, expected, found).
    pub mismatches: Vec<(String, u64, u64)>,
    /// The engine's own check (pg_amcheck, mariadb-check, PRAGMA integrity_check): ok or what it said.
    pub engine_check: String,
    /// Objects the restore could not bring back (it loaded everything else); `ok` is false
    /// when there is any. Empty: every object came back.
    #[serde(default)]
    pub failed_objects: Vec<FailedObject>,
    pub ok: bool,
}

impl Verification {
    /// The verification as a restore's result carries it.
    pub fn wire(&self) -> strongbox_proto::v1::Verification {
        strongbox_proto::v1::Verification {
            tables_checked: self.tables_checked,
            rows_checked: self.rows_checked,
            mismatches: self
                .mismatches
                .iter()
                .map(
                    |(table, expected, found)| strongbox_proto::v1::TableMismatch {
                        table: table.clone(),
                        expected_rows: *expected,
                        found_rows: *found,
                    },
                )
                .collect(),
            engine_check: self.engine_check.clone(),
            failed_objects: self
                .failed_objects
                .iter()
                .map(|o| strongbox_proto::v1::FailedObject {
                    name: o.name.clone(),
                    reason: o.reason.clone(),
                })
                .collect(),
            ok: self.ok,
        }
    }
}

/// An object of a backup that a restore could not bring back, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct FailedObject {
    /// Where and what: PostgreSQL `<database>: <kind> <name> <owner>` as pg_restore names the
    /// entry, e.g. `shop: MATERIALIZED VIEW DATA word_stats app`.
    pub name: String,
    /// The error, with the statement that failed.
    pub reason: String,
}

/// Whether database `db` belongs to what an in-place restore restored: a part it loaded, or a
/// database the backup's table stats name (`db.…`). The live server may hold others.
pub fn in_backup(db: &str, loaded: &[String], expected: &[TableStat]) -> bool {
    let prefix = format!("{db}.");
    loaded.iter().any(|d| d == db) || expected.iter().any(|s| s.name.starts_with(&prefix))
}

/// Compares the table stats a backup recorded with the row counts `found` in a restored
/// server (same names). A table that is missing is reported as `<name> (missing)` with 0 rows
/// found. `engine_check` is left empty and `ok` false for the engine to fill in.
pub fn compare_stats(expected: &[TableStat], found: &HashMap<String, u64>) -> Verification {
    let mut mismatches = Vec::new();
    let mut rows_checked = 0;
    for s in expected {
        match found.get(&s.name).copied() {
            Some(got) => {
                rows_checked += got;
                if got != s.rows {
                    mismatches.push((s.name.clone(), s.rows, got));
                }
            }
            None => mismatches.push((format!("{} (missing)", s.name), s.rows, 0)),
        }
    }
    Verification {
        tables_checked: expected.len() as u64,
        rows_checked,
        mismatches,
        engine_check: String::new(),
        failed_objects: Vec::new(),
        ok: false,
    }
}
