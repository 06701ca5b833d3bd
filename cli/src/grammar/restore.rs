#[derive(clap::Subcommand)]
pub enum Command {
    /// Restore jobs, newest first (the newest 20 unless --limit or --all).
    List {
        /// Only restores of this service.
        #[arg(long, value_parser = super::parse_service)]
        service: Option<String>,
        /// Only restores whose server still runs on a spare (every one).
        #[arg(long)]
        running: bool,
        #[command(flatten)]
        page: super::PageArgs,
    },
    /// One restore job: state, target host, connection details, verification, reason.
    Show {
        /// The job id (from `backup restore` or `restore list`).
        job: String,
    },
    /// Stop the server a restore made on a spare, and remove its folder.
    Stop {
        /// The restore job id (from `restore list`).
        job: String,
        /// Keep the server's folder (its data files) after stopping it.
        #[arg(long)]
        keep_files: bool,
        /// Return at once instead of waiting until the server is stopped.
        #[arg(long)]
        no_wait: bool,
    },
}
