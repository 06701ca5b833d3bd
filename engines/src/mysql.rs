//! MariaDB (and MySQL): probe a member, dump a server as parts (`grants`, then one per
//! database), provision a fresh server, load parts into it, verify it, stop it; or load parts
//! into the service's own live server (an in-place restore) and verify that.
//!
//! Invariants:
//! - **Consistent parts.** Each database part is `mariadb-dump --single-transaction
//!   --dump-history --routines --triggers --events --hex-blob --databases <db>`; its table
//!   stats (`<db>.<table>`) are counted from that very stream as it passes (see
//!   [`super::sqlcount`]), on the blocking pool, so they describe exactly the dumped rows
//!   (history rows included) whatever writers do meanwhile. Verification counts a
//!   system-versioned table `FOR SYSTEM_TIME ALL`, so both sides count its history.
//! - **Views last.** A database's dump loads in two steps, split by statements (the dump
//!   lexer's [`ViewSplit`], never by lines): first everything up to its views' final
//!   definitions (the database, tables, data, triggers, events, routines, and each view as
//!   mariadb-dump's stand-in, which refers to nothing); then, once every database of the
//!   restore is loaded ([`RestoreTarget::finish_load`], or `verify` at the latest), the final
//!   definitions, so a view may read another database's tables (or views), whatever the
//!   order of their names. Routines, triggers and events need nothing across databases
//!   when they are created.
//! - **A restore loads everything it can.** The dumps (and only they) load with the client's
//!   `--force` (and `--skip-reconnect`): a statement that fails is noted with its error and
//!   its text, and the rest of the dump still loads. Verification then is not ok, and its
//!   `failed_objects` name each one (`<database>: <kind> <name>` as the statement says, e.g.
//!   ``shop: VIEW `v` ``, ``shop: TABLE DATA `t` ``) with the server's error and the
//!   statement's start; the row counts show what data is missing. A client error (the
//!   connection lost) still fails the load. The grants part and the object grants stop at
//!   their first error, as every script of ours does.
//! - **The grants part** is SQL this module writes from `SHOW CREATE USER` and `SHOW GRANTS`:
//!   roles, then accounts (`IF NOT EXISTS`), then their global and database grants, and last,
//!   under `-- strongbox: after database <hex name>` markers, object-level grants (tables,
//!   columns, routines), which MariaDB accepts only once the object exists: a restore applies
//!   them right after loading that database. The server's own accounts (`root`,
//!   `mariadb.sys`, `mysql`, `PUBLIC`, the anonymous one) are left out: a fresh server has its
//!   own.
//! - **Tools**: `spec.bin_dir` when configured (and nothing else then), else PATH and the
//!   usual sbin/bin folders; `mariadb*` names first, `mysql*` names as fallback. Every client
//!   starts with `--no-defaults` (no `my.cnf` can redirect it); the password travels as
//!   `MYSQL_PWD` only.
//! - **Fresh servers** live entirely under their folder: `data/`, `tmp/`, `mariadbd.sock`,
//!   `mariadbd.pid`, `error.log`, `superuser.password` (0600: the password of `root`, which
//!   exists as `root@localhost` and `root@'%'`; every other `root` account is removed). They
//!   run detached from the agent, in their own session, as the `mysql` system user when the
//!   agent is root. The root password reaches the server only as its
//!   `mysql_native_password` hash.
//! - **Names are data, never options or SQL text.** A name that comes from a database, the
//!   service's config or a request (database, table, account, role, host) reaches a tool only
//!   after `--` (`mariadb-dump --databases -- <db>`, `mariadb-check --databases -- <db>…`:
//!   MariaDB's option parser ends options there), or inside an option's `--opt=value` form
//!   for the connection settings of the config. It reaches SQL only quoted by the server's
//!   own rules: identifiers in backquotes with backquotes doubled ([`quote_ident`]), values
//!   compared as hex digits (`HEX(col) = '…'`), never pasted or edited as text. Every script
//!   of ours starts with [`SESSION_MODE`] (no `ANSI_QUOTES`, no `NO_BACKSLASH_ESCAPES`, so
//!   quotes mean what this module and the server's `SHOW` output assume), runs through the
//!   client in `--binary-mode` (no client commands; a `\r\n` inside a name stays), and stops
//!   at its first error; the two read-only exceptions (`SHOW` of every account, `KILL` of
//!   sessions) go on with `--force` and say so.
//! - **The grants part is split by statements, not by lines**: a name may hold a line break,
//!   a `;` or a `-- strongbox:` marker, so the restore lexes the part as the server does
//!   (quotes, comments) before it picks markers, statements, or the agent's own account.
//! - **Loading** is one `Loader` for fresh servers and the live one alike.
//! - **What a restore gives back**: every database of the backup with its tables, data,
//!   system-versioning history (row timestamps included), views, routines, triggers, events
//!   and database options; roles, accounts (with their password hashes and authentication
//!   plugins), their global, database, table, column and routine grants, and default roles.
//!   **What it does not**: the server's own accounts (`root`, `mariadb.sys`, `mysql`,
//!   `PUBLIC`, the anonymous one) and the system databases (`mysql` beyond the accounts,
//!   `sys`, `information_schema`, `performance_schema`); server settings (`my.cnf`, global
//!   variables), binary logs and replication state, plugins; the history of tables with
//!   transaction-precise versioning (`ROW START` a transaction id: mariadb-dump cannot dump
//!   it, so such a table's database is dumped with current rows only, which the log says);
//!   history, when the target server runs with `secure_timestamp` that forbids setting
//!   row timestamps, or the in-place account may not set `system_versioning_insert_history`
//!   (those statements fail and are reported); objects whose definer is an account the
//!   copy lacks load, but fail when used (as on any server without that account).
//! - **In place** (the live server, reached as the service's configured user; never a
//!   read-only server or a replica): a database part replaces exactly that database (the
//!   sessions whose default database it is are killed, it is dropped, waiting at most
//!   `DROP_LOCK_WAIT` seconds for locks, and its dump creates it again); databases not in
//!   the backup are never touched, counted or checked. The grants part is applied over the
//!   accounts that exist (`IF NOT EXISTS`), leaving out every line that names the account
//!   the agent connects as, so the agent keeps its way in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strongbox_core::manifest::LeftOut;

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::counting;
use super::process::{self, SystemUser, ToolCommand};
use super::sqlcount::{SqlCounter, ViewSplit};
use super::{
    compare_stats, BackupRun, Connection, Dump, Engine, EngineKind, FailedObject, PartKind,
    PartPlan, Probe, RestoreTarget, Role, ServiceSpec, TableStat, Verification,
};
use crate::error::{Error, Result};

/// The administrator account of a provisioned server.
pub const SUPERUSER: &str = "root";
/// Databases that belong to the server, never dumped as parts.
const SYSTEM_DATABASES: &[&str] = &["information_schema", "performance_schema", "sys", "mysql"];
/// Accounts that belong to the server, never carried in the grants part.
const SYSTEM_ACCOUNTS: &[&str] = &["root", "mariadb.sys", "mysql", "PUBLIC", ""];
/// Marks the start of object-level grants to apply after a database is loaded.
const AFTER_DATABASE: &str = "-- strongbox: after database ";
/// The first statement of every script of ours: the session's `sql_mode` without the modes
/// that change what quotes mean (`ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`, and the combinations
/// that imply them), whatever the server's global mode. The rest of the mode (e.g.
/// `NO_AUTO_CREATE_USER`, which keeps a `GRANT` from creating an account) stays.
pub const SESSION_MODE: &str = "SET SESSION sql_mode = TRIM(BOTH ',' FROM \
    REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(\
    CONCAT(',', @@SESSION.sql_mode, ','), \
    ',NO_BACKSLASH_ESCAPES,', ','), ',ANSI_QUOTES,', ','), ',ANSI,', ','), ',ORACLE,', ','), \
    ',POSTGRESQL,', ','), ',MSSQL,', ','), ',DB2,', ','), ',MAXDB,', ','));\n";
/// How long a provisioned server may take to start, or to stop.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times provisioning retries with a new port when another process took it.
const PORT_ATTEMPTS: usize = 5;
/// Largest grants part a restore accepts (it is read whole: object grants wait for their
/// database).
const MAX_GRANTS_PART: usize = 64 << 20;
/// Packets as large as MariaDB allows, so no dumped row is too large to load.
const MAX_PACKET: &str = "--max-allowed-packet=1G";
/// Seconds an in-place restore waits to drop a database whose table another session holds.
const DROP_LOCK_WAIT: u32 = 60;
const TOOL_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"];

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

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

    /// The first of `names` found (in bin_dir when configured, else PATH and the usual places).
    pub fn path(&self, names: &[&str]) -> Result<PathBuf> {
        let found = match &self.bin_dir {
            Some(dir) => names
                .iter()
                .map(|n| dir.join(n))
                .find(|p| process::is_executable(p)),
            None => process::find_program(names, TOOL_DIRS),
        };
        found.ok_or_else(|| Error::Spawn {
            tool: names.join(" / "),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "not found in {}; install mariadb-client and mariadb-server or set bin_dir",
                    match &self.bin_dir {
                        Some(d) => d.display().to_string(),
                        None => format!("PATH, {}", TOOL_DIRS.join(", ")),
                    }
                ),
            ),
        })
    }

    fn client(&self) -> Result<PathBuf> {
        self.path(&["mariadb", "mysql"])
    }
}

// ---------------------------------------------------------------------------------------------
// Quoting and output parsing
// ---------------------------------------------------------------------------------------------

/// `name` as an identifier (`` my`db `` → `` `my``db` ``). Backquotes mean the same in every
/// `sql_mode`, and nothing but a backquote is special inside them.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `value`'s UTF-8 bytes as uppercase hex digits in a string literal, to compare with
/// `HEX(column)`: nothing in it is special in any `sql_mode`.
fn hex_literal(value: &str) -> String {
    format!("'{}'", hex::encode_upper(value))
}

/// Undoes the escaping of the client's batch mode (`\\`, `\t`, `\n`, `\0`).
fn unescape_batch(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Decodes a `HEX()` column.
fn unhex(field: &str) -> Result<String> {
    let bytes = hex::decode(field.trim()).map_err(|_| {
        Error::Other(format!(
            "the server returned {field:?} where hex digits were expected"
        ))
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The `mysql_native_password` hash of `password`: `*` + hex(SHA1(SHA1(password))).
fn native_password_hash(password: &str) -> String {
    use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY as SHA1};
    let inner = digest(&SHA1, password.as_bytes());
    let outer = digest(&SHA1, inner.as_ref());
    format!("*{}", hex::encode_upper(outer.as_ref()))
}

// ---------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------

/// How a client reaches one server.
#[derive(Clone)]
struct Endpoint {
    /// Connection options (after `--no-defaults`).
    args: Vec<String>,
    password: Option<String>,
    /// For messages (never with a password).
    target: String,
}

impl Endpoint {
    fn for_spec(spec: &ServiceSpec) -> Result<Endpoint> {
        let user = spec.user.clone().unwrap_or_else(|| SUPERUSER.to_string());
        let mut args = Vec::new();
        let target = match &spec.host {
            Some(h) if h.starts_with('/') => {
                args.push("--protocol=SOCKET".to_string());
                args.push(format!("--socket={h}"));
                h.clone()
            }
            Some(h) => {
                let port = spec.port.unwrap_or(3306);
                args.push("--protocol=TCP".to_string());
                args.push(format!("--host={h}"));
                args.push(format!("--port={port}"));
                format!("{h}:{port}")
            }
            None => {
                if let Some(port) = spec.port {
                    args.push("--protocol=TCP".to_string());
                    args.push("--host=127.0.0.1".to_string());
                    args.push(format!("--port={port}"));
                    format!("127.0.0.1:{port}")
                } else {
                    "the default local socket".to_string()
                }
            }
        };
        args.push(format!("--user={user}"));
        Ok(Endpoint {
            args,
            password: spec.password()?,
            target: format!("{target} (user {user})"),
        })
    }

    fn local(socket: &Path, password: Option<String>) -> Endpoint {
        Endpoint {
            args: vec![
                "--protocol=SOCKET".into(),
                format!("--socket={}", socket.display()),
                format!("--user={SUPERUSER}"),
            ],
            password,
            target: socket.display().to_string(),
        }
    }

    /// `program --no-defaults <connection options>`, with `MYSQL_PWD` when there is a password.
    fn command(&self, program: &Path) -> ToolCommand {
        let mut cmd = ToolCommand::new(program);
        cmd.arg("--no-defaults").args(&self.args);
        if let Some(pw) = &self.password {
            cmd.env("MYSQL_PWD", pw);
        }
        cmd
    }

    /// The `mariadb` client for this endpoint (with a connect timeout, which only the client
    /// knows), in `--binary-mode`: it runs no client command but `DELIMITER` (no `\!`, no
    /// `source`), and passes statements on byte for byte (a `\r\n` inside a name stays).
    fn client(&self, tools: &MyTools) -> Result<ToolCommand> {
        let mut cmd = self.command(&tools.client()?);
        cmd.args(["--connect-timeout=10", "--binary-mode"]);
        Ok(cmd)
    }

    /// Runs `sql` (after [`SESSION_MODE`]) with the client in batch mode, stopping at the
    /// first error; returns the rows, fields unescaped.
    async fn query(&self, tools: &MyTools, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut cmd = self.client(tools)?;
        cmd.args(["-N", "-B"]);
        let out = cmd
            .capture_with_input(format!("{SESSION_MODE}{sql}").as_bytes())
            .await?;
        if !out.success {
            return Err(self.client_error(&out.stderr));
        }
        Ok(parse_rows(&out.stdout))
    }

    /// A failed client run as `Error::Database`, with a hint for the usual causes.
    fn client_error(&self, stderr: &str) -> Error {
        let mut message = stderr.trim().to_string();
        if is_access_denied(stderr) {
            message.push_str(
                " - check the user and the password in the service's password_file or password_env",
            );
        } else if is_unreachable(stderr) {
            message.push_str(" - check that the server runs and that host/port/socket in the service's config are right");
        }
        Error::Database {
            engine: "MariaDB",
            target: self.target.clone(),
            message,
        }
    }
}

fn parse_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(unescape_batch).collect())
        .collect()
}

fn is_access_denied(stderr: &str) -> bool {
    ["ERROR 1045", "ERROR 1698", "ERROR 1044", "Access denied"]
        .iter()
        .any(|m| stderr.contains(m))
}

fn is_unreachable(stderr: &str) -> bool {
    [
        "ERROR 2002",
        "ERROR 2003",
        "ERROR 2005",
        "ERROR 2013",
        "Can't connect",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

/// A MariaDB/MySQL service's member on this host.
pub struct Mysql {
    spec: ServiceSpec,
    tools: MyTools,
}

impl Mysql {
    pub fn new(spec: ServiceSpec) -> Result<Mysql> {
        if spec.path.is_some() {
            return Err(Error::Config {
                service: spec.name.clone(),
                message: "`path` is for SQLite services; a MariaDB service is reached with host \
                          and port (or host = a socket path)"
                    .into(),
            });
        }
        let tools = MyTools::new(spec.bin_dir.as_deref()).map_err(|e| Error::Config {
            service: spec.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Mysql { spec, tools })
    }
}

#[async_trait::async_trait]
impl Engine for Mysql {
    fn kind(&self) -> EngineKind {
        EngineKind::Mysql
    }

    fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    async fn probe(&self) -> Result<Probe> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let mut cmd = ep.client(&self.tools)?;
        cmd.args(["-N", "-B"]);
        let out = cmd
            .capture_with_input(b"SELECT @@read_only, VERSION();\nSHOW SLAVE STATUS;\n")
            .await?;
        if !out.success {
            let err = ep.client_error(&out.stderr);
            if is_access_denied(&out.stderr) {
                return Err(err);
            }
            tracing::warn!(service = %self.spec.name, error = %err, "MariaDB is unreachable");
            return Ok(Probe {
                role: Role::Standalone,
                healthy: false,
                version: String::new(),
            });
        }
        let rows = parse_rows(&out.stdout);
        let (read_only, version) = match rows.first() {
            Some(r) if r.len() >= 2 => (r[0] == "1", r[1].clone()),
            _ => {
                return Err(Error::Database {
                    engine: "MariaDB",
                    target: ep.target,
                    message: format!("unexpected answer to the probe: {:?}", out.stdout),
                })
            }
        };
        let replicating = rows.len() > 1;
        Ok(Probe {
            role: if read_only || replicating {
                Role::Replica
            } else {
                Role::Primary
            },
            healthy: true,
            version,
        })
    }

    async fn begin_backup(&self) -> Result<Box<dyn BackupRun>> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let existing: Vec<String> = ep
            .query(
                &self.tools,
                "SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
            )
            .await?
            .iter()
            .filter_map(|r| r.first())
            .map(|h| unhex(h))
            .collect::<Result<_>>()?;
        let databases: Vec<String> = if self.spec.databases.is_empty() {
            existing
                .iter()
                .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
                .cloned()
                .collect()
        } else {
            let missing: Vec<&String> = self
                .spec
                .databases
                .iter()
                .filter(|d| !existing.contains(d))
                .collect();
            if !missing.is_empty() {
                return Err(Error::Config {
                    service: self.spec.name.clone(),
                    message: format!(
                        "databases {missing:?} (in `databases`) do not exist on {}; it has {existing:?}",
                        ep.target
                    ),
                });
            }
            self.spec.databases.clone()
        };
        // What a configured subset leaves out, and why, for `backup show`.
        let left_out: Vec<LeftOut> = existing
            .iter()
            .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()) && !databases.contains(d))
            .map(|d| LeftOut {
                name: d.clone(),
                why: "not in the service's `databases`".into(),
            })
            .collect();
        let mut parts = vec![PartPlan {
            name: "grants".into(),
            kind: PartKind::Globals,
        }];
        parts.extend(databases.into_iter().map(|name| PartPlan {
            name,
            kind: PartKind::Database,
        }));
        tracing::info!(service = %self.spec.name, parts = parts.len(), "MariaDB backup started");
        Ok(Box::new(MyBackup {
            service: self.spec.name.clone(),
            ep,
            tools: self.tools.clone(),
            parts,
            left_out,
        }))
    }

    async fn in_place(&self, scratch: &Path) -> Result<Box<dyn RestoreTarget>> {
        // A dump loads from its stream: nothing is spooled.
        let _ = scratch;
        Ok(Box::new(self.open_in_place().await?))
    }
}

struct MyBackup {
    service: String,
    ep: Endpoint,
    tools: MyTools,
    parts: Vec<PartPlan>,
    left_out: Vec<LeftOut>,
}

#[async_trait::async_trait]
impl BackupRun for MyBackup {
    fn parts(&self) -> &[PartPlan] {
        &self.parts
    }

    fn left_out(&self) -> Vec<LeftOut> {
        self.left_out.clone()
    }

    async fn dump(&mut self, part: &PartPlan) -> Result<Dump> {
        if !self.parts.contains(part) {
            return Err(Error::Other(format!(
                "part {:?} is not a part of this backup",
                part.name
            )));
        }
        match part.kind {
            PartKind::Globals => {
                let sql = dump_grants(&self.ep, &self.tools, &self.service).await?;
                Ok(Dump {
                    reader: Box::new(std::io::Cursor::new(sql.into_bytes())),
                    tap: None,
                    finish: async { Ok(Vec::new()) }.boxed(),
                })
            }
            PartKind::Database => self.dump_database(&part.name).await,
            other => Err(Error::Other(format!(
                "a MariaDB backup has no part of kind {other:?}"
            ))),
        }
    }

    async fn close(self: Box<Self>) -> Result<()> {
        tracing::info!(service = %self.service, "MariaDB backup closed");
        Ok(())
    }
}

impl MyBackup {
    async fn dump_database(&self, db: &str) -> Result<Dump> {
        let dump = self.tools.path(&["mariadb-dump", "mysqldump"])?;
        // History rows of system-versioned tables, with their timestamps: `--dump-history`
        // (it reads them in the dump's own snapshot, and the dump sets
        // `system_versioning_insert_history` to load them back). mariadb-dump refuses the
        // whole database when one of its tables keeps transaction-precise history (its row
        // start is a transaction id, which no other server knows): such a database is dumped
        // without history, and the log says which tables lose it.
        // When the question fails (the server went away), the dump tool's own error says why.
        let precise: Vec<String> = match self
            .ep
            .query(
                &self.tools,
                &format!(
                    "SELECT HEX(TABLE_NAME) FROM information_schema.COLUMNS \
                     WHERE HEX(TABLE_SCHEMA) = {} AND GENERATION_EXPRESSION = 'ROW START' \
                     AND DATA_TYPE = 'bigint' ORDER BY 1",
                    hex_literal(db)
                ),
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| r.first())
                .map(|h| unhex(h))
                .collect::<Result<_>>()?,
            Err(e) => {
                tracing::warn!(service = %self.service, database = ?db, error = %e, "could not look for tables with transaction-precise history");
                Vec::new()
            }
        };
        let mut cmd = self.ep.command(&dump);
        if precise.is_empty() {
            cmd.arg("--dump-history");
        } else {
            tracing::warn!(service = %self.service, database = ?db, tables = ?precise, "tables with transaction-precise history: mariadb-dump cannot dump history there, so this database is dumped without the history of its system-versioned tables");
        }
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            // No `LOCK TABLES t WRITE` around a table's rows: an INSERT into a table whose
            // DEFAULT reads a sequence (NEXTVAL) fails under it ("was not locked").
            "--skip-add-locks",
            MAX_PACKET,
            "--databases",
            // The end of options: a database named `-Ah2130706434` is a name, not
            // `--all-databases --host=127.0.0.2`.
            "--",
            db,
        ]);
        let streaming = cmd.spawn_stream()?;
        let (tap, counted) = counting::tap(SqlCounter::new());
        let exit = streaming.exit;
        let db = db.to_string();
        let service = self.service.clone();
        let finish = async move {
            exit.wait().await?;
            let tables = counted
                .await
                .map_err(|e| {
                    Error::Other(format!("counting the rows of database {db:?} failed: {e}"))
                })?
                .ok_or_else(|| {
                    Error::Other(format!(
                        "the dump of database {db:?} was finished before its stream was read \
                         to its end (and its tap ended); read the reader to its end first"
                    ))
                })?;
            tracing::info!(service = %service, database = ?db, tables = tables.len(), "database dumped");
            Ok(tables
                .into_iter()
                .map(|(table, rows)| TableStat {
                    name: format!("{db}.{table}"),
                    rows,
                })
                .collect())
        };
        Ok(Dump {
            reader: Box::new(streaming.stdout),
            tap: Some(tap),
            finish: finish.boxed(),
        })
    }
}

/// Writes the grants part: roles, accounts, their grants; object-level grants last, each
/// group after an [`AFTER_DATABASE`] marker.
async fn dump_grants(ep: &Endpoint, tools: &MyTools, service: &str) -> Result<String> {
    let accounts_sql = "SELECT HEX(User), HEX(Host), is_role FROM mysql.user ORDER BY User, Host";
    let rows = match ep.query(tools, accounts_sql).await {
        Ok(rows) => rows,
        // MySQL has no is_role column.
        Err(_) => {
            ep.query(
                tools,
                "SELECT HEX(User), HEX(Host), 'N' FROM mysql.user ORDER BY User, Host",
            )
            .await?
        }
    };
    struct Account {
        user: String,
        host: String,
        role: bool,
    }
    let mut accounts = Vec::new();
    for r in rows {
        if r.len() < 3 {
            continue;
        }
        let user = unhex(&r[0])?;
        if SYSTEM_ACCOUNTS.contains(&user.as_str()) {
            continue;
        }
        accounts.push(Account {
            user,
            host: unhex(&r[1])?,
            role: r[2] == "Y",
        });
    }
    // One client run; each account's answers follow a marker row. --force goes on past
    // accounts the server cannot show (e.g. host names while skip-name-resolve is on): the
    // script only reads (SELECT and SHOW), and every name in it is quoted, so an error ends
    // one statement and can start none. SESSION_MODE first: the server then quotes names in
    // its answers with backquotes.
    let mut script = String::from(SESSION_MODE);
    for (i, a) in accounts.iter().enumerate() {
        script.push_str(&format!("SELECT '#strongbox# {i}';\n"));
        if a.role {
            script.push_str(&format!("SHOW GRANTS FOR {};\n", quote_ident(&a.user)));
        } else {
            let who = format!("{}@{}", quote_ident(&a.user), quote_ident(&a.host));
            script.push_str(&format!(
                "SHOW CREATE USER {who};\nSHOW GRANTS FOR {who};\n"
            ));
        }
    }
    script.push_str("SELECT '#strongbox# end';\n");
    let mut cmd = ep.client(tools)?;
    cmd.args(["-N", "-B", "--force"]);
    let out = cmd.capture_with_input(script.as_bytes()).await?;
    if !out.stdout.lines().any(|l| l == "#strongbox# end") {
        return Err(ep.client_error(&out.stderr));
    }
    if !out.success {
        tracing::warn!(service, problems = %out.stderr, "some accounts could not be read and are left out of the grants part");
    }
    let mut lines_of: Vec<Vec<String>> = vec![Vec::new(); accounts.len()];
    let mut current: Option<usize> = None;
    for line in out.stdout.lines() {
        if let Some(rest) = line.strip_prefix("#strongbox# ") {
            current = rest.parse::<usize>().ok();
            continue;
        }
        if let Some(i) = current {
            if let Some(slot) = lines_of.get_mut(i) {
                slot.push(unescape_batch(line));
            }
        }
    }

    let mut roles = Vec::new();
    let mut users = Vec::new();
    let mut grants = Vec::new();
    let mut after: Vec<(String, String)> = Vec::new();
    for (a, lines) in accounts.iter().zip(lines_of) {
        if lines.is_empty() {
            continue;
        }
        if a.role {
            roles.push(format!(
                "CREATE ROLE IF NOT EXISTS {};",
                quote_ident(&a.user)
            ));
        }
        for l in lines {
            if let Some(rest) = l.strip_prefix("CREATE USER ") {
                let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
                users.push(format!("CREATE USER IF NOT EXISTS {rest};"));
            } else if let Some(db) = object_grant_database(&l) {
                after.push((db, format!("{l};")));
            } else {
                grants.push(format!("{l};"));
            }
        }
    }
    let mut sql = String::from(
        "-- strongbox-agent: roles, accounts and grants of a MariaDB server.\n\
         -- Object-level grants (tables, columns, routines) come last, each group after the\n\
         -- database it needs: load this whole file after every database's dump (and its\n\
         -- views). Names may hold line breaks: load it with `mariadb --binary-mode`, and\n\
         -- split it by statements, never by lines.\n",
    );
    sql.push_str(SESSION_MODE);
    for l in roles.iter().chain(&users).chain(&grants) {
        sql.push_str(l);
        sql.push('\n');
    }
    after.sort_by(|a, b| a.0.cmp(&b.0));
    let mut last_db: Option<&str> = None;
    for (db, l) in &after {
        if last_db != Some(db.as_str()) {
            sql.push_str(&format!("{AFTER_DATABASE}{}\n", hex::encode(db)));
            last_db = Some(db);
        }
        sql.push_str(l);
        sql.push('\n');
    }
    tracing::info!(service, accounts = accounts.len(), "grants dumped");
    Ok(sql)
}

/// The database of an object-level grant (`GRANT ... ON [PROCEDURE|FUNCTION|PACKAGE [BODY]]
/// db.obj TO ...` where obj is not `*`); None for global, database, role and proxy grants.
fn object_grant_database(line: &str) -> Option<String> {
    if !line.starts_with("GRANT ") {
        return None;
    }
    // Find " ON " outside quotes.
    let b = line.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let mut on_at = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'`' || c == b'\'' => quote = Some(c),
            None if b[i..].starts_with(b" ON ") => {
                on_at = Some(i + 4);
                break;
            }
            None => {}
        }
        i += 1;
    }
    let mut rest = line[on_at?..].trim_start();
    for kw in ["PROCEDURE ", "FUNCTION ", "PACKAGE BODY ", "PACKAGE "] {
        if let Some(r) = rest.strip_prefix(kw) {
            rest = r.trim_start();
            break;
        }
    }
    let (db, after) = read_identifier(rest)?;
    let after = after.strip_prefix('.')?;
    if after.starts_with('*') {
        return None;
    }
    Some(db)
}

/// Reads a backquoted or bare identifier at the start of `s`; returns it and the rest.
fn read_identifier(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('`') {
        super::quoted_identifier(body, '`')
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        if end == 0 || s[..end] == *"*" {
            return None;
        }
        Some((s[..end].to_string(), &s[end..]))
    }
}

// ---------------------------------------------------------------------------------------------
// Counting the stream as it passes
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Provisioning, loading, verifying
// ---------------------------------------------------------------------------------------------

struct Layout {
    data: PathBuf,
    socket: PathBuf,
    pid: PathBuf,
    log: PathBuf,
    password: PathBuf,
    /// The server's own temp folder: servers sharing one can delete each other's files.
    tmp: PathBuf,
}

/// MariaDB ignores the umask it inherits and creates files 0660 unless told otherwise by its
/// `UMASK`/`UMASK_DIR` environment: a restored server's files are 0600, its folders 0700.
fn private_modes(cmd: &mut ToolCommand) {
    cmd.env("UMASK", "0600").env("UMASK_DIR", "0700");
}

fn layout(dir: &Path) -> Layout {
    Layout {
        data: dir.join("data"),
        tmp: dir.join("tmp"),
        socket: dir.join("mariadbd.sock"),
        pid: dir.join("mariadbd.pid"),
        log: dir.join("error.log"),
        password: dir.join("superuser.password"),
    }
}

/// A fresh server made by [`provision`].
pub struct MyTarget {
    dir: PathBuf,
    listen: String,
    port: u16,
    password_file: PathBuf,
    /// Reaches the server through its own socket as `root`.
    loader: Loader,
}

/// Makes a fresh server in `dir` with `mariadb-install-db`, starts `mariadbd` detached on
/// `listen` and a free port, and gives `root` a generated password (in
/// `<dir>/superuser.password`).
pub async fn provision(
    dir: &Path,
    listen: &str,
    bin_dir: Option<&Path>,
) -> Result<Box<dyn RestoreTarget>> {
    let tools = MyTools::new(bin_dir)?;
    let install_db = tools.path(&["mariadb-install-db", "mysql_install_db"])?;
    let server = tools.path(&["mariadbd", "mysqld"])?;
    tools.client()?;
    let user = SystemUser::when_root("mysql", "MariaDB")?;
    let l = layout(dir);
    if l.socket.as_os_str().len() > 100 {
        return Err(Error::Other(format!(
            "the restore folder {} is too deep for a unix socket path; choose a shorter data root",
            dir.display()
        )));
    }
    process::create_server_dir(dir, user.as_ref())?;
    std::fs::create_dir(&l.tmp).map_err(|source| Error::Io {
        what: "creating the server's temp folder",
        path: l.tmp.clone(),
        source,
    })?;
    if let Some(u) = &user {
        u.chown(&l.tmp)?;
    }

    // Its own tmpdir during the install too: another server starting with /tmp as tmpdir
    // would delete the install's `#sql*` temp tables there.
    let mut cmd = ToolCommand::new(&install_db);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", l.data.display()))
        .arg(format!("--tmpdir={}", l.tmp.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ])
        .current_dir(dir)
        .run_as(user.as_ref());
    private_modes(&mut cmd);
    cmd.output().await?;

    let password = process::random_password();
    process::write_secret_file(&l.password, &password)?;

    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = process::free_port(listen)?;
        let log_start = std::fs::metadata(&l.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = ToolCommand::new(&server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", l.data.display()))
            .arg(format!("--socket={}", l.socket.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--bind-address={listen}"))
            .arg(format!("--pid-file={}", l.pid.display()))
            .arg(format!("--log-error={}", l.log.display()))
            .arg(format!("--tmpdir={}", l.tmp.display()))
            .args(["--skip-name-resolve", MAX_PACKET])
            .current_dir(dir)
            .run_as(user.as_ref());
        private_modes(&mut cmd);
        let pid = cmd.spawn_detached(&dir.join("mariadbd.out")).await?;
        let target = MyTarget {
            dir: dir.to_path_buf(),
            listen: listen.to_string(),
            port,
            password_file: l.password.clone(),
            loader: Loader {
                tools: tools.clone(),
                ep: Endpoint::local(&l.socket, None),
                replace: false,
                waiting_grants: Vec::new(),
                waiting_views: Vec::new(),
                failed: Vec::new(),
                service: String::new(),
                dir: dir.to_path_buf(),
            },
        };
        match target.wait_ready(pid, &l.log, log_start).await {
            Ok(()) => {}
            Err(e) => {
                let log = log_since(&l.log, log_start);
                if log.contains("Address already in use")
                    || log.contains("Can't start server: Bind")
                {
                    tracing::debug!(port, "port taken meanwhile; trying another");
                    let _ = teardown(dir).await;
                    last_error = Some(e);
                    continue;
                }
                let _ = teardown(dir).await;
                return Err(e);
            }
        }
        let mut target = target;
        if let Err(e) = target.secure_root(&password).await {
            let _ = teardown(dir).await;
            return Err(e);
        }
        tracing::info!(dir = %dir.display(), listen, port, "fresh MariaDB server running");
        return Ok(Box::new(target));
    }
    Err(last_error.unwrap_or_else(|| Error::Other("no free port found".into())))
}

fn log_since(path: &Path, offset: u64) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

impl MyTarget {
    /// Waits until the server answers `SELECT 1` on its socket; fails early if it exits.
    async fn wait_ready(&self, pid: u32, log: &Path, log_start: u64) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self
                .loader
                .ep
                .query(&self.loader.tools, "SELECT 1")
                .await
                .is_ok()
            {
                return Ok(());
            }
            if !process::process_alive(pid) {
                return Err(Error::Other(format!(
                    "the fresh MariaDB server in {} exited during start-up; end of its log:\n{}",
                    self.dir.display(),
                    log_since(log, log_start)
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Other(format!(
                    "the fresh MariaDB server in {} did not accept connections within {:?}; end of its log:\n{}",
                    self.dir.display(),
                    START_TIMEOUT,
                    log_since(log, log_start)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Leaves `root@localhost` and `root@'%'` with the generated password, and no other root.
    async fn secure_root(&mut self, password: &str) -> Result<()> {
        // The hash is `*` and hex digits, made here: nothing in it needs escaping.
        let hash = format!("'{}'", native_password_hash(password));
        let sql = format!(
            "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';\n\
             FLUSH PRIVILEGES;\n\
             ALTER USER 'root'@'localhost' IDENTIFIED BY PASSWORD {hash};\n\
             CREATE USER 'root'@'%' IDENTIFIED BY PASSWORD {hash};\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;\n\
             GRANT PROXY ON ''@'%' TO 'root'@'%' WITH GRANT OPTION;\n"
        );
        self.loader.ep.query(&self.loader.tools, &sql).await?;
        self.loader.ep.password = Some(password.to_string());
        Ok(())
    }
}

/// One piece of a grants part.
#[derive(Debug, PartialEq, Eq)]
enum GrantsItem {
    /// An [`AFTER_DATABASE`] marker between statements: the database whose object-level
    /// grants follow.
    After(String),
    /// One statement, with its `;`.
    Statement(String),
}

/// Splits a grants part into statements and markers, lexing it as the server does under
/// [`SESSION_MODE`]: backquoted names with doubled backquotes, strings in `'` or `"` with
/// backslash escapes and doubled quotes, `-- `, `#` and `/* */` comments (`/*! */` ones are
/// code, quotes in them included). A marker counts only as a comment line between
/// statements: inside a name it is part of the name. Other comments between statements are
/// dropped.
fn grants_items(text: &str) -> Result<Vec<GrantsItem>> {
    let damaged = |what: &str| {
        Error::Other(format!(
            "the grants part {what}: it is damaged or was not made by strongbox-agent; \
             restore without it or from another backup"
        ))
    };
    let b = text.as_bytes();
    let mut items = Vec::new();
    // Where the statement being read started, once it has.
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b'`' | b'\'' | b'"' => {
                start.get_or_insert(i);
                i = skip_quoted(b, i)
                    .ok_or_else(|| damaged("ends inside a quoted name or string"))?;
                continue;
            }
            b'-' if next == Some(b'-')
                && b.get(i + 2)
                    .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
            {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                if start.is_none() {
                    if let Some(hex_name) = text[i..end].trim_end().strip_prefix(AFTER_DATABASE) {
                        let db = hex::decode(hex_name.trim())
                            .ok()
                            .and_then(|bytes| String::from_utf8(bytes).ok())
                            .ok_or_else(|| {
                                damaged("has a marker whose database is not hex of UTF-8")
                            })?;
                        items.push(GrantsItem::After(db));
                    }
                }
                i = end;
                continue;
            }
            b'#' => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                continue;
            }
            b'/' if next == Some(b'*') => {
                if matches!(b.get(i + 2), Some(b'!' | b'M')) {
                    // A versioned comment is code to the server: its quotes are lexed as
                    // quotes, and its `*/` is just more code.
                    start.get_or_insert(i);
                    i += 2;
                    continue;
                }
                let end = text[i + 2..]
                    .find("*/")
                    .ok_or_else(|| damaged("ends inside a comment"))?;
                i += 2 + end + 2;
                continue;
            }
            b';' => {
                if let Some(s) = start.take() {
                    items.push(GrantsItem::Statement(text[s..=i].to_string()));
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    if start.is_some() {
        return Err(damaged("ends inside a statement (no `;`)"));
    }
    Ok(items)
}

/// The index just after the quoted name or string that opens at `b[open]`: the quote doubled
/// stands for itself, and in strings (not in backquoted names) a backslash escapes the next
/// byte. None when it does not end.
fn skip_quoted(b: &[u8], open: usize) -> Option<usize> {
    let q = b[open];
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            c if c == q => {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                    continue;
                }
                return Some(i + 1);
            }
            b'\\' if q != b'`' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// A grants part as what loads now and the object grants waiting for a database (in order),
/// leaving out the statements that name one of the accounts in `skip`.
fn split_grants(text: &str, skip: &[(String, String)]) -> Result<(String, Vec<(String, String)>)> {
    let mut now = String::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    for item in grants_items(text)? {
        match item {
            GrantsItem::After(db) => waiting.push((db, String::new())),
            GrantsItem::Statement(sql) => {
                if names_account(&sql, skip) {
                    continue;
                }
                let out = match waiting.last_mut() {
                    Some((_, group)) => group,
                    None => &mut now,
                };
                out.push_str(&sql);
                out.push('\n');
            }
        }
    }
    Ok((now, waiting))
}

/// Whether `statement` names one of `accounts` (user, host) as `user@host`, each side a
/// backquoted name, a string or a bare word, compared after unquoting.
fn names_account(statement: &str, accounts: &[(String, String)]) -> bool {
    let tokens = account_tokens(statement);
    tokens.windows(3).any(|w| match w {
        [Tok::Name(user), Tok::At, Tok::Name(host)] => {
            accounts.iter().any(|(u, h)| u == user && h == host)
        }
        _ => false,
    })
}

/// A token of a statement, as far as [`names_account`] cares.
#[derive(Debug, PartialEq, Eq)]
enum Tok {
    /// A backquoted name or a string (unquoted), or a bare word.
    Name(String),
    At,
    /// Any other punctuation.
    Other,
}

/// A lexeme of one statement, as the server reads it: what [`account_tokens`] and
/// [`statement_object`] look at.
#[derive(Debug, PartialEq, Eq)]
enum Lexeme {
    /// A bare word (keyword or name).
    Word(String),
    /// The text inside quotes `q` (`` ` ``, `'` or `"`), unquoted.
    Quoted(u8, String),
    At,
    Dot,
    /// Any other punctuation.
    Other,
}

fn lex(statement: &str) -> Vec<Lexeme> {
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let b = statement.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'`' | b'\'' | b'"') {
            // An unterminated quote runs to the end (grants_items refuses those anyway).
            let end = skip_quoted(b, i).unwrap_or(b.len() + 1);
            let body = &statement[i + 1..end - 1];
            out.push(Lexeme::Quoted(c, unquote(body, c)));
            i = end;
        } else if is_word(c) {
            let end = b[i..]
                .iter()
                .position(|&c| !is_word(c))
                .map_or(b.len(), |n| i + n);
            out.push(Lexeme::Word(statement[i..end].to_string()));
            i = end;
        } else {
            match c {
                b'@' => out.push(Lexeme::At),
                b'.' => out.push(Lexeme::Dot),
                c if c.is_ascii_whitespace() => {}
                _ => out.push(Lexeme::Other),
            }
            i += 1;
        }
    }
    out
}

fn account_tokens(statement: &str) -> Vec<Tok> {
    lex(statement)
        .into_iter()
        .map(|l| match l {
            Lexeme::Word(n) | Lexeme::Quoted(_, n) => Tok::Name(n),
            Lexeme::At => Tok::At,
            Lexeme::Dot | Lexeme::Other => Tok::Other,
        })
        .collect()
}

/// The text inside quotes `q`: doubled quotes stand for one, and in strings the server's
/// backslash escapes are undone.
fn unquote(body: &str, q: u8) -> String {
    let q = q as char;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == q && chars.peek() == Some(&q) {
            chars.next();
            out.push(q);
        } else if c == '\\' && q != '`' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('0') => out.push('\0'),
                Some('b') => out.push('\u{8}'),
                Some('Z') => out.push('\u{1a}'),
                Some(e @ ('%' | '_')) => {
                    out.push('\\');
                    out.push(e);
                }
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[async_trait::async_trait]
impl RestoreTarget for MyTarget {
    fn connection(&self) -> Connection {
        Connection {
            engine: EngineKind::Mysql,
            host: self.listen.clone(),
            port: self.port,
            user: SUPERUSER.into(),
            password_file: Some(self.password_file.clone()),
            data_dir: layout(&self.dir).data,
        }
    }

    async fn load(
        &mut self,
        part: &PartPlan,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        match part.kind {
            PartKind::Globals => self.loader.load_grants(reader, &[]).await,
            PartKind::Database => self.loader.load_database(&part.name, reader).await,
            other => Err(Error::Other(format!(
                "a MariaDB restore cannot load part {:?} of kind {other:?}",
                part.name
            ))),
        }
    }

    async fn finish_load(&mut self) -> Result<()> {
        self.loader.load_views().await
    }

    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        self.loader.load_views().await?;
        let found = self.loader.count(|_| true).await?;
        let mut v = compare_stats(expected, &found);
        let (check_ok, check) = self.loader.check(None).await?;
        v.engine_check = check;
        v.failed_objects = self.loader.failed.clone();
        v.ok = v.mismatches.is_empty() && check_ok && v.failed_objects.is_empty();
        tracing::info!(dir = %self.dir.display(), tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "verification done");
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading parts and counting (fresh and live servers alike)
// ---------------------------------------------------------------------------------------------

/// Loads parts into one server, counts its rows and runs `mariadb-check`: the part of a
/// restore that a fresh server ([`MyTarget`]) and the live server ([`MyInPlace`]) share.
struct Loader {
    tools: MyTools,
    /// How the agent reaches the server.
    ep: Endpoint,
    /// Replace databases (the live server): end their sessions and drop them before loading.
    replace: bool,
    /// Object-level grants waiting for their database: (database, SQL).
    waiting_grants: Vec<(String, String)>,
    /// The final view definitions of the databases loaded, waiting until every database is
    /// there (a view may read another database's tables): (database, the dump's script).
    waiting_views: Vec<(String, Vec<u8>)>,
    /// What the statements of database dumps that failed were to create or fill, and why
    /// (the rest of each dump was loaded).
    failed: Vec<FailedObject>,
    /// For log lines: the service (in place; empty for a fresh server) and the server's
    /// folder (a fresh server's; empty in place).
    service: String,
    dir: PathBuf,
}

impl Loader {
    /// The client (in `--binary-mode`, see [`Endpoint::client`]) for loading: it stops at the
    /// first error.
    fn client(&self) -> Result<ToolCommand> {
        let mut cmd = self.ep.client(&self.tools)?;
        cmd.arg(MAX_PACKET);
        Ok(cmd)
    }

    /// Applies the grants part (its statements are `IF NOT EXISTS` or repeatable, so accounts
    /// that exist are fine) except the statements naming an account of `skip` (user, host);
    /// object-level grants wait for their database.
    async fn load_grants(
        &mut self,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
        skip: &[(String, String)],
    ) -> Result<()> {
        let mut text = Vec::new();
        (&mut reader)
            .take(MAX_GRANTS_PART as u64 + 1)
            .read_to_end(&mut text)
            .await
            .map_err(|source| Error::Stream {
                what: "receiving the grants part".into(),
                source,
            })?;
        if text.len() > MAX_GRANTS_PART {
            return Err(Error::Other(format!(
                "the grants part is larger than {} MiB; this restore cannot hold it",
                MAX_GRANTS_PART >> 20
            )));
        }
        let text = String::from_utf8(text).map_err(|_| {
            Error::Other(
                "the grants part is not UTF-8: it is damaged or was not made by \
                 strongbox-agent; restore without it or from another backup"
                    .into(),
            )
        })?;
        let (now, waiting) = split_grants(&text, skip)?;
        self.client()?
            .output_with_input(format!("{SESSION_MODE}{now}").as_bytes())
            .await?;
        self.waiting_grants.extend(waiting);
        tracing::info!(service = %self.service, dir = %self.dir.display(), "grants applied");
        Ok(())
    }

    /// Loads a database's dump (which creates the database), then its object-level grants.
    /// When replacing, the database's sessions are ended and it is dropped first.
    async fn load_database(
        &mut self,
        db: &str,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        if self.replace {
            self.drop_database(db).await?;
        }
        let (views, failed) = self.feed_dump(db, reader).await?;
        self.note_failures(db, failed);
        if let Some(views) = views {
            self.waiting_views.push((db.to_string(), views));
        }
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_grants)
            .into_iter()
            .partition(|(d, _)| d == db);
        self.waiting_grants = others;
        for (_, sql) in mine {
            self.client()?
                .output_with_input(format!("{SESSION_MODE}{sql}").as_bytes())
                .await?;
        }
        tracing::info!(service = %self.service, dir = %self.dir.display(), database = ?db, "database restored");
        Ok(())
    }

    /// Feeds a database's dump to the client, all but its views' final definitions (see
    /// [`ViewSplit`]), which it returns, with the statements that failed.
    async fn feed_dump(
        &self,
        db: &str,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<(Option<Vec<u8>>, Vec<FailedObject>)> {
        enum Stop {
            Input(std::io::Error),
            Split(String),
            Closed,
        }
        let mut forced = Forced::start(&self.tools, &self.ep)?;
        let mut split = ViewSplit::new();
        let mut buf = vec![0u8; 64 * 1024];
        let fed = loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(Stop::Input(e)),
            };
            let now = match split.push(&buf[..n]) {
                Ok(now) => now,
                Err(e) => break Err(Stop::Split(e)),
            };
            if !forced.write(&now).await {
                break Err(Stop::Closed);
            }
        };
        let (rest, views) = split.finish();
        let fed = match fed {
            Ok(()) if !forced.write(&rest).await => Err(Stop::Closed),
            other => other,
        };
        match fed {
            Ok(()) => Ok((views, forced.finish().await?)),
            Err(Stop::Closed) => {
                forced.finish().await?;
                Err(Error::Other(format!(
                    "`mariadb` exited before it read all of the dump of database {db:?}"
                )))
            }
            Err(Stop::Input(source)) => {
                forced.abort().await;
                Err(Error::Stream {
                    what: format!("reading the dump of database {db:?}"),
                    source,
                })
            }
            Err(Stop::Split(why)) => {
                forced.abort().await;
                Err(Error::Other(format!(
                    "the dump of database {db:?} cannot be restored here: {why}"
                )))
            }
        }
    }

    /// Creates the views of every database loaded (their final definitions), now that all
    /// their tables are there; a view that cannot be created is noted and the others go on.
    async fn load_views(&mut self) -> Result<()> {
        for (db, script) in std::mem::take(&mut self.waiting_views) {
            let mut forced = Forced::start(&self.tools, &self.ep)?;
            if !forced.write(&script).await {
                forced.finish().await?;
                return Err(Error::Other(format!(
                    "`mariadb` exited before it read the views of database {db:?}"
                )));
            }
            let failed = forced.finish().await?;
            self.note_failures(&db, failed);
            tracing::info!(service = %self.service, dir = %self.dir.display(), database = ?db, "views created");
        }
        Ok(())
    }

    fn note_failures(&mut self, db: &str, failed: Vec<FailedObject>) {
        if failed.is_empty() {
            return;
        }
        tracing::warn!(service = %self.service, dir = %self.dir.display(), database = ?db, failed = failed.len(), "statements of the dump failed; the rest of it was loaded");
        self.failed.extend(failed.into_iter().map(|f| FailedObject {
            name: format!("{db}: {}", f.name),
            reason: f.reason,
        }));
    }

    /// Kills the other sessions whose default database is `db`, then drops it (waiting at
    /// most [`DROP_LOCK_WAIT`] for a lock another session holds on one of its tables).
    async fn drop_database(&self, db: &str) -> Result<()> {
        let sessions = self
            .ep
            .query(
                &self.tools,
                &format!(
                    "SELECT ID FROM information_schema.PROCESSLIST \
                     WHERE HEX(DB) = {} AND ID <> CONNECTION_ID()",
                    hex_literal(db)
                ),
            )
            .await?;
        let ids: Vec<u64> = sessions
            .iter()
            .filter_map(|r| r.first()?.parse().ok())
            .collect();
        if !ids.is_empty() {
            let script: String = ids
                .iter()
                .map(|id| format!("KILL CONNECTION {id};\n"))
                .collect();
            // --force: a session that ended meanwhile is no reason to stop (the script holds
            // numbers only).
            let mut cmd = self.ep.client(&self.tools)?;
            cmd.arg("--force");
            let out = cmd.capture_with_input(script.as_bytes()).await?;
            if !out.success {
                tracing::warn!(service = %self.service, dir = %self.dir.display(), database = ?db, problems = %out.stderr, "some sessions could not be killed");
            }
            tracing::info!(service = %self.service, dir = %self.dir.display(), database = ?db, sessions = ids.len(), "sessions of the database ended");
        }
        // Foreign keys from other databases into this one do not stop the drop: the backup's
        // dump makes this database again, and mariadb-dump loads with the checks off too.
        let sql = format!(
            "SET SESSION lock_wait_timeout = {DROP_LOCK_WAIT};\nSET SESSION foreign_key_checks = 0;\n\
             DROP DATABASE IF EXISTS {};\n",
            quote_ident(db)
        );
        let hint = |message: &str| {
            if message.contains("ERROR 1205") || message.to_ascii_lowercase().contains("lock wait")
            {
                " - a lock wait timeout means another session holds a table of it in an open \
                 transaction: end that session (SHOW PROCESSLIST, KILL) and retry"
            } else {
                ""
            }
        };
        self.ep
            .query(&self.tools, &sql)
            .await
            .map_err(|e| match e {
                Error::Database {
                    engine,
                    target,
                    message,
                } => Error::Database {
                    engine,
                    target,
                    message: format!(
                        "dropping database {db:?} to replace it failed: {message}{}",
                        hint(&message)
                    ),
                },
                other => other,
            })?;
        tracing::info!(service = %self.service, dir = %self.dir.display(), database = ?db, "database dropped to be replaced");
        Ok(())
    }

    /// Exact row counts (`<db>.<table>`) of the base tables of the databases `include` says
    /// yes to (system databases never).
    async fn count(&self, include: impl Fn(&str) -> bool) -> Result<HashMap<String, u64>> {
        let tables = self
            .ep
            .query(
                &self.tools,
                "SELECT HEX(TABLE_SCHEMA), HEX(TABLE_NAME), TABLE_TYPE FROM information_schema.TABLES \
                 WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND TABLE_SCHEMA NOT IN \
                 ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2",
            )
            .await?;
        let mut names = Vec::new();
        let mut script = String::new();
        for (i, r) in tables.iter().enumerate() {
            if r.len() < 3 {
                continue;
            }
            let (db, table) = (unhex(&r[0])?, unhex(&r[1])?);
            if !include(&db) {
                continue;
            }
            // A system-versioned table counts its history too, as its dump does.
            let history = if r[2] == "SYSTEM VERSIONED" {
                " FOR SYSTEM_TIME ALL"
            } else {
                ""
            };
            script.push_str(&format!(
                "SELECT {i}, COUNT(*) FROM {}.{}{history};\n",
                quote_ident(&db),
                quote_ident(&table)
            ));
            names.push((i, format!("{db}.{table}")));
        }
        let mut found: HashMap<String, u64> = HashMap::new();
        if !script.is_empty() {
            let counts: HashMap<usize, u64> = self
                .ep
                .query(&self.tools, &script)
                .await?
                .iter()
                .filter_map(|r| Some((r.first()?.parse().ok()?, r.get(1)?.parse().ok()?)))
                .collect();
            for (i, name) in names {
                if let Some(n) = counts.get(&i) {
                    found.insert(name, *n);
                }
            }
        }
        Ok(found)
    }

    /// `mariadb-check` over every database (`None`) or over `databases`: (ok, what it said,
    /// plus the object-level grants that found no database).
    async fn check(&self, databases: Option<&[String]>) -> Result<(bool, String)> {
        let (ok, mut text) = self.run_check(databases).await?;
        if !self.waiting_grants.is_empty() {
            let dbs: Vec<&str> = self
                .waiting_grants
                .iter()
                .map(|(d, _)| d.as_str())
                .collect();
            text.push_str(&format!(
                "\nobject-level grants on databases not in this restore were not applied: {dbs:?}"
            ));
        }
        Ok((ok, text))
    }

    async fn run_check(&self, databases: Option<&[String]>) -> Result<(bool, String)> {
        let tool = match self.tools.path(&["mariadb-check", "mysqlcheck"]) {
            Ok(t) => t,
            Err(e) => return Ok((false, format!("mariadb-check could not run: {e}"))),
        };
        let mut cmd = self.ep.command(&tool);
        cmd.arg("--silent");
        match databases {
            None => {
                cmd.arg("--all-databases");
            }
            Some([]) => return Ok((true, "mariadb-check: no databases restored".to_string())),
            Some(dbs) => {
                // After `--`, every name is a database, even `-Ah2130706434`.
                cmd.args(["--databases", "--"]).args(dbs);
            }
        }
        let out = cmd.capture().await?;
        let text = out.stdout.trim().to_string();
        if out.success && text.is_empty() {
            Ok((true, "mariadb-check: all tables OK".to_string()))
        } else {
            Ok((
                false,
                format!("mariadb-check ({}): {text}\n{}", out.status, out.stderr),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// In-place restore: the service's own server
// ---------------------------------------------------------------------------------------------

/// The service's own (live) server as a restore's target ([`Engine::in_place`]).
pub struct MyInPlace {
    service: String,
    connection: Connection,
    /// Reaches the server as the service's configured user, replacing databases.
    loader: Loader,
    /// The agent's own account as (user, host), which the grants part leaves alone: every
    /// split of `CURRENT_USER()` at an `@` (a user name may hold one), so it is never missed.
    me: Vec<(String, String)>,
    /// The database parts loaded so far.
    loaded: Vec<String>,
}

impl Mysql {
    /// The live server as a restore target: checks that it answers and is no replica.
    async fn open_in_place(&self) -> Result<MyInPlace> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let probe = self.probe().await?;
        if !probe.healthy {
            return Err(Error::Database {
                engine: "MariaDB",
                target: ep.target.clone(),
                message: "the server does not answer: check that it runs and that \
                          host/port/socket in the service's config are right"
                    .into(),
            });
        }
        if probe.role == Role::Replica {
            return Err(Error::Other(format!(
                "{} is read-only or replicates from another server: run the in-place restore \
                 of service {} on its primary",
                ep.target, self.spec.name
            )));
        }
        let me = ep
            .query(&self.tools, "SELECT HEX(CURRENT_USER())")
            .await?
            .first()
            .and_then(|r| r.first())
            .map(|h| unhex(h))
            .transpose()?
            .unwrap_or_default();
        let mut me: Vec<(String, String)> = me
            .match_indices('@')
            .map(|(at, _)| (me[..at].to_string(), me[at + 1..].to_string()))
            .collect();
        if me.is_empty() {
            return Err(Error::Database {
                engine: "MariaDB",
                target: ep.target.clone(),
                message: "CURRENT_USER() named no user@host: the in-place restore cannot tell \
                          which account to leave alone; check the service's user"
                    .into(),
            });
        }
        me.dedup();
        let host = self.spec.host.clone().unwrap_or_else(|| {
            if self.spec.port.is_some() {
                "127.0.0.1".into()
            } else {
                "localhost".into()
            }
        });
        let port = self
            .spec
            .port
            .unwrap_or(if host.starts_with('/') { 0 } else { 3306 });
        tracing::info!(service = %self.spec.name, server = %ep.target, "in-place restore into the live MariaDB server");
        Ok(MyInPlace {
            service: self.spec.name.clone(),
            connection: Connection {
                engine: EngineKind::Mysql,
                host,
                port,
                user: self
                    .spec
                    .user
                    .clone()
                    .unwrap_or_else(|| SUPERUSER.to_string()),
                password_file: self.spec.password_file.clone(),
                data_dir: PathBuf::new(),
            },
            loader: Loader {
                tools: self.tools.clone(),
                ep,
                replace: true,
                waiting_grants: Vec::new(),
                waiting_views: Vec::new(),
                failed: Vec::new(),
                service: self.spec.name.clone(),
                dir: PathBuf::new(),
            },
            me,
            loaded: Vec::new(),
        })
    }
}

#[async_trait::async_trait]
impl RestoreTarget for MyInPlace {
    /// The live server as the service's config names it; `data_dir` is empty (the server's
    /// data folder is not the agent's to name).
    fn connection(&self) -> Connection {
        self.connection.clone()
    }

    async fn load(
        &mut self,
        part: &PartPlan,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        match part.kind {
            PartKind::Globals => self.loader.load_grants(reader, &self.me).await,
            PartKind::Database => {
                self.loader.load_database(&part.name, reader).await?;
                self.loaded.push(part.name.clone());
                Ok(())
            }
            other => Err(Error::Other(format!(
                "a MariaDB restore cannot load part {:?} of kind {other:?}",
                part.name
            ))),
        }
    }

    /// Counts and checks the databases of the backup only (those loaded, or named in
    /// `expected`): the live server may hold others.
    async fn finish_load(&mut self) -> Result<()> {
        self.loader.load_views().await
    }

    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        self.loader.load_views().await?;
        let loaded = &self.loaded;
        let found = self
            .loader
            .count(|db: &str| super::in_backup(db, loaded, expected))
            .await?;
        let mut v = compare_stats(expected, &found);
        let (check_ok, check) = self.loader.check(Some(&self.loaded)).await?;
        v.engine_check = check;
        v.failed_objects = self.loader.failed.clone();
        v.ok = v.mismatches.is_empty() && check_ok && v.failed_objects.is_empty();
        tracing::info!(service = %self.service, tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "in-place verification done");
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading a dump past the statements that fail
// ---------------------------------------------------------------------------------------------

/// Most bytes of the client's error output kept from one forced load.
const MAX_LOAD_ERRORS: usize = 4 << 20;
/// Most characters of a failed statement shown.
const STATEMENT_SHOWN: usize = 300;

/// The client loading a database's dump with `--force`: a statement that fails (an object
/// that cannot come back) is reported and the client goes on with the next one. Only dumps
/// are loaded this way; every script of ours stops at its first error. `--skip-reconnect`: a
/// lost connection is not papered over, and it fails the load (as any client error does).
struct Forced {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

impl Forced {
    fn start(tools: &MyTools, ep: &Endpoint) -> Result<Forced> {
        let program = tools.client()?;
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("--no-defaults")
            .args(&ep.args)
            .args([
                "--connect-timeout=10",
                "--binary-mode",
                MAX_PACKET,
                "--force",
                "--skip-reconnect",
            ])
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(pw) = &ep.password {
            cmd.env("MYSQL_PWD", pw);
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            tool: "mariadb".into(),
            source,
        })?;
        let stdin = child.stdin.take();
        let mut err = child.stderr.take();
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            if let Some(err) = err.as_mut() {
                let mut buf = [0u8; 8192];
                loop {
                    match err.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let room = MAX_LOAD_ERRORS.saturating_sub(kept.len());
                            kept.extend_from_slice(&buf[..n.min(room)]);
                        }
                    }
                }
            }
            kept
        });
        Ok(Forced {
            child,
            stdin,
            stderr,
        })
    }

    /// Writes `data` to the client; false when it stopped reading.
    async fn write(&mut self, data: &[u8]) -> bool {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(data).await.is_ok(),
            None => false,
        }
    }

    /// Ends the input and waits: the statements that failed, each with its error. A client
    /// error (the connection lost, a client that failed without saying which statement) is
    /// an error of the whole load.
    async fn finish(mut self) -> Result<Vec<FailedObject>> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        let status = self.child.wait().await.map_err(|source| Error::Spawn {
            tool: "mariadb".into(),
            source,
        })?;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&stderr);
        let (failed, client_error) = parse_forced_errors(&text);
        if client_error || (!status.success() && failed.is_empty()) {
            let tail = text.len().saturating_sub(4096);
            let tail = text
                .char_indices()
                .find(|(i, _)| *i >= tail)
                .map_or(0, |(i, _)| i);
            return Err(Error::Tool {
                tool: "mariadb".into(),
                status: status.to_string(),
                stderr: text[tail..].trim().to_string(),
            });
        }
        if stderr.len() >= MAX_LOAD_ERRORS {
            let mut failed = failed;
            failed.push(FailedObject {
                name: "more statements".into(),
                reason: format!(
                    "the client's errors outgrew the {} MiB kept: more statements failed",
                    MAX_LOAD_ERRORS >> 20
                ),
            });
            return Ok(failed);
        }
        Ok(failed)
    }

    /// Kills the client before its input ends, so it cannot take a cut-off dump for a
    /// whole one.
    async fn abort(mut self) {
        let _ = self.child.kill().await;
        drop(self.stdin.take());
    }
}

/// The failed statements in the error output of `mariadb --force` (each one as the client
/// shows it: the statement between lines of dashes, a blank line, then
/// `ERROR <code> (<state>) at line <n>: <message>`), each as what it was to create or fill
/// ([`statement_object`]) and `<error>; statement: <its start>`, and whether a client error
/// (`ERROR 2xxx`: the connection, not a statement) was among them.
fn parse_forced_errors(text: &str) -> (Vec<FailedObject>, bool) {
    const DASHES: &str = "--------------\n";
    const END: &str = "\n--------------\n\nERROR ";
    let mut failed = Vec::new();
    let mut client_error = false;
    let mut rest = text;
    while !rest.is_empty() {
        let (statement, error_line, next) = if let Some(body) = rest.strip_prefix(DASHES) {
            match body.find(END) {
                Some(at) => {
                    let after = &body[at + END.len() - "ERROR ".len()..];
                    let eol = after.find('\n').map_or(after.len(), |n| n + 1);
                    (Some(&body[..at]), &after[..eol], &after[eol..])
                }
                None => {
                    let eol = rest.find('\n').map_or(rest.len(), |n| n + 1);
                    (None, &rest[..eol], &rest[eol..])
                }
            }
        } else {
            let eol = rest.find('\n').map_or(rest.len(), |n| n + 1);
            (None, &rest[..eol], &rest[eol..])
        };
        rest = next;
        let error_line = error_line.trim();
        let Some(code) = error_line.strip_prefix("ERROR ") else {
            continue;
        };
        if code.starts_with('2') {
            client_error = true;
        }
        let mut reason = error_line.to_string();
        let mut name = "a statement".to_string();
        if let Some(statement) = statement {
            let statement = statement.trim();
            name = statement_object(statement);
            let mut head: String = statement.chars().take(STATEMENT_SHOWN).collect();
            if head.len() < statement.len() {
                head.push_str("...");
            }
            reason.push_str(&format!("; statement: {head}"));
        }
        failed.push(FailedObject { name, reason });
    }
    (failed, client_error)
}

/// What a dump's statement creates or fills, to name a failed object: its kind and
/// (backquoted) name, e.g. ``VIEW `big_orders` ``, ``TABLE DATA `t` `` (an `INSERT`),
/// ``TRIGGER `db`.`tr` ``; else `statement <first word>`. Keywords are bare words only:
/// a quoted name or a string never counts as one.
fn statement_object(statement: &str) -> String {
    #[derive(PartialEq)]
    enum T {
        Word(String),
        Name(String),
        Dot,
        Other,
    }
    let toks: Vec<T> = lex(statement)
        .into_iter()
        .map(|l| match l {
            Lexeme::Word(w) => T::Word(w),
            Lexeme::Quoted(b'`', n) => T::Name(n),
            Lexeme::Dot => T::Dot,
            Lexeme::Quoted(..) | Lexeme::At | Lexeme::Other => T::Other,
        })
        .collect();
    let word = |t: Option<&T>, w: &str| matches!(t, Some(T::Word(x)) if x.eq_ignore_ascii_case(w));
    let kinds = [
        ("VIEW", "VIEW"),
        ("TABLE", "TABLE"),
        ("INTO", "TABLE DATA"),
        ("PROCEDURE", "PROCEDURE"),
        ("FUNCTION", "FUNCTION"),
        ("TRIGGER", "TRIGGER"),
        ("EVENT", "EVENT"),
        ("SEQUENCE", "SEQUENCE"),
        ("DATABASE", "DATABASE"),
    ];
    for (at, t) in toks.iter().enumerate() {
        let Some((_, kind)) = kinds.iter().find(|(k, _)| word(Some(t), k)) else {
            continue;
        };
        let mut j = at + 1;
        if word(toks.get(j), "IF") {
            j += if word(toks.get(j + 1), "NOT") { 3 } else { 2 };
        }
        let mut parts = Vec::new();
        while let Some(T::Word(n) | T::Name(n)) = toks.get(j) {
            parts.push(quote_ident(n));
            if toks.get(j + 1) != Some(&T::Dot) {
                break;
            }
            j += 2;
        }
        if !parts.is_empty() {
            return format!("{kind} {}", parts.join("."));
        }
    }
    match toks.iter().find_map(|t| match t {
        T::Word(w) if !w.bytes().all(|c| c.is_ascii_digit()) => Some(w.to_uppercase()),
        _ => None,
    }) {
        Some(w) => format!("statement {w}"),
        None => "a statement".to_string(),
    }
}

/// Stops a server that [`provision`] made in `dir`: SIGTERM to the pid in its pid file (after
/// checking that pid is a MariaDB server), waiting up to two minutes, then SIGKILL. A server
/// that is not running is fine.
pub async fn teardown(dir: &Path) -> Result<()> {
    let l = layout(dir);
    let pid = match std::fs::read_to_string(&l.pid) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(pid) => pid,
            Err(_) => return Ok(()),
        },
        Err(_) => {
            // Started but not yet writing its pid file: find it by its folder.
            match find_server_pid(&l.data) {
                Some(pid) => pid,
                None => return Ok(()),
            }
        }
    };
    let is_ours = process::process_cmdline(pid)
        .map(|c| {
            (c.contains("mariadbd") || c.contains("mysqld"))
                && c.contains(&*l.data.to_string_lossy())
        })
        .unwrap_or(false);
    if !is_ours || !process::process_alive(pid) {
        return Ok(());
    }
    let target = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while process::process_alive(pid) {
        if Instant::now() >= deadline {
            tracing::warn!(dir = %dir.display(), pid, "MariaDB did not stop within {:?}; killing it", STOP_TIMEOUT);
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            let kill_deadline = Instant::now() + Duration::from_secs(10);
            while process::process_alive(pid) && Instant::now() < kill_deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(dir = %dir.display(), "MariaDB server stopped");
    Ok(())
}

/// The pid of a `mariadbd` whose command line names `data`.
fn find_server_pid(data: &Path) -> Option<u32> {
    let needle = format!("--datadir={}", data.display());
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            process::process_cmdline(*pid)
                .map(|c| c.split(' ').any(|a| a == needle))
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_grants_are_recognised() {
        let g = |l: &str| object_grant_database(l);
        assert_eq!(
            g("GRANT SELECT ON `shop`.`t` TO `app`@`%`"),
            Some("shop".into())
        );
        assert_eq!(
            g("GRANT SELECT (`id`), INSERT (`a`) ON `sh``op`.`t` TO `app`@`%`"),
            Some("sh`op".into())
        );
        assert_eq!(
            g("GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `app`@`%`"),
            Some("shop".into())
        );
        assert_eq!(g("GRANT ALL PRIVILEGES ON `shop`.* TO `app`@`%`"), None);
        assert_eq!(
            g("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AB'"),
            None
        );
        assert_eq!(g("GRANT `rr` TO `app`@`%`"), None);
        assert_eq!(g("GRANT PROXY ON ``@`%` TO `root`@`localhost`"), None);
        assert_eq!(g("GRANT SELECT ON `a ON b`.* TO `x`@`%`"), None);
        assert_eq!(g("SET DEFAULT ROLE `rr` FOR `app`@`%`"), None);
    }

    #[test]
    fn grants_split_by_database() {
        let text = "CREATE USER IF NOT EXISTS `a`@`%`;\nGRANT USAGE ON *.* TO `a`@`%`;\n\
            -- strongbox: after database 73686f70\nGRANT SELECT ON `shop`.`t` TO `a`@`%`;\n\
            -- strongbox: after database 78\nGRANT SELECT ON `x`.`u` TO `a`@`%`;\n";
        let (now, waiting) = split_grants(text, &[]).unwrap();
        assert_eq!(
            now,
            "CREATE USER IF NOT EXISTS `a`@`%`;\nGRANT USAGE ON *.* TO `a`@`%`;\n"
        );
        assert_eq!(
            waiting,
            vec![
                (
                    "shop".to_string(),
                    "GRANT SELECT ON `shop`.`t` TO `a`@`%`;\n".to_string()
                ),
                (
                    "x".to_string(),
                    "GRANT SELECT ON `x`.`u` TO `a`@`%`;\n".to_string()
                )
            ]
        );
    }

    #[test]
    fn the_agents_own_account_is_left_out_of_the_grants() {
        let text = "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*A';\n\
            CREATE USER IF NOT EXISTS `agent`@`localhost` IDENTIFIED BY PASSWORD '*B';\n\
            GRANT RELOAD ON *.* TO `agent`@`localhost`;\n\
            GRANT PROXY ON 'agent'@'localhost' TO `app`@`%`;\n\
            GRANT SELECT ON *.* TO `agent`@`%`;\n\
            GRANT SELECT ON *.* TO `a``agent`@`localhost`;\n";
        let me = [("agent".to_string(), "localhost".to_string())];
        assert_eq!(
            split_grants(text, &me).unwrap().0,
            "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*A';\n\
             GRANT SELECT ON *.* TO `agent`@`%`;\n\
             GRANT SELECT ON *.* TO `a``agent`@`localhost`;\n"
        );
    }

    /// Names with line breaks, markers, `;`, comment starters and quotes stay inside their
    /// statement: nothing of them becomes a marker, a statement or a skipped line.
    #[test]
    fn hostile_names_stay_inside_their_statement() {
        let evil = "x\n-- strongbox: after database 78\nGRANT ALL ON *.* TO x;\n# ;";
        let q = quote_ident(evil);
        let me = [("agent".to_string(), "localhost".to_string())];
        let text = format!(
            "-- header\n{SESSION_MODE}CREATE ROLE IF NOT EXISTS {q};\n\
             CREATE USER IF NOT EXISTS {q}@`%` IDENTIFIED BY PASSWORD '*A;\\'\n-- ';\n\
             GRANT {q} TO {q}@`%`;\n\
             CREATE USER IF NOT EXISTS `agent\n`@`localhost`;\n\
             GRANT SELECT ON *.* TO `y`@`x\n``agent``@``localhost`;\n\
             {AFTER_DATABASE}{}\nGRANT SELECT ON {q}.{q} TO {q}@`%`;\n\
             /* a comment; */ /*!40101 SET @a = 1 */;\n",
            hex::encode(evil)
        );
        let (now, waiting) = split_grants(&text, &me).unwrap();
        assert_eq!(
            now,
            format!(
                "{SESSION_MODE}CREATE ROLE IF NOT EXISTS {q};\n\
                 CREATE USER IF NOT EXISTS {q}@`%` IDENTIFIED BY PASSWORD '*A;\\'\n-- ';\n\
                 GRANT {q} TO {q}@`%`;\n\
                 CREATE USER IF NOT EXISTS `agent\n`@`localhost`;\n\
                 GRANT SELECT ON *.* TO `y`@`x\n``agent``@``localhost`;\n"
            )
        );
        assert_eq!(
            waiting,
            vec![(
                evil.to_string(),
                format!("GRANT SELECT ON {q}.{q} TO {q}@`%`;\n/*!40101 SET @a = 1 */;\n")
            )]
        );
        // Accounts are compared unquoted, whatever the quotes.
        let evil_me = [(evil.to_string(), "%".to_string())];
        let (now, waiting) = split_grants(&text, &evil_me).unwrap();
        assert_eq!(
            now,
            format!(
                "{SESSION_MODE}CREATE ROLE IF NOT EXISTS {q};\n\
                 CREATE USER IF NOT EXISTS `agent\n`@`localhost`;\n\
                 GRANT SELECT ON *.* TO `y`@`x\n``agent``@``localhost`;\n"
            )
        );
        assert_eq!(waiting[0].1, "/*!40101 SET @a = 1 */;\n");
        assert!(names_account(
            "GRANT PROXY ON 'it\\'s\\n'@\"h\" TO x",
            &[("it's\n".into(), "h".into())]
        ));
    }

    #[test]
    fn damaged_grants_parts_are_refused() {
        for text in [
            "GRANT SELECT ON *.* TO `a`@`%`",
            "GRANT SELECT ON *.* TO `a@`%`;\n",
            "CREATE USER 'a\\';\n",
            "/* open;\n",
            "-- strongbox: after database zz\nGRANT SELECT ON *.* TO `a`@`%`;\n",
        ] {
            let err = split_grants(text, &[]).unwrap_err().to_string();
            assert!(err.contains("damaged"), "{text:?}: {err}");
        }
    }

    #[test]
    fn forced_load_errors_name_their_statements() {
        let text = "--------------\n/*!50001 VIEW `v` AS select 1 from `b`.`t` */\n\
            --------------\n\nERROR 1146 (42S02) at line 38: Table 'b.t' doesn't exist\n\
            --------------\nINSERT INTO `x\n--------------\n` VALUES (1)\n--------------\n\n\
            ERROR 1142 (42000) at line 40: INSERT command denied\n";
        let (failed, client) = parse_forced_errors(text);
        assert!(!client);
        let failed: Vec<(&str, &str)> = failed
            .iter()
            .map(|f| (f.name.as_str(), f.reason.as_str()))
            .collect();
        assert_eq!(
            failed,
            [
                (
                    "VIEW `v`",
                    "ERROR 1146 (42S02) at line 38: Table 'b.t' doesn't exist; statement: \
                     /*!50001 VIEW `v` AS select 1 from `b`.`t` */"
                ),
                (
                    "TABLE DATA `x\n--------------\n`",
                    "ERROR 1142 (42000) at line 40: INSERT command denied; statement: \
                     INSERT INTO `x\n--------------\n` VALUES (1)"
                ),
            ]
        );
        for (statement, object) in [
            (
                "/*!50003 CREATE*/ /*!50017 DEFINER=`view`@`localhost`*/ /*!50003 trigger a.tr before insert on t",
                "TRIGGER `a`.`tr`",
            ),
            ("CREATE TABLE IF NOT EXISTS `TABLE` (x INT)", "TABLE `TABLE`"),
            ("CREATE DEFINER=`root`@`%` PROCEDURE `p`()", "PROCEDURE `p`"),
            ("SET @a = 'VIEW x'", "statement SET"),
        ] {
            assert_eq!(statement_object(statement), object, "{statement}");
        }
        let (failed, client) =
            parse_forced_errors("ERROR 2013 (HY000) at line 9: Lost connection to server\n");
        assert!(client);
        assert_eq!(failed.len(), 1);
        let long = format!(
            "--------------\nINSERT INTO `t` VALUES {}\n--------------\n\nERROR 1 (x) at line 1: e\n",
            "(1),".repeat(1000)
        );
        let (failed, _) = parse_forced_errors(&long);
        assert!(
            failed[0].reason.ends_with("...") && failed[0].reason.len() < STATEMENT_SHOWN + 100
        );
    }

    #[test]
    fn batch_fields_are_unescaped() {
        assert_eq!(unescape_batch(r"a\tb\nc\\d\0"), "a\tb\nc\\d\0");
        assert_eq!(
            parse_rows("1\tx\\ty\n\n2\tz\n"),
            vec![vec!["1", "x\ty"], vec!["2", "z"]]
        );
    }

    #[test]
    fn native_password_hash_matches_mariadb() {
        // SELECT PASSWORD('pw') on MariaDB.
        assert_eq!(
            native_password_hash("pw"),
            "*D821809F681A40A6E379B50D0463EFAE20BDD122"
        );
    }
}
