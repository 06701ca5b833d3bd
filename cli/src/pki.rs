//! `strongbox pki init-ca` and `strongbox pki issue`: the fleet CA and its certificates.
//!
//! Invariant: the CA key is created 0600 and never overwritten; issued keys are 0600.

use std::path::PathBuf;

use serde_json::json;
use strongbox_core::files::Overwrite;
use strongbox_core::pki::{self, Identity, Role, Validity};

use crate::output::Output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a CA (ca.crt, ca.key) in a folder. Keep ca.key on the operator's control machine.
    InitCa {
        /// Folder for ca.crt and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "strongbox fleet CA")]
        name: String,
        /// How long the CA is valid, in days (1 to 36500).
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
    /// Issue a key and certificate for a node, agent, operator, viewer or region.
    Issue {
        /// The folder holding ca.crt and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// What the holder may do.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The holder's name (host name for nodes and agents, a person's for operators).
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses the holder serves under (nodes); repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Folder for NAME.crt and NAME.key (and ca.crt, if missing).
        #[arg(long)]
        out: PathBuf,
        /// How long the certificate is valid, in days (1 to 36500).
        #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Replace an existing NAME.crt / NAME.key.
        #[arg(long)]
        force: bool,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: strongbox_core::Error| e.to_string())
}

pub fn run(cmd: Command, output: Output) -> anyhow::Result<()> {
    match cmd {
        Command::InitCa { dir, name, days } => {
            let (cert, key) = pki::init_ca_dir(&dir, &name, Validity::days_from_now(days))?;
            output.record(&[
                ("ca_cert", json!(cert.display().to_string())),
                ("ca_key", json!(key.display().to_string())),
                ("valid_days", json!(days)),
            ]);
        }
        Command::Issue {
            ca_dir,
            role,
            name,
            sans,
            out,
            days,
            force,
        } => {
            let identity = Identity { role, name };
            let overwrite = if force {
                Overwrite::Replace
            } else {
                Overwrite::Refuse
            };
            let files = pki::issue_to_dir(
                &ca_dir,
                &identity,
                &sans,
                Validity::days_from_now(days),
                &out,
                overwrite,
            )?;
            output.record(&[
                ("identity", json!(identity.uri())),
                ("role", json!(identity.role.as_str())),
                ("name", json!(identity.name)),
                ("cert", json!(files.cert.display().to_string())),
                ("key", json!(files.key.display().to_string())),
                (
                    "ca_cert",
                    json!(files.ca_cert.map(|p| p.display().to_string())),
                ),
                ("sans", json!(sans)),
                ("valid_days", json!(days)),
            ]);
        }
    }
    Ok(())
}
