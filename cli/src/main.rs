//! `strongbox`, the operator CLI. Parses the command line and hands each subcommand to its
//! module; every subcommand prints a table for people or JSON (`--output json`) for scripts.

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod backup;
mod cluster;
mod connect;
mod dev;
mod keygen;
mod output;
mod pki;
mod policy;
mod progress;
mod restore;
mod service;
mod views;

use clap::{Parser, Subcommand};

use output::Output;

#[derive(Parser)]
#[command(
    name = "strongbox",
    version,
    about = "Backups for a fleet of databases: the operator CLI"
)]
struct Cli {
    /// How to print results: `table` for people, `json` for scripts (a file or folder to
    /// write is `-o/--out`).
    #[arg(
        long,
        global = true,
        value_parser = output::parse_output,
        default_value = "table",
        env = "STRONGBOX_OUTPUT",
        help_heading = "Output",
        value_name = "table|json"
    )]
    output: Output,

    #[command(flatten)]
    connect: connect::ConnectArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a fleet keyring file (32 random bytes with a key id), or add a key to one.
    Keygen(keygen::Args),
    /// Make the fleet's certificate authority and issue certificates.
    #[command(subcommand)]
    Pki(pki::Command),
    /// The coordinator cluster of a region: status, adding and removing nodes.
    #[command(subcommand)]
    Cluster(cluster::Command),
    /// Backups: create, list, show, download (decrypted, native files), restore, hold, purge.
    #[command(subcommand)]
    Backup(backup::Command),
    /// Restore jobs: their state, the new server's connection details, the verification.
    #[command(subcommand)]
    Restore(restore::Command),
    /// Services (logical databases): state, schedule, members; exclude, include, deprovision.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// The fleet policy: schedule, retention, locks, final backups (region default or a service).
    #[command(subcommand)]
    Policy(policy::Command),
    /// Hosts with an agent.
    #[command(subcommand)]
    Host(service::HostCommand),
    /// The audit log of operator changes.
    #[command(subcommand)]
    Audit(audit::Command),
    /// A whole local strongbox in one command: 3 coordinators, 2 agents, a demo database, a
    /// backup and a verified restore; then it keeps running for you to try the CLI.
    Dev(dev::Args),
}

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
