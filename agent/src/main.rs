//! `strongbox-agent`: runs beside the database servers of one host.
//!
//! This build parses and checks the agent's configuration (file, flags, environment), its TLS
//! files and its fleet key; sessions, dumps and restores come with the agents issue.

use strongbox_agent::config;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    strongbox_core::tls::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = config::Config::load(config::Args::parse())?;
    let me = config.tls.identity()?;
    let keyring = strongbox_core::keys::Keyring::load(&config.key_file)?;
    tracing::info!(
        identity = %me,
        keys = keyring.ids().count(),
        host = %config.host,
        region = %config.region,
        coordinators = ?config.coordinators,
        data_root = ?config.data_root,
        spare = config.spare,
        services = config.services.len(),
        "configuration is valid"
    );
    anyhow::bail!("this build of strongbox-agent only checks its configuration; the agent service is not part of it yet")
}
