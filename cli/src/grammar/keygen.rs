use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the keyring (mode 0600).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Replace an existing file. Backups sealed under its keys become unreadable without a copy.
    #[arg(long, conflicts_with = "rotate")]
    pub force: bool,
    /// Add a new key to an existing file: new backups use it, old ones stay readable.
    #[arg(long)]
    pub rotate: bool,
}
