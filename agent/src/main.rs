//! `strongbox-agent`: runs beside the database servers of one host. Loads its configuration,
//! keys and certificates, then keeps a session with the region's coordinators and runs the
//! backup and restore jobs they send, until SIGTERM or Ctrl-C.
//!
//! The first thing it does is set the umask to 0o077 (`strongbox_core::private`): restored
//! servers, spools and password files, and whatever the engines' tools it starts (`initdb`,
//! `mariadb-install-db`, `mariadbd`, `pg_restore`) create, are then private from creation.
//! It logs to stderr only (the journal under systemd) and writes no log file of its own.

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use strongbox_agent::{agent::Agent, config, session};

fn main() -> anyhow::Result<()> {
    strongbox_core::private::set_private_umask();
    keep_freed_buffers();
    strongbox_core::tls::install_crypto_provider();
    tracing_subscriber::fmt()
        // Logs go to stderr, in colour only on a terminal: a log file or the journal gets
        // plain text.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = config::Config::load(config::Args::parse())?;
    config.check_tls_files()?;
    let me = config.tls.identity()?;
    if me.role != strongbox_core::pki::Role::Agent {
        anyhow::bail!(
            "the certificate {} is of {me}, not of an agent: coordinators take agents' calls only from certificates of role agent; issue one with `strongbox pki issue --role agent --name {}`",
            config.tls.cert.display(),
            config.host
        );
    }
    if me.name != config.host {
        anyhow::bail!(
            "the certificate {} is for host {:?}, but this agent is configured as host {:?}: use the host's own certificate",
            config.tls.cert.display(),
            me.name,
            config.host
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (agent, reports) = Agent::new(config)?;
        tracing::info!(
            identity = %me,
            host = %agent.config.host,
            region = %agent.config.region,
            coordinators = ?agent.config.coordinators,
            spare = agent.config.spare,
            services = agent.engines.len(),
            "agent starting"
        );
        let mut session = tokio::spawn(session::run(agent.clone(), reports));
        tokio::select! {
            _ = &mut session => {}
            _ = shutdown_signal() => {
                let interrupted = agent.stop();
                tracing::info!(interrupted, "stopping: running jobs reported as interrupted");
                // The session delivers those reports, then ends (bounded by its flush time).
                let limit = session::FLUSH + std::time::Duration::from_secs(1);
                if tokio::time::timeout(limit, session).await.is_err() {
                    tracing::warn!("stopped before the region confirmed the interrupted jobs; they fail when the agent's grace period ends");
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A backup allocates and frees megabyte chunk buffers all the time. By default glibc returns
/// such memory to the kernel (`munmap`, or trimming an arena) and the next buffer faults every
/// page in again, zeroed: a measurable share of a backup's CPU. Serving them from the heap and
/// keeping up to 256 MiB of freed memory instead bounds what stays resident by the pipeline's
/// own peak (a few batches in flight).
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
