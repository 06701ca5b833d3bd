//! `strongbox`, the operator CLI, in three layers: `grammar/` (the command line as clap
//! types), `commands/` (what each command does: calls to the coordinators, downloads, `dev`)
//! and `views/` (what it prints: one typed view per JSON document, tables drawn from the same
//! views). Every command prints a table for people or JSON (`--output json`) for scripts.

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod connect;
mod grammar;
mod output;
mod progress;
mod views;

use clap::Parser;

use commands::{audit, backup, cluster, dev, keygen, pki, policy, restore, service};
use grammar::{Cli, Command};

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(f))
}

/// A command whose output is piped into a reader that stops early (`| head -3`) ends as other
/// Unix tools do: quietly, by SIGPIPE, instead of panicking on "failed printing to stdout".
/// Rust ignores SIGPIPE by default; this restores the default action. Not for `dev`, which
/// runs servers and must stop them itself whatever happens to its terminal.
fn end_quietly_when_the_reader_goes() {
    // SAFETY: setting a signal's disposition to its default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> std::process::ExitCode {
    // Downloads, keys, certificates and `dev`'s whole demo are private from creation, also
    // what child processes (pg_restore, servers) write: see `strongbox_core::private`.
    strongbox_core::private::set_private_umask();
    strongbox_core::tls::install_crypto_provider();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Dev(_)) {
        end_quietly_when_the_reader_goes();
    }
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args, cli.output),
        Command::Pki(cmd) => pki::run(cmd, cli.output),
        Command::Cluster(cmd) => block_on(cluster::run(cmd, &cli.connect, cli.output)),
        Command::Backup(cmd) => block_on(backup::run(cmd, &cli.connect, cli.output)),
        Command::Restore(cmd) => block_on(restore::run(cmd, &cli.connect, cli.output)),
        Command::Service(cmd) => block_on(service::run_service(cmd, &cli.connect, cli.output)),
        Command::Policy(cmd) => block_on(policy::run(cmd, &cli.connect, cli.output)),
        Command::Host(cmd) => block_on(service::run_host(cmd, &cli.connect, cli.output)),
        Command::Audit(cmd) => block_on(audit::run(cmd, &cli.connect, cli.output)),
        Command::Dev(args) => block_on(dev::run(args, cli.output)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
