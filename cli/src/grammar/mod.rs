//! The CLI's grammar: every command, argument and flag as clap types, and the parsers of
//! their values. Nothing here talks to a coordinator or prints: `commands/` does what a
//! command says, `views/` is what it prints.
//!
//! Invariants: a value that can be wrong is refused here, before any work, with what is
//! accepted (ranges, formats); every flag of the connection is global, so it may come before
//! or after the subcommand, or from the `STRONGBOX_*` environment.

pub mod audit;
pub mod backup;
pub mod cluster;
pub mod dev;
pub mod keygen;
pub mod pki;
pub mod policy;
pub mod restore;
pub mod service;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::output::{self, Output};

/// Default wait for `--wait`: long enough for a large dump, short enough to notice a stuck one.
pub const DEFAULT_WAIT_SECS: u64 = 6 * 3600;

#[derive(Parser)]
#[command(
    name = "strongbox",
    version,
    about = "Backups for a fleet of databases: the operator CLI"
)]
pub struct Cli {
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
    pub output: Output,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// A coordinator node of the region, HOST:PORT (any node; repeat or comma-separate several).
    #[arg(
        long = "coordinator",
        env = "STRONGBOX_COORDINATORS",
        value_delimiter = ',',
        global = true,
        help_heading = "Connection (or the STRONGBOX_* environment)",
        hide_short_help = true
    )]
    pub coordinators: Vec<String>,
    /// The fleet CA certificate.
    #[arg(
        long,
        env = "STRONGBOX_TLS_CA",
        global = true,
        help_heading = "Connection (or the STRONGBOX_* environment)",
        hide_short_help = true
    )]
    pub tls_ca: Option<PathBuf>,
    /// Your certificate (role operator, or viewer for reading).
    #[arg(
        long,
        env = "STRONGBOX_TLS_CERT",
        global = true,
        help_heading = "Connection (or the STRONGBOX_* environment)",
        hide_short_help = true
    )]
    pub tls_cert: Option<PathBuf>,
    /// Your private key.
    #[arg(
        long,
        env = "STRONGBOX_TLS_KEY",
        global = true,
        help_heading = "Connection (or the STRONGBOX_* environment)",
        hide_short_help = true
    )]
    pub tls_key: Option<PathBuf>,
}
