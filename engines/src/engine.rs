//! Database engines behind one trait: find a member's role, dump a consistent backup as a few
//! byte streams (*parts*), provision a fresh server, load parts into it, and verify it; or load
//! parts into the service's own server (an in-place restore) and verify that.
//!
//! Invariants:
//! - A dump is a stream: nothing here holds a whole part in memory or writes it to local disk
//!   (SQLite's consistent copy is the one exception: the online backup API needs a file).
//! - The table statistics a backup records describe exactly the data in its dump (PostgreSQL:
//!   counted in the snapshot `pg_dump` uses; MariaDB: counted from the dump stream itself;
//!   SQLite: counted on the consistent copy).
//! - A restore never touches the source: it provisions a fresh server or file under the
//!   agent's data root. The one exception is an in-place restore ([`Engine::in_place`]), which
//!   an operator orders explicitly: it replaces only the databases (or the file) of the backup
//!   in the service's own server, and never drops or changes the role or account the agent
//!   connects as.
//! - Passwords come from a file or an environment variable and are handed to tools through
//!   their environment (`PGPASSWORD`, `MYSQL_PWD`), never on a command line or in an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
pub use strongbox_core::manifest::{PartKind, TableStat};
use tokio::io::AsyncRead;

use strongbox_proto::v1::{Engine as WireEngine, MemberRole};

use crate::error::{Error, Result};

/// The engines strongbox backs up. In a config, the names operators use are taken, in any
/// case: `postgres`, `postgresql`, `pg`; `mariadb`, `mysql`; `sqlite`, `sqlite3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum EngineKind {
    Postgres,
    /// MariaDB or MySQL.
    Mysql,
    Sqlite,
}

impl EngineKind {
    /// The engine as the wire names it.
    pub fn wire(self) -> WireEngine {
        match self {
            EngineKind::Postgres => WireEngine::Postgres,
            EngineKind::Mysql => WireEngine::Mysql,
            EngineKind::Sqlite => WireEngine::Sqlite,
        }
    }

    /// The engine a wire value names (`None`: unset).
    pub fn from_wire(engine: WireEngine) -> Option<Self> {
        match engine {
            WireEngine::Postgres => Some(EngineKind::Postgres),
            WireEngine::Mysql => Some(EngineKind::Mysql),
            WireEngine::Sqlite => Some(EngineKind::Sqlite),
            WireEngine::Unspecified => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.wire().word()
    }

    /// An engine's name as people write it (`postgresql`, `MariaDB`, `sqlite3`, …).
    pub fn parse(s: &str) -> Option<Self> {
        WireEngine::from_word(s).and_then(EngineKind::from_wire)
    }
}

impl serde::Serialize for EngineKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl TryFrom<String> for EngineKind {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        EngineKind::parse(&s).ok_or_else(|| {
            format!(
                "unknown engine {s:?}: use postgres (or postgresql), mariadb (or mysql), or sqlite"
            )
        })
    }
}

/// One `[[service]]` table of the agent's config: a database server (or SQLite file) on this
/// host, and how to reach it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name, shared by every member of it across hosts.
    pub name: String,
    pub engine: EngineKind,
    /// PostgreSQL/MariaDB: host name or address (or a socket directory/file path for a local
    /// socket). Default: the engine's default local socket.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The user to connect as (PostgreSQL default `postgres`, MariaDB default `root`).
    pub user: Option<String>,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// Databases to back up; empty means every database (except templates and system schemas).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Folder of the engine's tools; default: PATH, then `/usr/lib/postgresql/*/bin` (newest).
    pub bin_dir: Option<PathBuf>,
    /// SQLite: the database file.
    pub path: Option<PathBuf>,
}

impl ServiceSpec {
    /// The password, read from `password_file` or `password_env` (None when neither is set).
    pub fn password(&self) -> Result<Option<String>> {
        if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
                what: "reading the password file",
                path: file.clone(),
                source,
            })?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(Error::Config {
                    service: self.name.clone(),
                    message: format!("environment variable `{var}` (password_env) is not set"),
                }),
            };
        }
        Ok(None)
    }
}

/// A member's role in its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    Standalone,
}

impl Role {
    /// The role as the wire names it.
    pub fn wire(self) -> MemberRole {
        match self {
            Role::Primary => MemberRole::Primary,
            Role::Replica => MemberRole::Replica,
            Role::Standalone => MemberRole::Standalone,
        }
    }
}

/// What a probe of the local server found.
#[derive(Clone, Debug)]
pub struct Probe {
    pub role: Role,
    /// The server answered queries.
    pub healthy: bool,
    /// e.g. "15.18" or "10.11.6-MariaDB".
    pub version: String,
}

/// One part of a backup to be dumped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartPlan {
    /// `globals`, a database name, or the SQLite file's name.
    pub name: String,
    pub kind: PartKind,
}

/// A part being dumped: read `reader` to its end, handing every piece to `tap` (when there is
/// one) in order and ending it, then await `finish`, which waits for the tool, fails with the
/// tool's error (its stderr) if it failed, and returns the part's table stats (counted from the
/// pieces the tap saw).
pub struct Dump {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub tap: Option<crate::counting::Tap>,
    pub finish: futures::future::BoxFuture<'static, Result<Vec<TableStat>>>,
}

impl Dump {
    /// Reads the whole stream into memory, feeding the tap (for small parts and tests; the
    /// backup pipeline streams instead).
    pub async fn read_all(&mut self) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        self.reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::Other(format!("reading a dump: {e}")))?;
        if let Some(tap) = self.tap.take() {
            tap.send(bytes::Bytes::copy_from_slice(&bytes)).await;
            tap.end().await;
        }
        Ok(bytes)
    }
}

/// A consistent backup of one service in progress: the parts to dump, in order.
#[async_trait::async_trait]
pub trait BackupRun: Send {
    fn parts(&self) -> &[PartPlan];
    /// Databases of the server this run leaves out (the service's `databases` names a
    /// subset), each with why.
    fn left_out(&self) -> Vec<strongbox_core::manifest::LeftOut> {
        Vec::new()
    }
    /// Starts dumping one part (one of `parts()`); parts are dumped one after another.
    async fn dump(&mut self, part: &PartPlan) -> Result<Dump>;
    /// Ends the run (closes snapshot transactions, removes temporary copies).
    async fn close(self: Box<Self>) -> Result<()>;
}

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

/// A fresh server (or file) a restore loads into, or the service's own server for an in-place
/// restore. A fresh server keeps running after the restore: it is what the restore delivers.
#[async_trait::async_trait]
pub trait RestoreTarget: Send {
    fn connection(&self) -> Connection;
    /// Loads one part, read from `reader` to its end. Parts come in the backup's order (globals
    /// first). An engine that needs a seekable file (pg_restore --jobs) spools it under the
    /// target's folder (in place: the scratch folder) and removes it after.
    async fn load(
        &mut self,
        part: &PartPlan,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()>;
    /// After the last part: leaves whatever the load needed (PostgreSQL: bulk-load settings),
    /// and starts flushing the loaded data to disk, which may go on while [`Self::verify`] runs.
    async fn finish_load(&mut self) -> Result<()> {
        Ok(())
    }
    /// Waits until what [`Self::finish_load`] started is done: the loaded data is on disk.
    async fn wait_durable(&mut self) -> Result<()> {
        Ok(())
    }
    /// Compares tables and row counts with `expected` (all parts' stats) and runs the engine's
    /// own check.
    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification>;
}

/// An identifier quoted with `quote` (`"` in PostgreSQL, a backquote in MariaDB) at the start of
/// `s` (just after the opening quote), the quote doubled inside it; returns the name and the
/// rest after the closing quote.
pub fn quoted_identifier(body: &str, quote: char) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            let rest = &body[i + c.len_utf8()..];
            if rest.starts_with(quote) {
                name.push(quote);
                chars.next();
                continue;
            }
            return Some((name, rest));
        }
        name.push(c);
    }
    None
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

/// One engine: a service's server on this host, and the way to make fresh ones.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;
    fn spec(&self) -> &ServiceSpec;
    /// Asks the server its role, health and version. An unreachable server is
    /// `Ok(Probe { healthy: false, .. })` when the role cannot be read; errors are for
    /// misconfiguration.
    async fn probe(&self) -> Result<Probe>;
    /// Starts a consistent backup: fixes the snapshot and lists the parts.
    async fn begin_backup(&self) -> Result<Box<dyn BackupRun>>;
    /// This service's own (live) server as the target of an in-place restore, which the
    /// coordinator orders only after a `pre-restore` backup of it completed. Loading a database
    /// part replaces that database: its sessions are ended, it is dropped and recreated from the
    /// dump; a globals part is applied over the roles that exist; SQLite replaces the file's
    /// content through the online backup API, so open connections see the restored data.
    /// Verification is the same as after a restore onto a fresh server. `scratch` is an empty
    /// folder under the data root for spools; the caller removes it.
    async fn in_place(&self, scratch: &Path) -> Result<Box<dyn RestoreTarget>> {
        let _ = scratch;
        Err(Error::Other(format!(
            "in-place restore of {} services is not supported",
            self.kind().as_str()
        )))
    }
}

/// Makes a fresh, empty server for `kind` in `dir` (created; must not exist or be empty),
/// listening on `listen` (an address of this host) and a free port, and starts it.
/// `bin_dir`: where the engine's tools are (None: PATH and the usual places).
pub async fn provision(
    kind: EngineKind,
    dir: &Path,
    listen: &str,
    bin_dir: Option<&Path>,
    name: &str,
) -> Result<Box<dyn RestoreTarget>> {
    match kind {
        EngineKind::Postgres => crate::postgres::provision(dir, listen, bin_dir).await,
        EngineKind::Mysql => crate::mysql::provision(dir, listen, bin_dir).await,
        EngineKind::Sqlite => crate::sqlite::provision(dir, name).await,
    }
}

/// The engine for one configured service.
pub fn open(spec: ServiceSpec) -> Result<Box<dyn Engine>> {
    match spec.engine {
        EngineKind::Postgres => Ok(Box::new(crate::postgres::Postgres::new(spec)?)),
        EngineKind::Mysql => Ok(Box::new(crate::mysql::Mysql::new(spec)?)),
        EngineKind::Sqlite => Ok(Box::new(crate::sqlite::Sqlite::new(spec)?)),
    }
}

/// Stops a server that `provision` made (for teardown: drills, tests), given its folder.
pub async fn teardown(kind: EngineKind, dir: &Path) -> Result<()> {
    match kind {
        EngineKind::Postgres => crate::postgres::teardown(dir).await,
        EngineKind::Mysql => crate::mysql::teardown(dir).await,
        EngineKind::Sqlite => Ok(()),
    }
}
