use strongbox_core::durations::parse as parse_duration_ms;

#[derive(clap::Subcommand)]
pub enum Command {
    /// The policy of the region default (or of one service): every field, its effective value
    /// and where it comes from.
    Show {
        /// A service's policy (default: the region default every service inherits from).
        #[arg(long)]
        service: Option<String>,
    },
    /// Change the policy of the region default (or of one service); only the fields given
    /// change. A change that would delete backups lists them and needs --yes.
    Set(SetArgs),
}

#[derive(clap::Args, Debug, Default)]
pub struct SetArgs {
    /// Set a service's own policy (default: the region default every service inherits from).
    #[arg(long)]
    pub service: Option<String>,
    /// When scheduled backups run: `every 24h`, `every 1h`, `daily 02:00 UTC` (or another time
    /// zone, e.g. `daily 01:30 Europe/Helsinki`), or `none`.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Keep the newest scheduled backup of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub hourly: Option<u32>,
    /// Keep the newest scheduled backup of each of the last N days (UTC).
    #[arg(long, value_name = "N")]
    pub daily: Option<u32>,
    /// Keep the newest scheduled backup of each of the last N months.
    #[arg(long, value_name = "N")]
    pub monthly: Option<u32>,
    /// Keep the newest scheduled backup of each of the last N years.
    #[arg(long, value_name = "N")]
    pub yearly: Option<u32>,
    /// Keep no scheduled backup older than this (`30d`, `12h`, `90m`, `45s`); `none` or `0`: no
    /// limit.
    #[arg(long, value_name = "DUR", value_parser = parse_duration_ms)]
    pub max_age: Option<u64>,
    /// Nobody can purge a backup younger than N days, and retention keeps it (0: no lock).
    #[arg(long, value_name = "N")]
    pub lock_days: Option<u32>,
    /// Retention never expires the N newest completed backups of a service, whatever the rules,
    /// failures or clocks say (at least 1; default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub min_keep: Option<u32>,
    /// Take a final backup when a service is deprovisioned, and keep it until purged.
    #[arg(long, value_name = "true|false")]
    pub keep_final: Option<bool>,
    /// Spread the scheduled starts of the fleet over this window (`30m`; `0`: all at once).
    #[arg(long, value_name = "DUR", value_parser = parse_duration_ms)]
    pub jitter: Option<u64>,
    /// At most N backups of the region run at once (a region setting: not with --service).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u32>,
    /// Drop every field set at this level first (then apply the fields given, if any), so that
    /// the level inherits again.
    #[arg(long)]
    pub reset: bool,
    /// Confirm a change that deletes backups the new policy no longer keeps.
    #[arg(long)]
    pub yes: bool,
}
