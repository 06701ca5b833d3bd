//! The node's configuration: a TOML file, every option also a flag and an environment variable
//! (flags and environment win over the file).
//!
//! Invariant: a `Config` that loaded is complete: every required option is present and valid.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;
use strongbox_core::tls::TlsFiles;

/// strongbox-coordinator: one node of a region's coordinator cluster (3 or 5 nodes, Raft).
#[derive(Parser, Debug, Default)]
#[command(name = "strongbox-coordinator", version)]
pub struct Args {
    /// TOML file with any of the options below (keys as the long flags, with '_' for '-'). A
    /// flag wins over its STRONGBOX_COORDINATOR_* variable, which wins over the file.
    #[arg(long, short = 'c', env = "STRONGBOX_COORDINATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's Raft id (1 bootstraps a new cluster; others join it).
    #[arg(long, env = "STRONGBOX_COORDINATOR_NODE_ID")]
    pub node_id: Option<u64>,
    /// The region this cluster serves, e.g. us-east-1.
    #[arg(long, env = "STRONGBOX_COORDINATOR_REGION")]
    pub region: Option<String>,
    /// gRPC listen address (mutual TLS) for agents, operators and peers.
    #[arg(long, env = "STRONGBOX_COORDINATOR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The address peers and agents reach this node at (default: --listen).
    #[arg(long, env = "STRONGBOX_COORDINATOR_ADVERTISE")]
    pub advertise: Option<String>,
    /// Raft tick interval (elections take 10 ticks, heartbeats every 2).
    #[arg(long, env = "STRONGBOX_COORDINATOR_RAFT_TICK", value_parser = humantime::parse_duration)]
    pub raft_tick: Option<std::time::Duration>,
    /// Compact the Raft log into a snapshot point after this many applied entries.
    #[arg(long, env = "STRONGBOX_COORDINATOR_COMPACT_AFTER")]
    pub compact_after: Option<u64>,
    /// How often each node repairs its chunk store and collects garbage.
    #[arg(long, env = "STRONGBOX_COORDINATOR_MAINTENANCE_INTERVAL", value_parser = humantime::parse_duration)]
    pub maintenance_interval: Option<std::time::Duration>,
    /// Create scheduled backups when this node leads (default true). `false` on every node
    /// pauses automatic backups of the whole region (retention keeps running); for one service,
    /// use `strongbox service exclude` instead.
    #[arg(long, env = "STRONGBOX_COORDINATOR_SCHEDULE_BACKUPS")]
    pub schedule_backups: Option<bool>,
    /// How often the leader's controllers (scheduler, retention) look at the catalog. Default 5s.
    #[arg(long, env = "STRONGBOX_COORDINATOR_CONTROLLER_INTERVAL", value_parser = humantime::parse_duration)]
    pub controller_interval: Option<std::time::Duration>,
    /// Chunks no backup uses are deleted once older than this (must exceed the longest backup).
    #[arg(long, env = "STRONGBOX_COORDINATOR_GC_GRACE", value_parser = humantime::parse_duration)]
    pub gc_grace: Option<std::time::Duration>,
    /// How long an agent whose session ended (killed, its host down) has to come back before
    /// its open jobs fail as abandoned and can be retried. Default 30s.
    #[arg(long, env = "STRONGBOX_COORDINATOR_AGENT_GRACE", value_parser = humantime::parse_duration)]
    pub agent_grace: Option<std::time::Duration>,
    /// Restored servers one spare may run at once; a restore beyond it is refused until one is
    /// stopped (`strongbox restore stop`). Default 3.
    #[arg(long, env = "STRONGBOX_COORDINATOR_MAX_RESTORED_SERVERS")]
    pub max_restored_servers: Option<usize>,
    /// Refuse chunk uploads when the data dir's disk would have less than this many bytes
    /// free (room kept for the Raft log and the catalog). Default 256 MiB.
    #[arg(long, env = "STRONGBOX_COORDINATOR_MIN_FREE_BYTES")]
    pub min_free_bytes: Option<u64>,
    /// HTTP listen address for /healthz and /metrics.
    #[arg(long, env = "STRONGBOX_COORDINATOR_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Peers as ID=HOST:PORT, comma-separated or repeated.
    #[arg(
        long = "peer",
        env = "STRONGBOX_COORDINATOR_PEERS",
        value_delimiter = ','
    )]
    pub peers: Vec<String>,
    /// Folder for the Raft log, the catalog and the chunk store.
    #[arg(long, env = "STRONGBOX_COORDINATOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The fleet CA certificate.
    #[arg(long, env = "STRONGBOX_COORDINATOR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (role node).
    #[arg(long, env = "STRONGBOX_COORDINATOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key.
    #[arg(long, env = "STRONGBOX_COORDINATOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    region: Option<String>,
    listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    advertise: Option<String>,
    #[serde(default, with = "humantime_serde")]
    raft_tick: Option<std::time::Duration>,
    compact_after: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    maintenance_interval: Option<std::time::Duration>,
    #[serde(default, with = "humantime_serde")]
    gc_grace: Option<std::time::Duration>,
    #[serde(default, with = "humantime_serde")]
    controller_interval: Option<std::time::Duration>,
    #[serde(default, with = "humantime_serde")]
    agent_grace: Option<std::time::Duration>,
    max_restored_servers: Option<usize>,
    schedule_backups: Option<bool>,
    min_free_bytes: Option<u64>,
    #[serde(default)]
    peers: Vec<String>,
    data_dir: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Config {
    pub node_id: u64,
    pub region: String,
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub advertise: String,
    pub tick: std::time::Duration,
    pub compact_after: u64,
    pub maintenance_interval: std::time::Duration,
    pub gc_grace: std::time::Duration,
    pub agent_grace: std::time::Duration,
    pub max_restored_servers: usize,
    pub controller_interval: std::time::Duration,
    pub schedule_backups: bool,
    pub min_free_bytes: u64,
    pub peers: Vec<(u64, String)>,
    pub data_dir: PathBuf,
    pub tls: TlsFiles,
}

fn need<T>(v: Option<T>, flag: &str) -> anyhow::Result<T> {
    v.with_context(|| {
        format!(
            "missing --{flag} (or `{}` in the config file)",
            flag.replace('-', "_")
        )
    })
}

impl Config {
    pub fn load(args: Args) -> anyhow::Result<Self> {
        let file: FileConfig = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("{} is not a valid config", p.display()))?
            }
            None => FileConfig::default(),
        };
        let peers_raw = if args.peers.is_empty() {
            file.peers
        } else {
            args.peers
        };
        let mut peers = Vec::new();
        for p in peers_raw {
            let Some((id, addr)) = p.split_once('=') else {
                bail!("peer {p:?} is not ID=HOST:PORT");
            };
            let id: u64 = id
                .parse()
                .with_context(|| format!("peer {p:?}: the id is not a number"))?;
            peers.push((id, addr.to_string()));
        }
        let node_id = need(args.node_id.or(file.node_id), "node-id")?;
        if node_id == 0 {
            bail!("--node-id must be 1 or more");
        }
        let listen = need(args.listen.or(file.listen), "listen")?;
        let advertise = args
            .advertise
            .or(file.advertise)
            .unwrap_or_else(|| listen.to_string());
        if listen.ip().is_unspecified() && advertise == listen.to_string() {
            bail!("--listen {listen} is a wildcard address: pass --advertise HOST:PORT, the address peers reach this node at");
        }
        let tick = args
            .raft_tick
            .or(file.raft_tick)
            .unwrap_or(std::time::Duration::from_millis(100));
        if tick < std::time::Duration::from_millis(10) || tick > std::time::Duration::from_secs(5) {
            bail!("--raft-tick must be between 10ms and 5s");
        }
        Ok(Config {
            node_id,
            region: need(args.region.or(file.region), "region")?,
            listen,
            http_listen: args.http_listen.or(file.http_listen),
            advertise,
            tick,
            maintenance_interval: args
                .maintenance_interval
                .or(file.maintenance_interval)
                .unwrap_or(std::time::Duration::from_secs(600))
                .max(std::time::Duration::from_millis(100)),
            controller_interval: args
                .controller_interval
                .or(file.controller_interval)
                .unwrap_or(std::time::Duration::from_secs(5))
                .max(std::time::Duration::from_millis(100)),
            schedule_backups: args
                .schedule_backups
                .or(file.schedule_backups)
                .unwrap_or(true),
            gc_grace: args
                .gc_grace
                .or(file.gc_grace)
                .unwrap_or(std::time::Duration::from_secs(24 * 3600)),
            agent_grace: args
                .agent_grace
                .or(file.agent_grace)
                .unwrap_or(std::time::Duration::from_secs(30)),
            max_restored_servers: args
                .max_restored_servers
                .or(file.max_restored_servers)
                .unwrap_or(3)
                .max(1),
            min_free_bytes: args
                .min_free_bytes
                .or(file.min_free_bytes)
                .unwrap_or(256 << 20),
            compact_after: args
                .compact_after
                .or(file.compact_after)
                .unwrap_or(10_000)
                .max(2),
            peers,
            data_dir: need(args.data_dir.or(file.data_dir), "data-dir")?,
            tls: TlsFiles {
                ca: need(args.tls_ca.or(file.tls_ca), "tls-ca")?,
                cert: need(args.tls_cert.or(file.tls_cert), "tls-cert")?,
                key: need(args.tls_key.or(file.tls_key), "tls-key")?,
            },
        })
    }
}
