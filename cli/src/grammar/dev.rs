#[derive(clap::Args)]
pub struct Args {
    /// Back up a local PostgreSQL (made with initdb in the temp folder) instead of SQLite.
    #[arg(long)]
    pub postgres: bool,
    /// If the demo backup or restore fails, keep everything running for inspection (until
    /// Ctrl-C) instead of stopping at once.
    #[arg(long)]
    pub keep_running: bool,
    /// Stop and clean up right after the demo instead of waiting for Ctrl-C (for tests).
    #[arg(long)]
    pub exit_when_done: bool,
}
