//! A backup's manifest as scripts see it (`backup show --key-file`): its engine, parts with
//! their tables and row counts, and what the backup leaves out. Only the CLI opens manifests
//! (with the fleet key); the coordinators never see these names.
//!
//! Invariants: names are shown as the manifest has them in JSON, and with their control
//! characters escaped in tables ([`output::printable`]): a hostile database name cannot
//! drive the terminal.

use serde::Serialize;
use strongbox_core::manifest::{LeftOut, Manifest, Part, PartKind, TableStat};
use strongbox_proto::v1::Engine;

use crate::output::{self, printable, Fields};

#[derive(Serialize)]
pub struct ManifestView<'a> {
    pub engine: &'a str,
    pub engine_version: &'a str,
    pub table_count: u64,
    pub row_count: u64,
    pub parts: Vec<PartView<'a>>,
    /// What a logical backup of this engine never holds (`null` for SQLite).
    pub not_in_backup: Option<&'static str>,
    /// Databases of the server this backup leaves out, and why.
    pub left_out: Vec<LeftOutView<'a>>,
}

#[derive(Serialize)]
pub struct PartView<'a> {
    pub name: &'a str,
    /// `globals`, `database` or `file` (`unknown` for a kind this build does not know).
    pub kind: &'static str,
    pub plain_bytes: u64,
    pub chunks: usize,
    pub tables: Vec<TableView<'a>>,
}

#[derive(Serialize)]
pub struct TableView<'a> {
    pub name: &'a str,
    pub rows: u64,
}

#[derive(Serialize)]
pub struct LeftOutView<'a> {
    pub name: &'a str,
    pub why: &'a str,
}

/// The word of a part's kind (`unknown` for one this build does not know).
pub fn kind_name(kind: i32) -> &'static str {
    match PartKind::try_from(kind) {
        Ok(PartKind::Globals) => "globals",
        Ok(PartKind::Database) => "database",
        Ok(PartKind::File) => "file",
        _ => "unknown",
    }
}

/// The engine a manifest names (unspecified when it names none this build knows).
pub fn manifest_engine(m: &Manifest) -> Engine {
    Engine::from_word(&m.engine).unwrap_or_default()
}

/// What a logical backup of `engine` never holds, for `backup show` (ARCHITECTURE.md, "What
/// a restore gives back").
pub fn not_in_a_logical_backup(engine: Engine) -> Option<&'static str> {
    match engine {
        Engine::Postgres => Some(
            "the cluster's settings (postgresql.conf, ALTER SYSTEM, pg_hba.conf), template0, \
             statistics and replication slots: a logical backup holds databases, roles and \
             tablespaces; set those on the server you restore to.",
        ),
        Engine::Mysql => Some(
            "server settings (my.cnf, global variables), binary logs, replication state, plugins \
             and the server's own accounts.",
        ),
        _ => None,
    }
}

impl<'a> From<&'a Manifest> for ManifestView<'a> {
    fn from(m: &'a Manifest) -> Self {
        let t = m.totals.unwrap_or_else(|| m.compute_totals());
        ManifestView {
            engine: &m.engine,
            engine_version: &m.engine_version,
            table_count: t.table_count,
            row_count: t.row_count,
            parts: m.parts.iter().map(PartView::from).collect(),
            not_in_backup: not_in_a_logical_backup(manifest_engine(m)),
            left_out: m.left_out.iter().map(LeftOutView::from).collect(),
        }
    }
}

impl<'a> From<&'a Part> for PartView<'a> {
    fn from(p: &'a Part) -> Self {
        PartView {
            name: &p.name,
            kind: kind_name(p.kind),
            plain_bytes: p.plain_size(),
            chunks: p.chunks.len(),
            tables: p.tables.iter().map(TableView::from).collect(),
        }
    }
}

impl<'a> From<&'a TableStat> for TableView<'a> {
    fn from(s: &'a TableStat) -> Self {
        TableView {
            name: &s.name,
            rows: s.rows,
        }
    }
}

impl<'a> From<&'a LeftOut> for LeftOutView<'a> {
    fn from(l: &'a LeftOut) -> Self {
        LeftOutView {
            name: &l.name,
            why: &l.why,
        }
    }
}

impl ManifestView<'_> {
    /// The lines `backup show` adds to the backup's: engine, tables, rows.
    pub fn fields(&self) -> Fields {
        let mut f = Fields::default();
        f.push("engine", format!("{} {}", self.engine, self.engine_version));
        f.push("tables", self.table_count.to_string());
        f.push("rows", self.row_count.to_string());
        f
    }

    /// Prints the parts, the tables with their rows, what is left out and what a logical
    /// backup never holds.
    pub fn print_contents(&self) {
        let mut t = output::table(["part", "kind", "size", "chunks", "tables"]);
        for p in &self.parts {
            t.add_row([
                printable(p.name),
                p.kind.to_string(),
                output::size(p.plain_bytes),
                p.chunks.to_string(),
                p.tables.len().to_string(),
            ]);
        }
        println!("\n{t}");
        let mut t = output::table(["part", "table", "rows"]);
        let mut any = false;
        for p in &self.parts {
            for s in &p.tables {
                any = true;
                t.add_row([printable(p.name), printable(s.name), s.rows.to_string()]);
            }
        }
        if any {
            println!("{t}");
        }
        if !self.left_out.is_empty() {
            println!("\nDatabases of the server this backup leaves out:");
            for l in &self.left_out {
                println!("  {}: {}", printable(l.name), l.why);
            }
        }
        if let Some(note) = self.not_in_backup {
            println!("\nNot in this backup: {note}");
        }
    }
}
