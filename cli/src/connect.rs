//! Reaching the coordinators: which node to dial, and the operator's certificate for mTLS.
//!
//! Invariant: every connection is mutual TLS with the fleet CA; errors say which flag or
//! environment variable to set.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use strongbox_core::tls::TlsFiles;
use tonic::transport::{Channel, Endpoint};

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// A coordinator node of the region, HOST:PORT (any node; repeat or comma-separate several).
    #[arg(
        long = "coordinator",
        env = "STRONGBOX_COORDINATORS",
        value_delimiter = ',',
        global = true
    )]
    pub coordinators: Vec<String>,
    /// The fleet CA certificate.
    #[arg(long, env = "STRONGBOX_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Your certificate (role operator, or viewer for reading).
    #[arg(long, env = "STRONGBOX_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// Your private key.
    #[arg(long, env = "STRONGBOX_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
}

impl ConnectArgs {
    pub fn tls(&self) -> anyhow::Result<TlsFiles> {
        let need = |v: &Option<PathBuf>, flag: &str, env: &str| {
            v.clone()
                .with_context(|| format!("no certificate given: pass --{flag} (or set {env})"))
        };
        Ok(TlsFiles {
            ca: need(&self.tls_ca, "tls-ca", "STRONGBOX_TLS_CA")?,
            cert: need(&self.tls_cert, "tls-cert", "STRONGBOX_TLS_CERT")?,
            key: need(&self.tls_key, "tls-key", "STRONGBOX_TLS_KEY")?,
        })
    }

    pub fn addresses(&self) -> anyhow::Result<&[String]> {
        if self.coordinators.is_empty() {
            bail!("no coordinator given: pass --coordinator HOST:PORT (or set STRONGBOX_COORDINATORS)");
        }
        Ok(&self.coordinators)
    }
}

/// A channel to `address`, connected now so that an unreachable node is known at once.
pub async fn connect(tls: &TlsFiles, address: &str) -> anyhow::Result<Channel> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .with_context(|| format!("{address:?} is not HOST:PORT"))?
        .tls_config(tls.client_config(host)?)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {address} (is it running, and is its certificate from your CA?)"))
}

/// A channel to the first coordinator that answers.
pub async fn any(args: &ConnectArgs) -> anyhow::Result<Channel> {
    let tls = args.tls()?;
    let mut last = None;
    for a in args.addresses()? {
        match connect(&tls, a).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator given")))
}

/// Turns a gRPC error into a message for people.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::PermissionDenied => anyhow::anyhow!("permission denied: {}", s.message()),
        tonic::Code::Unavailable => anyhow::anyhow!(
            "the cluster is unavailable: {} (retry, or check `strongbox cluster status`)",
            s.message()
        ),
        _ => anyhow::anyhow!("{}: {}", s.code(), s.message()),
    }
}
