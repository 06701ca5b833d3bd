//! `strongbox`, the operator CLI. Parses the command line and hands each subcommand to its
//! module; every subcommand prints a table for people or JSON (`--output json`) for scripts.

mod cluster;
mod connect;
mod keygen;
mod output;
mod pki;

use clap::{Parser, Subcommand};

use output::Output;

#[derive(Parser)]
#[command(
    name = "strongbox",
    version,
    about = "Backups for a fleet of databases: the operator CLI"
)]
struct Cli {
    /// How to print results: `table` for people, `json` for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table, env = "STRONGBOX_OUTPUT")]
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
}

fn main() -> std::process::ExitCode {
    strongbox_core::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args, cli.output),
        Command::Pki(cmd) => pki::run(cmd, cli.output),
        Command::Cluster(cmd) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(cluster::run(cmd, &cli.connect, cli.output))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
