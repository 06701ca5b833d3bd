//! `strongbox dev`: a whole strongbox on this machine in one command, for trying it out and for
//! end-to-end tests.
//!
//! In a fresh temp folder it makes a CA and certificates, a fleet keyring, starts 3
//! `strongbox-coordinator` processes (node 1 bootstraps, the others join from their peers list),
//! a demo database (SQLite by default, a local PostgreSQL with `--postgres`), two
//! `strongbox-agent` processes (`dev-db` with the demo service, `dev-spare` for restores); then
//! takes a backup, restores it onto the spare, and shows the verification. It prints how to point
//! the CLI at the running cluster and waits for Ctrl-C (or stops at once with
//! `--exit-when-done`).
//!
//! Invariants:
//! - every process it starts is tied to it: started from one long-lived spawner thread with
//!   `PR_SET_PDEATHSIG` (the kernel kills it if `dev` dies, even by SIGKILL), in its own process
//!   group (a Ctrl-C in the terminal reaches only `dev`, which stops the others in order);
//! - on every way out (done, error, Ctrl-C, SIGTERM) it stops what it started: agents, the
//!   PostgreSQL servers restores made (found by their `postmaster.pid` under the temp folder),
//!   the demo database server, the coordinators; then removes the temp folder;
//! - every wait is a polling loop with a deadline, and a failure names the log to read and
//!   prints its tail; no secret (key bytes, passwords) is ever printed;
//! - everything it writes is private from creation (`main` sets the umask 0o077, and the
//!   folders, configs, logs and the demo database are made with explicit modes too): folders
//!   0700, files 0600. Only the temp folder itself and the agents' data roots are 0711 when
//!   running as root, so the PostgreSQL servers (running as `postgres`) can pass through them
//!   to their own 0700 folders; no other user can list them.

use crate::grammar::dev::*;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use strongbox_config::{AgentOptions, CoordinatorOptions};
use strongbox_core::files::Overwrite;
use strongbox_core::keys::Keyring;
use strongbox_core::pki::{self, Identity, Role, Validity};
use strongbox_core::private;
use strongbox_core::tls::TlsFiles;
use strongbox_engines::{tools, EngineKind, ServiceSpec};
use strongbox_proto::v1::{
    BindHostRequest, ClusterStatusRequest, CreateBackupRequest, JobInfo, JobState,
    ListHostsRequest, ListServicesRequest, RestoreBackupRequest,
};

use crate::commands::backup;
use crate::commands::restore;
use crate::connect::Api;
use crate::output::{self, size, Output};
use crate::views::backup::BackupView;
use crate::views::dev::{DevSummaryView, DevTimingsView};
use crate::views::job::{connect_hint, JobView};

const REGION: &str = "dev-1";
const SERVICE: &str = "demo";
const DB_HOST: &str = "dev-db";
const SPARE_HOST: &str = "dev-spare";
const OPERATOR: &str = "dev-operator";
const POLL: Duration = Duration::from_millis(100);

// ------------------------------------------------------------------------------ processes

/// Spawns `cmd` in its own process group, killed by the kernel if this process dies.
fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    cmd.process_group(0);
    strongbox_core::process::spawn_tied(cmd)
}

/// A process `dev` started, with its log file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    stop_signal: libc::c_int,
}

impl Proc {
    fn start(
        name: &str,
        mut cmd: Command,
        log: &Path,
        stop_signal: libc::c_int,
    ) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(private::PRIVATE_FILE)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let file2 = file.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = spawn_tied(cmd).with_context(|| format!("starting {name} ({program})"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            stop_signal,
        })
    }

    /// Ok while running; an error with the log's tail once it exited.
    fn check(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            ),
            Err(e) => bail!("{}: {e}", self.name),
        }
    }

    /// Stop signal, up to `grace` to exit, then SIGKILL to the whole group; reaps.
    fn stop(&mut self, grace: Duration) {
        let pid = self.child.id() as libc::pid_t;
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe {
                libc::kill(pid, self.stop_signal);
            }
            let deadline = Instant::now() + grace;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // SAFETY: the group id is our child's pid; the group holds only what it started.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// Waits until `addr` accepts TCP connections while `proc` runs.
fn wait_listening(proc: &mut Proc, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        proc.check()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} does not listen on {addr} after {}; its log {}:\n{}",
                proc.name,
                output::duration(timeout),
                proc.log.display(),
                tail(&proc.log, 30)
            );
        }
        std::thread::sleep(POLL);
    }
}

// ------------------------------------------------------------------------------ configs

/// Writes a new config file, 0600 from creation (it names the key and TLS files).
fn write_toml<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = strongbox_config::to_toml(value)?;
    private::write_new(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The mode of folders a PostgreSQL server running as `postgres` must pass through: 0711
/// when we run as root (and servers run as `postgres`), else 0700.
fn traverse_mode() -> u32 {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        private::TRAVERSE_DIR
    } else {
        private::PRIVATE_DIR
    }
}

// ------------------------------------------------------------------------------ PostgreSQL

/// The `postgres` system user, when running as root (PostgreSQL refuses to run as root).
fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // SAFETY: getpwnam with a valid C string; we copy the two ids out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root, PostgreSQL needs the `postgres` system user: create it with `useradd --system --user-group postgres`");
    }
    // SAFETY: pw is non-null and points at libc's static passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// The folder of `initdb`, `postgres`, `psql`: one installation's, found on PATH (symbolic
/// links resolved), else the newest /usr/lib/postgresql/*/bin ([`tools::postgres_server_dir`]).
fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    tools::postgres_server_dir(None, &["initdb", "postgres", "psql"]).map_err(|e| match e.lacking {
        Some((dir, missing)) => anyhow::anyhow!(
            "{} has initdb but no {missing}: install the full PostgreSQL server package",
            dir.display()
        ),
        None => anyhow::anyhow!(
            "--postgres needs the PostgreSQL server tools (initdb, postgres, psql in one folder), \
             not found in {}: install postgresql, or put its bin folder on PATH",
            e.searched
        ),
    })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn run_quiet(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const PG_DEMO_SQL: &str = "
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL);
CREATE TABLE products (id integer PRIMARY KEY, title text NOT NULL, price_cents integer NOT NULL);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer REFERENCES customers(id),
                     product_id integer REFERENCES products(id), quantity integer NOT NULL,
                     created_at timestamptz NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 2000) g;
INSERT INTO products SELECT g, 'product ' || g, 100 + g * 7 % 5000 FROM generate_series(1, 200) g;
INSERT INTO orders SELECT g, 1 + g % 2000, 1 + g % 200, 1 + g % 5, now() - (g || ' minutes')::interval
  FROM generate_series(1, 5000) g;
";

// ------------------------------------------------------------------------------ the demo

/// Everything `dev` started; stopped and removed by [`Dev::shutdown`] (also on drop).
struct Dev {
    root: Option<tempfile::TempDir>,
    dir: PathBuf,
    coordinators: Vec<Proc>,
    agents: Vec<Proc>,
    database: Option<Proc>,
    addresses: Vec<String>,
    operator: TlsFiles,
    key_file: PathBuf,
    bin_dir: PathBuf,
}

#[derive(Default)]
struct Timings {
    setup: Duration,
    cluster: Duration,
    database: Duration,
    agents: Duration,
    backup: Duration,
    restore: Duration,
}

struct Outcome {
    backup_job: JobInfo,
    backup: Option<strongbox_proto::v1::BackupInfo>,
    restore_job: JobInfo,
    timings: Timings,
}

impl Dev {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn new() -> anyhow::Result<Dev> {
        let exe = std::env::current_exe().context("locating the strongbox executable")?;
        let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        for b in ["strongbox-coordinator", "strongbox-agent"] {
            if !bin_dir.join(b).is_file() {
                bail!(
                    "{b} is not next to strongbox in {}: build every binary first with `cargo build --workspace --bins`",
                    bin_dir.display()
                );
            }
        }
        let root = tempfile::Builder::new()
            .prefix("strongbox-dev-")
            .tempdir()
            .context("creating the temp folder")?;
        let dir = root.path().to_path_buf();
        // Made 0700. Others may traverse (not list) it when we are root: the PostgreSQL
        // servers run as `postgres` below it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(traverse_mode()))?;
        private::create_dir(&dir.join("logs"), private::PRIVATE_DIR)?;
        Ok(Dev {
            root: Some(root),
            operator: TlsFiles::in_dir(&dir.join("certs"), OPERATOR),
            key_file: dir.join("fleet.key"),
            dir,
            coordinators: Vec::new(),
            agents: Vec::new(),
            database: None,
            addresses: Vec::new(),
            bin_dir,
        })
    }

    /// CA, certificates, keyring.
    fn secrets(&self) -> anyhow::Result<()> {
        let ca = self.dir.join("ca");
        let certs = self.dir.join("certs");
        let validity = || Validity::days_from_now(30);
        pki::init_ca_dir(&ca, "strongbox dev CA", validity())?;
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let issue = |role: Role, name: &str, sans: &[String]| -> anyhow::Result<()> {
            pki::issue_to_dir(
                &ca,
                &Identity {
                    role,
                    name: name.to_string(),
                },
                sans,
                validity(),
                &certs,
                Overwrite::Refuse,
            )
            .with_context(|| format!("issuing the certificate of {name}"))?;
            Ok(())
        };
        for id in 1..=3 {
            issue(Role::Node, &format!("node-{id}"), &sans)?;
        }
        issue(Role::Operator, OPERATOR, &[])?;
        issue(Role::Agent, DB_HOST, &sans)?;
        issue(Role::Agent, SPARE_HOST, &sans)?;
        let mut ring = Keyring::default();
        ring.rotate()?;
        ring.save(&self.key_file, Overwrite::Refuse)?;
        Ok(())
    }

    /// Starts 3 coordinators and waits for a leader with 3 voters.
    async fn cluster(&mut self) -> anyhow::Result<()> {
        let mut ports = Vec::new();
        for _ in 1..=3 {
            ports.push((free_port()?, free_port()?));
        }
        self.addresses = ports
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let bin = self.bin_dir.join("strongbox-coordinator");
        for id in 1..=3u64 {
            let (port, http) = ports[id as usize - 1];
            let tls = TlsFiles::in_dir(&self.dir.join("certs"), &format!("node-{id}"));
            let config = CoordinatorOptions {
                node_id: Some(id),
                region: Some(REGION.into()),
                listen: Some(SocketAddr::from(([127, 0, 0, 1], port))),
                http_listen: Some(SocketAddr::from(([127, 0, 0, 1], http))),
                peers: Some(
                    (1..=3u64)
                        .filter(|p| *p != id)
                        .map(|p| format!("{p}={}", self.addresses[p as usize - 1]))
                        .collect(),
                ),
                data_dir: Some(self.dir.join(format!("node-{id}"))),
                tls_ca: Some(tls.ca),
                tls_cert: Some(tls.cert),
                tls_key: Some(tls.key),
                ..CoordinatorOptions::default()
            };
            let path = self.dir.join(format!("node-{id}.toml"));
            write_toml(&path, &config)?;
            let mut cmd = Command::new(&bin);
            cmd.arg("--config").arg(&path).env("RUST_LOG", "info");
            let name = format!("coordinator node-{id}");
            self.coordinators.push(Proc::start(
                &name,
                cmd,
                &self.log(&format!("node-{id}")),
                libc::SIGTERM,
            )?);
        }
        for (i, p) in self.coordinators.iter_mut().enumerate() {
            let addr: SocketAddr = format!("127.0.0.1:{}", ports[i].0).parse()?;
            wait_listening(p, addr, Duration::from_secs(30))?;
        }
        let api = self.api()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for p in &mut self.coordinators {
                p.check()?;
            }
            let status = api
                .call("ClusterStatus", |mut c| async move {
                    c.cluster_status(ClusterStatusRequest {}).await
                })
                .await;
            if let Ok(s) = &status {
                if s.leader_id != 0 && s.nodes.iter().filter(|n| n.voter).count() == 3 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the coordinators elected no leader with 3 voters in 60 s ({}); node-1's log {}:\n{}",
                    match status {
                        Ok(s) => format!("leader {}, {} voters", s.leader_id, s.nodes.iter().filter(|n| n.voter).count()),
                        Err(e) => format!("{e:#}"),
                    },
                    self.log("node-1").display(),
                    tail(&self.log("node-1"), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn api(&self) -> anyhow::Result<Api> {
        Api::with(&self.operator, &self.addresses)
    }

    /// The demo SQLite file: a few tables, some thousand rows.
    fn sqlite(&self) -> anyhow::Result<ServiceSpec> {
        let dir = self.dir.join("db");
        private::create_dir_all(&dir)?;
        let path = dir.join("demo.db");
        // Created 0600 before SQLite opens it (an empty file is an empty database); SQLite
        // gives its journal and WAL files the database file's mode.
        drop(private::create_file(&path)?);
        let mut db = rusqlite::Connection::open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let tx = db.transaction()?;
        tx.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL);
             CREATE TABLE products (id INTEGER PRIMARY KEY, title TEXT NOT NULL, price_cents INTEGER NOT NULL);
             CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                                  product_id INTEGER REFERENCES products(id), quantity INTEGER NOT NULL,
                                  created_at TEXT NOT NULL);",
        )?;
        {
            let mut c = tx.prepare("INSERT INTO customers VALUES (?1, ?2, ?3)")?;
            for i in 1..=2000i64 {
                c.execute(rusqlite::params![
                    i,
                    format!("customer {i}"),
                    format!("c{i}@example.com")
                ])?;
            }
            let mut p = tx.prepare("INSERT INTO products VALUES (?1, ?2, ?3)")?;
            for i in 1..=200i64 {
                p.execute(rusqlite::params![
                    i,
                    format!("product {i}"),
                    100 + i * 7 % 5000
                ])?;
            }
            let mut o =
                tx.prepare("INSERT INTO orders VALUES (?1, ?2, ?3, ?4, datetime('now', ?5))")?;
            for i in 1..=5000i64 {
                o.execute(rusqlite::params![
                    i,
                    1 + i % 2000,
                    1 + i % 200,
                    1 + i % 5,
                    format!("-{i} minutes")
                ])?;
            }
        }
        tx.commit()?;
        Ok(ServiceSpec {
            path: Some(path),
            ..ServiceSpec::new(SERVICE, EngineKind::Sqlite)
        })
    }

    /// A local PostgreSQL with a `demo` database.
    fn postgres(&mut self) -> anyhow::Result<ServiceSpec> {
        let bin = pg_bin_dir()?;
        let run_as = postgres_user()?;
        let dir = self.dir.join("pg");
        let data = dir.join("data");
        private::create_dir_all(&dir)?;
        if let Some((uid, gid)) = run_as {
            chown_tree(&dir, uid, gid)?;
        }
        let server_cmd = |program: &str| {
            let mut c = Command::new(bin.join(program));
            c.env("LC_ALL", "C").current_dir(&dir);
            if let Some((uid, gid)) = run_as {
                c.uid(uid).gid(gid);
            }
            c
        };
        let mut initdb = server_cmd("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run_quiet(initdb, "initdb")?;
        let port = free_port()?;
        let mut server = server_cmd("postgres");
        server
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&dir)
            // Only its socket, in its private folder: the demo trusts every connection, so no
            // TCP port that another local user could reach.
            .args(["-c", "listen_addresses=", "-c", "fsync=off"]);
        let log = self.log("postgres");
        if let Some((uid, gid)) = run_as {
            // The server writes its log itself only if it may; we open it for it, as root.
            drop(private::create_file(&log)?);
            let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
        }
        let mut proc = Proc::start("PostgreSQL", server, &log, libc::SIGINT)?;
        let psql = |db: &str| {
            let mut c = Command::new(bin.join("psql"));
            c.arg("-h")
                .arg(&dir)
                .args(["-U", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1"])
                .arg("-p")
                .arg(port.to_string())
                .arg("-d")
                .arg(db);
            c
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            proc.check()?;
            let mut probe = psql("postgres");
            probe.args(["-Atc", "SELECT 1"]).stderr(Stdio::null());
            if run_quiet(probe, "probe").is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL does not answer after 30 s; its log {}:\n{}",
                    log.display(),
                    tail(&log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.database = Some(proc);
        let mut create = psql("postgres");
        create.args(["-c", "CREATE DATABASE demo"]);
        run_quiet(create, "creating the demo database")?;
        let mut fill = psql("demo");
        fill.args(["-c", PG_DEMO_SQL]);
        run_quiet(fill, "filling the demo database")?;
        Ok(ServiceSpec {
            host: Some(dir.display().to_string()),
            port: Some(port),
            user: Some("postgres".into()),
            databases: vec!["demo".into()],
            bin_dir: Some(bin),
            ..ServiceSpec::new(SERVICE, EngineKind::Postgres)
        })
    }

    /// Starts both agents and waits until the hosts registered and the demo service has a
    /// healthy member.
    async fn agents(&mut self, service: ServiceSpec) -> anyhow::Result<()> {
        let bin = self.bin_dir.join("strongbox-agent");
        let mut service = Some(service);
        for (host, spare) in [(DB_HOST, false), (SPARE_HOST, true)] {
            let tls = TlsFiles::in_dir(&self.dir.join("certs"), host);
            let data_root = self.dir.join(format!("{host}-data"));
            private::create_dir(&data_root, traverse_mode())?;
            let config = AgentOptions {
                coordinators: Some(self.addresses.clone()),
                region: Some(REGION.into()),
                host: Some(host.into()),
                tls_ca: Some(tls.ca),
                tls_cert: Some(tls.cert),
                tls_key: Some(tls.key),
                key_file: Some(self.key_file.clone()),
                data_root: Some(data_root),
                spare: Some(spare),
                restore_listen: Some("127.0.0.1".into()),
                services: Some(if spare {
                    Vec::new()
                } else {
                    service.take().into_iter().collect()
                }),
                ..AgentOptions::default()
            };
            let path = self.dir.join(format!("{host}.toml"));
            write_toml(&path, &config)?;
            let mut cmd = Command::new(&bin);
            cmd.arg("--config").arg(&path).env("RUST_LOG", "info");
            self.agents.push(Proc::start(
                &format!("agent {host}"),
                cmd,
                &self.log(host),
                libc::SIGTERM,
            )?);
        }
        let api = self.api()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for a in &mut self.agents {
                a.check()?;
            }
            let hosts = api
                .call("ListHosts", |mut c| async move {
                    c.list_hosts(ListHostsRequest::default()).await
                })
                .await?
                .hosts;
            let services = api
                .call("ListServices", |mut c| async move {
                    c.list_services(ListServicesRequest::default()).await
                })
                .await?
                .services;
            let registered = [DB_HOST, SPARE_HOST]
                .iter()
                .all(|h| hosts.iter().any(|x| x.name == *h));
            let healthy = services
                .iter()
                .any(|s| s.name == SERVICE && s.members.iter().any(|m| m.healthy));
            // The spare asks to be one; the operator (this demo) approves it, as
            // `strongbox host approve` does on a real fleet.
            let spare = hosts.iter().find(|x| x.name == SPARE_HOST);
            if let Some(h) = spare.filter(|h| h.spare_requested && !h.spare_approved) {
                let host = h.name.clone();
                api.call("BindHost", |mut c| {
                    let req = BindHostRequest {
                        host: host.clone(),
                        ..Default::default()
                    };
                    async move { c.bind_host(req).await }
                })
                .await?;
                continue;
            }
            if registered && healthy && spare.is_some_and(|h| h.spare) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "after 60 s: hosts registered {:?}, service {SERVICE} healthy: {healthy}; the agent logs {} and {}:\n{}\n---\n{}",
                    hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
                    self.log(DB_HOST).display(),
                    self.log(SPARE_HOST).display(),
                    tail(&self.log(DB_HOST), 20),
                    tail(&self.log(SPARE_HOST), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Steps 1 to 5: everything up to a verified restore.
    async fn demo(&mut self, args: &Args, output: Output) -> anyhow::Result<Outcome> {
        let mut timings = Timings::default();
        let step = |text: &str| output.note(&format!("==> {text}"));

        let t = Instant::now();
        step(&format!(
            "certificates and a fleet key in {}",
            self.dir.display()
        ));
        self.secrets()?;
        timings.setup = t.elapsed();

        let t = Instant::now();
        step("starting 3 coordinators");
        self.cluster().await?;
        timings.cluster = t.elapsed();
        output.note(&format!(
            "    leader elected; nodes at {}",
            self.addresses.join(", ")
        ));

        let t = Instant::now();
        let service = if args.postgres {
            step("making a local PostgreSQL with a demo database (initdb)");
            self.postgres()?
        } else {
            step("making a demo SQLite database (3 tables, 7200 rows)");
            self.sqlite()?
        };
        timings.database = t.elapsed();

        let t = Instant::now();
        step(&format!(
            "starting agents {DB_HOST} (service {SERVICE}) and {SPARE_HOST} (spare)"
        ));
        self.agents(service).await?;
        timings.agents = t.elapsed();

        let api = self.api()?;
        let t = Instant::now();
        step(&format!("backing up {SERVICE}"));
        let job = api
            .call("CreateBackup", |mut c| async move {
                c.create_backup(CreateBackupRequest {
                    service: SERVICE.into(),
                    host: String::new(),
                })
                .await
            })
            .await?;
        let backup_job = restore::wait_job(&api, &job.id, output, Duration::from_secs(600)).await?;
        if backup_job.state() != JobState::Completed {
            bail!(
                "the backup failed: {}; the agent's log {}:\n{}",
                backup_job.reason,
                self.log(DB_HOST).display(),
                tail(&self.log(DB_HOST), 30)
            );
        }
        timings.backup = t.elapsed();
        let backup = backup::show_backup(&api, &backup_job.backup_id).await.ok();
        if output == Output::Table {
            println!("\n$ strongbox backup list {SERVICE}");
            backup::print_backups(
                &api,
                SERVICE,
                Some(crate::grammar::SHOWN_BY_DEFAULT),
                output,
            )
            .await?;
        }

        let t = Instant::now();
        step(&format!(
            "restoring backup {} onto {SPARE_HOST}",
            backup_job.backup_id
        ));
        let job = api
            .call("RestoreBackup", |mut c| {
                let backup_id = backup_job.backup_id.clone();
                async move {
                    c.restore_backup(RestoreBackupRequest {
                        backup_id,
                        to_host: SPARE_HOST.into(),
                        ..Default::default()
                    })
                    .await
                }
            })
            .await?;
        let restore_job =
            restore::wait_job(&api, &job.id, output, Duration::from_secs(600)).await?;
        timings.restore = t.elapsed();
        if output == Output::Table {
            println!("\n$ strongbox restore show {}", restore_job.id);
            JobView::from(&restore_job).fields().print();
        }
        if let Err(e) = restore::check_restore(&restore_job) {
            return Err(e.context(format!(
                "the spare agent's log {}:\n{}",
                self.log(SPARE_HOST).display(),
                tail(&self.log(SPARE_HOST), 30)
            )));
        }
        Ok(Outcome {
            backup_job,
            backup,
            restore_job,
            timings,
        })
    }

    /// Stops the servers that restores started below the temp folder, by the pid in their pid
    /// files: PostgreSQL (`postmaster.pid`, SIGINT: fast shutdown) and MariaDB (`mariadbd.pid`,
    /// SIGTERM), skipping the demo server (our own child).
    fn stop_restored_servers(&self) {
        let own = self.database.as_ref().map(|p| p.child.id());
        let mut pids: Vec<(i32, i32)> = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(t) if t.is_file() => {
                        let signal = match e.file_name().to_str() {
                            Some("postmaster.pid") => libc::SIGINT,
                            Some("mariadbd.pid") => libc::SIGTERM,
                            _ => continue,
                        };
                        let pid = std::fs::read_to_string(&p).ok().and_then(|s| {
                            s.lines().next().and_then(|l| l.trim().parse::<i32>().ok())
                        });
                        if let Some(pid) = pid.filter(|p| *p > 1 && Some(*p as u32) != own) {
                            pids.push((pid, signal));
                        }
                    }
                    _ => {}
                }
            }
        }
        // SAFETY (all kill calls): signals to pids read from the servers' own pid files.
        let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
        for (pid, signal) in &pids {
            unsafe {
                libc::kill(*pid, *signal);
            }
        }
        let pids: Vec<i32> = pids.into_iter().map(|(pid, _)| pid).collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for pid in pids.iter().filter(|p| alive(**p)) {
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
    }

    /// Stops everything, in order, and removes the temp folder. Idempotent.
    fn shutdown(&mut self) {
        for a in &mut self.agents {
            a.stop(Duration::from_secs(10));
        }
        self.agents.clear();
        self.stop_restored_servers();
        if let Some(mut db) = self.database.take() {
            db.stop(Duration::from_secs(15));
        }
        for c in &mut self.coordinators {
            c.stop(Duration::from_secs(10));
        }
        self.coordinators.clear();
        if let Some(root) = self.root.take() {
            if let Err(e) = root.close() {
                eprintln!("warning: could not remove {}: {e}", self.dir.display());
            }
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn summary<'a>(dev: &'a Dev, o: &'a Outcome, total: Duration) -> DevSummaryView<'a> {
    let verified = restore::check_restore(&o.restore_job).is_ok();
    let ms = |d: Duration| d.as_millis() as u64;
    DevSummaryView {
        ok: verified && o.backup_job.state() == JobState::Completed,
        dir: dev.dir.display().to_string(),
        coordinators: &dev.addresses,
        backup_job: JobView::from(&o.backup_job),
        backup: o.backup.as_ref().map(BackupView::from),
        restore_job: JobView::from(&o.restore_job),
        verified,
        timings_ms: DevTimingsView {
            setup: ms(o.timings.setup),
            cluster: ms(o.timings.cluster),
            database: ms(o.timings.database),
            agents: ms(o.timings.agents),
            backup: ms(o.timings.backup),
            restore: ms(o.timings.restore),
            total: ms(total),
        },
    }
}

fn print_summary(dev: &Dev, o: &Outcome, total: Duration, exit_when_done: bool) {
    let strongbox = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "strongbox".into());
    let r = o.restore_job.restore.clone().unwrap_or_default();
    println!();
    println!("Done in {}:", output::duration(total));
    println!(
        "  cluster     3 coordinators ({}) up in {}",
        dev.addresses.join(", "),
        output::duration(o.timings.cluster)
    );
    if let Some(b) = &o.backup {
        println!(
            "  backup      {} of {}: {} dumped, {} stored, {} chunks, in {}",
            b.id,
            b.service,
            size(b.plain_bytes),
            size(b.stored_bytes),
            b.chunk_count,
            output::duration(o.timings.backup)
        );
    }
    if let Some(v) = &r.verification {
        println!(
            "  restore     onto {SPARE_HOST} in {}: {} tables, {} rows checked, engine check {}: {}",
            output::duration(o.timings.restore),
            v.tables_checked,
            v.rows_checked,
            v.engine_check,
            if v.ok { "verified" } else { "FAILED" }
        );
    }
    if let Some(c) = &r.connection {
        if let Some(h) = connect_hint(c) {
            println!("  restored    {h}");
        }
    }
    if exit_when_done {
        return;
    }
    let certs = dev.dir.join("certs");
    println!("\nTry the CLI against this cluster (in another terminal):\n");
    println!(
        "  export STRONGBOX_COORDINATORS={}",
        dev.addresses.join(",")
    );
    println!(
        "  export STRONGBOX_TLS_CA={}",
        certs.join("ca.crt").display()
    );
    println!(
        "  export STRONGBOX_TLS_CERT={}",
        dev.operator.cert.display()
    );
    println!("  export STRONGBOX_TLS_KEY={}", dev.operator.key.display());
    println!("  export STRONGBOX_KEY_FILE={}", dev.key_file.display());
    println!();
    println!("  {strongbox} backup list {SERVICE}");
    println!("  {strongbox} service show {SERVICE}");
    println!("  {strongbox} host list");
    println!("  {strongbox} backup create {SERVICE} --wait");
    if let Some(b) = &o.backup {
        println!(
            "  {strongbox} backup show {} --key-file \"$STRONGBOX_KEY_FILE\"",
            b.id
        );
        println!("  {strongbox} backup download {} -o /tmp/{}", b.id, b.id);
        println!(
            "  {strongbox} backup restore {} --to-host {SPARE_HOST} --wait",
            b.id
        );
    }
    println!("  {strongbox} restore list");
    println!("  {strongbox} cluster status");
    println!(
        "\nLogs are in {}. Press Ctrl-C to stop everything and remove {}.",
        dev.dir.join("logs").display(),
        dev.dir.display()
    );
    let _ = std::io::stdout().flush();
}

pub async fn run(args: Args, output: Output) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut dev = Dev::new()?;
    let result = tokio::select! {
        r = dev.demo(&args, output) => r,
        r = wait_for_signal() => r.and_then(|()| Err(anyhow::anyhow!("interrupted: stopped everything and removed the temp folder"))),
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            if args.keep_running && !e.to_string().starts_with("interrupted") {
                eprintln!("error: {e:#}\n");
                eprintln!(
                    "--keep-running: everything stays up for inspection in {} (logs in {}). Press Ctrl-C to stop.",
                    dev.dir.display(),
                    dev.dir.join("logs").display()
                );
                wait_for_signal().await?;
            }
            tokio::task::block_in_place(|| dev.shutdown());
            return Err(e);
        }
    };
    let total = start.elapsed();
    match output {
        Output::Json => output.json(&summary(&dev, &outcome, total)),
        Output::Table => print_summary(&dev, &outcome, total, args.exit_when_done),
    }
    if !args.exit_when_done {
        wait_for_signal().await?;
        output.note("stopping...");
    }
    tokio::task::block_in_place(|| dev.shutdown());
    output.note("stopped everything and removed the temp folder");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").expect("write");
        assert_eq!(tail(&p, 2), "b\nc");
        assert!(tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }
}
