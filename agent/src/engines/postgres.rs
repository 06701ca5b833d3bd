//! PostgreSQL: probe a member, dump a cluster as parts (`globals`, then one per database),
//! provision a fresh cluster, load parts into it, verify it, stop it.
//!
//! Invariants:
//! - **Consistent parts.** Each database part is `pg_dump --format=custom --compress=0
//!   --snapshot=<id>`, where the snapshot is exported by a `REPEATABLE READ READ ONLY`
//!   transaction that stays open until that part's dump has finished; the part's table stats
//!   (`<database>.<schema>.<table>`, exact `count(*)`) are counted inside that same
//!   transaction, so they describe exactly the dumped rows, whatever writers do meanwhile.
//! - **Tools.** `spec.bin_dir` when configured (and nothing else then), else `PATH`, else the
//!   newest `/usr/lib/postgresql/<version>/bin`. Passwords reach them as `PGPASSWORD` only.
//! - **Fresh servers** live entirely under their folder: `data/` (PGDATA), `socket/` (the only
//!   unix socket, `trust` there; the folder is 0700 and belongs to the server's user),
//!   `postgres.log`, `superuser.password` (0600, the `postgres` superuser's password, which
//!   TCP connections need: `scram-sha-256`), and `pg_ctl.path` (which `pg_ctl` stops it). They
//!   run detached from the agent (`pg_ctl start`), as the `postgres` system user when the
//!   agent is root. The password reaches the server only as a SCRAM verifier computed here.
//! - **Loading** never changes a database it did not create, except `postgres`-like databases
//!   that a fresh cluster already has (restored into without `--create`). A spooled part is
//!   removed after its load, also when the load fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};

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

/// Exact row counts of every table of the connected database, as `<db>.<schema>.<table>`, in
/// the client's current transaction.
async fn count_tables(client: &Client, db: &str, target: &str) -> Result<Vec<TableStat>> {
    let rows = client
        .query(TABLES_SQL, &[])
        .await
        .map_err(|e| pg_error(target, &e))?;
    let mut stats = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.get(0);
        let table: String = row.get(1);
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
        stats.push(TableStat {
            name: format!("{db}.{schema}.{table}"),
            rows: u64::try_from(n).unwrap_or(0),
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

/// Aborts a task when dropped (a dump dropped early stops its counting).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
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

        // Count in the snapshot's own transaction while pg_dump streams.
        let client = Arc::new(client);
        let counting = {
            let client = Arc::clone(&client);
            let db = db.to_string();
            let target = target.clone();
            AbortOnDrop(tokio::spawn(async move {
                count_tables(&client, &db, &target).await
            }))
        };
        let exit = streaming.exit;
        let service = self.service.clone();
        let db = db.to_string();
        let finish = async move {
            let mut counting = counting;
            let dumped = exit.wait().await;
            let counted = match (&mut counting.0).await {
                Ok(r) => r,
                Err(e) => Err(Error::Other(format!(
                    "counting the rows of {db} failed: {e}"
                ))),
            };
            // The snapshot may end only now that pg_dump has finished.
            let ended = client.batch_execute("COMMIT").await;
            dumped?;
            let stats = counted?;
            ended.map_err(|e| pg_error(&target, &e))?;
            tracing::info!(service = %service, database = %db, tables = stats.len(), "database dumped");
            Ok(stats)
        };
        Ok(Dump {
            reader: Box::new(streaming.stdout),
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
    tools: PgTools,
    /// The agent's way in: the unix socket folder, `trust`.
    local: Endpoint,
    password_file: PathBuf,
    spools: u32,
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

    let password = process::random_password();
    process::write_secret_file(&l.password, &password)?;

    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = process::free_port(listen)?;
        append_conf(&l.data, listen, port, &l.socket)?;
        let mut start = ToolCommand::new(&pg_ctl);
        start
            .arg("start")
            .arg("-D")
            .arg(&l.data)
            .arg("-l")
            .arg(&l.log)
            .args(["-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-s"])
            .current_dir(dir)
            .run_as(user.as_ref());
        match start.output().await {
            Ok(_) => {
                let target = PgTarget {
                    dir: dir.to_path_buf(),
                    listen: listen.to_string(),
                    port,
                    tools: tools.clone(),
                    local: Endpoint {
                        host: l.socket.to_string_lossy().into_owned(),
                        port,
                        user: SUPERUSER.into(),
                        password: None,
                    },
                    password_file: l.password.clone(),
                    spools: 0,
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
        let deadline = Instant::now() + START_TIMEOUT;
        let client = loop {
            match self.local.connect("postgres").await {
                Ok(c) => break c,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        self.set_superuser_password(&client, password).await
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
            .map_err(|e| pg_error(&self.local.target("postgres"), &e))
    }

    async fn load_globals(&self, reader: Box<dyn AsyncRead + Send + Unpin>) -> Result<()> {
        let mut cmd = self.local.tool(&self.tools, "psql")?;
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
        let client = self.local.connect("postgres").await?;
        let password = read_password(&self.password_file)?;
        self.set_superuser_password(&client, &password).await
    }

    async fn load_database(
        &mut self,
        db: &str,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        self.spools += 1;
        let spool = self.dir.join(format!("spool-{}.pgdump", self.spools));
        let result = self.spool_and_restore(db, reader, &spool).await;
        if let Err(e) = tokio::fs::remove_file(&spool).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(spool = %spool.display(), error = %e, "could not remove a spool file");
            }
        }
        result
    }

    async fn spool_and_restore(
        &self,
        db: &str,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
        spool: &Path,
    ) -> Result<()> {
        let file = tokio::fs::File::create(spool)
            .await
            .map_err(|source| Error::Io {
                what: "creating the spool file",
                path: spool.to_path_buf(),
                source,
            })?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        tokio::io::copy(&mut reader, &mut out)
            .await
            .map_err(|source| Error::Stream {
                what: format!("receiving database part {db} into {}", spool.display()),
                source,
            })?;
        out.flush().await.map_err(|source| Error::Io {
            what: "writing the spool file",
            path: spool.to_path_buf(),
            source,
        })?;
        drop(out);

        let client = self.local.connect("postgres").await?;
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
                &[&db],
            )
            .await
            .map_err(|e| pg_error(&self.local.target("postgres"), &e))?
            .get(0);
        drop(client);

        let mut cmd = self.local.tool(&self.tools, "pg_restore")?;
        cmd.args(["--jobs", RESTORE_JOBS, "--exit-on-error", "--no-password"])
            // A lost commit during a restore means redoing the restore anyway.
            .env("PGOPTIONS", "-c synchronous_commit=off");
        if exists {
            cmd.arg(format!("--dbname={}", dbname_conninfo(db)));
        } else {
            cmd.arg("--create")
                .arg(format!("--dbname={}", dbname_conninfo("postgres")));
        }
        cmd.arg(spool);
        cmd.output().await?;
        tracing::info!(dir = %self.dir.display(), database = db, "database restored");
        Ok(())
    }

    async fn amcheck(&self) -> Result<(bool, String)> {
        let cmd = match self.local.tool(&self.tools, "pg_amcheck") {
            Ok(c) => c,
            Err(e) => return Ok((false, format!("pg_amcheck could not run: {e}"))),
        };
        let mut cmd = cmd;
        cmd.args([
            "--install-missing",
            "--all",
            "--jobs",
            "2",
            "--no-password",
            "--maintenance-db=postgres",
        ]);
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
            PartKind::Database => self.load_database(&part.name, reader).await,
            other => Err(Error::Other(format!(
                "a PostgreSQL restore cannot load part {:?} of kind {other:?}",
                part.name
            ))),
        }
    }

    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        let admin = self.local.connect("postgres").await?;
        let databases: Vec<String> = admin
            .query(DATABASES_SQL, &[])
            .await
            .map_err(|e| pg_error(&self.local.target("postgres"), &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(admin);
        let mut found: HashMap<String, u64> = HashMap::new();
        for db in &databases {
            let client = self.local.connect(db).await?;
            let target = self.local.target(db);
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| pg_error(&target, &e))?;
            for s in count_tables(&client, db, &target).await? {
                found.insert(s.name, s.rows);
            }
            let _ = client.batch_execute("COMMIT").await;
        }
        let mut v = compare_stats(expected, &found);
        let (check_ok, check) = self.amcheck().await?;
        v.engine_check = check;
        v.ok = v.mismatches.is_empty() && check_ok;
        tracing::info!(dir = %self.dir.display(), tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "verification done");
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
    let mut cmd = ToolCommand::new(&pg_ctl);
    cmd.arg("stop")
        .arg("-D")
        .arg(&l.data)
        .args(["-m", "fast", "-w", "-t", "120", "-s"])
        .current_dir(dir)
        .run_as(user.as_ref());
    match cmd.output().await {
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
}
