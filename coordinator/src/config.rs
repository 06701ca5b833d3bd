//! The node's configuration: a TOML file, every option also a flag and an environment variable
//! (flags and environment win over the file).
//!
//! Invariant: a `Config` that loaded is complete: every required option is present and valid.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use strongbox_config::CoordinatorOptions;
use strongbox_core::tls::TlsFiles;

/// strongbox-coordinator: one node of a region's coordinator cluster (3 or 5 nodes, Raft).
#[derive(Parser, Debug, Default)]
#[command(name = "strongbox-coordinator", version)]
pub struct Args {
    /// TOML file with any of the options below (keys as the long flags, with '_' for '-'). A
    /// flag wins over its STRONGBOX_COORDINATOR_* variable, which wins over the file.
    #[arg(long, short = 'c', env = "STRONGBOX_COORDINATOR_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: CoordinatorOptions,
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
    /// Bytes per second one snapshot transfer may take (0: unlimited).
    pub snapshot_send_rate: u64,
    /// Bytes of memory the store may cache of the catalog and the Raft log (its block cache).
    pub catalog_cache_bytes: u64,
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
        let o = strongbox_config::load(args.config.as_deref(), args.options)?;
        let peers_raw = o.peers.unwrap_or_default();
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
        let node_id = need(o.node_id, "node-id")?;
        if node_id == 0 {
            bail!("--node-id must be 1 or more");
        }
        let listen = need(o.listen, "listen")?;
        let advertise = o.advertise.unwrap_or_else(|| listen.to_string());
        if listen.ip().is_unspecified() && advertise == listen.to_string() {
            bail!("--listen {listen} is a wildcard address: pass --advertise HOST:PORT, the address peers reach this node at");
        }
        let tick = o.raft_tick.unwrap_or(std::time::Duration::from_millis(100));
        if tick < std::time::Duration::from_millis(10) || tick > std::time::Duration::from_secs(5) {
            bail!("--raft-tick must be between 10ms and 5s");
        }
        Ok(Config {
            node_id,
            region: need(o.region, "region")?,
            listen,
            http_listen: o.http_listen,
            advertise,
            tick,
            maintenance_interval: o
                .maintenance_interval
                .unwrap_or(std::time::Duration::from_secs(600))
                .max(std::time::Duration::from_millis(100)),
            controller_interval: o
                .controller_interval
                .unwrap_or(std::time::Duration::from_secs(5))
                .max(std::time::Duration::from_millis(100)),
            schedule_backups: o.schedule_backups.unwrap_or(true),
            gc_grace: o
                .gc_grace
                .unwrap_or(std::time::Duration::from_secs(24 * 3600)),
            agent_grace: o.agent_grace.unwrap_or(std::time::Duration::from_secs(30)),
            max_restored_servers: o.max_restored_servers.unwrap_or(3).max(1),
            snapshot_send_rate: o.snapshot_send_rate.unwrap_or(0),
            catalog_cache_bytes: o.catalog_cache_bytes.unwrap_or(64 << 20).max(8 << 20),
            min_free_bytes: o.min_free_bytes.unwrap_or(256 << 20),
            compact_after: o.compact_after.unwrap_or(10_000).max(2),
            peers,
            data_dir: need(o.data_dir, "data-dir")?,
            tls: TlsFiles {
                ca: need(o.tls_ca, "tls-ca")?,
                cert: need(o.tls_cert, "tls-cert")?,
                key: need(o.tls_key, "tls-key")?,
            },
        })
    }
}
