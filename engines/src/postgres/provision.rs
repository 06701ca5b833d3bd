//! Fresh clusters for restores: `initdb`, settings for the load, start and stop with
//! `pg_ctl`, the superuser's password; a fresh cluster as a restore's target ([`PgTarget`]).
//!
//! Invariants: a fresh cluster lives entirely under its folder and runs detached from the
//! agent (as `postgres` when the agent is root); the password reaches the server only as a
//! SCRAM verifier; the load runs under bulk-load settings that [`PgTarget::finish_load`]
//! removes, and the restore completes only once the data is flushed to disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncRead;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::process::{self, SystemUser, ToolCommand};
use crate::{
    compare_stats, Connection, EngineKind, PartKind, PartPlan, RestoreTarget, TableStat,
    Verification,
};

use super::conn::{pg_error, Endpoint};
use super::globals::{apply_globals, read_globals, Tablespaces};
use super::load::{Loader, Mode};
use super::quote::{conf_literal, quote_ident, quote_literal};
use super::{PgTools, SUPERUSER};

/// How long a provisioned server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times provisioning retries with a new port when another process took it.
const PORT_ATTEMPTS: usize = 5;
/// Unix socket paths are limited to 107 bytes (`sun_path`).
const MAX_SOCKET_PATH: usize = 100;

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
