use super::{parse_timeout, DEFAULT_WAIT};

#[derive(clap::Subcommand)]
pub enum ServiceCommand {
    /// Services by name: engine, state, primary, members, last and next backup (the first 20
    /// unless --limit or --all).
    List {
        #[command(flatten)]
        page: super::PageArgs,
    },
    /// One service: state, schedule, next and last backups, primary, members, role changes.
    Show {
        /// The service's name.
        name: String,
    },
    /// Stop scheduled backups of a service until `service include` (the policy is kept).
    Exclude {
        /// The service's name.
        name: String,
    },
    /// Resume scheduled backups of an excluded service.
    Include {
        /// The service's name.
        name: String,
    },
    /// Stop automatic backups of a service for good (it is going away); if its policy keeps
    /// final backups, a final backup is taken now and kept until purged.
    Deprovision {
        /// The service's name.
        name: String,
        /// Confirm: automatic backups of the service stop for good.
        #[arg(long)]
        yes: bool,
        /// Wait until the final backup completed or failed, showing progress.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long (`90s`, `30m`, `6h`; the backup goes on).
        #[arg(long, default_value = DEFAULT_WAIT, value_parser = parse_timeout, value_name = "DUR")]
        timeout: u64,
    },
}

#[derive(clap::Subcommand)]
pub enum HostCommand {
    /// Hosts by name: region, spare or not, whether its agent is connected, the members it
    /// carries, and what it claims that awaits approval (the first 20 unless --limit or --all).
    List {
        #[command(flatten)]
        page: super::PageArgs,
    },
    /// Approve what a host's agent claims: with no option, everything it has pending (members
    /// of services it is not bound to, and the spare role); or bind the named services and/or
    /// the spare role ahead of its agent (an inventory does this).
    Approve {
        /// The host's name (its agent certificate's name).
        host: String,
        /// Bind this service to the host (repeatable).
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// Approve the host as a spare for restores.
        #[arg(long)]
        spare: bool,
    },
    /// Withdraw a binding: the host stops serving the named services (its reports of them
    /// wait for approval again) and/or stops being a spare.
    Revoke {
        /// The host's name.
        host: String,
        /// Unbind this service from the host (repeatable).
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// Withdraw the spare role.
        #[arg(long)]
        spare: bool,
    },
}
