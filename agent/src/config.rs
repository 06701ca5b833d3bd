//! The agent's configuration: a TOML file, every option also a flag and an environment variable
//! (flags and environment win over the file).
//!
//! Invariant: a `Config` that loaded is complete: every required option is present.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use strongbox_config::AgentOptions;
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
    #[command(flatten)]
    pub options: AgentOptions,
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
        let o = strongbox_config::load(args.config.as_deref(), args.options)?;
        let coordinators = o.coordinators.unwrap_or_default();
        if coordinators.is_empty() {
            anyhow::bail!("no coordinator: pass --coordinator HOST:PORT (or `coordinators` in the config file)");
        }
        let services = o.services.unwrap_or_default();
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
            region: need(o.region, "region")?,
            host: need(o.host, "host")?,
            tls: TlsFiles {
                ca: need(o.tls_ca, "tls-ca")?,
                cert: need(o.tls_cert, "tls-cert")?,
                key: need(o.tls_key, "tls-key")?,
            },
            key_file: need(o.key_file, "key-file")?,
            data_root: o.data_root,
            spare: o.spare.unwrap_or(false),
            restore_listen: o.restore_listen.unwrap_or_else(|| "127.0.0.1".into()),
            upload_rate: o.upload_rate.filter(|r| *r > 0),
            upload_concurrency: o.upload_concurrency.unwrap_or(2).clamp(1, 16),
            zstd_level: o.zstd_level.unwrap_or(3),
            services,
        })
    }
}
