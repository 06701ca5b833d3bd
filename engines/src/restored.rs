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
            databases: Vec::new(),
        }
    }
}

impl Verification {
    /// The verification per database of the backup: `parts` are the manifest's parts in its
    /// order, each with the table stats it recorded (a table's stat name is unique in a
    /// backup: `db.schema.table`, `db.table`, or an SQLite table of the one part). A mismatch
    /// belongs to the part that recorded its table (`<name> (missing)` included); a failed
    /// object to the part it names (`<database>: …`, as pg_restore names entries).
    pub fn by_database(
        &self,
        parts: &[(&str, &[TableStat])],
    ) -> Vec<strongbox_proto::v1::DatabaseVerification> {
        let mut owner: HashMap<&str, usize> = HashMap::new();
        for (i, (_, tables)) in parts.iter().enumerate() {
            for t in *tables {
                owner.insert(t.name.as_str(), i);
            }
        }
        let mut out: Vec<strongbox_proto::v1::DatabaseVerification> = parts
            .iter()
            .map(|(name, tables)| strongbox_proto::v1::DatabaseVerification {
                name: (*name).to_string(),
                tables_checked: tables.len() as u64,
                rows_checked: tables.iter().map(|t| t.rows).sum(),
                ..Default::default()
            })
            .collect();
        for (table, expected, found) in &self.mismatches {
            let name = table.strip_suffix(" (missing)").unwrap_or(table);
            if let Some(&i) = owner.get(name) {
                let d = &mut out[i];
                d.mismatched_tables += 1;
                d.rows_checked = d.rows_checked - expected.min(&d.rows_checked) + found;
            }
        }
        for o in &self.failed_objects {
            let db = o.name.split_once(": ").map_or("", |(db, _)| db);
            if let Some(d) = out.iter_mut().find(|d| d.name == db) {
                d.failed_objects += 1;
            }
        }
        for d in &mut out {
            d.ok = d.mismatched_tables == 0 && d.failed_objects == 0;
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(name: &str, rows: u64) -> TableStat {
        TableStat {
            name: name.into(),
            rows,
        }
    }

    #[test]
    fn verification_is_told_per_database() {
        let shop = [stat("shop.public.orders", 10), stat("shop.public.items", 5)];
        let app = [stat("app.public.users", 3)];
        let globals: [TableStat; 0] = [];
        let expected: Vec<TableStat> = shop.iter().chain(&app).cloned().collect();
        let found: HashMap<String, u64> = [
            ("shop.public.orders".to_string(), 10),
            ("shop.public.items".to_string(), 4),
        ]
        .into();
        let mut v = compare_stats(&expected, &found);
        v.failed_objects.push(FailedObject {
            name: "app: MATERIALIZED VIEW DATA word_stats app".into(),
            reason: "relation does not exist".into(),
        });
        let parts: [(&str, &[TableStat]); 3] =
            [("globals", &globals), ("shop", &shop), ("app", &app)];
        let dbs = v.by_database(&parts);
        let summary: Vec<(&str, u64, u64, u64, u64, bool)> = dbs
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.tables_checked,
                    d.rows_checked,
                    d.mismatched_tables,
                    d.failed_objects,
                    d.ok,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("globals", 0, 0, 0, 0, true),
                ("shop", 2, 14, 1, 0, false),
                // Its table is missing (0 rows found), and an object did not come back.
                ("app", 1, 0, 1, 1, false),
            ]
        );
    }
}
