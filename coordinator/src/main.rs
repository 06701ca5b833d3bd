//! `strongbox-coordinator`: one node of a region's coordinator cluster.
//!
//! This build parses and checks the node's configuration (file, flags, environment) and its TLS
//! files; the Raft catalog, chunk store and gRPC services come with the coordinator issue.

mod config;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    strongbox_core::tls::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = config::Args::parse();
    let config = config::Config::load(args)?;
    let me = config.tls.identity()?;
    tracing::info!(
        identity = %me,
        node_id = config.node_id,
        region = %config.region,
        listen = %config.listen,
        http_listen = ?config.http_listen,
        peers = ?config.peers,
        data_dir = %config.data_dir.display(),
        "configuration is valid"
    );
    anyhow::bail!(
        "this build of strongbox-coordinator only checks its configuration; the node service is not part of it yet"
    )
}
