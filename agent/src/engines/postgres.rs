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
//! - **Loading** into a fresh cluster never changes a database it did not create, except
//!   `postgres`-like databases that a fresh cluster already has (restored into without
//!   `--create`). One loader (`Loader`) serves fresh clusters and the live server. A spooled
//!   part is removed after its load, also when the load fails.
//! - **In place** (the live server, reached as the service's configured user; never a
//!   replica): a database part replaces exactly that database (`DROP DATABASE ... WITH
//!   (FORCE)` ends its sessions, `pg_restore --create` makes it again, commits synchronous);
//!   databases not in the backup are never touched, nor counted. No role is ever dropped:
//!   the globals skip `CREATE ROLE` for roles that exist, and the role the agent connects as
//!   keeps its password and attributes. No extension is installed: `pg_amcheck` checks only
//!   restored databases that have `amcheck`, else the engine check is reported skipped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_postgres::{Client, NoTls};

use super::counting;
use super::pgarchive::ArchiveCounter;
use super::process::{self, SystemUser, ToolCommand};
use super::{
    compare_stats, BackupRun, Connection, Dump, Engine, EngineKind, PartKind, PartPlan, Probe,
    RestoreTarget, Role, ServiceSpec, TableStat, Verification,
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

/// Tables whose rows a part carries: plain tables (and partitions), not system, temporary or
/// extension-owned ones. Inheritance children are counted on their own (`ONLY`).
const TABLES_SQL: &str = "SELECT n.nspname::text, c.relname::text \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind = 'r' AND c.relpersistence <> 't' \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                        AND d.objid = c.oid AND d.deptype = 'e') \
    ORDER BY 1, 2";

const DATABASES_SQL: &str = "SELECT datname::text FROM pg_catalog.pg_database \
    WHERE datallowconn AND NOT datistemplate ORDER BY 1";

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

/// `value` as an SQL string literal (standard_conforming_strings).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A libpq connection string naming only the database, safe for any name (`-d` would take a
/// name with `=` for a connection string).
fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
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
            "{}:{} (database {db}, user {})",
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
        let mut cmd = tools.command(tool)?;
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string())
            .env("PGAPPNAME", "strongbox-agent");
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
        Ok(cmd)
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

/// The tables whose rows a part carries (`TABLES_SQL`), as (schema, table), in the client's
/// current transaction.
async fn list_tables(client: &Client, target: &str) -> Result<Vec<(String, String)>> {
    Ok(client
        .query(TABLES_SQL, &[])
        .await
        .map_err(|e| pg_error(target, &e))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// Exact row counts of every table of the connected database, as `<db>.<schema>.<table>`, in
/// the client's current transaction. `known` holds counts already taken from the dump stream
/// (by (schema, table)); only the other tables are counted with `count(*)`.
async fn count_tables(
    client: &Client,
    db: &str,
    target: &str,
    known: &HashMap<(String, String), u64>,
) -> Result<Vec<TableStat>> {
    let mut stats = Vec::new();
    for (schema, table) in list_tables(client, target).await? {
        let rows = match known.get(&(schema.clone(), table.clone())) {
            Some(n) => *n,
            None => {
                let sql = format!(
                    "SELECT count(*) FROM ONLY {}.{}",
                    quote_ident(&schema),
                    quote_ident(&table)
                );
                let n: i64 = client
                    .query_one(sql.as_str(), &[])
                    .await
                    .map_err(|e| pg_error(target, &e))?
                    .get(0);
                u64::try_from(n).unwrap_or(0)
            }
        };
        stats.push(TableStat {
            name: format!("{db}.{schema}.{table}"),
            rows,
        });
    }
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
        let in_recovery: bool = row.get(0);
        let version: String = row.get(1);
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
        let existing: Vec<String> = client
            .query(DATABASES_SQL, &[])
            .await
            .map_err(|e| pg_error(&target, &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| pg_error(&target, &e))?
            .get(0);
        let databases = if self.spec.databases.is_empty() {
            existing
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
}

#[async_trait::async_trait]
impl BackupRun for PgBackup {
    fn parts(&self) -> &[PartPlan] {
        &self.parts
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
                cmd.args(["--globals-only", "--no-password"]);
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
            .get(0);
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
                Ok(_) => count_tables(&client, &db, &target, &known).await,
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
    std::fs::create_dir(&l.socket).map_err(io("creating the socket folder", &l.socket))?;
    if let Some(u) = &user {
        u.chown(&l.socket)?;
    }
    std::fs::write(&l.pg_ctl_path, pg_ctl.as_os_str().as_encoded_bytes())
        .map_err(io("writing", &l.pg_ctl_path))?;

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
    std::fs::write(&path, LOAD_SETTINGS).map_err(|source| Error::Io {
        what: "writing",
        path: path.clone(),
        source,
    })?;
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
    format!(
        "\ninclude_if_exists = {}\n",
        quote_literal(LOAD_SETTINGS_FILE)
    )
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
    let mut file = std::fs::File::create(path).map_err(io("creating the spool file"))?;
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
        quote_literal(listen),
        quote_literal(&socket.to_string_lossy())
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

    async fn load_globals(&self, reader: Box<dyn AsyncRead + Send + Unpin>) -> Result<()> {
        let ep = &self.loader.ep;
        let mut cmd = ep.tool(&self.loader.tools, "psql")?;
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--no-password",
            "-f",
            "-",
        ])
        .arg(format!("--dbname={}", dbname_conninfo("postgres")));
        // The bootstrap superuser exists already in a fresh cluster.
        let bootstrap = format!("CREATE ROLE {SUPERUSER};\n");
        cmd.run_with_filtered_input(reader, |line| line != bootstrap.as_bytes())
            .await?;
        // The globals may have set the source's password for it: ours must keep working.
        let client = ep.connect("postgres").await?;
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
            engine: "postgres",
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
        let (check_ok, check) = self.loader.amcheck(None).await?;
        v.engine_check = check;
        v.ok = v.mismatches.is_empty() && check_ok;
        tracing::info!(dir = %self.dir.display(), tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "verification done");
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading database parts and counting (fresh and live servers alike)
// ---------------------------------------------------------------------------------------------

/// What a database part meets on the server it is loaded into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A fresh cluster: a database it has already (`postgres`) is restored into, others are
    /// created; the cluster runs under [`LOAD_SETTINGS`] meanwhile.
    Fresh,
    /// The service's live server: the database is dropped (its sessions ended) and created
    /// again from the dump; commits stay synchronous.
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
        let result = self.spool_and_restore(db, reader, &spool).await;
        if let Err(e) = tokio::fs::remove_file(&spool).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(service = %self.service, dir = %self.spool_dir.display(), spool = %spool.display(), error = %e, "could not remove a spool file");
            }
        }
        result
    }

    async fn spool_and_restore(
        &self,
        db: &str,
        reader: Box<dyn AsyncRead + Send + Unpin>,
        spool: &Path,
    ) -> Result<()> {
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
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
                &[&db],
            )
            .await
            .map_err(|e| pg_error(&self.ep.target(admin), &e))?
            .get(0);
        let create = match self.mode {
            Mode::Fresh => !exists,
            Mode::Replace => {
                if exists {
                    self.drop_database(&client, admin, db).await?;
                }
                true
            }
        };
        drop(client);

        let mut cmd = self.ep.tool(&self.tools, "pg_restore")?;
        cmd.args(["--jobs", RESTORE_JOBS, "--exit-on-error", "--no-password"]);
        if create {
            cmd.arg("--create")
                .arg(format!("--dbname={}", dbname_conninfo(admin)));
        } else {
            cmd.arg(format!("--dbname={}", dbname_conninfo(db)));
        }
        cmd.arg(spool);
        cmd.output().await?;
        tracing::info!(
            service = %self.service,
            dir = %self.spool_dir.display(),
            database = db,
            spool_s = spooled.as_secs_f64(),
            pg_restore_s = (began.elapsed() - spooled).as_secs_f64(),
            "database restored"
        );
        Ok(())
    }

    /// Ends the other sessions of `db` and drops it (`WITH (FORCE)` from PostgreSQL 13 on;
    /// before, its backends are terminated first), connected to `admin`.
    async fn drop_database(&self, client: &Client, admin: &str, db: &str) -> Result<()> {
        let target = self.ep.target(admin);
        let version: i32 = client
            .query_one(
                "SELECT pg_catalog.current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(|e| pg_error(&target, &e))?
            .get(0);
        let sql = if version >= 130_000 {
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db))
        } else {
            client
                .execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
                    &[&db],
                )
                .await
                .map_err(|e| pg_error(&target, &e))?;
            format!("DROP DATABASE IF EXISTS {}", quote_ident(db))
        };
        client.batch_execute(&sql).await.map_err(|e| {
            let mut err = pg_error(&target, &e);
            if let Error::Database { message, .. } = &mut err {
                *message = format!(
                    "dropping database {db} to replace it failed: {message} - the service's \
                     user must own the database (or be a superuser) and be allowed to end its \
                     sessions"
                );
            }
            err
        })?;
        tracing::info!(service = %self.service, dir = %self.spool_dir.display(), database = db, "database dropped to be replaced");
        Ok(())
    }

    /// The databases that allow connections (templates excluded).
    async fn databases(&self) -> Result<Vec<String>> {
        let admin = self.ep.connect(&self.admin_db).await?;
        Ok(admin
            .query(DATABASES_SQL, &[])
            .await
            .map_err(|e| pg_error(&self.ep.target(&self.admin_db), &e))?
            .iter()
            .map(|r| r.get(0))
            .collect())
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
            for s in count_tables(&client, db, &target, &HashMap::new()).await? {
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
                .get(0);
            if installed {
                with.push(db.clone());
            }
        }
        Ok(with)
    }

    /// `pg_amcheck` over every database, installing the extension where it is missing
    /// (`None`: a fresh cluster), or over `databases` only, installing nothing: (ok, what it
    /// said).
    async fn amcheck(&self, databases: Option<&[String]>) -> Result<(bool, String)> {
        let mut cmd = match self.ep.tool(&self.tools, "pg_amcheck") {
            Ok(c) => c,
            Err(e) => return Ok((false, format!("pg_amcheck could not run: {e}"))),
        };
        cmd.args(["--jobs", "2", "--no-password"]);
        match databases {
            None => {
                cmd.args(["--install-missing", "--all", "--maintenance-db=postgres"]);
            }
            Some(dbs) => {
                cmd.arg(format!(
                    "--maintenance-db={}",
                    dbname_conninfo(&self.admin_db)
                ));
                for db in dbs {
                    // A double-quoted pattern matches the name literally.
                    cmd.arg(format!("--database=\"{}\"", db.replace('"', "\"\"")));
                }
            }
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
// In-place restore: the service's own server
// ---------------------------------------------------------------------------------------------

/// Largest globals part an in-place restore accepts (it is read whole, to leave out the
/// statements for roles that exist).
const MAX_GLOBALS_PART: u64 = 64 << 20;

/// The service's own (live) server as a restore's target ([`Engine::in_place`]).
pub struct PgInPlace {
    service: String,
    password_file: Option<PathBuf>,
    /// Reaches the server as the service's configured user; spools in the scratch folder.
    loader: Loader,
    /// The database parts loaded so far.
    loaded: Vec<String>,
    /// What went wrong applying the globals part (statements psql skipped), reported with the
    /// verification.
    notes: Vec<String>,
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
            .get(0);
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
                service: self.spec.name.clone(),
            },
            loaded: Vec::new(),
            notes: Vec::new(),
        })
    }
}

impl PgInPlace {
    /// Applies the globals part over the roles that exist: `CREATE ROLE` is left out for
    /// roles that exist, and so is every `CREATE ROLE`/`ALTER ROLE ... WITH` for the role the
    /// agent connects as (its password and attributes stay, so the agent keeps its way in).
    /// psql runs without `ON_ERROR_STOP`: a statement that fails (e.g. a tablespace that
    /// exists) is skipped and reported with the verification.
    async fn load_globals(&mut self, reader: Box<dyn AsyncRead + Send + Unpin>) -> Result<()> {
        let mut text = Vec::new();
        reader
            .take(MAX_GLOBALS_PART + 1)
            .read_to_end(&mut text)
            .await
            .map_err(|source| Error::Stream {
                what: "receiving the globals part".into(),
                source,
            })?;
        if text.len() as u64 > MAX_GLOBALS_PART {
            return Err(Error::Other(format!(
                "the globals part is larger than {} MiB, more than an in-place restore holds; \
                 restore the backup onto a fresh server instead",
                MAX_GLOBALS_PART >> 20
            )));
        }
        let ep = &self.loader.ep;
        let admin = &self.loader.admin_db;
        let client = ep.connect(admin).await?;
        let me: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(|e| pg_error(&ep.target(admin), &e))?
            .get(0);
        let existing: HashSet<String> = client
            .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
            .await
            .map_err(|e| pg_error(&ep.target(admin), &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(client);
        let sql = globals_over_existing(&String::from_utf8_lossy(&text), &existing, &me);

        let mut cmd = ep.tool(&self.loader.tools, "psql")?;
        cmd.args(["-X", "-q", "--no-password", "-f", "-"])
            .arg(format!("--dbname={}", dbname_conninfo(admin)));
        let out = cmd.capture_with_input(sql.as_bytes()).await?;
        let stderr = out.stderr.clone();
        out.into_result()?;
        let failed: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("ERROR:"))
            .map(str::trim)
            .collect();
        if !failed.is_empty() {
            tracing::warn!(service = %self.service, failed = failed.len(), errors = %failed.join("; "), "statements of the globals part failed and were skipped");
            self.notes.push(format!(
                "globals: {} statement(s) failed and were skipped: {}",
                failed.len(),
                failed.join("; ")
            ));
        }
        tracing::info!(service = %self.service, "globals applied over the existing roles");
        Ok(())
    }
}

/// The globals SQL of `pg_dumpall --globals-only` without `CREATE ROLE` for the roles in
/// `existing` and without `CREATE ROLE`/`ALTER ROLE ... WITH` for `me`.
fn globals_over_existing(text: &str, existing: &HashSet<String>, me: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let skip = if let Some((role, rest)) = role_statement(line, "CREATE ROLE ") {
            rest.trim_end() == ";" && (existing.contains(&role) || role == me)
        } else if let Some((role, rest)) = role_statement(line, "ALTER ROLE ") {
            role == me && rest.starts_with(" WITH ")
        } else {
            false
        };
        if !skip {
            out.push_str(line);
        }
    }
    out
}

/// For a line `<prefix><role><rest>`: the role's name (unquoted) and the rest.
fn role_statement<'a>(line: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let s = line.strip_prefix(prefix)?;
    if let Some(body) = s.strip_prefix('"') {
        super::quoted_identifier(body, '"')
    } else {
        let end = s.find([' ', ';', '\n']).unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
}

#[async_trait::async_trait]
impl RestoreTarget for PgInPlace {
    /// The live server as the service's config names it; `data_dir` is empty (the server's
    /// data folder is not the agent's to name).
    fn connection(&self) -> Connection {
        Connection {
            engine: "postgres",
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
        let (check_ok, mut check) = if with.is_empty() {
            (
                true,
                "pg_amcheck: skipped for in-place (the amcheck extension is installed in none of \
                 the restored databases, and an in-place restore installs no extension)"
                    .to_string(),
            )
        } else {
            let (ok, mut text) = self.loader.amcheck(Some(&with)).await?;
            let without: Vec<&String> = databases.iter().filter(|d| !with.contains(d)).collect();
            if !without.is_empty() {
                text.push_str(&format!(
                    "\nnot checked (no amcheck extension): {without:?}"
                ));
            }
            (ok, text)
        };
        for note in &self.notes {
            check.push('\n');
            check.push_str(note);
        }
        v.engine_check = check;
        v.ok = v.mismatches.is_empty() && check_ok;
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
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("my\"db"), "\"my\"\"db\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(dbname_conninfo("a b'c\\"), "dbname='a b\\'c\\\\'");
    }

    #[test]
    fn globals_skip_existing_roles_and_leave_the_agents_own_alone() {
        let text = "SET default_transaction_read_only = off;\n\
            CREATE ROLE app;\n\
            ALTER ROLE app WITH LOGIN PASSWORD 'x';\n\
            CREATE ROLE \"Odd \"\"Role\";\n\
            ALTER ROLE \"Odd \"\"Role\" WITH NOLOGIN;\n\
            CREATE ROLE new_one;\n\
            CREATE ROLE postgres;\n\
            ALTER ROLE postgres WITH SUPERUSER PASSWORD 'old';\n\
            ALTER ROLE postgres SET work_mem = '8MB';\n\
            CREATE ROLE postgres_two;\n\
            GRANT app TO new_one GRANTED BY postgres;\n";
        let existing: HashSet<String> = ["app", "Odd \"Role", "postgres"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            globals_over_existing(text, &existing, "postgres"),
            "SET default_transaction_read_only = off;\n\
             ALTER ROLE app WITH LOGIN PASSWORD 'x';\n\
             ALTER ROLE \"Odd \"\"Role\" WITH NOLOGIN;\n\
             CREATE ROLE new_one;\n\
             ALTER ROLE postgres SET work_mem = '8MB';\n\
             CREATE ROLE postgres_two;\n\
             GRANT app TO new_one GRANTED BY postgres;\n"
        );
    }
}
