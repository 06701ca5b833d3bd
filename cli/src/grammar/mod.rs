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
pub const DEFAULT_WAIT: &str = "6h";

/// `--timeout`: a duration (`90s`, `30m`, `6h`, `1h30m`) or a bare number of seconds, at
/// least a second; into seconds.
pub fn parse_timeout(s: &str) -> Result<u64, String> {
    let secs = match s.trim().parse::<u64>() {
        Ok(n) => n,
        Err(_) => strongbox_core::durations::parse(s)? / 1000,
    };
    if secs == 0 {
        return Err(
            "a timeout under a second gives up before the job can start: give at least 1s \
             (`90s`, `30m`, `6h`)"
                .into(),
        );
    }
    Ok(secs)
}

/// How many items a list shows when neither `--limit` nor `--all` is given: the newest 20, as
/// CSC's backup view does.
pub const SHOWN_BY_DEFAULT: usize = 20;

/// How much of a list to show (`backup list`, `restore list`, `service list`, `host list`,
/// `audit list`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PageArgs {
    /// Show this many [default: 20 in a table, every one with --output json].
    #[arg(long, value_name = "N", value_parser = parse_limit, conflicts_with = "all")]
    pub limit: Option<usize>,
    /// Show every one, printed page by page as the coordinators send them.
    #[arg(long)]
    pub all: bool,
}

impl PageArgs {
    /// The most items to show (`None`: all). People get the first 20 by default; scripts
    /// (`--output json`) get the whole list unless they name a limit, so a script never
    /// reads a list cut short without asking.
    pub fn wanted(&self, for_scripts: bool) -> Option<usize> {
        match (self.all, self.limit) {
            (true, _) => None,
            (false, Some(n)) => Some(n),
            (false, None) if for_scripts => None,
            (false, None) => Some(SHOWN_BY_DEFAULT),
        }
    }
}

/// A service's name as an argument: not empty (an unset shell variable would otherwise list
/// every service).
pub fn parse_service(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "a service name cannot be empty: leave the argument out for every service".into(),
        );
    }
    Ok(s.to_string())
}

/// `--limit`: a count of at least 1 (`--all` shows everything).
pub fn parse_limit(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("a limit of 0 shows nothing: give at least 1, or --all for every one".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{s:?} is not a count: give a whole number, like 50"
        )),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_durations_or_seconds_and_never_zero() {
        assert_eq!(parse_timeout("90"), Ok(90));
        assert_eq!(parse_timeout("90s"), Ok(90));
        assert_eq!(parse_timeout("30m"), Ok(1800));
        assert_eq!(parse_timeout(DEFAULT_WAIT), Ok(6 * 3600));
        assert_eq!(parse_timeout("1h30m"), Ok(5400));
        for zero in ["0", "0s", "none"] {
            let e = parse_timeout(zero).expect_err(zero);
            assert!(e.contains("at least 1s"), "{zero}: {e}");
        }
        assert!(parse_timeout("soon").is_err());
    }
}
