//! Real coordinator clusters for tests: a throwaway PKI, and `strongbox-coordinator` processes
//! on 127.0.0.x with their own data folders, which tests can kill -9, restart and add to.
//!
//! Invariants: every node process is tied to the test process and stopped on drop (see
//! [`crate::process`]); a node's data folder survives kill and restart (that is the point) and
//! is removed with the cluster; waits are for conditions (a port accepting), with deadlines.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strongbox_config::CoordinatorOptions;

use nix::sys::signal::Signal;
use strongbox_core::files::Overwrite;
use strongbox_core::pki::{self, Identity, Role, Validity};
use strongbox_core::tls::TlsFiles;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use crate::error::{HarnessError, Result};
use crate::ports::free_port_on;
use crate::process::{log_tail, ServerProcess, POLL_INTERVAL};
use crate::tmp::temp_dir;

/// A CA and certificates for tests, in a temp folder.
pub struct TestPki {
    dir: TempDir,
}

fn core_err(what: &str, e: strongbox_core::Error) -> HarnessError {
    HarnessError::io(what, std::io::Error::other(e.to_string()))
}

impl TestPki {
    pub fn new() -> Result<Self> {
        let dir = temp_dir("strongbox-pki-")?;
        pki::init_ca_dir(
            &dir.path().join("ca"),
            "test CA",
            Validity::days_from_now(2),
        )
        .map_err(|e| core_err("creating the test CA", e))?;
        Ok(TestPki { dir })
    }

    /// Issues a certificate (valid for 2 days) into `<dir>/certs`.
    pub fn issue(&self, role: Role, name: &str, sans: &[String]) -> Result<TlsFiles> {
        self.issue_valid(role, name, sans, Validity::days_from_now(2))
    }

    /// Issues a certificate valid over `validity` (which may be over, or still to come).
    pub fn issue_valid(
        &self,
        role: Role,
        name: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<TlsFiles> {
        let out = self.dir.path().join("certs");
        let identity = Identity {
            role,
            name: name.to_string(),
        };
        pki::issue_to_dir(
            &self.dir.path().join("ca"),
            &identity,
            sans,
            validity,
            &out,
            Overwrite::Replace,
        )
        .map_err(|e| core_err("issuing a test certificate", e))?;
        Ok(TlsFiles::in_dir(&out, name))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Where `strongbox-*` binaries of this workspace are: `$STRONGBOX_BIN_DIR`, or the cargo
/// target folder the running test executable is in.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("STRONGBOX_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| HarnessError::io("locating the test executable", e))?;
            // target/<profile>/deps/<test> → target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_default()
        }
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::BinaryNotFound {
            name: name.to_string(),
            searched: dir.display().to_string(),
            hint: "build it first: cargo build --workspace --bins".to_string(),
        })
    }
}

/// One coordinator node of a test cluster.
pub struct NodeProcess {
    pub id: u64,
    pub addr: SocketAddr,
    /// The plain HTTP listener (`/healthz`, `/metrics`).
    pub http_addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    process: Option<ServerProcess>,
}

impl NodeProcess {
    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid())
    }

    pub fn is_running(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|p| !p.has_exited().unwrap_or(true))
    }
}

/// Options of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub region: String,
    pub raft_tick: Duration,
    pub compact_after: u64,
    pub maintenance_interval: Duration,
    pub gc_grace: Duration,
    /// Nodes refuse chunk writes that would leave less than this free on their disk.
    pub min_free_bytes: u64,
    /// The leader creates scheduled backups (off by default, so tests that do not test the
    /// scheduler never see a backup they did not ask for).
    pub schedule_backups: bool,
    pub controller_interval: Duration,
    /// How long an agent whose session ended has to come back before its jobs fail.
    pub agent_grace: Duration,
    /// Restored servers one spare may run at once.
    pub max_restored_servers: usize,
    /// Bytes per second one snapshot transfer may take (0: unlimited).
    pub snapshot_send_rate: u64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            region: "test-1".into(),
            raft_tick: Duration::from_millis(50),
            compact_after: 10_000,
            maintenance_interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(24 * 3600),
            min_free_bytes: 0,
            schedule_backups: false,
            controller_interval: Duration::from_millis(500),
            agent_grace: Duration::from_secs(30),
            max_restored_servers: 3,
            snapshot_send_rate: 0,
        }
    }
}

/// A coordinator cluster of real processes.
pub struct Cluster {
    pub pki: TestPki,
    pub options: ClusterOptions,
    dir: TempDir,
    bin: PathBuf,
    nodes: BTreeMap<u64, NodeProcess>,
    /// Every node's certificate names all these addresses.
    node_tls: BTreeMap<u64, TlsFiles>,
}

fn node_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + id as u8))
}

impl Cluster {
    /// Starts nodes 1..=n (node 1 bootstraps; the others join it) and waits until each listens.
    pub fn start(n: u64, options: ClusterOptions) -> Result<Cluster> {
        let mut c = Cluster {
            pki: TestPki::new()?,
            options,
            dir: temp_dir("strongbox-cluster-")?,
            bin: workspace_bin("strongbox-coordinator")?,
            nodes: BTreeMap::new(),
            node_tls: BTreeMap::new(),
        };
        for id in 1..=n {
            c.create_node(id)?;
        }
        let peers: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            c.write_config(id, &peers)?;
            c.start_node(id)?;
        }
        Ok(c)
    }

    fn create_node(&mut self, id: u64) -> Result<()> {
        let ip = node_ip(id);
        let port = free_port_on(ip)?;
        let http_port = free_port_on(ip)?;
        let name = format!("node-{id}");
        let tls = self
            .pki
            .issue(Role::Node, &name, &[ip.to_string(), "localhost".into()])?;
        self.node_tls.insert(id, tls);
        self.nodes.insert(
            id,
            NodeProcess {
                id,
                addr: SocketAddr::new(ip, port),
                http_addr: SocketAddr::new(ip, http_port),
                config: self.dir.path().join(format!("node-{id}.toml")),
                log: self.dir.path().join(format!("node-{id}.log")),
                process: None,
            },
        );
        Ok(())
    }

    fn write_config(&self, id: u64, peers: &[u64]) -> Result<()> {
        let node = &self.nodes[&id];
        let tls = &self.node_tls[&id];
        let peers: Vec<String> = peers
            .iter()
            .filter(|p| **p != id)
            .filter_map(|p| self.nodes.get(p).map(|n| format!("{p}={}", n.addr)))
            .collect();
        let o = &self.options;
        let options = CoordinatorOptions {
            node_id: Some(id),
            region: Some(o.region.clone()),
            listen: Some(node.addr),
            http_listen: Some(node.http_addr),
            peers: Some(peers),
            data_dir: Some(self.data_dir(id)),
            tls_ca: Some(tls.ca.clone()),
            tls_cert: Some(tls.cert.clone()),
            tls_key: Some(tls.key.clone()),
            raft_tick: Some(o.raft_tick),
            compact_after: Some(o.compact_after),
            maintenance_interval: Some(o.maintenance_interval),
            gc_grace: Some(o.gc_grace),
            min_free_bytes: Some(o.min_free_bytes),
            schedule_backups: Some(o.schedule_backups),
            controller_interval: Some(o.controller_interval),
            agent_grace: Some(o.agent_grace),
            max_restored_servers: Some(o.max_restored_servers),
            snapshot_send_rate: (o.snapshot_send_rate > 0).then_some(o.snapshot_send_rate),
            ..CoordinatorOptions::default()
        };
        let text = strongbox_config::to_toml(&options)
            .map_err(|e| HarnessError::Setup(format!("node {id}'s config: {e}")))?;
        std::fs::write(&node.config, text)
            .map_err(|e| HarnessError::io(format!("writing {}", node.config.display()), e))
    }

    /// Starts (or restarts) node `id` and waits until it accepts connections.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let bin = self.bin.clone();
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| HarnessError::NotRunning {
                server: format!("coordinator node {id}"),
            })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| HarnessError::io(format!("opening {}", node.log.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::io("log file", e))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info,raft=info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let mut process = ServerProcess::spawn(
            &format!("coordinator node {id}"),
            cmd,
            &node.log,
            Signal::SIGTERM,
            Duration::from_secs(10),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            process.check_running()?;
            if TcpStream::connect_timeout(&node.addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(HarnessError::StartTimeout {
                    server: format!("coordinator node {id}"),
                    waited: Duration::from_secs(30),
                    last_probe: format!("no TCP connection to {}", node.addr),
                    log: node.log.clone(),
                    log_tail: log_tail(&node.log, 40),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        node.process = Some(process);
        Ok(())
    }

    /// Creates a new node process that is not yet a member (its configuration names the current
    /// nodes); an operator adds it with `AddNode`.
    pub fn spawn_new_node(&mut self, id: u64) -> Result<SocketAddr> {
        self.create_node(id)?;
        let peers: Vec<u64> = self.nodes.keys().copied().collect();
        self.write_config(id, &peers)?;
        self.start_node(id)?;
        Ok(self.nodes[&id].addr)
    }

    /// `kill -9` of node `id`; its data stays for a restart.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut p) = node.process.take() {
                p.signal(Signal::SIGKILL)?;
                p.stop()?;
            }
        }
        Ok(())
    }

    /// Sends `signal` to node `id` (SIGSTOP and SIGCONT cut it off and bring it back, as a
    /// partition would).
    pub fn signal(&self, id: u64, signal: Signal) -> Result<()> {
        match self.nodes.get(&id).and_then(|n| n.process.as_ref()) {
            Some(p) => p.signal(signal),
            None => Err(HarnessError::NotRunning {
                server: format!("coordinator node {id}"),
            }),
        }
    }

    /// Stops node `id` gracefully.
    /// Returns how it ended (`None` if it was not running): a node that had to be killed
    /// after the grace period ended by SIGKILL.
    pub fn stop_node(&mut self, id: u64) -> Result<Option<std::process::ExitStatus>> {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut p) = node.process.take() {
                return p.stop();
            }
        }
        Ok(None)
    }

    pub fn node(&self, id: u64) -> &NodeProcess {
        &self.nodes[&id]
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    pub fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].addr
    }

    /// Node `id`'s data folder (catalog and chunk store).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}-data"))
    }

    /// Where node `id` keeps chunk (or manifest) `chunk`: `chunks/ab/<hex>`.
    pub fn chunk_file(&self, id: u64, chunk: &strongbox_core::ids::ChunkId) -> PathBuf {
        let hex = chunk.to_hex();
        self.data_dir(id).join("chunks").join(&hex[0..2]).join(hex)
    }

    /// The sealed bytes node `id` holds for `chunk` (its file without the trailing 32-byte
    /// checksum), if it holds it.
    pub fn stored_chunk(&self, id: u64, chunk: &strongbox_core::ids::ChunkId) -> Option<Vec<u8>> {
        let mut bytes = std::fs::read(self.chunk_file(id, chunk)).ok()?;
        let len = bytes.len().checked_sub(32)?;
        bytes.truncate(len);
        Some(bytes)
    }

    /// Moves the data dir of node `id` (stopped) onto a tmpfs of `size` bytes, to test a full
    /// disk. Needs root (for `mount`). The mount goes when the returned guard drops.
    pub fn move_data_to_tmpfs(&self, id: u64, size: u64) -> Result<TmpfsMount> {
        if !nix::unistd::geteuid().is_root() {
            return Err(HarnessError::Setup(
                "mounting a tmpfs needs root; run this test as root (CI does)".into(),
            ));
        }
        let data = self.data_dir(id);
        let old = self.dir.path().join(format!("node-{id}-data.before-tmpfs"));
        std::fs::rename(&data, &old)
            .map_err(|e| HarnessError::io(format!("moving {}", data.display()), e))?;
        std::fs::create_dir(&data)
            .map_err(|e| HarnessError::io(format!("creating {}", data.display()), e))?;
        run_tool(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size}"))
                .arg("tmpfs")
                .arg(&data),
        )?;
        let mount = TmpfsMount { path: data.clone() };
        run_tool(Command::new("cp").arg("-a").arg(old.join(".")).arg(&data))?;
        std::fs::remove_dir_all(&old)
            .map_err(|e| HarnessError::io(format!("removing {}", old.display()), e))?;
        Ok(mount)
    }

    /// The TLS files of node `id` (to act as that node in tests).
    pub fn node_tls(&self, id: u64) -> &TlsFiles {
        &self.node_tls[&id]
    }

    /// An mTLS channel to node `id` with the given client certificate.
    /// Waits (up to 30 s) until node 1 sees a leader and `voters` voters; returns the leader.
    pub async fn wait_for_leader(&self, viewer: &TlsFiles, voters: usize) -> Result<u64> {
        use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut op = OperatorServiceClient::new(self.channel(1, viewer)?);
            if let Ok(r) = op
                .cluster_status(strongbox_proto::v1::ClusterStatusRequest {})
                .await
            {
                let r = r.into_inner();
                if r.leader_id != 0 && r.nodes.iter().filter(|n| n.voter).count() == voters {
                    return Ok(r.leader_id);
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Setup(format!(
                    "no leader with {voters} voters after 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls job `id` (through any running node) until it is completed or failed.
    pub async fn wait_job(
        &self,
        tls: &TlsFiles,
        id: &str,
        timeout: Duration,
    ) -> Result<strongbox_proto::v1::JobInfo> {
        use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
        // One channel a node for the whole wait: a TLS handshake every poll would load the
        // nodes being measured.
        let channels = self
            .running_ids()
            .into_iter()
            .map(|node| self.channel(node, tls))
            .collect::<Result<Vec<_>>>()?;
        crate::wait::try_poll(timeout, || {
            let channels = channels.clone();
            let id = id.to_string();
            async move {
                for channel in channels {
                    let asked = OperatorServiceClient::new(channel)
                        .get_job(strongbox_proto::v1::GetJobRequest { id: id.clone() })
                        .await;
                    if let Ok(j) = asked {
                        let j = j.into_inner();
                        return if j.state().is_final() {
                            Ok(j)
                        } else {
                            Err(format!("job {id} is {}", j.state()))
                        };
                    }
                }
                Err("no node answered".to_string())
            }
        })
        .await
        .map_err(|last| {
            HarnessError::Setup(format!(
                "job {id} did not end within {timeout:?}; last seen: {last}"
            ))
        })
    }

    /// A new manual backup job for `service` (its host must have registered it), made with an
    /// operator certificate; retried while an election is under way.
    pub async fn create_backup_job(
        &self,
        operator: &TlsFiles,
        service: &str,
    ) -> Result<strongbox_proto::v1::JobInfo> {
        use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut op = OperatorServiceClient::new(self.channel(1, operator)?);
        loop {
            match op
                .create_backup(strongbox_proto::v1::CreateBackupRequest {
                    service: service.into(),
                    host: String::new(),
                })
                .await
            {
                Ok(j) => return Ok(j.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(s) => {
                    return Err(HarnessError::Setup(format!(
                        "creating a backup job for {service}: {s:?}"
                    )))
                }
            }
        }
    }

    pub fn channel(&self, id: u64, tls: &TlsFiles) -> Result<Channel> {
        channel(self.addr(id), tls)
    }
}

/// An mTLS channel to `addr` (lazily connected). Built from the PEM files as they are, without
/// the checks strongbox's own clients make first (validity, issuing CA), so tests can present
/// the certificates an attacker would.
pub fn channel(addr: SocketAddr, tls: &TlsFiles) -> Result<Channel> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| HarnessError::io(format!("reading {}", p.display()), e))
    };
    let config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca)?))
        .identity(tonic::transport::Identity::from_pem(
            read(&tls.cert)?,
            read(&tls.key)?,
        ))
        .domain_name(addr.ip().to_string());
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| HarnessError::io("endpoint", std::io::Error::other(e.to_string())))?
        .tls_config(config)
        .map_err(|e| HarnessError::io("endpoint TLS", std::io::Error::other(e.to_string())))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20));
    Ok(endpoint.connect_lazy())
}

impl Drop for Cluster {
    /// When a test fails, the nodes' logs are the first thing to read: print their tails.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in self.nodes.values() {
                eprintln!(
                    "---- coordinator node {} log (tail) ----\n{}",
                    node.id,
                    log_tail(&node.log, 60)
                );
            }
        }
    }
}

/// A plain HTTP GET on loopback: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let io = |e| HarnessError::io(format!("GET http://{addr}{path}"), e);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(io)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(io)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((code, body))
}

/// A tmpfs mounted by the harness; unmounted (lazily, so open files do not block it) on drop.
pub struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn run_tool(cmd: &mut Command) -> Result<()> {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| HarnessError::io(format!("running {what}"), e))?;
    if !out.status.success() {
        return Err(HarnessError::Setup(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
