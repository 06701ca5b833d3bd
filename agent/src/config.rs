//! The agent's configuration: a TOML file, every option also a flag and an environment variable
//! (flags and environment win over the file).
//!
//! Invariant: a `Config` that loaded is complete: every required option is present.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;
use strongbox_core::tls::TlsFiles;

use strongbox_engines::ServiceSpec;

/// strongbox-agent: backs up and restores the database servers of one host.
#[derive(Parser, Debug, Default)]
#[command(name = "strongbox-agent", version)]
pub struct Args {
    /// TOML file with any of the options below, and the [[service]] tables of this host. A flag
    /// wins over its STRONGBOX_AGENT_* variable, which wins over the file; the CLI's STRONGBOX_*
    /// variables are not read.
    #[arg(long, short = 'c', env = "STRONGBOX_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Coordinator nodes of the region as HOST:PORT, comma-separated or repeated.
    #[arg(
        long = "coordinator",
        env = "STRONGBOX_AGENT_COORDINATORS",
        value_delimiter = ','
    )]
    pub coordinators: Vec<String>,
    /// The region of this host.
    #[arg(long, env = "STRONGBOX_AGENT_REGION")]
    pub region: Option<String>,
    /// This host's name (must match its certificate's name).
    #[arg(long, env = "STRONGBOX_AGENT_HOST")]
    pub host: Option<String>,
    /// The fleet CA certificate.
    #[arg(long, env = "STRONGBOX_AGENT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This agent's certificate (role agent).
    #[arg(long, env = "STRONGBOX_AGENT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This agent's private key.
    #[arg(long, env = "STRONGBOX_AGENT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The fleet keyring file (mode 0600).
    #[arg(long, env = "STRONGBOX_AGENT_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Folder under which restores create fresh servers.
    #[arg(long, env = "STRONGBOX_AGENT_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
    /// This host is a spare, ready for restores.
    #[arg(long, env = "STRONGBOX_AGENT_SPARE")]
    pub spare: bool,
    /// The address servers made by restores listen on (default 127.0.0.1).
    #[arg(long, env = "STRONGBOX_AGENT_RESTORE_LISTEN")]
    pub restore_listen: Option<String>,
    /// Upload at most this many bytes per second (default: no limit).
    #[arg(long, env = "STRONGBOX_AGENT_UPLOAD_RATE")]
    pub upload_rate: Option<u64>,
    /// Batches of chunks (up to 16 chunks, closed at 16 MiB) checked, sealed and uploaded at once
    /// (default 2).
    #[arg(long, env = "STRONGBOX_AGENT_UPLOAD_CONCURRENCY")]
    pub upload_concurrency: Option<usize>,
    /// zstd level for chunks (default 3).
    #[arg(long, env = "STRONGBOX_AGENT_ZSTD_LEVEL")]
    pub zstd_level: Option<i32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    coordinators: Vec<String>,
    region: Option<String>,
    host: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    key_file: Option<PathBuf>,
    data_root: Option<PathBuf>,
    #[serde(default)]
    spare: bool,
    restore_listen: Option<String>,
    upload_rate: Option<u64>,
    upload_concurrency: Option<usize>,
    zstd_level: Option<i32>,
    #[serde(default)]
    service: Vec<ServiceSpec>,
}

#[derive(Debug)]
pub struct Config {
    pub coordinators: Vec<String>,
    pub region: String,
    pub host: String,
    pub tls: TlsFiles,
    pub key_file: PathBuf,
    pub data_root: Option<PathBuf>,
    pub spare: bool,
    pub restore_listen: String,
    pub upload_rate: Option<u64>,
    pub upload_concurrency: usize,
    pub zstd_level: i32,
    pub services: Vec<ServiceSpec>,
}

fn need<T>(v: Option<T>, flag: &str) -> anyhow::Result<T> {
    v.with_context(|| {
        format!(
            "missing --{flag} (or `{}` in the config file)",
            flag.replace('-', "_")
        )
    })
}

/// `path`, checked to be a readable file; otherwise an error naming the option (`tls_cert` in
/// the file, `--tls-cert` as a flag) and the file.
fn file_option(path: &std::path::Path, flag: &str) -> anyhow::Result<()> {
    let named = format!("--{flag} (`{}`) {}", flag.replace('-', "_"), path.display());
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => anyhow::bail!("{named}: not a file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("{named}: no such file")
        }
        Err(e) => anyhow::bail!("{named}: cannot be read: {e}"),
    }
    std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{named}: cannot be read: {e}"))?;
    Ok(())
}

impl Config {
    /// Checks that the TLS files are readable files, naming the option of one that is not.
    pub fn check_tls_files(&self) -> anyhow::Result<()> {
        file_option(&self.tls.ca, "tls-ca")?;
        file_option(&self.tls.cert, "tls-cert")?;
        file_option(&self.tls.key, "tls-key")
    }

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
        let coordinators = if args.coordinators.is_empty() {
            file.coordinators
        } else {
            args.coordinators
        };
        if coordinators.is_empty() {
            anyhow::bail!("no coordinator: pass --coordinator HOST:PORT (or `coordinators` in the config file)");
        }
        let services = file.service;
        let mut names = std::collections::HashSet::new();
        for s in &services {
            strongbox_core::pki::validate_name(&s.name)
                .with_context(|| format!("service name {:?}", s.name))?;
            if !names.insert(s.name.clone()) {
                anyhow::bail!("service {:?} is listed twice in the config", s.name);
            }
        }
        Ok(Config {
            coordinators,
            region: need(args.region.or(file.region), "region")?,
            host: need(args.host.or(file.host), "host")?,
            tls: TlsFiles {
                ca: need(args.tls_ca.or(file.tls_ca), "tls-ca")?,
                cert: need(args.tls_cert.or(file.tls_cert), "tls-cert")?,
                key: need(args.tls_key.or(file.tls_key), "tls-key")?,
            },
            key_file: need(args.key_file.or(file.key_file), "key-file")?,
            data_root: args.data_root.or(file.data_root),
            spare: args.spare || file.spare,
            restore_listen: args
                .restore_listen
                .or(file.restore_listen)
                .unwrap_or_else(|| "127.0.0.1".into()),
            upload_rate: args.upload_rate.or(file.upload_rate).filter(|r| *r > 0),
            upload_concurrency: args
                .upload_concurrency
                .or(file.upload_concurrency)
                .unwrap_or(2)
                .clamp(1, 16),
            zstd_level: args.zstd_level.or(file.zstd_level).unwrap_or(3),
            services,
        })
    }
}
