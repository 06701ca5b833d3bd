use std::path::PathBuf;

use super::{parse_timeout, DEFAULT_WAIT};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The engine's own dump format (PostgreSQL: pg_dump custom format `.dump`).
    Native,
    /// Plain SQL (PostgreSQL: made from the `.dump` with `pg_restore --file=-`).
    Sql,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Take a manual backup of a service now.
    Create {
        /// The service to back up.
        service: String,
        /// Back up the member on this host (default: the primary or standalone member).
        #[arg(long)]
        host: Option<String>,
        /// Wait until the backup completed or failed, showing progress.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long (`90s`, `30m`, `6h`; the backup goes on).
        #[arg(long, default_value = DEFAULT_WAIT, value_parser = parse_timeout, value_name = "DUR")]
        timeout: u64,
    },
    /// The backups of a service (every service when none is named), newest first (the newest
    /// 20 unless --limit or --all).
    List {
        /// The service.
        #[arg(value_parser = super::parse_service)]
        service: Option<String>,
        #[command(flatten)]
        page: super::PageArgs,
    },
    /// Everything about one backup; with --key-file also its manifest: engine, parts, tables.
    Show {
        /// The backup id.
        id: String,
        /// The fleet keyring, to open the manifest (engine, version, parts, row counts).
        #[arg(long, env = "STRONGBOX_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Fetch and decrypt a backup into native files that the engine's own tools load.
    Download {
        /// The backup id.
        id: String,
        /// The fleet keyring (mode 0600) holding the key the backup was sealed with.
        #[arg(long, env = "STRONGBOX_KEY_FILE")]
        key_file: PathBuf,
        /// Folder to write into (default: ./<backup id>).
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// `native` (PostgreSQL .dump) or `sql` (PostgreSQL .sql, needs pg_restore).
        #[arg(long, value_enum, default_value_t = Format::Native)]
        format: Format,
        /// Replace files that exist already.
        #[arg(long)]
        force: bool,
        /// Chunks fetched at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
        parallel: u64,
    },
    /// Restore a backup onto a fresh server on a spare host, and verify it; or, with
    /// `--in-place --yes`, into the service's own live server after a pre-restore backup.
    Restore {
        /// The backup id.
        id: String,
        /// The spare host to restore onto.
        #[arg(
            long,
            required_unless_present_any = ["to_region", "in_place"],
            conflicts_with_all = ["to_region", "in_place"]
        )]
        to_host: Option<String>,
        /// Any healthy spare of this region.
        #[arg(long, conflicts_with = "in_place")]
        to_region: Option<String>,
        /// Replace the live data of the backup's service on its primary. The coordinators first
        /// take a `pre-restore` backup of the current data (kept until deleted), then restore.
        #[arg(long)]
        in_place: bool,
        /// Confirm an in-place restore.
        #[arg(long, requires = "in_place")]
        yes: bool,
        /// Wait until the restore is done and print the new server's connection details.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long (`90s`, `30m`, `6h`; the restore goes on).
        #[arg(long, default_value = DEFAULT_WAIT, value_parser = parse_timeout, value_name = "DUR")]
        timeout: u64,
    },
    /// Keep a backup whatever the retention policy says, until `backup unhold`.
    Hold {
        /// The backup id.
        id: String,
        /// Why (shown by `backup show` and in the audit log), e.g. a ticket number.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a hold: the backup is again kept or expired by the retention policy.
    Unhold {
        /// The backup id.
        id: String,
    },
    /// Delete a backup for good (its chunks go once no other backup uses them). Held backups
    /// and backups within the policy's lock_days cannot be purged.
    Purge {
        /// The backup id.
        id: String,
        /// Confirm: the backup cannot be brought back.
        #[arg(long)]
        yes: bool,
    },
}
