//! PostgreSQL: probe a member, dump a cluster as parts (`globals`, then one per database),
//! provision a fresh cluster, load parts into it, verify it, stop it; or load parts into the
//! service's own live server (an in-place restore) and verify that.
//!
//! Invariants:
//! - **Consistent parts.** Each database part is `pg_dump --format=custom --compress=0
//!   --snapshot=<id>`, where the snapshot is exported by a `REPEATABLE READ READ ONLY`
//!   transaction that stays open until that part's dump has finished. The part's table stats
//!   (`<database>.<schema>.<table>`, exact rows) are counted from the archive itself as it
//!   streams by (`pgarchive`); a table the stream did not count, or every table when the
//!   archive could not be read, is counted with `count(*)` inside that same transaction. Either
//!   way they describe exactly the dumped rows, whatever writers do meanwhile.
//! - **Tools.** `spec.bin_dir` when configured (and nothing else then), else `PATH`, else the
//!   newest `/usr/lib/postgresql/<version>/bin`. Passwords reach them as `PGPASSWORD` only.
//! - **Fresh servers** live entirely under their folder: `data/` (PGDATA), `socket/` (the only
//!   unix socket, `trust` there; the folder is 0700 and belongs to the server's user),
//!   `postgres.log`, `superuser.password` (0600, the `postgres` superuser's password, which
//!   TCP connections need: `scram-sha-256`), and `pg_ctl.path` (which `pg_ctl` stops it). They
//!   run detached from the agent (`pg_ctl start`), as the `postgres` system user when the
//!   agent is root. The password reaches the server only as a SCRAM verifier computed here.
//! - **Loading** makes every database of the backup with `pg_restore --create`: a database
//!   the server has already (a fresh cluster's `postgres` and `template1`, which initdb made
//!   empty; in place, the live one) is dropped first (a template is made a plain database to
//!   be dropped; the dump makes it a template again). So everything about the database
//!   itself comes back too (see below). One loader (`Loader`) serves fresh clusters and the
//!   live server. A spooled part (and pg_restore's log) is removed after its load, also when
//!   the load fails.
//! - **A restore loads everything it can.** `pg_restore` runs without `--exit-on-error`;
//!   each object it fails on is read from its `--verbose` stderr (kept in a file beside the
//!   spool: the TOC entry it names, the server's error, `Command was: …`) and reported in
//!   [`Verification::failed_objects`], which makes `ok` false: the result is "restored with
//!   errors", not a failure of the whole restore. pg_restore stopping part way (it could not
//!   connect or read the archive: no `errors ignored on restore`) fails the load.
//! - **Verification reads; it leaves nothing behind and fires nothing of the user's.** On a
//!   fresh cluster, `pg_amcheck` needs the `amcheck` extension: where the backup did not
//!   have it, it is created for the check in a schema of its own and dropped with that
//!   schema right after, each in one transaction with `session_replication_role = replica`
//!   (ordinary event triggers do not fire then) and event triggers enabled `ALWAYS` or
//!   `REPLICA` disabled inside that transaction and enabled again before it commits. Row
//!   counts of a partitioned table are its root's total (the sum over its partitions): which
//!   partition holds a row may change on restore (hash partitioning on an enum, whose values
//!   get new OIDs), the rows do not.
//! - **Every database is in the backup, or the backup fails.** All databases but
//!   `template0` are dumped, `template1` included (its settings, comment, grants and
//!   objects). `template0` never is: initdb makes it the same everywhere, it refuses
//!   connections and must not be changed (pg_dumpall leaves it out too); nor is a database
//!   that a failed `DROP DATABASE` left invalid (`datconnlimit = -2`, nothing can connect).
//!   A database that refuses connections (`datallowconn = false`) fails the backup with an
//!   error naming it: dumping it would mean changing the source; allow connections, or list
//!   the databases to back up in `databases` (then only those are dumped).
//! - **Tablespaces** of a fresh cluster are made under its own folder,
//!   `<dir>/tablespaces/<name>` (0700, the server's user; a name that is no plain file name
//!   gets `~<n>`), whatever the source's location and whether or not this machine has it;
//!   owner, options, comments and grants come from the globals as dumped, and tables and
//!   indexes land in them by name. In place, a tablespace that exists is kept as it is.
//!
//! What a restore gives back: roles (with passwords when the backup was taken as a
//! superuser), role memberships and settings, tablespaces (relocated, as above), and per
//! database its objects, data, owner, encoding and locale, `ALTER DATABASE … SET` settings,
//! `ALTER ROLE … IN DATABASE … SET` settings, comment, security labels, connection limit,
//! template flag and grants. What it does not: cluster settings (`postgresql.conf`,
//! `ALTER SYSTEM`, `pg_hba.conf`, `pg_ident.conf`), which are no part of a logical backup;
//! `template0`; the contents of the source's tablespace locations as paths (only the
//! tablespaces' names and contents); statistics (`ANALYZE` after a restore), replication
//! slots, subscriptions' remote state and anything else `pg_dump`/`pg_dumpall` leave out;
//! objects `pg_restore` fails on, which are named in the verification.
//! - **In place** (the live server, reached as the service's configured user; never a
//!   replica): a database part replaces exactly that database (`DROP DATABASE ... WITH
//!   (FORCE)` ends its sessions, `pg_restore --create` makes it again, commits synchronous);
//!   databases not in the backup are never touched, nor counted. No role is ever dropped:
//!   the globals skip `CREATE ROLE` for roles that exist, and the role the agent connects as
//!   keeps its password and attributes. No extension is installed: `pg_amcheck` checks only
//!   restored databases that have `amcheck`, else the engine check is reported skipped. A
//!   tablespace that exists is not made again.
//! - **Names are data, never syntax.** A name from a database, the config or a request (a
//!   database, role, schema or table; it may start with `-`, hold newlines, quotes, `=` or
//!   backslashes) reaches a tool only through the environment (`PGHOST`, `PGUSER`, ...) or as
//!   the value inside one `--option=value` argument: databases as a libpq connection string
//!   `--dbname=dbname='…'` (`\` and `'` escaped with a backslash, `dbname_conninfo`, which
//!   libpq never reads as options or a URI), `pg_amcheck`'s databases as a double-quoted
//!   pattern `--database="…"` (`""` inside), which matches that one name literally. It
//!   reaches SQL only as a parameter (`$1`) or quoted by the server itself
//!   (`format('%I')`, `quote_ident`); SQL text is never edited. The agent's sessions go
//!   through tokio-postgres's API (names in the startup packet), no psql script.
//! - **The globals part is applied statement by statement.** It is parsed whole first
//!   (`globals::parse`: quotes, dollar quotes and comments as the server reads them; only
//!   the statements pg_dumpall writes); a statement is then left out whole by what it is
//!   and the role it names, compared with the server's `pg_roles` by the server, or sent
//!   alone through the extended protocol, which refuses a text holding two commands. A name
//!   can therefore never end a statement or start one, whatever it holds. On a fresh
//!   cluster, `CREATE TABLESPACE` is not sent: the server composes the statements that make
//!   the tablespace under the cluster's folder (`format('%I', '%L')`). A statement that
//!   fails is skipped and named as a failed object of the verification, fresh and in place
//!   (a restore loads everything it can); a part that does not parse applies nothing.
//!   (`pg_restore` runs through `/bin/sh -c 'exec "$0" "$@" 2>"$STRONGBOX_RESTORE_LOG"'`
//!   so its stderr goes to a file: names still reach it only as separate arguments.)
//! - **Names are UTF-8, or the backup fails.** A backup's parts and table stats are named in
//!   UTF-8, and its globals are dumped in UTF-8 (`PGCLIENTENCODING=UTF8`). A database, role
//!   or table whose name is not (possible with `SQL_ASCII`) fails the backup with an error
//!   naming it escaped (`\xe9`), before anything is dumped; it is never skipped silently.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strongbox_core::manifest::LeftOut;

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_postgres::{Client, NoTls};

use super::counting;
use super::pgarchive::ArchiveCounter;
use super::process::{self, SystemUser, ToolCommand};
use super::{
    compare_stats, BackupRun, Connection, Dump, Engine, EngineKind, FailedObject, PartKind,
    PartPlan, Probe, RestoreTarget, Role, ServiceSpec, TableStat, Verification,
};
use crate::error::{Error, Result};

/// Name of the superuser of a provisioned cluster.
pub const SUPERUSER: &str = "postgres";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a provisioned server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times provisioning retries with a new port when another process took it.
const PORT_ATTEMPTS: usize = 5;
/// Parallel jobs of `pg_restore`.
const RESTORE_JOBS: &str = "2";
/// Unix socket paths are limited to 107 bytes (`sun_path`).
const MAX_SOCKET_PATH: usize = 100;

/// SQL reading the name `$e` (a column of type `name`) as bytes (`bytea`), so that a name
/// that is not UTF-8 reaches the agent as data, to refuse by name, instead of failing the
/// query or the client's decoding: as stored in a `SQL_ASCII` or UTF-8 database, converted to
/// UTF-8 (the session's client encoding) in any other. (`convert_to` checks its input against
/// the database's encoding, so it reads bytes only in `SQL_ASCII`; `textsend` converts to the
/// client's encoding, which is nothing to do in a UTF-8 database.)
macro_rules! name_bytes {
    ($e:literal) => {
        concat!(
            "(CASE WHEN pg_catalog.getdatabaseencoding() = 'SQL_ASCII' \
             THEN pg_catalog.convert_to(",
            $e,
            "::text, 'SQL_ASCII') ELSE pg_catalog.textsend(",
            $e,
            "::text) END)"
        )
    };
}

/// Tables whose rows a part carries: plain tables (and partitions), not system, temporary or
/// extension-owned ones. Inheritance children are counted on their own (`ONLY`). Schema and
/// table come as bytes ([`name_bytes`]), then the two quoted by the server (`%I.%I`), then
/// the schema and table of the partitioned table at the root of a partition's tree (the table
/// itself when it is no partition): a partition's rows are counted towards its root, since a
/// restore keeps the rows of a partitioned table, not which partition holds each (hash
/// partitions of an enum, whose values get new OIDs, place rows anew).
const TABLES_SQL: &str = concat!(
    "SELECT ",
    name_bytes!("n.nspname"),
    ", ",
    name_bytes!("c.relname"),
    ", ",
    name_bytes!("pg_catalog.format('%I.%I', n.nspname, c.relname)"),
    ", ",
    name_bytes!("rn.nspname"),
    ", ",
    name_bytes!("r.relname"),
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.pg_class r ON r.oid = CASE WHEN c.relispartition \
        THEN pg_catalog.pg_partition_root(c.oid) ELSE c.oid END \
    JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
    WHERE c.relkind = 'r' AND c.relpersistence <> 't' \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                        AND d.objid = c.oid AND d.deptype = 'e') \
    ORDER BY 1, 2"
);

/// The databases of the cluster, as bytes ([`name_bytes`]), and whether each allows
/// connections: every one but `template0` (which initdb makes, which refuses connections and
/// which no one may change, so it is never dumped, as `pg_dumpall` never dumps it) and those
/// a failed `DROP DATABASE` left invalid (`datconnlimit = -2`, which nothing can connect to
/// either; `pg_dumpall` leaves them out too).
const DATABASES_SQL: &str = concat!(
    "SELECT ",
    name_bytes!("datname"),
    ", datallowconn FROM pg_catalog.pg_database \
     WHERE datname <> 'template0' AND datconnlimit <> -2 ORDER BY 1"
);

/// Every role, as bytes ([`name_bytes`]).
const ROLES_SQL: &str = concat!(
    "SELECT ",
    name_bytes!("rolname"),
    " FROM pg_catalog.pg_roles ORDER BY 1"
);

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Quoting
// ---------------------------------------------------------------------------------------------

/// `name` as an SQL identifier (`my"db` → `"my""db"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL string literal, right whatever `standard_conforming_strings` is: as the
/// server's own `quote_literal`, a value with a backslash becomes `E'…'` with backslashes
/// doubled.
pub fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// `value` as a quoted value of `postgresql.conf` (backslash escapes, doubled quotes). A
/// value cannot hold a line break there: that is an error.
fn conf_literal(value: &str) -> Result<String> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(Error::Other(format!(
            "{value:?} cannot be written into postgresql.conf (it holds a line break); choose \
             a listen address and data root without one"
        )));
    }
    Ok(format!(
        "'{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// A libpq connection string naming only the database, for `--dbname=`: safe for any name
/// (`-d <name>` would take a name starting with `-` for an option, and a name with `=` or
/// `postgresql://` for a connection string; the value inside quotes is never expanded).
fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A name read from the server as bytes (see [`name_bytes`]): the name, or its bytes when
/// they are not UTF-8.
fn utf8_name(bytes: Vec<u8>) -> std::result::Result<String, Vec<u8>> {
    String::from_utf8(bytes).map_err(|e| e.into_bytes())
}

/// A name's bytes for a message: printable ASCII as it is, every other byte `\xNN`, in
/// double quotes (`"latin1-\xe9t\xe9"`).
fn escaped(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

// ---------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------

/// How to reach one server: host (or socket folder), port, user, password.
#[derive(Clone)]
struct Endpoint {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

impl Endpoint {
    fn for_spec(spec: &ServiceSpec) -> Result<Endpoint> {
        let host = spec.host.clone().unwrap_or_else(|| {
            if Path::new("/var/run/postgresql").is_dir() {
                "/var/run/postgresql".to_string()
            } else {
                "/tmp".to_string()
            }
        });
        Ok(Endpoint {
            host,
            port: spec.port.unwrap_or(5432),
            user: spec.user.clone().unwrap_or_else(|| SUPERUSER.to_string()),
            password: spec.password()?,
        })
    }

    /// For messages: `host:port` (no password, ever).
    fn target(&self, db: &str) -> String {
        format!(
            "{}:{} (database {db:?}, user {:?})",
            self.host, self.port, self.user
        )
    }

    fn config(&self, db: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(db)
            .application_name("strongbox-agent")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(pw) = &self.password {
            c.password(pw.as_bytes());
        }
        c
    }

    /// Connects; the connection runs on its own task until the client is dropped.
    async fn connect(&self, db: &str) -> Result<Client> {
        self.connect_raw(db)
            .await
            .map_err(|e| pg_error(&self.target(db), &e))
    }

    async fn connect_raw(&self, db: &str) -> std::result::Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config(db).connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended with an error");
            }
        });
        Ok(client)
    }

    /// A client tool with PGHOST/PGPORT/PGUSER/PGPASSWORD set for this endpoint.
    fn tool(&self, tools: &PgTools, tool: &str) -> Result<ToolCommand> {
        Ok(self.with_env(tools.command(tool)?))
    }

    /// `cmd` with PGHOST/PGPORT/PGUSER/PGPASSWORD set for this endpoint.
    fn with_env(&self, mut cmd: ToolCommand) -> ToolCommand {
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string())
            .env("PGAPPNAME", "strongbox-agent");
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd
    }
}

/// A tokio-postgres error as `Error::Database`, with a hint for the usual causes.
fn pg_error(target: &str, e: &tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    let mut message = match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                m.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!(" (hint: {h})"));
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let text = s.to_string();
                if !m.contains(&text) {
                    m.push_str(&format!(": {text}"));
                }
                source = s.source();
            }
            m
        }
    };
    match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD => {
            message.push_str(" - check the password in the service's password_file or password_env")
        }
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => message
            .push_str(" - check the user name and that pg_hba.conf lets it connect from this host"),
        _ if e.as_db_error().is_none() && !e.is_closed() => message.push_str(
            " - check that the server runs and that host/port in the service's config are right",
        ),
        _ => {}
    }
    Error::Database {
        engine: "PostgreSQL",
        target: target.to_string(),
        message,
    }
}

/// A table whose rows a part carries.
struct TableName {
    schema: String,
    table: String,
    /// `schema.table` as the server quotes them, for SQL.
    quoted: String,
    /// The root of its partition tree (schema, table): itself when it is no partition.
    root: (String, String),
}

/// The tables whose rows a part carries (`TABLES_SQL`), in the client's current transaction.
/// A name that is not UTF-8 is an error naming it (escaped) and the database `db`.
async fn list_tables(client: &Client, db: &str, target: &str) -> Result<Vec<TableName>> {
    let rows = client
        .query(TABLES_SQL, &[])
        .await
        .map_err(|e| pg_error(target, &e))?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let column = |i: usize| -> Result<String> {
            let bytes: Vec<u8> = row.try_get(i).map_err(|e| pg_error(target, &e))?;
            utf8_name(bytes).map_err(|bytes| {
                Error::Other(format!(
                    "database {db:?} on {target} has a schema or table named {} (in \
                     SQL_ASCII), which is not UTF-8: strongbox names tables in UTF-8 and \
                     cannot back it up; rename it to UTF-8 (ALTER ... RENAME TO, in a \
                     session on that database), or leave the database out of the \
                     service's `databases`",
                    escaped(&bytes)
                ))
            })
        };
        tables.push(TableName {
            schema: column(0)?,
            table: column(1)?,
            quoted: column(2)?,
            root: (column(3)?, column(4)?),
        });
    }
    Ok(tables)
}

/// A database of the cluster ([`DATABASES_SQL`]).
struct ListedDatabase {
    /// Its name or, when that is not UTF-8, its bytes.
    name: std::result::Result<String, Vec<u8>>,
    allows_connections: bool,
}

/// The databases of the cluster but `template0` ([`DATABASES_SQL`]).
async fn list_databases(client: &Client, target: &str) -> Result<Vec<ListedDatabase>> {
    client
        .query(DATABASES_SQL, &[])
        .await
        .map_err(|e| pg_error(target, &e))?
        .iter()
        .map(|row| {
            Ok(ListedDatabase {
                name: utf8_name(row.try_get::<_, Vec<u8>>(0)?),
                allows_connections: row.try_get(1)?,
            })
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(|e| pg_error(target, &e))
}

/// Exact row counts of every table of the connected database, as `<db>.<schema>.<table>`, in
/// the client's current transaction; the partitions of a partitioned table are one count,
/// named after the root of their tree (see [`TABLES_SQL`]). `known` holds counts already
/// taken from the dump stream (by (schema, table)); only the other tables are counted with
/// `count(*)`. `partitions`: each partition's own count is listed too, after the roots
/// (verification, for backups recorded before partitions were counted towards their root).
async fn count_tables(
    client: &Client,
    db: &str,
    target: &str,
    known: &HashMap<(String, String), u64>,
    partitions: bool,
) -> Result<Vec<TableStat>> {
    let mut stats: Vec<TableStat> = Vec::new();
    let mut leaves: Vec<TableStat> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for t in list_tables(client, db, target).await? {
        let rows = match known.get(&(t.schema.clone(), t.table.clone())) {
            Some(n) => *n,
            None => {
                // The name is quoted by the server (`format('%I.%I')`).
                let sql = format!("SELECT count(*) FROM ONLY {}", t.quoted);
                let n: i64 = client
                    .query_one(sql.as_str(), &[])
                    .await
                    .map_err(|e| pg_error(target, &e))?
                    .try_get(0)
                    .map_err(|e| pg_error(target, &e))?;
                u64::try_from(n).unwrap_or(0)
            }
        };
        if partitions && t.root != (t.schema.clone(), t.table.clone()) {
            leaves.push(TableStat {
                name: format!("{db}.{}.{}", t.schema, t.table),
                rows,
            });
        }
        let name = format!("{db}.{}.{}", t.root.0, t.root.1);
        match at.get(&name) {
            Some(&i) => stats[i].rows += rows,
            None => {
                at.insert(name.clone(), stats.len());
                stats.push(TableStat { name, rows });
            }
        }
    }
    stats.extend(leaves);
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

/// A PostgreSQL service's member on this host.
pub struct Postgres {
    spec: ServiceSpec,
    tools: PgTools,
}

impl Postgres {
    pub fn new(spec: ServiceSpec) -> Result<Postgres> {
        if spec.path.is_some() {
            return Err(Error::Config {
                service: spec.name.clone(),
                message: "`path` is for SQLite services; a PostgreSQL service is reached with \
                          host and port"
                    .into(),
            });
        }
        let tools = PgTools::new(spec.bin_dir.as_deref()).map_err(|e| Error::Config {
            service: spec.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Postgres { spec, tools })
    }

    /// The database used for cluster-wide questions: `postgres`, or the first configured one.
    fn maintenance_db(&self) -> &str {
        match self.spec.databases.first() {
            Some(db) if !self.spec.databases.iter().any(|d| d == "postgres") => db,
            _ => "postgres",
        }
    }
}

#[async_trait::async_trait]
impl Engine for Postgres {
    fn kind(&self) -> EngineKind {
        EngineKind::Postgres
    }

    fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    async fn probe(&self) -> Result<Probe> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let db = self.maintenance_db();
        let client = match ep.connect_raw(db).await {
            Ok(c) => c,
            Err(e) => {
                let err = pg_error(&ep.target(db), &e);
                // The server answered and refused us: that is configuration to fix (a wrong
                // password, user, database or pg_hba.conf), unless it is starting or stopping.
                let starting =
                    e.code() == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW);
                if e.as_db_error().is_some() && !starting {
                    return Err(err);
                }
                tracing::warn!(service = %self.spec.name, error = %err, "PostgreSQL is unreachable");
                return Ok(Probe {
                    role: Role::Standalone,
                    healthy: false,
                    version: String::new(),
                });
            }
        };
        let row = match client
            .query_one(
                "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('server_version')",
                &[],
            )
            .await
        {
            Ok(row) => row,
            Err(e) => {
                tracing::warn!(service = %self.spec.name, error = %pg_error(&ep.target(db), &e), "PostgreSQL did not answer the probe");
                return Ok(Probe {
                    role: Role::Standalone,
                    healthy: false,
                    version: String::new(),
                });
            }
        };
        let (in_recovery, version): (bool, String) = match (row.try_get(0), row.try_get(1)) {
            (Ok(r), Ok(v)) => (r, v),
            (Err(e), _) | (_, Err(e)) => return Err(pg_error(&ep.target(db), &e)),
        };
        Ok(Probe {
            role: if in_recovery {
                Role::Replica
            } else {
                Role::Primary
            },
            healthy: true,
            version: version
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        })
    }

    async fn begin_backup(&self) -> Result<Box<dyn BackupRun>> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let db = self.maintenance_db();
        let target = ep.target(db);
        let client = ep.connect(db).await?;
        let listed = list_databases(&client, &target).await?;
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| pg_error(&target, &e))?
            .try_get(0)
            .map_err(|e| pg_error(&target, &e))?;
        // The globals part names every role, in UTF-8: a role whose name is not UTF-8 would
        // make pg_dumpall fail, or write a part no restore can apply.
        for row in client
            .query(ROLES_SQL, &[])
            .await
            .map_err(|e| pg_error(&target, &e))?
        {
            let name: Vec<u8> = row.try_get(0).map_err(|e| pg_error(&target, &e))?;
            if let Err(bytes) = utf8_name(name) {
                return Err(Error::Other(format!(
                    "{target} has a role named {}, which is not UTF-8 (made in a SQL_ASCII \
                     database): strongbox dumps roles in UTF-8 and cannot back up this \
                     cluster's roles; rename the role to UTF-8 (ALTER ROLE ... RENAME TO, \
                     in a session on a SQL_ASCII database) or drop it",
                    escaped(&bytes)
                )));
            }
        }
        let mut existing = Vec::with_capacity(listed.len());
        let mut not_utf8 = Vec::new();
        let mut fenced = Vec::new();
        for listed in listed {
            match listed.name {
                Ok(name) => {
                    if !listed.allows_connections {
                        fenced.push(name.clone());
                    }
                    existing.push(name);
                }
                Err(bytes) => not_utf8.push(escaped(&bytes)),
            }
        }
        // A database that refuses connections cannot be dumped without changing the source:
        // the backup fails naming it, never leaves it out silently.
        let refused: Vec<&String> = fenced
            .iter()
            .filter(|d| self.spec.databases.is_empty() || self.spec.databases.contains(d))
            .collect();
        if !refused.is_empty() {
            let names: Vec<String> = refused.iter().map(|d| format!("{d:?}")).collect();
            return Err(Error::Other(format!(
                "database {} on {target} does not allow connections (datallowconn = false), \
                 so it cannot be dumped: allow them (ALTER DATABASE ... ALLOW_CONNECTIONS \
                 true), or list the databases to back up in the service's `databases`",
                names.join(", ")
            )));
        }
        let databases = if self.spec.databases.is_empty() {
            if !not_utf8.is_empty() {
                return Err(Error::Other(format!(
                    "{target} has databases named {}, which are not UTF-8 (made in a \
                     SQL_ASCII database): strongbox names every database of a backup in \
                     UTF-8 and cannot back them up; rename them to UTF-8 (ALTER DATABASE \
                     ... RENAME TO, in a session on a SQL_ASCII database), or list the \
                     databases to back up in the service's `databases`",
                    not_utf8.join(", ")
                )));
            }
            existing.clone()
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
                        "databases {missing:?} (in `databases`) do not exist on {target} or do \
                         not allow connections; it has {existing:?}"
                    ),
                });
            }
            self.spec.databases.clone()
        };
        // What a configured subset leaves out, and why, for `backup show`.
        let listed = |d: &String| databases.contains(d);
        let mut left_out: Vec<LeftOut> = existing
            .iter()
            .filter(|d| !listed(d))
            .map(|d| LeftOut {
                name: d.clone(),
                why: if fenced.contains(d) {
                    "not in the service's `databases` (and it does not allow connections)".into()
                } else {
                    "not in the service's `databases`".into()
                },
            })
            .collect();
        left_out.extend(not_utf8.iter().map(|d| LeftOut {
            name: d.clone(),
            why: "its name is not UTF-8 (and it is not in the service's `databases`)".into(),
        }));
        if !superuser {
            tracing::warn!(service = %self.spec.name, user = %ep.user, "not a superuser: role passwords are left out of the globals part");
        }
        let mut parts = vec![PartPlan {
            name: "globals".into(),
            kind: PartKind::Globals,
        }];
        parts.extend(databases.into_iter().map(|name| PartPlan {
            name,
            kind: PartKind::Database,
        }));
        tracing::info!(service = %self.spec.name, parts = parts.len(), "PostgreSQL backup started");
        Ok(Box::new(PgBackup {
            service: self.spec.name.clone(),
            ep,
            tools: self.tools.clone(),
            parts,
            superuser,
            left_out,
        }))
    }

    async fn in_place(&self, scratch: &Path) -> Result<Box<dyn RestoreTarget>> {
        Ok(Box::new(self.open_in_place(scratch).await?))
    }
}

/// A backup in progress: each database part holds its own snapshot transaction while it is
/// dumped.
struct PgBackup {
    service: String,
    ep: Endpoint,
    tools: PgTools,
    parts: Vec<PartPlan>,
    superuser: bool,
    left_out: Vec<LeftOut>,
}

#[async_trait::async_trait]
impl BackupRun for PgBackup {
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
                let mut cmd = self.ep.tool(&self.tools, "pg_dumpall")?;
                // In UTF-8 whatever the server's encoding, as a restore applies it.
                cmd.env("PGCLIENTENCODING", "UTF8")
                    .args(["--globals-only", "--no-password"]);
                if !self.superuser {
                    cmd.arg("--no-role-passwords");
                }
                let streaming = cmd.spawn_stream()?;
                let exit = streaming.exit;
                Ok(Dump {
                    reader: Box::new(streaming.stdout),
                    tap: None,
                    finish: async move { exit.wait().await.map(|_| Vec::new()) }.boxed(),
                })
            }
            PartKind::Database => self.dump_database(&part.name).await,
            other => Err(Error::Other(format!(
                "a PostgreSQL backup has no part of kind {other:?}"
            ))),
        }
    }

    async fn close(self: Box<Self>) -> Result<()> {
        tracing::info!(service = %self.service, "PostgreSQL backup closed");
        Ok(())
    }
}

impl PgBackup {
    async fn dump_database(&self, db: &str) -> Result<Dump> {
        let target = self.ep.target(db);
        let client = self.ep.connect(db).await?;
        client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL row_security = off",
            )
            .await
            .map_err(|e| pg_error(&target, &e))?;
        let snapshot: String = client
            .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
            .await
            .map_err(|e| pg_error(&target, &e))?
            .try_get(0)
            .map_err(|e| pg_error(&target, &e))?;
        tracing::debug!(service = %self.service, database = db, %snapshot, "snapshot exported");

        let mut cmd = self.ep.tool(&self.tools, "pg_dump")?;
        cmd.args(["--format=custom", "--compress=0", "--no-password"])
            .arg(format!("--snapshot={snapshot}"))
            .arg(format!("--dbname={}", dbname_conninfo(db)));
        let streaming = cmd.spawn_stream()?;
        // Rows are counted from the archive as it streams by; a table the stream did not
        // count (or every table, should the archive not be readable) is counted with
        // `count(*)` in the snapshot's own transaction, still open until pg_dump finished.
        let (tap, counted) = counting::tap(ArchiveCounter::new());
        let exit = streaming.exit;
        let service = self.service.clone();
        let db = db.to_string();
        let finish = async move {
            let dumped = exit.wait().await;
            let streamed = match counted.await {
                Ok(Some(r)) => r,
                Ok(None) => Err("the stream was not read to its end".to_string()),
                Err(e) => Err(format!("the counting task failed: {e}")),
            };
            let known: HashMap<(String, String), u64> = match streamed {
                Ok(tables) => tables
                    .into_iter()
                    .map(|t| ((t.schema, t.table), t.rows))
                    .collect(),
                Err(why) => {
                    if dumped.is_ok() {
                        tracing::warn!(service = %service, database = %db, why, "could not count rows from the dump stream; counting with count(*)");
                    }
                    HashMap::new()
                }
            };
            let counted = match &dumped {
                Ok(_) => count_tables(&client, &db, &target, &known, false).await,
                Err(_) => Ok(Vec::new()),
            };
            // The snapshot may end only now that pg_dump has finished.
            let ended = client.batch_execute("COMMIT").await;
            dumped?;
            let stats = counted?;
            ended.map_err(|e| pg_error(&target, &e))?;
            tracing::info!(service = %service, database = %db, tables = stats.len(), from_stream = known.len(), "database dumped");
            Ok(stats)
        };
        Ok(Dump {
            reader: Box::new(streaming.stdout),
            tap: Some(tap),
            finish: finish.boxed(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Provisioning, loading, verifying
// ---------------------------------------------------------------------------------------------

/// A fresh cluster made by [`provision`].
pub struct PgTarget {
    dir: PathBuf,
    listen: String,
    port: u16,
    password_file: PathBuf,
    /// Reaches the cluster through its unix socket folder (`trust`) and spools under `dir`.
    loader: Loader,
    /// The flush of the loaded files to disk, once the load is finished.
    syncing: Option<tokio::task::JoinHandle<Result<()>>>,
}

struct Layout {
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    password: PathBuf,
    pg_ctl_path: PathBuf,
}

fn layout(dir: &Path) -> Layout {
    Layout {
        data: dir.join("data"),
        socket: dir.join("socket"),
        log: dir.join("postgres.log"),
        password: dir.join("superuser.password"),
        pg_ctl_path: dir.join("pg_ctl.path"),
    }
}

/// Makes a fresh cluster in `dir`: `initdb`, `scram-sha-256` on TCP, `trust` on its own socket
/// folder, started detached on `listen` and a free port; the `postgres` superuser's password
/// is in `<dir>/superuser.password`.
pub async fn provision(
    dir: &Path,
    listen: &str,
    bin_dir: Option<&Path>,
) -> Result<Box<dyn RestoreTarget>> {
    let tools = PgTools::new(bin_dir)?;
    let initdb = tools.path("initdb")?;
    let pg_ctl = tools.path("pg_ctl")?;
    let user = SystemUser::when_root("postgres", "PostgreSQL")?;
    let l = layout(dir);
    if l.socket.join(".s.PGSQL.65535").as_os_str().len() > MAX_SOCKET_PATH {
        return Err(Error::Other(format!(
            "the restore folder {} is too deep for a unix socket path (at most about {} bytes); \
             choose a shorter data root",
            dir.display(),
            MAX_SOCKET_PATH - 20
        )));
    }
    process::create_server_dir(dir, user.as_ref())?;
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    strongbox_core::private::create_dir(&l.socket, strongbox_core::private::PRIVATE_DIR)
        .map_err(|e| Error::Other(format!("creating the socket folder: {e}")))?;
    if let Some(u) = &user {
        u.chown(&l.socket)?;
    }
    strongbox_core::private::write_new(&l.pg_ctl_path, pg_ctl.as_os_str().as_encoded_bytes())
        .map_err(|e| Error::Other(format!("writing the pg_ctl path: {e}")))?;

    let mut cmd = ToolCommand::new(&initdb);
    cmd.arg("-D")
        .arg(&l.data)
        .args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .current_dir(dir)
        .run_as(user.as_ref());
    cmd.output().await?;

    // TCP needs the password; the socket folder (0700, the server's user) is the agent's way in.
    let hba = l.data.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "# written by strongbox-agent for a restored cluster\n\
         local all all trust\n\
         local replication all trust\n\
         host all all 0.0.0.0/0 scram-sha-256\n\
         host all all ::/0 scram-sha-256\n",
    )
    .map_err(io("writing", &hba))?;
    if let Some(u) = &user {
        u.chown(&hba)?;
    }
    write_load_settings(&l.data, user.as_ref())?;

    let password = process::random_password();
    process::write_secret_file(&l.password, &password)?;

    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = process::free_port(listen)?;
        append_conf(&l.data, listen, port, &l.socket)?;
        match pg_ctl_command(&pg_ctl, "start", dir, user.as_ref())
            .output()
            .await
        {
            Ok(_) => {
                let target = PgTarget {
                    dir: dir.to_path_buf(),
                    listen: listen.to_string(),
                    port,
                    password_file: l.password.clone(),
                    loader: Loader {
                        tools: tools.clone(),
                        ep: Endpoint {
                            host: l.socket.to_string_lossy().into_owned(),
                            port,
                            user: SUPERUSER.into(),
                            password: None,
                        },
                        admin_db: "postgres".into(),
                        spool_dir: dir.to_path_buf(),
                        spools: 0,
                        mode: Mode::Fresh,
                        failed: Vec::new(),
                        service: String::new(),
                    },
                    syncing: None,
                };
                if let Err(e) = target.finish_start(&password).await {
                    let _ = teardown(dir).await;
                    return Err(e);
                }
                tracing::info!(dir = %dir.display(), listen, port, "fresh PostgreSQL cluster running");
                return Ok(Box::new(target));
            }
            Err(e) => {
                let log = process::log_tail(&l.log, 20);
                if log.contains("Address already in use") || log.contains("could not bind") {
                    tracing::debug!(port, "port taken meanwhile; trying another");
                    last_error = Some(e);
                    continue;
                }
                return Err(Error::Other(format!(
                    "starting the fresh PostgreSQL cluster in {} failed: {e}; end of its log:\n{log}",
                    dir.display()
                )));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Other("no free port found".into())))
}

/// The file, in the data folder, of the settings a fresh cluster loads a restore under.
const LOAD_SETTINGS_FILE: &str = "strongbox-restore.conf";

/// Settings for loading a restore into a fresh cluster, as PostgreSQL's "Populating a
/// Database" and "Non-Durable Settings" advise: no flushes to disk, no full-page images, no WAL
/// for data loaded into tables the same restore created (`wal_level = minimal`), no
/// checkpoints part way, no autovacuum racing the load, and more memory for index builds. A
/// crash during the load loses nothing that matters: the restore starts over in a new folder.
/// [`PgTarget::finish_load`] removes them and restarts the cluster with PostgreSQL's defaults
/// before verification, then flushes every file to disk while verification runs; the restore
/// completes only once that flush is done, so what it delivers is durable and runs like any
/// other server.
const LOAD_SETTINGS: &str = "\
# Written by strongbox-agent while it loads a restore; removed, and the server restarted
# with its defaults and flushed to disk, once every part is loaded.
fsync = off
full_page_writes = off
synchronous_commit = off
wal_level = minimal
max_wal_senders = 0
archive_mode = off
autovacuum = off
max_wal_size = '16GB'
checkpoint_timeout = '1h'
maintenance_work_mem = '256MB'
";

/// Writes [`LOAD_SETTINGS`] and includes them from `postgresql.conf`.
fn write_load_settings(data: &Path, user: Option<&SystemUser>) -> Result<()> {
    use std::io::Write;
    let path = data.join(LOAD_SETTINGS_FILE);
    strongbox_core::private::write_new(&path, LOAD_SETTINGS.as_bytes())
        .map_err(|e| Error::Other(format!("writing the load settings: {e}")))?;
    if let Some(u) = user {
        u.chown(&path)?;
    }
    let conf = data.join("postgresql.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut f| f.write_all(load_settings_include().as_bytes()))
        .map_err(|source| Error::Io {
            what: "writing",
            path: conf,
            source,
        })
}

/// The line of `postgresql.conf` that includes [`LOAD_SETTINGS`].
fn load_settings_include() -> String {
    // The file's name is ours and needs no escaping.
    format!("\ninclude_if_exists = '{LOAD_SETTINGS_FILE}'\n")
}

/// Undoes [`write_load_settings`]: the file and its include line go.
fn remove_load_settings(data: &Path) -> Result<()> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    let settings = data.join(LOAD_SETTINGS_FILE);
    std::fs::remove_file(&settings).map_err(io("removing the load settings", &settings))?;
    let conf = data.join("postgresql.conf");
    let text = std::fs::read_to_string(&conf).map_err(io("reading", &conf))?;
    let kept = text.replacen(&load_settings_include(), "", 1);
    if kept != text {
        // The file keeps its owner: it is rewritten in place, not replaced.
        std::fs::write(&conf, kept).map_err(io("writing", &conf))?;
    }
    Ok(())
}

/// `pg_ctl start` (logging to the cluster's log) or `pg_ctl stop` (fast: sessions are ended)
/// for the cluster in `dir`, waiting until it is done.
fn pg_ctl_command(
    pg_ctl: &Path,
    action: &str,
    dir: &Path,
    user: Option<&SystemUser>,
) -> ToolCommand {
    let l = layout(dir);
    let mut cmd = ToolCommand::new(pg_ctl);
    cmd.arg(action).arg("-D").arg(&l.data);
    if action == "start" {
        cmd.arg("-l").arg(&l.log);
    } else {
        cmd.args(["-m", "fast"]);
    }
    cmd.args(["-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-s"])
        .current_dir(dir)
        .run_as(user);
    cmd
}

/// Writes a part into its spool file, on a blocking thread: the stream's pieces are copied
/// once into a buffer and written in calls of up to 1 MiB. `what` names a stream error (a fetch
/// or decryption failure), which is kept apart from a write error.
fn spool_file(reader: Box<dyn AsyncRead + Send + Unpin>, path: &Path, what: String) -> Result<()> {
    use std::io::{Read, Write};
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    let mut reader = tokio_util::io::SyncIoBridge::new(reader);
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(strongbox_core::private::PRIVATE_FILE)
            .open(path)
            .map_err(io("creating the spool file"))?
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|source| Error::Stream {
            what: what.clone(),
            source,
        })?;
        let Some(piece) = buf.get(..n).filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        file.write_all(piece)
            .map_err(io("writing the spool file"))?;
    }
}

/// Appends the listen address, port and socket folder to `postgresql.conf` (later lines win).
fn append_conf(data: &Path, listen: &str, port: u16, socket: &Path) -> Result<()> {
    use std::io::Write;
    let path = data.join("postgresql.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|source| Error::Io {
            what: "opening",
            path: path.clone(),
            source,
        })?;
    let text = format!(
        "\n# strongbox-agent\nlisten_addresses = {}\nport = {port}\nunix_socket_directories = {}\n",
        conf_literal(listen)?,
        conf_literal(&socket.to_string_lossy())?
    );
    f.write_all(text.as_bytes()).map_err(|source| Error::Io {
        what: "writing",
        path,
        source,
    })
}

impl PgTarget {
    /// Waits until the server answers on its socket, then sets the superuser's password.
    async fn finish_start(&self, password: &str) -> Result<()> {
        let client = self.connect_when_up().await?;
        self.set_superuser_password(&client, password).await
    }

    /// A session on `postgres` once the server accepts them (`pg_ctl -w` may return a moment
    /// before the socket does).
    async fn connect_when_up(&self) -> Result<Client> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.loader.ep.connect("postgres").await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn set_superuser_password(&self, client: &Client, password: &str) -> Result<()> {
        // Only the SCRAM verifier reaches the server (and never its logs).
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        client
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD {}",
                quote_ident(SUPERUSER),
                quote_literal(&verifier)
            ))
            .await
            .map_err(|e| pg_error(&self.loader.ep.target("postgres"), &e))
    }

    /// Applies the globals part ([`apply_globals`]; a statement that fails is named with the
    /// verification, the rest applies), then sets the superuser's password again (ours must
    /// keep working).
    async fn load_globals(&mut self, reader: Box<dyn AsyncRead + Send + Unpin>) -> Result<()> {
        let script = read_globals(reader).await?;
        let failed = apply_globals(
            &self.loader.ep,
            "postgres",
            &script,
            &self.dir.display().to_string(),
            &Tablespaces::Under {
                root: self.dir.join("tablespaces"),
                user: SystemUser::when_root("postgres", "PostgreSQL")?,
            },
        )
        .await?;
        if !failed.is_empty() {
            tracing::warn!(dir = %self.dir.display(), failed = failed.len(), "statements of the globals part failed and were skipped");
        }
        self.loader.failed.extend(failed);
        let client = self.loader.ep.connect("postgres").await?;
        let password = read_password(&self.password_file)?;
        self.set_superuser_password(&client, &password).await
    }
}

fn read_password(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "reading the password file",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[async_trait::async_trait]
impl RestoreTarget for PgTarget {
    fn connection(&self) -> Connection {
        Connection {
            engine: EngineKind::Postgres,
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
            PartKind::Globals => self.load_globals(reader).await,
            PartKind::Database => self.loader.load_database(&part.name, reader).await,
            other => Err(Error::Other(format!(
                "a PostgreSQL restore cannot load part {:?} of kind {other:?}",
                part.name
            ))),
        }
    }

    /// Takes the load settings away: the cluster stops (a shutdown checkpoint) and starts
    /// again with PostgreSQL's defaults on the same port; then every file of its data folder
    /// is flushed to disk (`initdb --sync-only`) while verification reads it.
    async fn finish_load(&mut self) -> Result<()> {
        let l = layout(&self.dir);
        remove_load_settings(&l.data)?;
        let user = SystemUser::when_root("postgres", "PostgreSQL")?;
        let pg_ctl = self.loader.tools.path("pg_ctl")?;
        pg_ctl_command(&pg_ctl, "stop", &self.dir, user.as_ref())
            .output()
            .await?;
        if let Err(e) = pg_ctl_command(&pg_ctl, "start", &self.dir, user.as_ref())
            .output()
            .await
        {
            return Err(Error::Other(format!(
                "restarting the restored PostgreSQL cluster in {} with its own settings failed: \
                 {e}; end of its log:\n{}",
                self.dir.display(),
                process::log_tail(&l.log, 20)
            )));
        }
        self.connect_when_up().await?;
        let mut sync = ToolCommand::new(&self.loader.tools.path("initdb")?);
        sync.arg("--sync-only")
            .arg("-D")
            .arg(&l.data)
            .current_dir(&self.dir)
            .run_as(user.as_ref());
        self.syncing = Some(tokio::spawn(async move { sync.output().await.map(|_| ()) }));
        tracing::info!(dir = %self.dir.display(), port = self.port, "restored cluster running with its own settings");
        Ok(())
    }

    async fn wait_durable(&mut self) -> Result<()> {
        if let Some(sync) = self.syncing.take() {
            sync.await
                .map_err(|e| Error::Other(format!("a worker task failed: {e}")))??;
            tracing::info!(dir = %self.dir.display(), "restored cluster on disk");
        }
        Ok(())
    }

    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        let databases = self.loader.databases().await?;
        let found = self.loader.count(&databases).await?;
        let mut v = compare_stats(expected, &found);
        let (check_ok, check) = self.loader.amcheck_all(&databases).await?;
        v.engine_check = check;
        v.failed_objects = self.loader.failed.clone();
        v.ok = v.mismatches.is_empty() && check_ok && v.failed_objects.is_empty();
        tracing::info!(dir = %self.dir.display(), tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "verification done");
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading database parts and counting (fresh and live servers alike)
// ---------------------------------------------------------------------------------------------

/// What `pg_restore --verbose` said (its stderr, in a file).
struct RestoreLog {
    /// The objects it failed on.
    objects: Vec<FailedObject>,
    /// It went through the whole archive (`errors ignored on restore`).
    completed: bool,
    /// Its last lines, for an error.
    tail: String,
}

/// Reads the stderr of `pg_restore --verbose` restoring database `db` from `log`: each
/// `pg_restore: error: …` block (with the lines that follow it: the server's error, `Command
/// was: …`) is about the TOC entry the latest `pg_restore: from TOC entry <id>; <oids>
/// <kind> <name> <owner>` line named. Read line by line; only errors are kept.
fn restore_failures(log: &Path, db: &str) -> std::io::Result<RestoreLog> {
    use std::io::BufRead;
    const PREFIX: &str = "pg_restore: ";
    const MAX_REASON: usize = 4096;
    let file = std::io::BufReader::new(std::fs::File::open(log)?);
    let mut objects: Vec<FailedObject> = Vec::new();
    let mut completed = false;
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut entry: Option<String> = None;
    let mut error: Option<(Option<String>, String)> = None;
    let finish = |error: &mut Option<(Option<String>, String)>, objects: &mut Vec<FailedObject>| {
        if let Some((entry, reason)) = error.take() {
            let object = FailedObject {
                name: format!(
                    "{db}: {}",
                    entry.unwrap_or_else(|| "(an entry pg_restore did not name)".into())
                ),
                reason: reason.trim().to_string(),
            };
            if !objects.contains(&object) {
                objects.push(object);
            }
        }
    };
    for line in file.split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        tail.push_back(line.clone());
        if tail.len() > 20 {
            tail.pop_front();
        }
        let Some(said) = line.strip_prefix(PREFIX) else {
            if let Some((_, reason)) = &mut error {
                if reason.len() < MAX_REASON {
                    reason.push('\n');
                    reason.push_str(&line);
                }
            }
            continue;
        };
        finish(&mut error, &mut objects);
        if let Some(rest) = said.strip_prefix("from TOC entry ") {
            // `<id>; <table oid> <oid> ` then the entry's kind, name and owner.
            let described = rest.splitn(4, ' ').nth(3).unwrap_or(rest);
            entry = Some(described.to_string());
        } else if let Some(reason) = said.strip_prefix("error: ") {
            error = Some((entry.clone(), reason.to_string()));
        } else if said.starts_with("warning: errors ignored on restore:") {
            completed = true;
        }
    }
    finish(&mut error, &mut objects);
    Ok(RestoreLog {
        objects,
        completed,
        tail: Vec::from(tail).join("\n"),
    })
}

/// What a database part meets on the server it is loaded into. Either way a database the
/// server has already is dropped and made again from the dump (`pg_restore --create`), so
/// that everything about the database itself (owner, settings, per-role settings in it,
/// comment, connection limit, grants, template flag) comes from the backup too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A fresh cluster: the databases it has already are initdb's empty `postgres` and
    /// `template1`; the cluster runs under [`LOAD_SETTINGS`] meanwhile, and verification
    /// installs `amcheck` for its check and removes it again ([`Loader::amcheck_all`]).
    Fresh,
    /// The service's live server: the database is dropped (its sessions ended) and created
    /// again from the dump; commits stay synchronous; verification installs nothing.
    Replace,
}

/// Loads database parts into one server, counts its rows and runs `pg_amcheck`: the part of
/// a restore that a fresh cluster ([`PgTarget`]) and the live server ([`PgInPlace`]) share.
struct Loader {
    tools: PgTools,
    /// How the agent reaches the server.
    ep: Endpoint,
    /// The database to connect to for cluster-wide statements.
    admin_db: String,
    /// Where parts are spooled: `pg_restore --jobs` needs a seekable file.
    spool_dir: PathBuf,
    spools: u32,
    mode: Mode,
    /// The objects that did not come back, of every part loaded so far.
    failed: Vec<FailedObject>,
    /// For log lines: the service (in place; empty for a fresh cluster, which its folder names).
    service: String,
}

impl Loader {
    /// A database to connect to while `db` is dropped or created: the admin database, or
    /// `postgres`/`template1` when `db` is that one.
    fn admin_for(&self, db: &str) -> &str {
        if db != self.admin_db {
            &self.admin_db
        } else if db != "postgres" {
            "postgres"
        } else {
            "template1"
        }
    }

    /// Spools a custom-format dump of `db` and restores it with `pg_restore --jobs`; the spool
    /// file is removed afterwards, also when the restore failed.
    async fn load_database(
        &mut self,
        db: &str,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        self.spools += 1;
        let spool = self.spool_dir.join(format!("spool-{}.pgdump", self.spools));
        let log = self.spool_dir.join(format!("spool-{}.log", self.spools));
        let result = self.spool_and_restore(db, reader, &spool, &log).await;
        for file in [&spool, &log] {
            if let Err(e) = tokio::fs::remove_file(file).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(service = %self.service, dir = %self.spool_dir.display(), spool = %file.display(), error = %e, "could not remove a spool file");
                }
            }
        }
        let failed = result?;
        if !failed.is_empty() {
            tracing::warn!(service = %self.service, dir = %self.spool_dir.display(), database = db, failed = failed.len(), "objects of the database did not come back");
        }
        self.failed.extend(failed);
        Ok(())
    }

    /// Returns the objects `pg_restore` could not restore (it restores all the others).
    async fn spool_and_restore(
        &self,
        db: &str,
        reader: Box<dyn AsyncRead + Send + Unpin>,
        spool: &Path,
        log: &Path,
    ) -> Result<Vec<FailedObject>> {
        let began = Instant::now();
        let (path, what) = (
            spool.to_path_buf(),
            format!("receiving database part {db} into {}", spool.display()),
        );
        tokio::task::spawn_blocking(move || spool_file(reader, &path, what))
            .await
            .map_err(|e| Error::Other(format!("a worker thread failed: {e}")))??;
        let spooled = began.elapsed();

        let admin = self.admin_for(db);
        let client = self.ep.connect(admin).await?;
        let template: Option<bool> = client
            .query_opt(
                "SELECT datistemplate FROM pg_catalog.pg_database WHERE datname = $1",
                &[&db],
            )
            .await
            .map_err(|e| pg_error(&self.ep.target(admin), &e))?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(|e| pg_error(&self.ep.target(admin), &e))?;
        if let Some(template) = template {
            self.drop_database(&client, admin, db, template).await?;
        }
        drop(client);

        // `--verbose` names the entry each error is about; its stderr goes to a file, as it
        // may be long. No `--exit-on-error`: one object that fails does not keep the others
        // from coming back; the failures are reported with the verification.
        let pg_restore = self.tools.path("pg_restore")?;
        {
            // Private like the spool: errors may quote rows.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(strongbox_core::private::PRIVATE_FILE)
                .open(log)
                .map_err(|source| Error::Io {
                    what: "creating pg_restore's log",
                    path: log.to_path_buf(),
                    source,
                })?;
        }
        let mut cmd = self.ep.with_env(ToolCommand::new(Path::new("/bin/sh")));
        cmd.args(["-c", "exec \"$0\" \"$@\" 2>\"$STRONGBOX_RESTORE_LOG\""])
            .arg(&pg_restore)
            .args([
                "--jobs",
                RESTORE_JOBS,
                "--verbose",
                "--no-password",
                "--create",
            ])
            .arg(format!("--dbname={}", dbname_conninfo(admin)))
            .arg(spool)
            .env("STRONGBOX_RESTORE_LOG", log);
        let out = cmd.capture().await?;
        let said = match restore_failures(log, db) {
            Ok(said) => said,
            Err(e) => {
                return Err(Error::Other(format!(
                    "reading what pg_restore said about database {db:?} ({}) failed: {e}",
                    log.display()
                )))
            }
        };
        // pg_restore went through the whole archive when it succeeded or says it ignored
        // errors; else it stopped part way (it could not connect, or read the archive).
        if !out.success && !said.completed {
            return Err(Error::Tool {
                tool: "pg_restore".into(),
                status: out.status,
                stderr: said.tail,
            });
        }
        let failed = said.objects;
        tracing::info!(
            service = %self.service,
            dir = %self.spool_dir.display(),
            database = db,
            failed = failed.len(),
            spool_s = spooled.as_secs_f64(),
            pg_restore_s = (began.elapsed() - spooled).as_secs_f64(),
            "database restored"
        );
        Ok(failed)
    }

    /// Ends the other sessions of `db` and drops it (`WITH (FORCE)` from PostgreSQL 13 on;
    /// before, its backends are terminated first), connected to `admin`.
    async fn drop_database(
        &self,
        client: &Client,
        admin: &str,
        db: &str,
        template: bool,
    ) -> Result<()> {
        let target = self.ep.target(admin);
        if template {
            // A template cannot be dropped; the dump makes it a template again.
            let sql: String = client
                .query_one(
                    "SELECT pg_catalog.format('ALTER DATABASE %I IS_TEMPLATE false', $1::text)",
                    &[&db],
                )
                .await
                .map_err(|e| pg_error(&target, &e))?
                .try_get(0)
                .map_err(|e| pg_error(&target, &e))?;
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| pg_error(&target, &e))?;
        }
        let version: i32 = client
            .query_one(
                "SELECT pg_catalog.current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(|e| pg_error(&target, &e))?
            .try_get(0)
            .map_err(|e| pg_error(&target, &e))?;
        // The name is quoted by the server (`format('%I')`).
        let form = if version >= 130_000 {
            "DROP DATABASE IF EXISTS %I WITH (FORCE)"
        } else {
            client
                .execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
                    &[&db],
                )
                .await
                .map_err(|e| pg_error(&target, &e))?;
            "DROP DATABASE IF EXISTS %I"
        };
        let sql: String = client
            .query_one("SELECT pg_catalog.format($1, $2::text)", &[&form, &db])
            .await
            .map_err(|e| pg_error(&target, &e))?
            .try_get(0)
            .map_err(|e| pg_error(&target, &e))?;
        client.batch_execute(&sql).await.map_err(|e| {
            let mut err = pg_error(&target, &e);
            if let Error::Database { message, .. } = &mut err {
                *message = format!(
                    "dropping database {db:?} to replace it failed: {message} - the service's \
                     user must own the database (or be a superuser) and be allowed to end its \
                     sessions"
                );
            }
            err
        })?;
        tracing::info!(service = %self.service, dir = %self.spool_dir.display(), database = db, "database dropped to be replaced");
        Ok(())
    }

    /// The databases that allow connections (`template0` excluded) and have a UTF-8 name: no
    /// backup holds another (see [`Engine::begin_backup`]), so no restore made or replaced it.
    async fn databases(&self) -> Result<Vec<String>> {
        let target = self.ep.target(&self.admin_db);
        let admin = self.ep.connect(&self.admin_db).await?;
        let mut names = Vec::new();
        for listed in list_databases(&admin, &target).await? {
            match listed.name {
                Ok(name) if listed.allows_connections => names.push(name),
                Ok(name) => {
                    tracing::debug!(service = %self.service, database = %name, "a database that refuses connections is in no backup; not counted")
                }
                Err(bytes) => {
                    tracing::debug!(service = %self.service, database = %escaped(&bytes), "a database not named in UTF-8 is in no backup; not counted")
                }
            }
        }
        Ok(names)
    }

    /// Exact row counts of the tables of `databases` (`<db>.<schema>.<table>`), each
    /// database counted in one snapshot.
    async fn count(&self, databases: &[String]) -> Result<HashMap<String, u64>> {
        let mut found: HashMap<String, u64> = HashMap::new();
        for db in databases {
            let client = self.ep.connect(db).await?;
            let target = self.ep.target(db);
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| pg_error(&target, &e))?;
            for s in count_tables(&client, db, &target, &HashMap::new(), true).await? {
                found.insert(s.name, s.rows);
            }
            let _ = client.batch_execute("COMMIT").await;
        }
        Ok(found)
    }

    /// Of `databases`, those where the `amcheck` extension is installed.
    async fn with_amcheck(&self, databases: &[String]) -> Result<Vec<String>> {
        let mut with = Vec::new();
        for db in databases {
            let client = self.ep.connect(db).await?;
            let installed: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'amcheck')",
                    &[],
                )
                .await
                .map_err(|e| pg_error(&self.ep.target(db), &e))?
                .try_get(0)
                .map_err(|e| pg_error(&self.ep.target(db), &e))?;
            if installed {
                with.push(db.clone());
            }
        }
        Ok(with)
    }

    /// `pg_amcheck` over `databases` (a fresh cluster: all of its databases but
    /// `template0`), with the `amcheck` extension installed, for the check only, where it is
    /// missing: it is made in a schema of its own and removed with that schema right after,
    /// each time in one transaction during which no event trigger of the user's fires
    /// ([`Loader::quietly`]), so that nothing of it remains and nothing of the user's runs
    /// (a `ddl_command_end` trigger logging DDL into a table logs nothing). (ok, what it said).
    async fn amcheck_all(&self, databases: &[String]) -> Result<(bool, String)> {
        let with = self.with_amcheck(databases).await?;
        if self.mode != Mode::Fresh {
            // The live server: no extension is installed (see `PgInPlace::verify`).
            return self.amcheck(&with).await;
        }
        let mut installed: Vec<(&String, String)> = Vec::new();
        let mut problem = None;
        for db in databases.iter().filter(|d| !with.contains(d)) {
            match self.install_amcheck(db).await {
                Ok(schema) => installed.push((db, schema)),
                Err(e) => {
                    problem = Some(format!(
                        "pg_amcheck could not run: installing amcheck in {db:?} failed: {e}"
                    ));
                    break;
                }
            }
        }
        let (mut ok, mut text) = match problem {
            Some(p) => (false, p),
            None => self.amcheck(databases).await?,
        };
        for (db, schema) in installed {
            let form = "DROP SCHEMA %I CASCADE";
            if let Err(e) = self.quietly(db, &[(form, vec![schema.as_str()])]).await {
                ok = false;
                text.push_str(&format!(
                    "\nremoving the amcheck extension installed for the check from {db:?} \
                     (schema {schema:?}) failed: {e}"
                ));
            }
        }
        Ok((ok, text))
    }

    /// Installs `amcheck` in `db` in a new schema of its own, quietly; returns the schema.
    async fn install_amcheck(&self, db: &str) -> Result<String> {
        let client = self.ep.connect(db).await?;
        let target = self.ep.target(db);
        let mut schema = "strongbox_amcheck".to_string();
        for i in 1.. {
            let taken: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                    &[&schema],
                )
                .await
                .map_err(|e| pg_error(&target, &e))?
                .try_get(0)
                .map_err(|e| pg_error(&target, &e))?;
            if !taken {
                break;
            }
            schema = format!("strongbox_amcheck_{i}");
        }
        drop(client);
        self.quietly(
            db,
            &[
                ("CREATE SCHEMA %I", vec![schema.as_str()]),
                ("CREATE EXTENSION amcheck SCHEMA %I", vec![schema.as_str()]),
            ],
        )
        .await?;
        Ok(schema)
    }

    /// Runs `statements` (each a `format()` form and its arguments, composed by the server)
    /// in `db` in one transaction in which no event trigger fires: with
    /// `session_replication_role = replica` (which keeps ordinary event triggers from
    /// firing), and every event trigger that is enabled `ALWAYS` or `REPLICA` disabled
    /// meanwhile and enabled as it was before the transaction commits. Nothing outside the
    /// transaction ever sees them disabled. Superuser only (a fresh cluster).
    async fn quietly(&self, db: &str, statements: &[(&str, Vec<&str>)]) -> Result<()> {
        let client = self.ep.connect(db).await?;
        let target = self.ep.target(db);
        client
            .batch_execute("BEGIN; SET LOCAL session_replication_role = replica")
            .await
            .map_err(|e| pg_error(&target, &e))?;
        let triggers: Vec<(String, i8)> = client
            .query(
                "SELECT evtname::text, evtenabled FROM pg_catalog.pg_event_trigger \
                 WHERE evtenabled IN ('A', 'R')",
                &[],
            )
            .await
            .map_err(|e| pg_error(&target, &e))?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(|e| pg_error(&target, &e))?;
        let mut sql = Vec::new();
        for (name, _) in &triggers {
            sql.push(compose(&client, &target, "ALTER EVENT TRIGGER %I DISABLE", &[name]).await?);
        }
        for (form, args) in statements {
            sql.push(compose(&client, &target, form, args).await?);
        }
        for (name, enabled) in &triggers {
            let form = if *enabled == b'A' as i8 {
                "ALTER EVENT TRIGGER %I ENABLE ALWAYS"
            } else {
                "ALTER EVENT TRIGGER %I ENABLE REPLICA"
            };
            sql.push(compose(&client, &target, form, &[name]).await?);
        }
        for statement in &sql {
            if let Err(e) = client.batch_execute(statement).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(pg_error(&target, &e));
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error(&target, &e))
    }

    /// `pg_amcheck` over `databases`, which have the extension: (ok, what it said).
    async fn amcheck(&self, databases: &[String]) -> Result<(bool, String)> {
        let mut cmd = match self.ep.tool(&self.tools, "pg_amcheck") {
            Ok(c) => c,
            Err(e) => return Ok((false, format!("pg_amcheck could not run: {e}"))),
        };
        cmd.args(["--jobs", "2", "--no-password"]);
        cmd.arg(format!(
            "--maintenance-db={}",
            dbname_conninfo(&self.admin_db)
        ));
        for db in databases {
            // A double-quoted pattern matches the name literally.
            cmd.arg(format!("--database=\"{}\"", db.replace('"', "\"\"")));
        }
        let out = cmd.capture().await?;
        let text = format!("{}{}", out.stdout.trim(), {
            let e = out.stderr.trim();
            if e.starts_with('(') {
                String::new()
            } else {
                format!("\n{e}")
            }
        });
        let text = text.trim().to_string();
        if out.success {
            Ok((
                true,
                if text.is_empty() {
                    "pg_amcheck: no corruption found".to_string()
                } else {
                    format!("pg_amcheck: ok\n{text}")
                },
            ))
        } else {
            Ok((false, format!("pg_amcheck ({}): {text}", out.status)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Applying the globals part (fresh and live servers alike)
// ---------------------------------------------------------------------------------------------

/// Largest globals part a restore accepts (it is read whole, and parsed whole before any of it
/// is applied).
const MAX_GLOBALS_PART: u64 = 64 << 20;

/// Reads a globals part whole.
async fn read_globals(reader: Box<dyn AsyncRead + Send + Unpin>) -> Result<Vec<u8>> {
    let mut script = Vec::new();
    reader
        .take(MAX_GLOBALS_PART + 1)
        .read_to_end(&mut script)
        .await
        .map_err(|source| Error::Stream {
            what: "receiving the globals part".into(),
            source,
        })?;
    if script.len() as u64 > MAX_GLOBALS_PART {
        return Err(Error::Other(format!(
            "the globals part is larger than {} MiB, more than a restore holds; apply it by \
             hand with psql (strongbox backup download)",
            MAX_GLOBALS_PART >> 20
        )));
    }
    Ok(script)
}

/// Applies the globals part `script` to the server `ep` reaches, in one session on `db`,
/// statement by statement (see the module's doc): the script is parsed whole first
/// ([`globals::parse`]), so that a script it refuses changes nothing. Left out:
/// psql's `\restrict`/`\unrestrict`; `CREATE ROLE` of a role that exists; `ALTER ROLE` of
/// the session's own role (`current_user`) that changes attributes or the password, so that
/// the agent keeps its way in. Whether a role exists or is the session's own is the server's
/// answer for the exact name, never a comparison of text here. Every other statement is sent
/// alone through the extended protocol, which refuses a text holding more than one command.
/// A statement that fails is skipped and the rest still applied (a restore loads everything
/// it can): returns the statements that failed, each named by its line and start, with the
/// server's error.
async fn apply_globals(
    ep: &Endpoint,
    db: &str,
    script: &[u8],
    restore: &str,
    tablespaces: &Tablespaces,
) -> Result<Vec<FailedObject>> {
    use globals::{Kind, RoleRef};
    let statements = globals::parse(script).map_err(|e| Error::Other(e.to_string()))?;
    let target = ep.target(db);
    let client = ep.connect(db).await?;
    // The parser starts with standard strings, as pg_dumpall's own SET says; so must the
    // session, whatever the server's default.
    client
        .batch_execute("SET standard_conforming_strings = on")
        .await
        .map_err(|e| pg_error(&target, &e))?;

    // The named roles: which exist, which is the session's own.
    let mut names: Vec<&str> = statements
        .iter()
        .filter_map(|s| match &s.kind {
            Kind::CreateRole(RoleRef::Named(n))
            | Kind::AlterRole {
                role: RoleRef::Named(n),
                ..
            } => Some(n.as_str()),
            _ => None,
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut exists: HashSet<&str> = HashSet::new();
    let mut own: HashSet<&str> = HashSet::new();
    let rows = client
        .query(
            "SELECT u.i, EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname::text = u.n), \
                    u.n = CURRENT_USER::text \
             FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS u(n, i)",
            &[&names],
        )
        .await
        .map_err(|e| pg_error(&target, &e))?;
    for row in rows {
        let facts = (|| -> std::result::Result<(i64, bool, bool), tokio_postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        })()
        .map_err(|e| pg_error(&target, &e))?;
        let (i, found, is_own) = facts;
        let Some(name) = usize::try_from(i - 1).ok().and_then(|k| names.get(k)) else {
            return Err(Error::Other(format!(
                "{target} answered about role number {i} of {}",
                names.len()
            )));
        };
        if found {
            exists.insert(name);
        }
        if is_own {
            own.insert(name);
        }
    }

    // The tablespaces that exist (in place: the live server has its own).
    let existing_tablespaces: HashSet<String> = client
        .query("SELECT spcname::text FROM pg_catalog.pg_tablespace", &[])
        .await
        .map_err(|e| pg_error(&target, &e))?
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| pg_error(&target, &e))?;

    let mut failed = Vec::new();
    let (mut applied, mut skipped) = (0usize, 0usize);
    for (index, s) in statements.iter().enumerate() {
        if let (Kind::CreateTablespace { name, owner }, Tablespaces::Under { root, user }) =
            (&s.kind, tablespaces)
        {
            // The source's location means nothing here: the tablespace goes under the
            // restored server's own folder, and only its location differs.
            let dir = root.join(tablespace_dir_name(name, index));
            let made = make_tablespace(&client, &target, name, owner, &dir, user.as_ref()).await;
            match made {
                Ok(()) => applied += 1,
                Err(e) => failed.push(FailedObject {
                    name: format!("globals: line {} ({})", s.line, globals::preview(s.text)),
                    reason: e.to_string(),
                }),
            }
            continue;
        }
        let skip = match &s.kind {
            Kind::PsqlGuard => true,
            Kind::CreateTablespace { name, .. } => existing_tablespaces.contains(name),
            Kind::CreateRole(RoleRef::Named(n)) => exists.contains(n.as_str()),
            Kind::AlterRole {
                role,
                attributes: true,
            } => match role {
                RoleRef::Named(n) => own.contains(n.as_str()),
                RoleRef::Current | RoleRef::All => true,
            },
            _ => false,
        };
        if skip {
            skipped += 1;
            continue;
        }
        match client.query_typed(s.text, &[]).await {
            Ok(_) => applied += 1,
            Err(e) => failed.push(FailedObject {
                name: format!("globals: line {} ({})", s.line, globals::preview(s.text)),
                reason: match pg_error(&target, &e) {
                    Error::Database { message, .. } => message,
                    other => other.to_string(),
                },
            }),
        }
    }
    tracing::info!(restore = %restore, applied, skipped, failed = failed.len(), "globals part applied");
    Ok(failed)
}

/// `format(form, args…)`, composed by the server (`%I`, `%L` quote as it reads them).
async fn compose(client: &Client, target: &str, form: &str, args: &[&str]) -> Result<String> {
    client
        .query_one(
            "SELECT pg_catalog.format($1, VARIADIC $2::text[])",
            &[&form, &args],
        )
        .await
        .and_then(|row| row.try_get::<_, String>(0))
        .map_err(|e| pg_error(target, &e))
}

/// Where [`apply_globals`] makes the tablespaces of a globals part.
enum Tablespaces {
    /// As the part says, except those that exist already (the live server has its own).
    AsDumped,
    /// Each in its own folder under `root` (a fresh cluster's `<dir>/tablespaces`), made for
    /// the server's system user `user` (mode 0700).
    Under {
        root: PathBuf,
        user: Option<SystemUser>,
    },
}

/// The folder name of tablespace `name` (statement `index` of the globals): the name when it
/// is a plain file name (`[A-Za-z0-9_-]`, not empty), else `~<index>`, which no plain name is.
fn tablespace_dir_name(name: &str, index: usize) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_string()
    } else {
        format!("~{index}")
    }
}

/// Makes tablespace `name`, owned by `owner`, in the new folder `dir` (0700, owned by the
/// server's user). The statements are composed by the server (`format('%I', '%L')`).
async fn make_tablespace(
    client: &Client,
    target: &str,
    name: &str,
    owner: &str,
    dir: &Path,
    user: Option<&SystemUser>,
) -> Result<()> {
    if let Some(parent) = dir.parent() {
        if !parent.is_dir() {
            strongbox_core::private::create_dir(parent, strongbox_core::private::PRIVATE_DIR)
                .map_err(|e| Error::Other(format!("creating the tablespaces folder: {e}")))?;
            if let Some(u) = user {
                u.chown(parent)?;
            }
        }
    }
    strongbox_core::private::create_dir(dir, strongbox_core::private::PRIVATE_DIR).map_err(
        |e| {
            Error::Other(format!(
                "creating the tablespace folder {}: {e}",
                dir.display()
            ))
        },
    )?;
    if let Some(u) = user {
        u.chown(dir)?;
    }
    let location = dir.to_str().ok_or_else(|| {
        Error::Other(format!(
            "the tablespace folder {} is not UTF-8; choose a data root whose path is",
            dir.display()
        ))
    })?;
    for (form, args) in [
        (
            "CREATE TABLESPACE %I LOCATION %L",
            [name, location].as_slice(),
        ),
        ("ALTER TABLESPACE %I OWNER TO %I", [name, owner].as_slice()),
    ] {
        let sql = compose(client, target, form, args).await?;
        client.batch_execute(&sql).await.map_err(|e| {
            let mut err = pg_error(target, &e);
            if let Error::Database { message, .. } = &mut err {
                *message = format!(
                    "making tablespace {} in {} failed: {message}",
                    globals::preview(name),
                    dir.display()
                );
            }
            err
        })?;
    }
    tracing::info!(tablespace = %globals::preview(name), dir = %dir.display(), "tablespace made under the restored server's folder");
    Ok(())
}

/// Reading the SQL of `pg_dumpall --globals-only` statement by statement, the way the server's
/// own lexer (`scan.l`) and psql read it, so that a restore can leave out whole statements
/// (the `CREATE ROLE` of a role that exists, the attributes of the agent's own role) without
/// ever editing SQL text.
///
/// Job: [`parse`] cuts the script into statements at the `;` that ends each, knowing every
/// way PostgreSQL quotes: double-quoted identifiers (`""` inside), string literals (`''`
/// inside; backslash escapes in `E'…'`, and in `'…'` while `standard_conforming_strings` is
/// off, which the script's own `SET` statements switch), `B'…'`/`X'…'`, `U&'…'`, dollar
/// quotes (`$tag$…$tag$`), `--` comments to the end of the line and nested `/* */` comments.
/// A name may hold newlines, quotes, semicolons and comment starters: inside its quotes they
/// are text, never a boundary. Each statement comes back whole, with what it is: a role
/// statement carries the role it names, unquoted as the server reads it.
///
/// Invariants:
/// - **Whole statements or nothing.** The script is read to its end before a caller applies
///   anything; any doubt (an unterminated quote or comment, a psql command other than
///   `\restrict`/`\unrestrict`, a backslash outside quotes, a statement that
///   `pg_dumpall --globals-only` never writes, a role named in a way it never writes) is an
///   error, so a script that is cut off or not pg_dumpall's is refused, not half applied.
/// - **Only what pg_dumpall writes.** `SET <parameter>` (not `SET ROLE`/`SESSION
///   AUTHORIZATION`), `CREATE`/`ALTER ROLE`, `CREATE`/`ALTER TABLESPACE`, `COMMENT ON
///   ROLE`/`TABLESPACE`, `SECURITY LABEL`, `GRANT`, `REVOKE`, and psql's `\restrict` and
///   `\unrestrict`. A role is named quoted, or bare when it is `[a-z_][a-z0-9_]*`, as
///   pg_dumpall's `fmtId` writes it; `CURRENT_USER`, `CURRENT_ROLE`, `SESSION_USER` and `ALL`
///   are recognised as what they mean.
mod globals {
    /// What a globals script holds that a restore cannot apply as it is.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum GlobalsError {
        #[error(
            "the globals part is not UTF-8 (byte {offset}): this agent applies only globals \
             dumped in UTF-8, as it dumps them; apply this backup's globals by hand with psql \
             (strongbox backup download), then restore without them"
        )]
        NotUtf8 { offset: usize },
        #[error(
            "the globals part ends inside {what} that starts on line {line}: the part is cut \
             off or not pg_dumpall's output; nothing of it was applied"
        )]
        Unterminated { what: &'static str, line: usize },
        #[error(
            "line {line} of the globals part has a backslash outside quotes inside a statement \
             ({statement}), which pg_dumpall never writes; nothing of it was applied"
        )]
        Backslash { line: usize, statement: String },
        #[error(
            "line {line} of the globals part is the psql command {command}, but pg_dumpall \
             --globals-only writes no psql command other than \\restrict and \\unrestrict; \
             nothing of it was applied - check where this backup came from"
        )]
        PsqlCommand { line: usize, command: String },
        #[error(
            "line {line} of the globals part holds a statement that pg_dumpall --globals-only \
             never writes ({statement}); nothing of it was applied - check where this backup \
             came from"
        )]
        Unexpected { line: usize, statement: String },
        #[error(
            "line {line} of the globals part names a role in a way pg_dumpall never writes \
             ({statement}); nothing of it was applied - check where this backup came from"
        )]
        RoleName { line: usize, statement: String },
        #[error(
            "line {line} of the globals part changes standard_conforming_strings in a way \
             pg_dumpall never writes ({statement}); nothing of it was applied"
        )]
        StandardStrings { line: usize, statement: String },
    }

    /// A role as a statement names it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum RoleRef {
        /// A role by name, as the server reads it (quotes undone, a bare name folded).
        Named(String),
        /// `CURRENT_USER`, `CURRENT_ROLE` or `SESSION_USER`: the role that applies the script.
        Current,
        /// `ALL` (`ALTER ROLE ALL SET …`): every role.
        All,
    }

    /// What a statement of the globals script is.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Kind {
        /// `\restrict`/`\unrestrict`: psql's guard against commands smuggled into a dump;
        /// nothing for the server.
        PsqlGuard,
        /// `SET …`; `standard_conforming_strings` when it sets that.
        Set { standard_strings: Option<bool> },
        /// `CREATE ROLE <role> …`.
        CreateRole(RoleRef),
        /// `ALTER ROLE <role> …`; `attributes` unless it is `… SET`, `… RESET` or
        /// `… IN DATABASE …` (a setting): attributes include the password and the name.
        AlterRole { role: RoleRef, attributes: bool },
        /// `CREATE TABLESPACE <name> OWNER <owner> LOCATION '…'`: a restore makes the
        /// tablespace under its own folder instead (the location is the source's).
        CreateTablespace { name: String, owner: String },
        /// Any other statement pg_dumpall writes (grants, tablespaces, comments, labels).
        Other,
    }

    /// One statement of the script.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Statement<'a> {
        /// The line (from 1) its first token is on.
        pub line: usize,
        /// Its text from its first token to its `;` (included); comments before it are
        /// left out.
        pub text: &'a str,
        pub kind: Kind,
    }

    /// The statements of `script`, in order (see the module's doc).
    pub fn parse(script: &[u8]) -> Result<Vec<Statement<'_>>, GlobalsError> {
        let text = std::str::from_utf8(script).map_err(|e| GlobalsError::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        let mut lexer = Lexer {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            standard_strings: true,
            lines: Lines { pos: 0, line: 1 },
        };
        let mut out = Vec::new();
        loop {
            lexer.skip_blank()?;
            let start = lexer.pos;
            let line = lexer.line_at(start);
            let Some(first) = lexer.token()? else {
                return Ok(out);
            };
            match first {
                // An empty statement.
                Token::Semicolon => continue,
                Token::Backslash => {
                    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
                    lexer.pos = end;
                    let command = text[start..end].trim_end();
                    let name = command.split_ascii_whitespace().next().unwrap_or_default();
                    if name != "\\restrict" && name != "\\unrestrict" {
                        return Err(GlobalsError::PsqlCommand {
                            line,
                            command: preview(command),
                        });
                    }
                    out.push(Statement {
                        line,
                        text: command,
                        kind: Kind::PsqlGuard,
                    });
                    continue;
                }
                _ => {}
            }
            let mut head = vec![first];
            let mut end = lexer.pos;
            loop {
                lexer.skip_blank()?;
                match lexer.token()? {
                    None => break,
                    Some(Token::Semicolon) => {
                        end = lexer.pos;
                        break;
                    }
                    Some(Token::Backslash) => {
                        return Err(GlobalsError::Backslash {
                            line,
                            statement: preview(&text[start..lexer.pos]),
                        })
                    }
                    Some(t) => {
                        if head.len() < HEAD_TOKENS {
                            head.push(t);
                        }
                        end = lexer.pos;
                    }
                }
            }
            let statement = &text[start..end];
            let kind = classify(&head).map_err(|why| why.error(line, preview(statement)))?;
            if let Kind::Set {
                standard_strings: Some(on),
            } = kind
            {
                lexer.standard_strings = on;
            }
            out.push(Statement {
                line,
                text: statement,
                kind,
            });
        }
    }

    /// How many tokens of a statement [`classify`] looks at (more are never kept).
    const HEAD_TOKENS: usize = 6;

    /// Why a statement was refused, before its line and text are known.
    enum Refusal {
        Unexpected,
        RoleName,
        StandardStrings,
    }

    impl Refusal {
        fn error(self, line: usize, statement: String) -> GlobalsError {
            match self {
                Refusal::Unexpected => GlobalsError::Unexpected { line, statement },
                Refusal::RoleName => GlobalsError::RoleName { line, statement },
                Refusal::StandardStrings => GlobalsError::StandardStrings { line, statement },
            }
        }
    }

    /// What a statement is, from its first tokens (at most [`HEAD_TOKENS`]).
    fn classify(head: &[Token]) -> Result<Kind, Refusal> {
        let word = |i: usize| match head.get(i) {
            Some(Token::Word(w)) => Some(w.as_str()),
            _ => None,
        };
        match (word(0), word(1)) {
            // `SET <parameter> = | TO <value>`, but not the forms that change who runs the
            // rest (`SET ROLE`, `SET SESSION AUTHORIZATION`), which pg_dumpall never writes.
            (Some("set"), Some(parameter)) => {
                let to = matches!(head.get(2), Some(Token::Char('='))) || word(2) == Some("to");
                if !to
                    || matches!(
                        parameter,
                        "role" | "session_authorization" | "session" | "local" | "transaction"
                    )
                {
                    return Err(Refusal::Unexpected);
                }
                if parameter != "standard_conforming_strings" {
                    return Ok(Kind::Set {
                        standard_strings: None,
                    });
                }
                let value = match head.get(3) {
                    Some(Token::Word(v)) | Some(Token::Str(v)) => v.to_ascii_lowercase(),
                    _ => String::new(),
                };
                let on = match value.as_str() {
                    "on" | "true" => true,
                    "off" | "false" => false,
                    _ => return Err(Refusal::StandardStrings),
                };
                if head.len() != 4 {
                    return Err(Refusal::StandardStrings);
                }
                Ok(Kind::Set {
                    standard_strings: Some(on),
                })
            }
            (Some("create"), Some("role")) => Ok(Kind::CreateRole(role(head)?)),
            (Some("alter"), Some("role")) => {
                let role = role(head)?;
                let attributes = !matches!(word(3), Some("set" | "reset" | "in"));
                Ok(Kind::AlterRole { role, attributes })
            }
            // `CREATE TABLESPACE <name> OWNER <role> LOCATION '…'`, as pg_dumpall writes it.
            (Some("create"), Some("tablespace")) => {
                if word(3) != Some("owner") || word(5) != Some("location") {
                    return Err(Refusal::Unexpected);
                }
                Ok(Kind::CreateTablespace {
                    name: bare_or_quoted(head.get(2))?,
                    owner: bare_or_quoted(head.get(4))?,
                })
            }
            (Some("alter"), Some("tablespace")) => Ok(Kind::Other),
            (Some("comment"), Some("on")) if matches!(word(2), Some("role" | "tablespace")) => {
                Ok(Kind::Other)
            }
            (Some("security"), Some("label")) | (Some("grant" | "revoke"), _) => Ok(Kind::Other),
            _ => Err(Refusal::Unexpected),
        }
    }

    /// A name as pg_dumpall's `fmtId` writes it: quoted, or bare when it is
    /// `[a-z_][a-z0-9_]*`.
    fn bare_or_quoted(token: Option<&Token>) -> Result<String, Refusal> {
        match token {
            Some(Token::Ident(name)) => Ok(name.clone()),
            Some(Token::Word(w))
                if w.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                Ok(w.clone())
            }
            _ => Err(Refusal::RoleName),
        }
    }

    /// The role a `CREATE ROLE`/`ALTER ROLE` statement names: its third token, which a word
    /// (or the statement's end) must follow.
    fn role(head: &[Token]) -> Result<RoleRef, Refusal> {
        if !matches!(head.get(3), None | Some(Token::Word(_))) {
            return Err(Refusal::RoleName);
        }
        match head.get(2) {
            Some(Token::Ident(name)) => Ok(RoleRef::Named(name.clone())),
            Some(Token::Word(w)) => match w.as_str() {
                "current_user" | "current_role" | "session_user" => Ok(RoleRef::Current),
                "all" => Ok(RoleRef::All),
                // pg_dumpall leaves only these names bare.
                _ if w.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
                {
                    Ok(RoleRef::Named(w.clone()))
                }
                _ => Err(Refusal::RoleName),
            },
            _ => Err(Refusal::RoleName),
        }
    }

    /// The start of `text` for a message: at most 80 characters, escaped (newlines show as
    /// `\n`), so a name cannot forge lines of a log or an error.
    pub fn preview(text: &str) -> String {
        let cut: String = text.chars().take(80).collect();
        if cut.len() < text.len() {
            format!("{cut:?}…")
        } else {
            format!("{cut:?}")
        }
    }

    /// A token of SQL, as far as cutting statements and classifying them needs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Token {
        /// A bare keyword or identifier, its ASCII letters folded to lower case (as the server
        /// folds them).
        Word(String),
        /// A double-quoted identifier, its doubled quotes undone.
        Ident(String),
        /// A `U&"…"` identifier, whose escapes are not undone here: no role is read from it.
        UnicodeIdent,
        /// A string literal of any kind, its content as written between the quotes.
        Str(String),
        /// A number or a parameter (`$1`).
        Number,
        Semicolon,
        /// A backslash outside quotes: a psql command.
        Backslash,
        /// Any other character outside quotes (operators, punctuation).
        Char(char),
    }

    /// Line numbers of positions met in increasing order.
    struct Lines {
        pos: usize,
        line: usize,
    }

    struct Lexer<'a> {
        text: &'a str,
        bytes: &'a [u8],
        pos: usize,
        /// Whether `'…'` takes backslashes literally (`standard_conforming_strings`).
        standard_strings: bool,
        lines: Lines,
    }

    fn is_space(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
    }

    fn is_ident_start(b: u8) -> bool {
        b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
    }

    fn is_ident_cont(b: u8) -> bool {
        is_ident_start(b) || b.is_ascii_digit() || b == b'$'
    }

    impl Lexer<'_> {
        fn at(&self, i: usize) -> Option<u8> {
            self.bytes.get(self.pos + i).copied()
        }

        fn line_at(&mut self, pos: usize) -> usize {
            let Lines { pos: from, line } = self.lines;
            let line = line + memchr::memchr_iter(b'\n', &self.bytes[from..pos]).count();
            self.lines = Lines { pos, line };
            line
        }

        fn unterminated(&mut self, what: &'static str, start: usize) -> GlobalsError {
            GlobalsError::Unterminated {
                what,
                line: self.line_at(start),
            }
        }

        /// Skips white space and comments (`--` to the end of the line, nested `/* */`).
        fn skip_blank(&mut self) -> Result<(), GlobalsError> {
            loop {
                match (self.at(0), self.at(1)) {
                    (Some(b), _) if is_space(b) => self.pos += 1,
                    (Some(b'-'), Some(b'-')) => {
                        self.pos = memchr::memchr2(b'\n', b'\r', &self.bytes[self.pos..])
                            .map_or(self.bytes.len(), |i| self.pos + i);
                    }
                    (Some(b'/'), Some(b'*')) => {
                        let start = self.pos;
                        self.pos += 2;
                        let mut depth = 1;
                        while depth > 0 {
                            match (self.at(0), self.at(1)) {
                                (None, _) => return Err(self.unterminated("a comment", start)),
                                (Some(b'/'), Some(b'*')) => {
                                    depth += 1;
                                    self.pos += 2;
                                }
                                (Some(b'*'), Some(b'/')) => {
                                    depth -= 1;
                                    self.pos += 2;
                                }
                                _ => self.pos += 1,
                            }
                        }
                    }
                    _ => return Ok(()),
                }
            }
        }

        /// The next token; white space and comments must have been skipped.
        fn token(&mut self) -> Result<Option<Token>, GlobalsError> {
            let Some(b) = self.at(0) else {
                return Ok(None);
            };
            let start = self.pos;
            let token = match b {
                b';' => {
                    self.pos += 1;
                    Token::Semicolon
                }
                b'\\' => {
                    self.pos += 1;
                    Token::Backslash
                }
                b'"' => {
                    self.pos += 1;
                    Token::Ident(self.quoted(b'"', false, "a quoted identifier", start)?)
                }
                b'\'' => {
                    self.pos += 1;
                    let escapes = !self.standard_strings;
                    Token::Str(self.quoted(b'\'', escapes, "a string", start)?)
                }
                b'$' => self.dollar(start)?,
                b'0'..=b'9' => {
                    self.number();
                    Token::Number
                }
                _ if is_ident_start(b) => self.word(start)?,
                _ => {
                    // Only ASCII is left: every other byte starts an identifier.
                    self.pos += 1;
                    Token::Char(char::from(b))
                }
            };
            Ok(Some(token))
        }

        /// The body of a quoted token after its opening `quote`, up to the closing one: a
        /// doubled quote is one quote; with `escapes`, a backslash takes the next byte as it
        /// is. Returns the text inside, doubled quotes undone.
        fn quoted(
            &mut self,
            quote: u8,
            escapes: bool,
            what: &'static str,
            start: usize,
        ) -> Result<String, GlobalsError> {
            let mut content = String::new();
            let mut from = self.pos;
            loop {
                let found = if escapes {
                    memchr::memchr2(quote, b'\\', &self.bytes[self.pos..])
                } else {
                    memchr::memchr(quote, &self.bytes[self.pos..])
                };
                let Some(i) = found else {
                    return Err(self.unterminated(what, start));
                };
                self.pos += i;
                if self.at(0) == Some(b'\\') {
                    // The escaped byte is ASCII or starts a character whose other bytes are
                    // not ASCII: either way no quote.
                    if self.at(1).is_none() {
                        return Err(self.unterminated(what, start));
                    }
                    self.pos += 2;
                    continue;
                }
                if self.at(1) == Some(quote) {
                    content.push_str(&self.text[from..=self.pos]);
                    self.pos += 2;
                    from = self.pos;
                    continue;
                }
                content.push_str(&self.text[from..self.pos]);
                self.pos += 1;
                return Ok(content);
            }
        }

        /// A token starting with `$`: a dollar-quoted string (`$$…$$`, `$tag$…$tag$`), a
        /// parameter (`$1`), or a lone `$`.
        fn dollar(&mut self, start: usize) -> Result<Token, GlobalsError> {
            let mut end = self.pos + 1;
            if self.bytes.get(end).is_some_and(|b| b.is_ascii_digit()) {
                while self.bytes.get(end).is_some_and(|b| b.is_ascii_digit()) {
                    end += 1;
                }
                self.pos = end;
                return Ok(Token::Number);
            }
            if self.bytes.get(end).copied().is_some_and(is_ident_start) {
                while self
                    .bytes
                    .get(end)
                    .is_some_and(|&b| is_ident_start(b) || b.is_ascii_digit())
                {
                    end += 1;
                }
            }
            if self.bytes.get(end) != Some(&b'$') {
                // `$tag` without its closing `$` is a lone `$` (the server then fails).
                self.pos += 1;
                return Ok(Token::Char('$'));
            }
            let delimiter = &self.text[self.pos..=end];
            let body = end + 1;
            match self.text[body..].find(delimiter) {
                Some(i) => {
                    self.pos = body + i + delimiter.len();
                    Ok(Token::Str(self.text[body..body + i].to_string()))
                }
                None => Err(self.unterminated("a dollar-quoted string", start)),
            }
        }

        /// A number: digits, a fraction, an exponent.
        fn number(&mut self) {
            while self
                .at(0)
                .is_some_and(|b| b.is_ascii_digit() || b == b'.' || b == b'_')
            {
                self.pos += 1;
            }
            let exponent = matches!(self.at(0), Some(b'e' | b'E'))
                && (self.at(1).is_some_and(|b| b.is_ascii_digit())
                    || (matches!(self.at(1), Some(b'+' | b'-'))
                        && self.at(2).is_some_and(|b| b.is_ascii_digit())));
            if exponent {
                self.pos += 2;
                while self.at(0).is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
        }

        /// A word, or the string or identifier a one-letter prefix opens: `E'…'` (backslash
        /// escapes), `B'…'`/`X'…'` (up to the next quote), `U&'…'` (doubled quotes, no
        /// escapes), `U&"…"` (doubled quotes). (`N'…'` is the word `n` and a string.)
        fn word(&mut self, start: usize) -> Result<Token, GlobalsError> {
            while self.at(0).is_some_and(is_ident_cont) {
                self.pos += 1;
            }
            let word = self.text[start..self.pos].to_ascii_lowercase();
            match (word.as_str(), self.at(0), self.at(1)) {
                ("e", Some(b'\''), _) => {
                    self.pos += 1;
                    Ok(Token::Str(self.quoted(b'\'', true, "a string", start)?))
                }
                ("b" | "x", Some(b'\''), _) => {
                    self.pos += 1;
                    match memchr::memchr(b'\'', &self.bytes[self.pos..]) {
                        Some(i) => {
                            let content = self.text[self.pos..self.pos + i].to_string();
                            self.pos += i + 1;
                            Ok(Token::Str(content))
                        }
                        None => Err(self.unterminated("a bit string", start)),
                    }
                }
                ("u", Some(b'&'), Some(b'\'')) => {
                    self.pos += 2;
                    Ok(Token::Str(self.quoted(b'\'', false, "a string", start)?))
                }
                ("u", Some(b'&'), Some(b'"')) => {
                    self.pos += 2;
                    self.quoted(b'"', false, "a quoted identifier", start)?;
                    Ok(Token::UnicodeIdent)
                }
                _ => Ok(Token::Word(word)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// In-place restore: the service's own server
// ---------------------------------------------------------------------------------------------

/// The service's own (live) server as a restore's target ([`Engine::in_place`]).
pub struct PgInPlace {
    service: String,
    password_file: Option<PathBuf>,
    /// Reaches the server as the service's configured user; spools in the scratch folder.
    loader: Loader,
    /// The database parts loaded so far.
    loaded: Vec<String>,
}

impl Postgres {
    /// The live server as a restore target: checks that it answers and is no replica.
    async fn open_in_place(&self, scratch: &Path) -> Result<PgInPlace> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let admin = self.maintenance_db().to_string();
        let client = ep.connect(&admin).await?;
        let in_recovery: bool = client
            .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
            .await
            .map_err(|e| pg_error(&ep.target(&admin), &e))?
            .try_get(0)
            .map_err(|e| pg_error(&ep.target(&admin), &e))?;
        if in_recovery {
            return Err(Error::Other(format!(
                "{} is a replica (in recovery) and cannot be written: run the in-place restore \
                 of service {} on its primary",
                ep.target(&admin),
                self.spec.name
            )));
        }
        tracing::info!(service = %self.spec.name, server = %ep.target(&admin), "in-place restore into the live PostgreSQL server");
        Ok(PgInPlace {
            service: self.spec.name.clone(),
            password_file: self.spec.password_file.clone(),
            loader: Loader {
                tools: self.tools.clone(),
                ep,
                admin_db: admin,
                spool_dir: scratch.to_path_buf(),
                spools: 0,
                mode: Mode::Replace,
                failed: Vec::new(),
                service: self.spec.name.clone(),
            },
            loaded: Vec::new(),
        })
    }
}

impl PgInPlace {
    /// Applies the globals part over the roles that exist ([`apply_globals`]): `CREATE ROLE`
    /// is left out for roles that exist, and so is every change of the attributes (password
    /// included) of the role the agent connects as, which keeps its way in. A statement that
    /// fails (e.g. a tablespace that exists) is skipped and reported with the verification.
    async fn load_globals(&mut self, reader: Box<dyn AsyncRead + Send + Unpin>) -> Result<()> {
        let script = read_globals(reader).await?;
        let failed = apply_globals(
            &self.loader.ep,
            &self.loader.admin_db,
            &script,
            &self.service,
            &Tablespaces::AsDumped,
        )
        .await?;
        if !failed.is_empty() {
            tracing::warn!(service = %self.service, failed = failed.len(), "statements of the globals part failed and were skipped");
        }
        self.loader.failed.extend(failed);
        tracing::info!(service = %self.service, "globals applied over the existing roles");
        Ok(())
    }
}

#[async_trait::async_trait]
impl RestoreTarget for PgInPlace {
    /// The live server as the service's config names it; `data_dir` is empty (the server's
    /// data folder is not the agent's to name).
    fn connection(&self) -> Connection {
        Connection {
            engine: EngineKind::Postgres,
            host: self.loader.ep.host.clone(),
            port: self.loader.ep.port,
            user: self.loader.ep.user.clone(),
            password_file: self.password_file.clone(),
            data_dir: PathBuf::new(),
        }
    }

    async fn load(
        &mut self,
        part: &PartPlan,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        match part.kind {
            PartKind::Globals => self.load_globals(reader).await,
            PartKind::Database => {
                self.loader.load_database(&part.name, reader).await?;
                self.loaded.push(part.name.clone());
                Ok(())
            }
            other => Err(Error::Other(format!(
                "a PostgreSQL restore cannot load part {:?} of kind {other:?}",
                part.name
            ))),
        }
    }

    /// Counts rows in the databases of the backup only (those loaded, or named in
    /// `expected`): the live server may hold others. `pg_amcheck` checks those of them where
    /// the `amcheck` extension is installed; an in-place restore installs no extension, so
    /// where none has it the engine check is skipped and `ok` rests on the row counts.
    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        let databases: Vec<String> = self
            .loader
            .databases()
            .await?
            .into_iter()
            .filter(|d| super::in_backup(d, &self.loaded, expected))
            .collect();
        let found = self.loader.count(&databases).await?;
        let mut v = compare_stats(expected, &found);
        let with = self.loader.with_amcheck(&databases).await?;
        let (check_ok, check) = if with.is_empty() {
            (
                true,
                "pg_amcheck: skipped for in-place (the amcheck extension is installed in none of \
                 the restored databases, and an in-place restore installs no extension)"
                    .to_string(),
            )
        } else {
            let (ok, mut text) = self.loader.amcheck(&with).await?;
            let without: Vec<&String> = databases.iter().filter(|d| !with.contains(d)).collect();
            if !without.is_empty() {
                text.push_str(&format!(
                    "\nnot checked (no amcheck extension): {without:?}"
                ));
            }
            (ok, text)
        };
        v.engine_check = check;
        v.failed_objects = self.loader.failed.clone();
        v.ok = v.mismatches.is_empty() && check_ok && v.failed_objects.is_empty();
        tracing::info!(service = %self.service, tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "in-place verification done");
        Ok(v)
    }
}

/// Stops a cluster that [`provision`] made in `dir` (`pg_ctl stop -m fast`). A cluster that
/// is not running is fine.
pub async fn teardown(dir: &Path) -> Result<()> {
    let l = layout(dir);
    if !l.data.join("postmaster.pid").exists() {
        return Ok(());
    }
    let pg_ctl = match std::fs::read(&l.pg_ctl_path) {
        Ok(bytes) => PathBuf::from(String::from_utf8_lossy(&bytes).trim().to_string()),
        Err(_) => PgTools::new(None)?.path("pg_ctl")?,
    };
    let user = SystemUser::when_root("postgres", "PostgreSQL")?;
    match pg_ctl_command(&pg_ctl, "stop", dir, user.as_ref())
        .output()
        .await
    {
        Ok(_) => {
            tracing::info!(dir = %dir.display(), "PostgreSQL cluster stopped");
            Ok(())
        }
        // It stopped meanwhile (or its pid file was stale).
        Err(_) if !l.data.join("postmaster.pid").exists() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod restore_log_tests {
    use super::restore_failures;

    fn read(text: &str) -> super::RestoreLog {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, text).unwrap();
        restore_failures(&path, "docs").unwrap()
    }

    #[test]
    fn each_failed_object_is_named_with_its_error() {
        let log = read(
            "pg_restore: connecting to database for restore\n\
             pg_restore: launching item 3360 MATERIALIZED VIEW DATA word_stats\n\
             pg_restore: while PROCESSING TOC:\n\
             pg_restore: from TOC entry 3360; 0 16411 MATERIALIZED VIEW DATA word_stats app\n\
             pg_restore: error: could not execute query: ERROR:  relation \"documents\" does not exist\n\
             LINE 1: SELECT to_tsvector('simple', body) FROM documents\n\
             Command was: REFRESH MATERIALIZED VIEW public.word_stats;\n\
             \n\
             pg_restore: finished item 3360 MATERIALIZED VIEW DATA word_stats\n\
             pg_restore: from TOC entry 3361; 0 16420 TABLE DATA my table app\n\
             pg_restore: error: COPY failed for table \"my table\": ERROR:  boom\n\
             pg_restore: error: could not execute query: ERROR:  relation \"documents\" does not exist\n\
             LINE 1: SELECT to_tsvector('simple', body) FROM documents\n\
             Command was: REFRESH MATERIALIZED VIEW public.word_stats;\n\
             pg_restore: warning: errors ignored on restore: 3\n",
        );
        assert!(log.completed);
        let named: Vec<(&str, &str)> = log
            .objects
            .iter()
            .map(|o| (o.name.as_str(), o.reason.lines().next().unwrap()))
            .collect();
        assert_eq!(
            named,
            [
                (
                    "docs: MATERIALIZED VIEW DATA word_stats app",
                    "could not execute query: ERROR:  relation \"documents\" does not exist"
                ),
                (
                    "docs: TABLE DATA my table app",
                    "COPY failed for table \"my table\": ERROR:  boom"
                ),
                (
                    "docs: TABLE DATA my table app",
                    "could not execute query: ERROR:  relation \"documents\" does not exist"
                ),
            ]
        );
        assert!(log.objects[0]
            .reason
            .ends_with("Command was: REFRESH MATERIALIZED VIEW public.word_stats;"));
    }

    #[test]
    fn a_restore_that_stopped_part_way_is_not_completed() {
        let log = read(
            "pg_restore: connecting to database for restore\n\
             pg_restore: error: connection to server on socket \"/x/.s.PGSQL.5432\" failed\n",
        );
        assert!(!log.completed);
        assert!(log.tail.contains("connection to server"));
    }
}

#[cfg(test)]
mod tests {
    use super::globals::{parse, GlobalsError, Kind, RoleRef, Statement};
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("my\"db"), "\"my\"\"db\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        // A backslash: an escape string, right whatever standard_conforming_strings is.
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(dbname_conninfo("a b'c\\"), "dbname='a b\\'c\\\\'");
        assert_eq!(dbname_conninfo("--host=x"), "dbname='--host=x'");
        assert_eq!(conf_literal("/tmp/it's\\x").unwrap(), "'/tmp/it''s\\\\x'");
        assert!(conf_literal("a\nb").is_err());
        assert_eq!(escaped(b"latin1-\xe9t\xe9"), "\"latin1-\\xe9t\\xe9\"");
    }

    /// `name` as pg_dumpall's `fmtId` writes it: bare when it is a plain lower-case word,
    /// else double-quoted with quotes doubled.
    fn fmt_id(name: &str) -> String {
        let bare = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if bare {
            name.to_string()
        } else {
            quote_ident(name)
        }
    }

    /// What pg_dumpall 15 writes for a role `name` with a password, a comment, a setting and
    /// a membership; the comment lines carry the name with line breaks made spaces, as
    /// pg_dumpall does since 15.14.
    fn dumped_role(name: &str) -> String {
        let id = fmt_id(name);
        let in_comment = name.replace(['\n', '\r'], " ");
        format!(
            "CREATE ROLE {id};\n\
             ALTER ROLE {id} WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN \
             NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vy';\n\
             COMMENT ON ROLE {id} IS {};\n\
             \n--\n-- User Config \"{in_comment}\"\n--\n\n\
             ALTER ROLE {id} SET work_mem TO '8MB';\n\
             GRANT mallory TO {id} GRANTED BY postgres;\n",
            quote_literal(name)
        )
    }

    fn kinds(statements: &[Statement<'_>]) -> Vec<Kind> {
        statements.iter().map(|s| s.kind.clone()).collect()
    }

    fn named(name: &str) -> RoleRef {
        RoleRef::Named(name.to_string())
    }

    /// Checks that the statements of `dumped_role(name)` come back whole, naming `name`.
    fn assert_role_statements(name: &str) {
        let script = dumped_role(name);
        let statements = parse(script.as_bytes()).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(
            kinds(&statements),
            [
                Kind::CreateRole(named(name)),
                Kind::AlterRole {
                    role: named(name),
                    attributes: true
                },
                Kind::Other,
                Kind::AlterRole {
                    role: named(name),
                    attributes: false
                },
                Kind::Other,
            ],
            "{name:?}"
        );
        let id = fmt_id(name);
        assert_eq!(statements[0].text, format!("CREATE ROLE {id};"), "{name:?}");
        assert!(statements[4]
            .text
            .starts_with(&format!("GRANT mallory TO {id} ")));
        // Every statement is a piece of the script, and nothing but comments and white space
        // lies between them.
        let mut rest = script.as_str();
        for s in &statements {
            let at = rest.find(s.text).unwrap();
            assert!(
                rest[..at]
                    .lines()
                    .all(|l| l.trim().is_empty() || l.starts_with("--")),
                "{name:?}: {:?} between statements",
                &rest[..at]
            );
            rest = &rest[at + s.text.len()..];
        }
    }

    #[test]
    fn every_hostile_name_stays_inside_its_statements() {
        let mut names = strongbox_integration::hostile::postgres_names();
        names.extend(
            [
                // The exploit of issue 12: a line edit made its first line SQL.
                ";COPY(SELECT)TO PROGRAM'>/tmp/sbxpw';\nALTER ROLE postgres WITH ",
                "x\";\nCREATE ROLE postgres;\n--",
                "a\nALTER ROLE postgres WITH NOLOGIN",
                "\"",
                "\"\"",
                "';",
                "$$",
                "$a$;$a$",
                "/*",
                "*/;",
                "--",
                "\\",
                "E'",
                "U&\"",
                "\\restrict x\n\\! id",
                "Postgres",
                "select",
            ]
            .map(String::from),
        );
        for name in &names {
            assert_role_statements(name);
        }
    }

    #[test]
    fn random_names_stay_inside_their_statements() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "\"'\\;$-/*\n\r\t aA_1&Ué`#%{}()=,.:".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for _ in 0..5000 {
            let len = rng.gen_range(1..=20);
            let name: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            assert_role_statements(&name);
        }
    }

    #[test]
    fn a_real_globals_dump_is_read_statement_by_statement() {
        let script = "--\n-- PostgreSQL database cluster dump\n--\n\n\
            \\restrict XQN9qS8Uw7pzD03Q\n\n\
            SET default_transaction_read_only = off;\n\n\
            SET client_encoding = 'UTF8';\n\
            SET standard_conforming_strings = on;\n\n\
            --\n-- Roles\n--\n\n\
            CREATE ROLE \"a\nb\"\"c\";\n\
            ALTER ROLE \"a\nb\"\"c\" WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:x';\n\
            CREATE ROLE postgres;\n\
            ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;\n\
            CREATE ROLE \"select\";\n\
            COMMENT ON ROLE mallory IS 'hi';\n\n\
            --\n-- User Config \"a b\"\"c\"\n--\n\n\
            ALTER ROLE \"a\nb\"\"c\" SET work_mem TO '1MB';\n\
            ALTER ROLE mallory IN DATABASE postgres SET work_mem TO '9MB';\n\
            GRANT mallory TO \"a\nb\"\"c\" GRANTED BY postgres;\n\
            GRANT SET ON PARAMETER work_mem TO mallory;\n\
            CREATE TABLESPACE ts OWNER postgres LOCATION '/tmp/pgt';\n\n\
            \\unrestrict XQN9qS8Uw7pzD03Q\n\n\
            --\n-- PostgreSQL database cluster dump complete\n--\n\n";
        let statements = parse(script.as_bytes()).unwrap();
        let odd = "a\nb\"c";
        assert_eq!(
            kinds(&statements),
            [
                Kind::PsqlGuard,
                Kind::Set {
                    standard_strings: None
                },
                Kind::Set {
                    standard_strings: None
                },
                Kind::Set {
                    standard_strings: Some(true)
                },
                Kind::CreateRole(named(odd)),
                Kind::AlterRole {
                    role: named(odd),
                    attributes: true
                },
                Kind::CreateRole(named("postgres")),
                Kind::AlterRole {
                    role: named("postgres"),
                    attributes: true
                },
                Kind::CreateRole(named("select")),
                Kind::Other,
                Kind::AlterRole {
                    role: named(odd),
                    attributes: false
                },
                Kind::AlterRole {
                    role: named("mallory"),
                    attributes: false
                },
                Kind::Other,
                Kind::Other,
                Kind::CreateTablespace {
                    name: "ts".into(),
                    owner: "postgres".into()
                },
                Kind::PsqlGuard,
            ]
        );
        assert_eq!(statements[0].text, "\\restrict XQN9qS8Uw7pzD03Q");
        assert_eq!(statements[0].line, 5);
        assert_eq!(statements[4].text, "CREATE ROLE \"a\nb\"\"c\";");
        assert_eq!(statements[4].line, 16);
        assert_eq!(statements[5].line, 18);
    }

    #[test]
    fn a_tablespace_is_read_with_its_name_and_owner() {
        let statements =
            parse(b"CREATE TABLESPACE \"fast;\ndisk\" OWNER \"A b\" LOCATION '/x';\n").unwrap();
        assert_eq!(
            kinds(&statements),
            [Kind::CreateTablespace {
                name: "fast;\ndisk".into(),
                owner: "A b".into()
            }]
        );
        assert!(parse(b"CREATE TABLESPACE ts LOCATION '/x';").is_err());
        assert!(parse(b"CREATE TABLESPACE 'ts' OWNER postgres LOCATION '/x';").is_err());
        assert_eq!(
            crate::postgres::tablespace_dir_name("ts_fast-1", 3),
            "ts_fast-1"
        );
        assert_eq!(crate::postgres::tablespace_dir_name("../etc", 3), "~3");
        assert_eq!(crate::postgres::tablespace_dir_name("", 4), "~4");
        assert_eq!(crate::postgres::tablespace_dir_name("a/b", 5), "~5");
    }

    #[test]
    fn every_way_of_quoting_is_read_as_the_server_reads_it() {
        let role = |script: &str| -> Vec<Kind> { kinds(&parse(script.as_bytes()).unwrap()) };
        // A string that holds what looks like the end of a statement and a new one.
        assert_eq!(
            role("COMMENT ON ROLE a IS 'x''; ALTER ROLE postgres WITH NOLOGIN; --';"),
            [Kind::Other]
        );
        // Escape strings: a backslash takes the quote after it.
        assert_eq!(
            role("COMMENT ON ROLE a IS E'x\\'; ALTER ROLE b WITH NOLOGIN; --';"),
            [Kind::Other]
        );
        // Standard strings off: plain strings take backslash escapes too, until it is on.
        assert_eq!(
            role(
                "SET standard_conforming_strings = off;\n\
                 COMMENT ON ROLE a IS 'x\\'; ALTER ROLE b WITH NOLOGIN; --';\n\
                 SET standard_conforming_strings = 'on';\n\
                 COMMENT ON ROLE a IS 'x\\';"
            ),
            [
                Kind::Set {
                    standard_strings: Some(false)
                },
                Kind::Other,
                Kind::Set {
                    standard_strings: Some(true)
                },
                Kind::Other,
            ]
        );
        // Bit strings end at the next quote, whatever comes before it.
        assert_eq!(role("COMMENT ON ROLE a IS B'\\';"), [Kind::Other]);
        // Dollar quotes, with and without a tag, and a tag-like text inside.
        assert_eq!(
            role("COMMENT ON ROLE a IS $$x'; ALTER ROLE b;$$; COMMENT ON ROLE a IS $t$ $$ ; $t$;"),
            [Kind::Other, Kind::Other]
        );
        // A `$` inside a word is part of the word, not a dollar quote.
        assert_eq!(
            role("GRANT a$b TO c; GRANT d TO e;"),
            [Kind::Other, Kind::Other]
        );
        // Nested block comments and line comments.
        assert_eq!(
            role("/* a /* b */ ; GRANT x TO y; */ GRANT a TO b; -- ; GRANT c TO d;\nGRANT e TO f;"),
            [Kind::Other, Kind::Other]
        );
        // Bare names fold to lower case; CURRENT_USER is the session's own role.
        assert_eq!(
            role("ALTER ROLE App WITH LOGIN; ALTER ROLE CURRENT_USER WITH NOLOGIN; ALTER ROLE ALL SET x TO 1;"),
            [
                Kind::AlterRole {
                    role: named("app"),
                    attributes: true
                },
                Kind::AlterRole {
                    role: RoleRef::Current,
                    attributes: true
                },
                Kind::AlterRole {
                    role: RoleRef::All,
                    attributes: false
                },
            ]
        );
        // A last statement without its `;`, and empty statements.
        assert_eq!(role(";; GRANT a TO b"), [Kind::Other]);
    }

    #[test]
    fn what_pg_dumpall_never_writes_is_refused_before_anything_applies() {
        let refused = |script: &str| parse(script.as_bytes()).unwrap_err();
        assert!(matches!(
            refused("CREATE ROLE a;\nCOPY (SELECT 1) TO PROGRAM 'id';"),
            GlobalsError::Unexpected { line: 2, .. }
        ));
        assert!(matches!(
            refused("SET ROLE mallory;"),
            GlobalsError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("SET SESSION AUTHORIZATION mallory;"),
            GlobalsError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("ALTER USER postgres WITH NOSUPERUSER;"),
            GlobalsError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("\\! touch /tmp/x\n"),
            GlobalsError::PsqlCommand { line: 1, .. }
        ));
        assert!(matches!(
            refused("GRANT a TO b \\g\n"),
            GlobalsError::Backslash { .. }
        ));
        // A role named in a way whose meaning is not read here.
        assert!(matches!(
            refused("ALTER ROLE U&\"\\0070ostgres\" WITH NOSUPERUSER;"),
            GlobalsError::RoleName { .. }
        ));
        assert!(matches!(
            refused("ALTER ROLE Ünïcode WITH LOGIN;"),
            GlobalsError::RoleName { .. }
        ));
        assert!(matches!(
            refused("SET standard_conforming_strings = maybe;"),
            GlobalsError::StandardStrings { .. }
        ));
        for (script, what) in [
            ("CREATE ROLE \"a;\n", "a quoted identifier"),
            ("COMMENT ON ROLE a IS 'x;\n", "a string"),
            ("COMMENT ON ROLE a IS $q$ x;\n", "a dollar-quoted string"),
            ("GRANT a TO b; /* /* */\n", "a comment"),
        ] {
            assert!(
                matches!(refused(script), GlobalsError::Unterminated { what: w, line: 1 } if w == what),
                "{script:?}"
            );
        }
        assert!(matches!(
            parse(b"CREATE ROLE \"latin1-\xe9t\xe9\";").unwrap_err(),
            GlobalsError::NotUtf8 { offset: 20 }
        ));
    }
}
