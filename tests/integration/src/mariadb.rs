//! Throwaway MariaDB servers for tests.
//!
//! Job: [`MariaDbServer::start`] (or [`MariaDbServer::builder`]) creates a fresh data
//! directory with `mariadb-install-db` in its own temp folder, runs `mariadbd` as a child
//! process on a free TCP port, waits until a client can run `select 1`, and offers a query
//! helper built on the `mariadb` command-line client.
//!
//! Invariants:
//! - Each server owns one temp folder `strongbox-mariadb-XXXXXX` holding the data directory
//!   (`data/`), the socket (`mysqld.sock`), the pid file and the error log (`error.log`). The
//!   folder is removed when the [`MariaDbServer`] is dropped, after the server has stopped.
//! - `mariadbd` runs with `--no-defaults` (no system `my.cnf` leaks in), listens on `host()`
//!   (default `127.0.0.1`) and a port that was free when chosen; start-up retries with a new
//!   port if another process grabbed it meanwhile. `--skip-name-resolve` is on.
//! - The data directory is initialised with `--auth-root-authentication-method=normal`:
//!   `root` has no password (until [`MariaDbServer::set_root_password`]) and can log in
//!   over TCP from loopback.
//! - When the harness runs as root, `mariadb-install-db` and `mariadbd` run as the `mysql`
//!   system user if it exists (the temp folder then belongs to it); otherwise they run as root
//!   with `--user=root`. Client tools run as the current user.
//! - Stopping sends SIGTERM (MariaDB's normal shutdown), then SIGKILL after the grace
//!   period; the process group is killed and `mariadbd` reaped (see [`crate::process`]).

use std::fs::OpenOptions;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use strongbox_engines::tools;

use crate::error::{HarnessError, Result};
use crate::process::{self, RunAs, ServerProcess, DEFAULT_COMMAND_TIMEOUT};
use crate::{ports, tmp};

const SERVER_HINT: &str = "install mariadb-server (apt-get install -y mariadb-server)";
const CLIENT_HINT: &str = "install mariadb-client (apt-get install -y mariadb-client)";

/// How many times start-up retries with a fresh port when the chosen one was taken.
const PORT_ATTEMPTS: usize = 5;

/// Client environment variables that could redirect connections; removed from client commands.
const CLIENT_ENV_TO_CLEAR: &[&str] = &[
    "MYSQL_HOST",
    "MYSQL_TCP_PORT",
    "MYSQL_UNIX_PORT",
    "MYSQL_PWD",
];

/// Finds a MariaDB/MySQL program by its names (first found wins) on `PATH`, `/usr/sbin`,
/// `/usr/bin`, `/usr/local/{bin,sbin}`, with the product's own search
/// ([`strongbox_engines::tools::mariadb_program`]).
pub fn mariadb_tool(names: &[&str]) -> Result<PathBuf> {
    tools::mariadb_program(names, None).map_err(|e| {
        let server_side = names
            .iter()
            .any(|n| n.ends_with('d') || n.contains("install_db") || n.contains("install-db"));
        HarnessError::BinaryNotFound {
            name: e.program,
            searched: e.searched,
            hint: if server_side {
                SERVER_HINT
            } else {
                CLIENT_HINT
            }
            .into(),
        }
    })
}

/// Quotes a MariaDB identifier (`my`db` → `` `my``db` ``).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a MariaDB string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Options for starting a [`MariaDbServer`]. Obtain with [`MariaDbServer::builder`].
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    host: IpAddr,
    args: Vec<String>,
    start_timeout: Duration,
    stop_timeout: Duration,
}

impl Default for MariaDbBuilder {
    fn default() -> Self {
        MariaDbBuilder {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            args: Vec::new(),
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
        }
    }
}

impl MariaDbBuilder {
    /// Loopback address to listen on; default `127.0.0.1`.
    pub fn host(mut self, addr: impl Into<IpAddr>) -> Self {
        self.host = addr.into();
        self
    }

    /// Adds a `mariadbd` option, e.g. `"--log-bin=binlog"`, `"--server-id=1"`,
    /// `"--binlog-format=ROW"`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
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

    /// Initialises the data directory and starts the server.
    pub fn start(self) -> Result<MariaDbServer> {
        MariaDbServer::start_with(self)
    }
}

/// A running (or stopped, see [`MariaDbServer::stop`]) throwaway MariaDB server.
///
/// Dropping it stops the server and removes its temp folder.
#[derive(Debug)]
pub struct MariaDbServer {
    // Field order matters for drop: the process goes before the folder it lives in.
    process: Option<ServerProcess>,
    opts: MariaDbBuilder,
    mariadbd: PathBuf,
    client: PathBuf,
    /// `Some` when running as root and the `mysql` user exists.
    run_as: Option<RunAs>,
    /// Running as root without a `mysql` user: pass `--user=root`.
    user_root_flag: bool,
    host: String,
    port: u16,
    last_pid: u32,
    root_password: Option<String>,
    data_dir: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
    log_path: PathBuf,
    tmp: tmp::TempDir,
}

impl MariaDbServer {
    /// Starts a server with default options (`127.0.0.1`, free port, root without password).
    pub fn start() -> Result<MariaDbServer> {
        MariaDbBuilder::default().start()
    }

    /// Options for a server, e.g. `MariaDbServer::builder().arg("--log-bin=binlog").start()`.
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder::default()
    }

    fn start_with(opts: MariaDbBuilder) -> Result<MariaDbServer> {
        let install_db = mariadb_tool(&["mariadb-install-db", "mysql_install_db"])?;
        let mariadbd = mariadb_tool(&["mariadbd", "mysqld"])?;
        let client = mariadb_tool(&["mariadb", "mysql"])?;
        let is_root = nix::unistd::geteuid().is_root();
        let run_as = if is_root {
            RunAs::lookup("mysql")?
        } else {
            None
        };
        let user_root_flag = is_root && run_as.is_none();

        let tmp = tmp::temp_dir_owned_by("mariadb", run_as.as_ref().map(RunAs::ids))?;
        let root = tmp.path().to_path_buf();
        let mut server = MariaDbServer {
            process: None,
            mariadbd,
            client,
            run_as,
            user_root_flag,
            host: opts.host.to_string(),
            port: 0,
            last_pid: 0,
            root_password: None,
            data_dir: root.join("data"),
            socket: root.join("mysqld.sock"),
            pid_file: root.join("mysqld.pid"),
            log_path: root.join("error.log"),
            tmp,
            opts,
        };
        server.install_db(&install_db)?;
        server.start_on_free_port()?;
        Ok(server)
    }

    fn server_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.tmp.path());
        if let Some(run_as) = &self.run_as {
            run_as.apply(&mut cmd);
        }
        cmd
    }

    /// A temp folder of its own (created, owned by the server's user): servers sharing /tmp
    /// delete each other's temp tables.
    fn server_tmp(&self) -> Result<PathBuf> {
        let server_tmp = self.tmp.path().join("tmp");
        std::fs::create_dir_all(&server_tmp)
            .map_err(|e| HarnessError::io(format!("creating {}", server_tmp.display()), e))?;
        if let Some(run_as) = &self.run_as {
            tmp::chown(&server_tmp, run_as.uid, run_as.gid)?;
        }
        Ok(server_tmp)
    }

    fn install_db(&self, install_db: &Path) -> Result<()> {
        let server_tmp = self.server_tmp()?;
        let mut cmd = self.server_command(install_db);
        // --no-defaults must come first. Its own temp folder: a server starting with /tmp as
        // its tmpdir deletes the `#sql*` temp tables an install in progress uses there.
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir.display()))
            .arg(format!("--tmpdir={}", server_tmp.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ]);
        if self.user_root_flag {
            cmd.arg("--user=root");
        }
        process::run("mariadb-install-db", cmd, None, DEFAULT_COMMAND_TIMEOUT)?;
        Ok(())
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

    /// Spawns `mariadbd` on `self.port` and waits until `select 1` succeeds over TCP.
    fn spawn_and_wait(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| HarnessError::io(format!("opening {}", self.log_path.display()), e))?;
        let log_len = process::file_len(&self.log_path);
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::io(format!("duplicating {}", self.log_path.display()), e))?;
        if let Some(run_as) = &self.run_as {
            // mariadbd (as the mysql user) reopens the log itself; it must be allowed to.
            tmp::chown(&self.log_path, run_as.uid, run_as.gid)?;
        }
        let server_tmp = self.server_tmp()?;
        let mut cmd = self.server_command(&self.mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir.display()))
            .arg(format!("--tmpdir={}", server_tmp.display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--bind-address={}", self.host))
            .arg(format!("--pid-file={}", self.pid_file.display()))
            .arg(format!("--log-error={}", self.log_path.display()))
            .arg("--skip-name-resolve");
        if self.user_root_flag {
            cmd.arg("--user=root");
        }
        cmd.args(&self.opts.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let mut proc = ServerProcess::spawn(
            "MariaDB",
            cmd,
            &self.log_path,
            Signal::SIGTERM,
            self.opts.stop_timeout,
        )?;
        self.last_pid = proc.pid();

        let started = Instant::now();
        let deadline = started + self.opts.start_timeout;
        let mut last_probe: String;
        loop {
            if let Err(mut e) = proc.check_running() {
                if let HarnessError::ServerExited { log_tail, .. } = &mut e {
                    *log_tail = process::log_tail_since(&self.log_path, log_len, 40);
                }
                return Err(e);
            }
            let mut probe = self.client_command();
            probe.args(["--connect-timeout=2", "-e", "select 1"]);
            match process::run("mariadb select 1", probe, None, Duration::from_secs(10)) {
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
                    server: "MariaDB".into(),
                    waited: started.elapsed(),
                    last_probe,
                    log: self.log_path.clone(),
                    log_tail: process::log_tail_since(&self.log_path, log_len, 40),
                };
                proc.stop()?;
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::debug!(port = self.port, pid = self.last_pid, "MariaDB ready");
        self.process = Some(proc);
        Ok(())
    }

    fn running(&self) -> Result<&ServerProcess> {
        match &self.process {
            Some(p) if !p.is_stopped() => Ok(p),
            _ => Err(HarnessError::NotRunning {
                server: "MariaDB".into(),
            }),
        }
    }

    /// A `mariadb` client command connected to this server over TCP as `root` (password via
    /// `MYSQL_PWD` if one was set), batch mode without column names (`-N -B`). Add e.g.
    /// `-e <sql>` or `--database=<db>` and run it.
    pub fn client_command(&self) -> Command {
        let mut cmd = Command::new(&self.client);
        for var in CLIENT_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        // --no-defaults must come first.
        cmd.arg("--no-defaults")
            .args(self.client_args())
            .args(["-N", "-B"]);
        if let Some(pw) = &self.root_password {
            cmd.env("MYSQL_PWD", pw);
        }
        cmd
    }

    /// Connection arguments understood by `mariadb`, `mariadb-dump`, `mariadb-admin`, ...:
    /// `--protocol=TCP --host=.. --port=.. --user=root` (no password; see
    /// [`root_password`](Self::root_password)).
    pub fn client_args(&self) -> Vec<String> {
        vec![
            "--protocol=TCP".into(),
            format!("--host={}", self.host),
            format!("--port={}", self.port),
            "--user=root".into(),
        ]
    }

    /// Runs `sql` (any number of statements) with the `mariadb` client in batch mode
    /// (`-N -B`) and returns the trimmed output: one line per row, columns separated by tabs.
    /// Stops at the first error, which is returned with the client's stderr.
    pub fn query(&self, sql: &str) -> Result<String> {
        self.query_inner(None, sql)
    }

    /// Like [`query`](Self::query) with `db` as the default database.
    pub fn query_db(&self, db: &str, sql: &str) -> Result<String> {
        self.query_inner(Some(db), sql)
    }

    fn query_inner(&self, db: Option<&str>, sql: &str) -> Result<String> {
        self.running()?;
        let mut cmd = self.client_command();
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        let out = process::run(
            &format!(
                "mariadb query{}",
                db.map(|d| format!(" on database {d}")).unwrap_or_default()
            ),
            cmd,
            Some(sql.as_bytes()),
            DEFAULT_COMMAND_TIMEOUT,
        )?;
        Ok(out.stdout.trim().to_string())
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.query(&format!("CREATE DATABASE {}", quote_ident(name)))
            .map(|_| ())
    }

    /// Sets a password for every `root` account that exists (`localhost`, `127.0.0.1`,
    /// `::1`); later client commands of this harness pass it via `MYSQL_PWD`.
    pub fn set_root_password(&mut self, password: &str) -> Result<()> {
        let pw = quote_literal(password);
        self.query(&format!(
            "ALTER USER IF EXISTS 'root'@'localhost' IDENTIFIED BY {pw}, \
             'root'@'127.0.0.1' IDENTIFIED BY {pw}, 'root'@'::1' IDENTIFIED BY {pw}"
        ))?;
        self.root_password = Some(password.to_string());
        Ok(())
    }

    /// The root password set with [`set_root_password`](Self::set_root_password), if any.
    pub fn root_password(&self) -> Option<&str> {
        self.root_password.as_deref()
    }

    /// Stops the server (SIGTERM; SIGKILL after the stop timeout). Idempotent. The data
    /// directory stays until the server is dropped, so [`restart`](Self::restart) works.
    pub fn stop(&mut self) -> Result<()> {
        match &mut self.process {
            Some(p) => p.stop().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same data directory and port (stopping it first if it
    /// runs).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.process = None;
        self.spawn_and_wait()
    }

    /// Sends `signal` to `mariadbd` (e.g. SIGKILL, SIGSTOP in fault tests).
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

    /// Path of the server's unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's temp folder (removed on drop).
    pub fn temp_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Pid of `mariadbd` (of the most recent start, also after it stopped).
    pub fn pid(&self) -> u32 {
        self.last_pid
    }

    /// The system user `mariadbd` runs as when the harness runs as root (if not root itself).
    pub fn run_as(&self) -> Option<&RunAs> {
        self.run_as.as_ref()
    }

    /// Path of the error log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the error log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log_path, lines)
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("strongbox-integration: stopping MariaDB failed: {e}");
        }
        // `tmp` is dropped after this and removes the folder.
    }
}
