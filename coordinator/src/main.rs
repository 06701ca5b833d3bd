//! `strongbox-coordinator`: one node of a region's coordinator cluster.

use clap::Parser;
use strongbox_coordinator::{config, server};

fn main() -> anyhow::Result<()> {
    strongbox_core::tls::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,raft=warn,sled=warn".into()),
        )
        .init();
    let config = config::Config::load(config::Args::parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coordinator")
        .build()?;
    runtime.block_on(server::run(config))?;
    Ok(())
}
