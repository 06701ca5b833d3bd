//! Real `strongbox-agent` processes for tests: a config file, a certificate from the cluster's
//! test CA, a data root in a temporary folder, and a log printed when a test fails.
//!
//! The agent's folder and its data root are 0711: a server a restore makes as `postgres` or
//! `mysql` (tests run as root) must traverse them to reach its own 0700 folder, and no one else
//! may list them. The config and the log are 0600.
//!
//! Invariant: when an `AgentProcess` drops, the agent is stopped and every server a restore
//! made under its data root (PostgreSQL `postmaster.pid`, MariaDB `mariadb.pid`) is stopped
//! too, so no process outlives the test.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use strongbox_config::AgentOptions;
use strongbox_engines::ServiceSpec;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::cluster::{workspace_bin, Cluster};
use crate::error::{HarnessError, Result};
use crate::process::{log_tail, ServerProcess};
use crate::tmp::temp_dir;

pub struct AgentProcess {
    pub host: String,
    dir: TempDir,
    log: PathBuf,
    process: Option<ServerProcess>,
}

impl AgentProcess {
    /// Starts the agent of `host` against every node of `cluster`; `services` is TOML with
    /// its `[[service]]` tables (empty for a spare); `key_file` is the fleet keyring.
    pub fn start(
        cluster: &Cluster,
        host: &str,
        spare: bool,
        services: &[ServiceSpec],
        key_file: &Path,
    ) -> Result<AgentProcess> {
        let dir = temp_dir(&format!("agent-{host}"))?;
        let tls = cluster
            .pki
            .issue(strongbox_core::pki::Role::Agent, host, &[])?;
        let data_root = dir.path().join("data");
        std::fs::create_dir_all(&data_root)
            .map_err(|e| HarnessError::io("creating the agent's data root", e))?;
        // Servers that restores make run as an unprivileged user (`postgres`, `mysql`) when we
        // are root: that user must traverse these folders to reach its own (0700) one, but
        // nobody else needs to list them, so they are 0711 (traverse, no list), not 0755.
        for d in [dir.path(), data_root.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| HarnessError::io("letting the server users traverse", e))?;
        }
        let options = AgentOptions {
            coordinators: Some(
                cluster
                    .ids()
                    .iter()
                    .map(|id| cluster.addr(*id).to_string())
                    .collect(),
            ),
            region: Some(cluster.options.region.clone()),
            host: Some(host.to_string()),
            tls_ca: Some(tls.ca.clone()),
            tls_cert: Some(tls.cert.clone()),
            tls_key: Some(tls.key.clone()),
            key_file: Some(key_file.to_path_buf()),
            data_root: Some(data_root.clone()),
            spare: Some(spare),
            services: Some(services.to_vec()),
            ..AgentOptions::default()
        };
        let config = strongbox_config::to_toml(&options)
            .map_err(|e| HarnessError::Setup(format!("the agent config: {e}")))?;
        let config_path = dir.path().join("agent.toml");
        // The harness's own files are private too, like everything strongbox writes.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config_path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .map_err(|e| HarnessError::io("writing the agent config", e))?;
        let mut agent = AgentProcess {
            host: host.to_string(),
            log: dir.path().join("agent.log"),
            dir,
            process: None,
        };
        agent.spawn(&config_path)?;
        Ok(agent)
    }

    fn spawn(&mut self, config: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .map_err(|e| HarnessError::io("opening the agent log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::io("agent log", e))?;
        let mut cmd = Command::new(workspace_bin("strongbox-agent")?);
        cmd.arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        self.process = Some(ServerProcess::spawn(
            &format!("agent {}", self.host),
            cmd,
            &self.log,
            Signal::SIGTERM,
            Duration::from_secs(10),
        )?);
        Ok(())
    }

    /// Sends `signal` to the agent (SIGSTOP freezes it: it can neither send nor reconnect).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        match &self.process {
            Some(p) => p.signal(signal),
            None => Err(HarnessError::NotRunning {
                server: format!("agent {}", self.host),
            }),
        }
    }

    /// `kill -9` of the agent.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.signal(Signal::SIGKILL)?;
            p.stop()?;
        }
        Ok(())
    }

    /// Stops the agent with SIGTERM (SIGKILL after 10 s); how it ended, `None` if it was not
    /// running.
    pub fn stop(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.process.take() {
            Some(mut p) => p.stop(),
            None => Ok(None),
        }
    }

    /// Starts the agent again with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        let config = self.dir.path().join("agent.toml");
        self.spawn(&config)
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops every server a restore made under the data root.
    pub fn stop_restored_servers(&self) {
        let mut stack = vec![self.data_root()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    if name == "postmaster.pid" || name.ends_with(".pid") {
                        stop_pid_file(&p);
                    }
                }
            }
        }
    }
}

fn stop_pid_file(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    for _ in 0..200 {
        if nix::sys::signal::kill(pid, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- agent {} log (tail) ----\n{}",
                self.host,
                log_tail(&self.log, 60)
            );
        }
        if let Some(mut p) = self.process.take() {
            let _ = p.stop();
        }
        self.stop_restored_servers();
    }
}
