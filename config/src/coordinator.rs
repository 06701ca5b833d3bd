//! The options of `strongbox-coordinator`: each a flag, an environment variable
//! (`STRONGBOX_COORDINATOR_*`) and a key of its config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Every option of a coordinator node (all optional here; `coordinator/src/config.rs`
/// validates them and holds the defaults).
#[derive(clap::Args, Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorOptions {
    /// This node's Raft id (1 bootstraps a new cluster; others join it).
    #[arg(long, env = "STRONGBOX_COORDINATOR_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// The region this cluster serves, e.g. us-east-1.
    #[arg(long, env = "STRONGBOX_COORDINATOR_REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// gRPC listen address (mutual TLS) for agents, operators and peers.
    #[arg(long, env = "STRONGBOX_COORDINATOR_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The address peers and agents reach this node at (default: --listen).
    #[arg(long, env = "STRONGBOX_COORDINATOR_ADVERTISE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Raft tick interval (elections take 10 ticks, heartbeats every 2).
    #[arg(long, env = "STRONGBOX_COORDINATOR_RAFT_TICK", value_parser = humantime::parse_duration)]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub raft_tick: Option<std::time::Duration>,
    /// Compact the Raft log into a snapshot point after this many applied entries.
    #[arg(long, env = "STRONGBOX_COORDINATOR_COMPACT_AFTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compact_after: Option<u64>,
    /// How often each node repairs its chunk store and collects garbage.
    #[arg(long, env = "STRONGBOX_COORDINATOR_MAINTENANCE_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub maintenance_interval: Option<std::time::Duration>,
    /// Create scheduled backups when this node leads (default true). `false` on every node
    /// pauses automatic backups of the whole region (retention keeps running); for one service,
    /// use `strongbox service exclude` instead.
    #[arg(long, env = "STRONGBOX_COORDINATOR_SCHEDULE_BACKUPS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_backups: Option<bool>,
    /// How often the leader's controllers (scheduler, retention) look at the catalog. Default 5s.
    #[arg(long, env = "STRONGBOX_COORDINATOR_CONTROLLER_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub controller_interval: Option<std::time::Duration>,
    /// Chunks no backup uses are deleted once older than this (must exceed the longest backup).
    #[arg(long, env = "STRONGBOX_COORDINATOR_GC_GRACE", value_parser = humantime::parse_duration)]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub gc_grace: Option<std::time::Duration>,
    /// How long an agent whose session ended (killed, its host down) has to come back before
    /// its open jobs fail as abandoned and can be retried. Default 30s.
    #[arg(long, env = "STRONGBOX_COORDINATOR_AGENT_GRACE", value_parser = humantime::parse_duration)]
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub agent_grace: Option<std::time::Duration>,
    /// Restored servers one spare may run at once; a restore beyond it is refused until one is
    /// stopped (`strongbox restore stop`). Default 3.
    #[arg(long, env = "STRONGBOX_COORDINATOR_MAX_RESTORED_SERVERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restored_servers: Option<usize>,
    /// Bytes of memory the catalog's storage (fjall's block cache) may hold. Default 64 MiB:
    /// the catalog of a large fleet is read through indexes, a page at a time, so the cache
    /// holds the hot records, not the whole catalog.
    #[arg(long, env = "STRONGBOX_COORDINATOR_CATALOG_CACHE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_cache_bytes: Option<u64>,
    /// The most bytes per second this node sends of one Raft snapshot (a node joining, or one
    /// too far behind the log), so a catch-up does not starve agents' uploads. Default 0: as
    /// fast as the network allows.
    #[arg(long, env = "STRONGBOX_COORDINATOR_SNAPSHOT_SEND_RATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_send_rate: Option<u64>,
    /// Refuse chunk uploads when the data dir's disk would have less than this many bytes
    /// free (room kept for the Raft log and the catalog). Default 256 MiB.
    #[arg(long, env = "STRONGBOX_COORDINATOR_MIN_FREE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_bytes: Option<u64>,
    /// HTTP listen address for /healthz and /metrics.
    #[arg(long, env = "STRONGBOX_COORDINATOR_HTTP_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// Peers as ID=HOST:PORT, comma-separated or repeated.
    #[arg(
        long = "peer",
        env = "STRONGBOX_COORDINATOR_PEERS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    /// Folder for the Raft log, the catalog and the chunk store.
    #[arg(long, env = "STRONGBOX_COORDINATOR_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The fleet CA certificate.
    #[arg(long, env = "STRONGBOX_COORDINATOR_TLS_CA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (role node).
    #[arg(long, env = "STRONGBOX_COORDINATOR_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key.
    #[arg(long, env = "STRONGBOX_COORDINATOR_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}
