//! Throwaway PostgreSQL servers for tests.
//!
//! Job: [`PgServer::start`] (or [`PgServer::builder`]) creates a fresh cluster with `initdb` in
//! its own temp folder, runs `postgres` as a child process on a free TCP port, waits until it
//! accepts connections, and offers `psql`/`pgbench` helpers. [`PgServer::start_standby`] clones
//! a running server with `pg_basebackup` into a streaming-replication standby (a [`PgServer`]
//! like any other), which [`PgServer::promote`] turns into a primary, e.g. for failover tests.
//! [`pg_bin_dir`] locates the PostgreSQL binaries for the harness and for the product
//! (`pg_dump`, `pg_restore`, ...).
//!
//! Invariants:
//! - Each server owns one temp folder `strongbox-pg-XXXXXX` holding the data directory
//!   (`data/`), the unix socket (the folder itself) and the server log (`postgres.log`).
//!   The folder is removed when the [`PgServer`] is dropped, after the server has stopped.
//! - The server listens on `host()` (default `127.0.0.1`) only; the port was free when chosen
//!   and start-up retries with a new port if another process grabbed it meanwhile.
//! - Authentication is `trust` for local sockets and all of `127.0.0.0/8` and `::1`
//!   (including replication), with superuser `postgres` unless configured otherwise. Lines
//!   given with [`PgBuilder::hba`] are placed *before* these defaults, so they take precedence.
//! - `postgres` refuses to run as root: when the harness runs as root, `initdb` and `postgres`
//!   run as the existing `postgres` system user and the temp folder belongs to it. Client tools
//!   (`psql`, `pgbench`, ...) run as the current user over TCP.
//! - Stopping sends SIGINT (PostgreSQL's "fast shutdown": roll back open transactions,
//!   disconnect clients, checkpoint) — SIGTERM would be "smart shutdown", which waits for
//!   clients to disconnect and can hang a test. After the grace period: SIGKILL; then the whole
//!   process group is killed and the postmaster reaped (see [`crate::process`]).
//! - `fsync = off` unless [`PgBuilder::durable`] is set: a killed *postgres* process loses
//!   nothing (the OS still has the pages); only an OS crash would, which tests don't do.
//! - Every server can be a replication primary without extra configuration: PostgreSQL's
//!   defaults `wal_level = replica` and `max_wal_senders = 10` are kept (unless overridden
//!   with [`PgBuilder::conf`]) and the `trust` defaults above include `replication`.
//! - A standby has its own temp folder, port, log and process, with the same stop/cleanup
//!   guarantees; it is independent of its primary's handle (either may be stopped or dropped
//!   first). Its data directory is a `pg_basebackup -R -X stream` copy of the primary's, so it
//!   inherits the primary's `postgresql.conf` and `pg_hba.conf` and streams from the primary's
//!   host and port; it takes the primary's options (superuser, host, timeouts, `durable`).
//! - Waiting for replication state (ready, promoted) polls the real condition
//!   (`pg_isready`, `pg_is_in_recovery()`) until a deadline, never a fixed sleep.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use strongbox_engines::tools;

use crate::error::{HarnessError, Result};
use crate::process::{self, RunAs, ServerProcess, DEFAULT_COMMAND_TIMEOUT};
use crate::{ports, tmp};

/// Environment variable that overrides where PostgreSQL binaries are looked up.
pub const PG_BIN_DIR_ENV: &str = "STRONGBOX_PG_BIN_DIR";

const INSTALL_HINT: &str = "install PostgreSQL (apt-get install -y postgresql), or set \
                            STRONGBOX_PG_BIN_DIR to the folder holding initdb/postgres/psql";

/// How many times start-up retries with a fresh port when the chosen one was taken.
const PORT_ATTEMPTS: usize = 5;

/// Environment variables that could redirect or alter client connections; removed from
/// every client command so tests only talk to their own server.
const PG_CLIENT_ENV_TO_CLEAR: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGTARGETSESSIONATTRS",
];

/// Finds the folder holding the PostgreSQL server binaries (`initdb`, `postgres`, `pg_ctl`,
/// `psql`, `pg_dump`, `pg_restore`, `pgbench`, ...), with the product's own search
/// ([`strongbox_engines::tools::postgres_server_dir`]), so tests and product use the same
/// installation.
///
/// Order: `$STRONGBOX_PG_BIN_DIR` (then nothing else); the folder of `initdb` on `PATH`
/// (symbolic links resolved) when `postgres` is beside it; the highest version under
/// `/usr/lib/postgresql/*/bin` (Debian/Ubuntu layout).
pub fn pg_bin_dir() -> Result<PathBuf> {
    let configured = std::env::var_os(PG_BIN_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    tools::postgres_server_dir(configured.as_deref(), &["initdb", "postgres"]).map_err(|e| {
        match &configured {
            Some(dir) => HarnessError::BinaryNotFound {
                name: e.program,
                searched: format!("{PG_BIN_DIR_ENV}={}", dir.display()),
                hint: format!("{PG_BIN_DIR_ENV} must name a folder containing postgres and initdb"),
            },
            None => HarnessError::BinaryNotFound {
                name: "PostgreSQL (initdb, postgres)".into(),
                searched: match e.lacking {
                    Some((dir, missing)) => format!(
                        "$STRONGBOX_PG_BIN_DIR, {} ({} has initdb but no {missing})",
                        e.searched,
                        dir.display()
                    ),
                    None => format!("$STRONGBOX_PG_BIN_DIR, {}", e.searched),
                },
                hint: INSTALL_HINT.into(),
            },
        }
    })
}

/// Path of one PostgreSQL tool (e.g. `pg_dump`) in [`pg_bin_dir`]; fails if it is missing.
pub fn pg_tool(name: &str) -> Result<PathBuf> {
    let dir = pg_bin_dir()?;
    tool_in(&dir, name)
}

fn tool_in(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if process::is_executable(&path) {
        Ok(path)
    } else {
        Err(HarnessError::BinaryNotFound {
            name: name.into(),
            searched: dir.display().to_string(),
            hint: format!("{INSTALL_HINT} (pgbench may need postgresql-contrib on old releases)"),
        })
    }
}

/// Quotes an SQL identifier for PostgreSQL (`my"db` → `"my""db"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal for PostgreSQL (`it's` → `'it''s'`).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Options for starting a [`PgServer`]. Obtain with [`PgServer::builder`].
#[derive(Debug, Clone)]
pub struct PgBuilder {
    superuser: String,
    host: IpAddr,
    conf: Vec<String>,
    hba: Vec<String>,
    initdb_args: Vec<String>,
    durable: bool,
    start_timeout: Duration,
    stop_timeout: Duration,
}

impl Default for PgBuilder {
    fn default() -> Self {
        PgBuilder {
            superuser: "postgres".into(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            conf: Vec::new(),
            hba: Vec::new(),
            initdb_args: Vec::new(),
            durable: false,
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
        }
    }
}

impl PgBuilder {
    /// Name of the cluster's superuser (`initdb -U`); default `postgres`.
    pub fn superuser(mut self, name: impl Into<String>) -> Self {
        self.superuser = name.into();
        self
    }

    /// Loopback address to listen on; default `127.0.0.1`. Any `127.0.0.x` works on Linux.
    pub fn host(mut self, addr: impl Into<IpAddr>) -> Self {
        self.host = addr.into();
        self
    }

    /// Appends one line to `postgresql.conf`, e.g. `"wal_level = logical"`,
    /// `"max_wal_senders = 10"`, `"archive_mode = on"`. Later lines win over earlier ones.
    pub fn conf(mut self, line: impl Into<String>) -> Self {
        self.conf.push(line.into());
        self
    }

    /// Adds one `pg_hba.conf` line, placed before the harness's trust defaults, e.g.
    /// `"host all app 127.0.0.1/32 scram-sha-256"`.
    pub fn hba(mut self, line: impl Into<String>) -> Self {
        self.hba.push(line.into());
        self
    }

    /// Adds an argument to `initdb`, e.g. `"--data-checksums"`.
    pub fn initdb_arg(mut self, arg: impl Into<String>) -> Self {
        self.initdb_args.push(arg.into());
        self
    }

    /// Keep `fsync = on` (default off for speed).
    pub fn durable(mut self, yes: bool) -> Self {
        self.durable = yes;
        self
    }

    /// How long to wait for the server to accept connections; default 60 s.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long a graceful stop may take before SIGKILL; default 30 s.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Creates the cluster and starts the server.
    pub fn start(self) -> Result<PgServer> {
        PgServer::start_with(self)
    }
}

/// A running (or stopped, see [`PgServer::stop`]) throwaway PostgreSQL server.
///
/// Dropping it stops the server and removes its temp folder.
#[derive(Debug)]
pub struct PgServer {
    // Field order matters for drop: the process goes before the folder it lives in.
    process: Option<ServerProcess>,
    opts: PgBuilder,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    host: String,
    port: u16,
    last_pid: u32,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    tmp: tmp::TempDir,
}

impl PgServer {
    /// Starts a server with default options (superuser `postgres`, `127.0.0.1`, free port).
    pub fn start() -> Result<PgServer> {
        PgBuilder::default().start()
    }

    /// Options for a server, e.g.
    /// `PgServer::builder().conf("wal_level = logical").start()`.
    pub fn builder() -> PgBuilder {
        PgBuilder::default()
    }

    fn start_with(opts: PgBuilder) -> Result<PgServer> {
        let bin_dir = pg_bin_dir()?;
        for tool in ["initdb", "postgres", "pg_isready", "psql"] {
            tool_in(&bin_dir, tool)?;
        }
        let run_as = RunAs::when_root(
            "postgres",
            "PostgreSQL",
            "install PostgreSQL (apt-get install -y postgresql), which creates it, or create it \
             with `useradd --system --user-group postgres`",
        )?;
        let mut server = PgServer::unstarted(opts, bin_dir, run_as)?;
        server.initdb()?;
        server.write_config()?;
        server.start_on_free_port()?;
        Ok(server)
    }

    /// A handle with a fresh temp folder (owned by `run_as`) but no data directory and no
    /// process yet. Dropping it removes the folder.
    fn unstarted(opts: PgBuilder, bin_dir: PathBuf, run_as: Option<RunAs>) -> Result<PgServer> {
        let tmp = tmp::temp_dir_owned_by("pg", run_as.as_ref().map(RunAs::ids))?;
        let root = tmp.path().to_path_buf();
        Ok(PgServer {
            process: None,
            bin_dir,
            run_as,
            host: opts.host.to_string(),
            port: 0,
            last_pid: 0,
            data_dir: root.join("data"),
            socket_dir: root.clone(),
            log_path: root.join("postgres.log"),
            tmp,
            opts,
        })
    }

    /// Creates and starts a streaming-replication standby of `primary`, which must be running.
    ///
    /// The standby gets its own temp folder and free port (on the primary's host). Its data
    /// directory is made by `pg_basebackup -h <host> -p <port> -U <superuser> -D <dir> -R
    /// -X stream --checkpoint=fast` (run as the server's system user), so it streams WAL from
    /// the primary via the `primary_conninfo` and `standby.signal` that `-R` writes. Returns
    /// once the standby accepts (read-only) connections; [`is_in_recovery`](Self::is_in_recovery)
    /// is then `true`. It takes the primary's options (superuser, host, timeouts, `durable`).
    /// Rows committed on the primary show up on the standby asynchronously: poll for them.
    pub fn start_standby(primary: &PgServer) -> Result<PgServer> {
        primary.running()?;
        tool_in(&primary.bin_dir, "pg_basebackup")?;
        let mut standby = PgServer::unstarted(
            primary.opts.clone(),
            primary.bin_dir.clone(),
            primary.run_as.clone(),
        )?;
        let mut cmd = standby.server_command("pg_basebackup");
        for var in PG_CLIENT_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .arg("-h")
            .arg(&primary.host)
            .arg("-p")
            .arg(primary.port.to_string())
            .arg("-U")
            .arg(&primary.opts.superuser)
            .arg("-D")
            .arg(&standby.data_dir)
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-password"]);
        if !standby.opts.durable {
            cmd.arg("--no-sync");
        }
        process::run(
            &format!(
                "pg_basebackup of the primary on port {} (the primary needs wal_level >= replica, max_wal_senders > 0 and a pg_hba.conf `replication` entry; its log is {})",
                primary.port,
                primary.log_path.display()
            ),
            cmd,
            None,
            DEFAULT_COMMAND_TIMEOUT,
        )?;
        standby.start_on_free_port()?;
        Ok(standby)
    }

    /// `SELECT pg_is_in_recovery()`: `true` on a standby (until promoted), `false` on a primary.
    pub fn is_in_recovery(&self) -> Result<bool> {
        let out = self.psql("postgres", "SELECT pg_is_in_recovery()")?;
        match out.as_str() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => Err(HarnessError::Setup(format!(
                "PostgreSQL on port {}: unexpected output of `SELECT pg_is_in_recovery()`: {other:?} (expected t or f)",
                self.port
            ))),
        }
    }

    /// Promotes this standby to a primary (`SELECT pg_promote(true, <timeout>)`) and waits,
    /// until the start timeout, for `pg_is_in_recovery()` to turn `false`; it then accepts
    /// writes. Fails if the server is not a standby. The old primary is not touched: stop it
    /// first (see [`stop`](Self::stop)) to simulate a failover.
    pub fn promote(&self) -> Result<()> {
        let timeout = self.opts.start_timeout;
        let secs = timeout.as_secs().max(1);
        let started = Instant::now();
        let deadline = started + timeout;
        let promoted = self.psql("postgres", &format!("SELECT pg_promote(true, {secs})"))?;
        loop {
            if self.is_running() && !self.is_in_recovery()? {
                tracing::debug!(port = self.port, "PostgreSQL standby promoted");
                return Ok(());
            }
            if !self.is_running() || Instant::now() >= deadline {
                return Err(HarnessError::Setup(format!(
                    "PostgreSQL on port {} was still in recovery {:?} after promotion was requested (pg_promote returned {promoted:?}; server running: {}); log {}:\n{}",
                    self.port,
                    started.elapsed(),
                    self.is_running(),
                    self.log_path.display(),
                    process::log_tail(&self.log_path, 40)
                )));
            }
            std::thread::sleep(process::POLL_INTERVAL);
        }
    }

    fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(self.tmp.path()).env("LC_ALL", "C");
        if let Some(run_as) = &self.run_as {
            run_as.apply(&mut cmd);
        }
        cmd
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-U")
            .arg(&self.opts.superuser)
            .args(["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .args(&self.opts.initdb_args);
        process::run("initdb", cmd, None, DEFAULT_COMMAND_TIMEOUT)?;
        Ok(())
    }

    fn write_config(&self) -> Result<()> {
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut conf = OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(|e| HarnessError::io(format!("opening {}", conf_path.display()), e))?;
        let mut text = String::from("\n# --- strongbox test harness ---\n");
        if !self.opts.durable {
            text.push_str("fsync = off\n");
        }
        for line in &self.opts.conf {
            text.push_str(line);
            text.push('\n');
        }
        conf.write_all(text.as_bytes())
            .map_err(|e| HarnessError::io(format!("writing {}", conf_path.display()), e))?;

        // Rewritten in place: the file keeps its owner (the postgres user).
        let hba_path = self.data_dir.join("pg_hba.conf");
        let mut hba = String::from("# strongbox test harness\n");
        for line in &self.opts.hba {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str(
            "local all all trust\n\
             local replication all trust\n\
             host all all 127.0.0.0/8 trust\n\
             host replication all 127.0.0.0/8 trust\n\
             host all all ::1/128 trust\n\
             host replication all ::1/128 trust\n",
        );
        std::fs::write(&hba_path, hba)
            .map_err(|e| HarnessError::io(format!("writing {}", hba_path.display()), e))
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = ports::free_port_on(self.opts.host)?;
            match self.spawn_and_wait() {
                Err(HarnessError::ServerExited { log_tail, .. })
                    if attempt < PORT_ATTEMPTS && log_tail.contains("Address already in use") =>
                {
                    tracing::debug!(
                        port = self.port,
                        "port taken meanwhile; retrying with another"
                    );
                    continue;
                }
                other => return other,
            }
        }
    }

    /// Spawns `postgres` on `self.port` and waits until it accepts connections.
    fn spawn_and_wait(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| HarnessError::io(format!("opening {}", self.log_path.display()), e))?;
        let log_len = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::io(format!("duplicating {}", self.log_path.display()), e))?;
        let mut cmd = self.server_command("postgres");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .arg("-c")
            .arg(format!("listen_addresses={}", self.host))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let mut proc = ServerProcess::spawn(
            "PostgreSQL",
            cmd,
            &self.log_path,
            Signal::SIGINT,
            self.opts.stop_timeout,
        )?;
        self.last_pid = proc.pid();

        let started = Instant::now();
        let deadline = started + self.opts.start_timeout;
        let mut last_probe: String;
        loop {
            if let Err(mut e) = proc.check_running() {
                // Only this start's part of the log is relevant for the retry decision.
                if let HarnessError::ServerExited { log_tail, .. } = &mut e {
                    *log_tail = process::log_tail_since(&self.log_path, log_len, 40);
                }
                return Err(e);
            }
            let mut probe = self.client_command("pg_isready");
            probe.args(["-d", "postgres", "-t", "2"]);
            match process::run("pg_isready", probe, None, Duration::from_secs(10)) {
                Ok(_) => break,
                Err(HarnessError::CommandFailed {
                    stdout,
                    stderr,
                    status,
                    ..
                }) => {
                    last_probe = format!("{status}: {}{}", stdout.trim(), stderr.trim());
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                let err = HarnessError::StartTimeout {
                    server: "PostgreSQL".into(),
                    waited: started.elapsed(),
                    last_probe,
                    log: self.log_path.clone(),
                    log_tail: process::log_tail(&self.log_path, 40),
                };
                proc.stop()?;
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::debug!(port = self.port, pid = self.last_pid, "PostgreSQL ready");
        self.process = Some(proc);
        Ok(())
    }

    fn running(&self) -> Result<&ServerProcess> {
        match &self.process {
            Some(p) if !p.is_stopped() => Ok(p),
            _ => Err(HarnessError::NotRunning {
                server: "PostgreSQL".into(),
            }),
        }
    }

    /// A command for PostgreSQL client tool `tool` (e.g. `pg_dump`, `pg_basebackup`) from
    /// [`bin_dir`](Self::bin_dir), with `PGHOST`, `PGPORT`, `PGUSER` pointing at this server
    /// and `PGCONNECT_TIMEOUT=10`. It runs as the current user. Add arguments and run it.
    pub fn client_command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        for var in PG_CLIENT_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        cmd.envs(self.env()).env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// `PGHOST`, `PGPORT`, `PGUSER` for this server, e.g. for `Command::envs`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.opts.superuser.clone()),
        ]
    }

    /// libpq key/value connection string for database `db`, e.g.
    /// `host=127.0.0.1 port=54321 user=postgres dbname=app`.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.host,
            self.port,
            self.opts.superuser,
            conninfo_value(db)
        )
    }

    /// `postgresql://` URL for database `db` (names are expected to be URL-safe).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{}@{}:{}/{}",
            self.opts.superuser, self.host, self.port, db
        )
    }

    /// Runs `sql` (any number of statements) in database `db` with
    /// `psql -X -A -t -q -v ON_ERROR_STOP=1` and returns the trimmed output: one line per
    /// row, columns separated by `|`. Fails on the first SQL error, with psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        self.running()?;
        let mut cmd = self.client_command("psql");
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-f",
            "-",
        ]);
        let out = process::run(
            &format!("psql on database {db}"),
            cmd,
            Some(sql.as_bytes()),
            DEFAULT_COMMAND_TIMEOUT,
        )?;
        Ok(out.stdout.trim().to_string())
    }

    /// Creates database `name` (owned by the superuser).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .map(|_| ())
    }

    /// `pgbench -i -s <scale> -q <db>`: creates and fills the pgbench tables
    /// (`pgbench_accounts` gets `100000 * scale` rows).
    pub fn pgbench_init(&self, db: &str, scale: u32) -> Result<()> {
        self.pgbench(db, &["-i", "-s", &scale.to_string(), "-q"])
            .map(|_| ())
    }

    /// Runs `pgbench <args> <db>` against this server and returns its standard output
    /// (pgbench prints its progress and summary there; -i writes to stderr).
    pub fn pgbench(&self, db: &str, args: &[&str]) -> Result<String> {
        self.running()?;
        let mut cmd = self.client_command("pgbench");
        cmd.args(args).arg(db);
        tool_in(&self.bin_dir, "pgbench")?;
        Ok(process::run("pgbench", cmd, None, DEFAULT_COMMAND_TIMEOUT)?.stdout)
    }

    /// Stops the server (fast shutdown; SIGKILL after the stop timeout). Idempotent. The data
    /// directory stays until the `PgServer` is dropped, so [`restart`](Self::restart) works.
    /// Stopping a primary leaves its standbys running (as in a failover); they retry streaming.
    pub fn stop(&mut self) -> Result<()> {
        match &mut self.process {
            Some(p) => p.stop().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same data directory and port (stopping it first if it
    /// runs). Useful after changing configuration or replacing the data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.process = None;
        self.spawn_and_wait()
    }

    /// Sends `signal` to the postmaster (e.g. SIGKILL, SIGSTOP in fault tests).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.running()?.signal(signal)
    }

    /// Whether the server process is running (it has not been stopped and has not exited).
    pub fn is_running(&self) -> bool {
        match &self.process {
            Some(p) => !p.has_exited().unwrap_or(true),
            None => false,
        }
    }

    /// TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Address the server listens on, e.g. `127.0.0.1`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Folder holding the unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server's temp folder (removed on drop).
    pub fn temp_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Folder of the PostgreSQL binaries used.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Pid of the postmaster (of the most recent start, also after it stopped).
    pub fn pid(&self) -> u32 {
        self.last_pid
    }

    /// Name of the superuser.
    pub fn superuser(&self) -> &str {
        &self.opts.superuser
    }

    /// The system user `initdb`/`postgres` run as, when the harness runs as root. Files put
    /// into the data directory by a test must be owned by it.
    pub fn run_as(&self) -> Option<&RunAs> {
        self.run_as.as_ref()
    }

    /// Path of the server log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log_path, lines)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("strongbox-integration: stopping PostgreSQL failed: {e}");
        }
        // `tmp` is dropped after this and removes the folder.
    }
}

fn conninfo_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\']) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}
