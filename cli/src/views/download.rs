//! What `backup download` wrote, as scripts see it: the folder, each file with the part it
//! holds, and the command that loads it with the engine's own tools.
//!
//! Invariants: files are listed in the order they load (MariaDB: databases, then their views,
//! then the grants); a `load` command is shell text in which every name is a quoted word
//! (`commands::backup::plan::load_hint`); tables escape control characters in names.

use serde::Serialize;

use crate::output::{self, printable};

#[derive(Serialize)]
pub struct DownloadView<'a> {
    pub backup: &'a str,
    pub service: &'a str,
    pub engine: &'a str,
    pub engine_version: &'a str,
    pub dir: String,
    pub plain_bytes: u64,
    pub seconds: f64,
    pub files: Vec<DownloadedFile>,
}

#[derive(Serialize)]
pub struct DownloadedFile {
    pub path: String,
    /// The part of the backup it holds (a database name, `globals`, an SQLite file).
    pub part: String,
    /// `globals`, `database`, `file`, or `views` (a MariaDB database's views, cut out of its
    /// dump).
    pub kind: &'static str,
    pub bytes: u64,
    pub tables: usize,
    /// One line of shell that loads it.
    pub load: String,
}

impl DownloadView<'_> {
    /// The summary for people: what was written where, and how to load it.
    pub fn print(&self) {
        println!(
            "Downloaded backup {} of {} ({} {}, {}) into {} in {}:",
            self.backup,
            self.service,
            self.engine,
            self.engine_version,
            output::size(self.plain_bytes),
            self.dir,
            output::duration(std::time::Duration::from_secs_f64(self.seconds))
        );
        let mut t = output::table(["file", "part", "size", "tables"]);
        for f in &self.files {
            t.add_row([
                printable(&f.path),
                printable(&f.part),
                output::size(f.bytes),
                f.tables.to_string(),
            ]);
        }
        println!("{t}");
        println!("\nLoad with the engine's own tools:");
        for f in &self.files {
            println!("  {}", f.load);
        }
    }
}
