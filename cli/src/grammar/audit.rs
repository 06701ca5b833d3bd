#[derive(clap::Subcommand)]
pub enum Command {
    /// The audit log, newest entry first (the newest 20 unless --limit or --all).
    List {
        #[command(flatten)]
        page: super::PageArgs,
    },
}
