//! Fresh servers for restores: `mariadb-install-db`, `mariadbd` started detached, `root`
//! secured with a generated password; a fresh server as a restore's target ([`MyTarget`]);
//! stopping one.
//!
//! Invariants: a fresh server lives entirely under its folder, runs in its own session (as
//! `mysql` when the agent is root) with private file modes; the root password reaches the
//! server only as its `mysql_native_password` hash.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::process::{self, SystemUser, ToolCommand};
use crate::{
    compare_stats, Connection, EngineKind, PartKind, PartPlan, RestoreTarget, TableStat,
    Verification,
};

use super::conn::Endpoint;
use super::load::Loader;
use super::{MyTools, MAX_PACKET, SUPERUSER};

/// How long a provisioned server may take to start, or to stop.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times provisioning retries with a new port when another process took it.
const PORT_ATTEMPTS: usize = 5;

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

/// The `mysql_native_password` hash of `password`: `*` + hex(SHA1(SHA1(password))).
fn native_password_hash(password: &str) -> String {
    use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY as SHA1};
    let inner = digest(&SHA1, password.as_bytes());
    let outer = digest(&SHA1, inner.as_ref());
    format!("*{}", hex::encode_upper(outer.as_ref()))
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
    fn native_password_hash_matches_mariadb() {
        // SELECT PASSWORD('pw') on MariaDB.
        assert_eq!(
            native_password_hash("pw"),
            "*D821809F681A40A6E379B50D0463EFAE20BDD122"
        );
    }
}
