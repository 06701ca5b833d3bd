#[derive(clap::Subcommand)]
pub enum Command {
    /// The newest audit entries.
    List {
        /// How many entries (newest first).
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}
