use std::path::PathBuf;

use strongbox_core::pki::Role;

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: strongbox_core::Error| e.to_string())
}

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
