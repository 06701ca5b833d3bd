//! The options of `strongbox-agent`: each a flag, an environment variable
//! (`STRONGBOX_AGENT_*`) and a key of its config file, and the host's `[[service]]` tables
//! (file only).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strongbox_engines::ServiceSpec;

/// Every option of an agent (all optional here; `agent/src/config.rs` validates them and
/// holds the defaults).
#[derive(clap::Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct AgentOptions {
    /// Coordinator nodes of the region as HOST:PORT, comma-separated or repeated.
    #[arg(
        long = "coordinator",
        env = "STRONGBOX_AGENT_COORDINATORS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinators: Option<Vec<String>>,
    /// The region of this host.
    #[arg(long, env = "STRONGBOX_AGENT_REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// This host's name (must match its certificate's name).
    #[arg(long, env = "STRONGBOX_AGENT_HOST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The fleet CA certificate.
    #[arg(long, env = "STRONGBOX_AGENT_TLS_CA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// This agent's certificate (role agent).
    #[arg(long, env = "STRONGBOX_AGENT_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// This agent's private key.
    #[arg(long, env = "STRONGBOX_AGENT_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// The fleet keyring file (mode 0600).
    #[arg(long, env = "STRONGBOX_AGENT_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Folder under which restores create fresh servers.
    #[arg(long, env = "STRONGBOX_AGENT_DATA_ROOT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_root: Option<PathBuf>,
    /// This host is a spare, ready for restores.
    #[arg(
        long,
        env = "STRONGBOX_AGENT_SPARE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare: Option<bool>,
    /// The address servers made by restores listen on (default 127.0.0.1).
    #[arg(long, env = "STRONGBOX_AGENT_RESTORE_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_listen: Option<String>,
    /// Upload at most this many bytes per second (default: no limit).
    #[arg(long, env = "STRONGBOX_AGENT_UPLOAD_RATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_rate: Option<u64>,
    /// Batches of chunks (up to 16 chunks, closed at 16 MiB) checked, sealed and uploaded at once
    /// (default 2).
    #[arg(long, env = "STRONGBOX_AGENT_UPLOAD_CONCURRENCY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_concurrency: Option<usize>,
    /// zstd level for chunks (default 3).
    #[arg(long, env = "STRONGBOX_AGENT_ZSTD_LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zstd_level: Option<i32>,
    /// The database servers (or SQLite files) of this host: `[[service]]` tables of the file.
    #[arg(skip)]
    #[serde(rename = "service", skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceSpec>>,
}
