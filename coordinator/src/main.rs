//! `strongbox-coordinator`: one node of a region's coordinator cluster.
//!
//! The first thing it does is set the umask to 0o077 (`strongbox_core::private`), so the chunk
//! store, the catalog and the Raft log (fjall) are private from creation; then the data folder
//! is made (or narrowed to) 0700, which also closes a store an earlier version made 0755.

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use strongbox_coordinator::{config, server};

fn main() -> anyhow::Result<()> {
    strongbox_core::private::set_private_umask();
    strongbox_core::tls::install_crypto_provider();
    tracing_subscriber::fmt()
        // Logs go to stderr, in colour only on a terminal: a log file or the journal gets
        // plain text.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,raft=warn,fjall=warn,lsm_tree=warn".into()),
        )
        .init();
    let config = config::Config::load(config::Args::parse())?;
    strongbox_core::private::ensure_dir(&config.data_dir, strongbox_core::private::PRIVATE_DIR)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coordinator")
        .build()?;
    runtime.block_on(server::run(config))?;
    Ok(())
}
