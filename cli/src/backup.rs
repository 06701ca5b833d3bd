//! `strongbox backup create|list|show|download|restore|hold|unhold|purge`: the backups of a
//! service, with what retention says of each (kept because, expires, held, locked).
//!
//! `download` fetches a backup's sealed manifest and chunks from the coordinators and opens them
//! here with the fleet key (coordinators hold ciphertext only), writing the engine's native
//! files: PostgreSQL `globals.sql` and `<db>.dump` (or `<db>.sql` with `--format sql`), MariaDB
//! `<part>.sql` (and `<db>.views.sql`, see below), SQLite `<name>.sqlite3`.
//!
//! MariaDB loads in the order the commands are printed: every database's `<db>.sql`, then
//! every `<db>.views.sql` (the final definitions of a database's views, cut by statements out
//! of its dump with the agent's own lexer, so that a view may read any database's tables),
//! then `grants.sql` (its object grants need their tables and routines).
//!
//! Invariants of `download`:
//! - nothing is written before the manifest opened with the key given (a wrong key writes
//!   nothing), and no existing file is replaced without `--force`;
//! - every file is written under a temporary name and renamed only once every part of the
//!   backup was fetched, checked (AEAD tag and chunk id) and written: a failed or interrupted
//!   download (Ctrl-C) leaves no partial file, and removes the folder it created;
//! - decrypting and decompressing run on the blocking pool; at most `--parallel` chunks are in
//!   flight, written in order;
//! - file names come from part names reduced to `[A-Za-z0-9._-]`, starting with neither `.`
//!   nor `-` and at most [`MAX_STEM`] bytes long, so a manifest cannot make us write outside
//!   the output folder, nor name a file a tool would read as an option;
//! - the commands printed to load the files are shell text in which every name is data: each
//!   path is absolute (never an option, never an SQLite `file:` URI) and every word is
//!   shell-quoted ([`shell_quote`]: `'…'`, or bash's `$'…'` when it holds control characters,
//!   so each command stays on one line); no printed command carries a database name (a
//!   PostgreSQL SQL file makes its own database, `pg_restore --create` reads it from the
//!   archive); part names shown in the table have their control characters escaped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use strongbox_core::ids::ChunkId;
use strongbox_core::keys::Keyring;
use strongbox_core::manifest::{self, Manifest, Part, PartKind};
use strongbox_core::read::{part_chunks, ServiceKeySet};
use strongbox_engines::mysql::sqlcount::ViewSplit;
use strongbox_engines::tools;
use strongbox_proto::v1::{
    BackupInfo, BackupState, CreateBackupRequest, DownloadChunkRequest, Engine, HoldBackupRequest,
    JobInfo, JobState, ListBackupsRequest, PurgeBackupRequest, RestoreBackupRequest,
    ShowBackupRequest,
};
use tokio::io::AsyncWriteExt;
use tonic::codegen::Bytes;

use crate::connect::{Api, ConnectArgs};
use crate::output::{self, ago, size, Output};
use crate::progress::Progress;
use crate::restore::{self, job_json};

/// Default wait for `--wait`: long enough for a large dump, short enough to notice a stuck one.
pub const DEFAULT_WAIT_SECS: u64 = 6 * 3600;

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
        /// With --wait: give up waiting after this many seconds (the backup goes on).
        #[arg(long, default_value_t = DEFAULT_WAIT_SECS)]
        timeout: u64,
    },
    /// The backups of a service (every service when none is named), newest first.
    List {
        /// The service.
        service: Option<String>,
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
        /// With --wait: give up waiting after this many seconds (the restore goes on).
        #[arg(long, default_value_t = DEFAULT_WAIT_SECS)]
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

/// A backup as JSON for scripts (its view, `views::backup`).
pub fn backup_json(b: &BackupInfo) -> Value {
    serde_json::to_value(crate::views::backup::BackupView::from(b)).unwrap_or(Value::Null)
}

/// The `keep` column of `backup list`: "hold", the first rule that keeps the backup ("daily
/// 2026-11-20", "manual"), "expires in 3 days", or "-" (not completed, or nothing to say).
pub fn keep_label(b: &BackupInfo, now_ms: u64) -> String {
    if b.held {
        return "hold".to_string();
    }
    if let Some(first) = b
        .kept_because
        .split(',')
        .map(str::trim)
        .find(|r| !r.is_empty())
    {
        return first.to_string();
    }
    if b.expires_unix_ms != 0 {
        return if b.expires_unix_ms > now_ms {
            format!(
                "expires {}",
                output::relative_either(b.expires_unix_ms, now_ms)
            )
        } else {
            "expiring".to_string()
        };
    }
    "-".to_string()
}

/// The retention lines of `backup show`: why it is kept, when it expires, its hold, its lock.
pub fn retention_fields(b: &BackupInfo, now_ms: u64) -> Vec<(&'static str, Value)> {
    let mut f = Vec::new();
    if !b.kept_because.is_empty() {
        f.push(("kept because", json!(b.kept_because)));
    }
    // With rules keeping it: when the last of them stops; with none: now (it goes at the next
    // retention pass). 0: kept until deleted (manual, final, held).
    if b.expires_unix_ms != 0 {
        f.push(("expires", json!(output::at_from(b.expires_unix_ms, now_ms))));
    }
    if b.held {
        f.push((
            "held",
            json!(if b.hold_reason.is_empty() {
                "yes".to_string()
            } else {
                format!("yes ({})", b.hold_reason)
            }),
        ));
    }
    if b.locked_until_unix_ms > now_ms {
        f.push((
            "locked until",
            json!(output::at_from(b.locked_until_unix_ms, now_ms)),
        ));
    }
    f
}

fn backup_fields(b: &BackupInfo) -> Vec<(&'static str, Value)> {
    let mut f = vec![
        ("id", json!(b.id)),
        ("service", json!(b.service)),
        ("host", json!(b.host)),
        ("kind", json!(b.kind())),
        ("state", json!(b.state())),
    ];
    if !b.reason.is_empty() {
        f.push(("reason", json!(b.reason)));
    }
    f.extend([
        ("created", json!(output::at(b.created_unix_ms))),
        ("completed", json!(output::at(b.completed_unix_ms))),
        ("size", json!(size(b.plain_bytes))),
        ("new", json!(size(b.stored_bytes))),
        ("chunks", json!(b.chunk_count)),
        ("manifest", json!(hex::encode(&b.manifest_id))),
    ]);
    f.extend(retention_fields(b, strongbox_core::clock::now_ms()));
    f
}

/// Prints one backup like `backup show` (without its manifest).
pub fn print_backup(b: &BackupInfo, output: Output) {
    match output {
        Output::Json => output.json(&backup_json(b)),
        Output::Table => output::print_fields(&backup_fields(b)),
    }
}

/// Waits for a backup job (progress on stderr) and fetches the backup it made, if any.
pub async fn wait_backup_job(
    api: &Api,
    job: &JobInfo,
    output: Output,
    timeout: Duration,
) -> anyhow::Result<(JobInfo, Option<BackupInfo>)> {
    let done = restore::wait_job(api, &job.id, output, timeout).await?;
    let backup = if done.backup_id.is_empty() {
        None
    } else {
        show_backup(api, &done.backup_id).await.ok()
    };
    Ok((done, backup))
}

/// The key/value lines of a finished backup job: the backup's, or the job's when there is none.
pub fn print_backup_job_fields(done: &JobInfo, backup: Option<&BackupInfo>) {
    match backup {
        Some(b) => output::print_fields(&backup_fields(b)),
        None => output::print_fields(&restore::restore_fields(done)),
    }
}

/// An error if the backup job failed, saying where to look and how to retry.
pub fn check_backup_job(done: &JobInfo) -> anyhow::Result<()> {
    if done.state() == JobState::Failed {
        bail!(
            "backup job {} failed: {} (see the agent's log on {}; retry with `strongbox backup create {}`)",
            done.id,
            if done.reason.is_empty() { "no reason given" } else { &done.reason },
            done.host,
            done.service
        );
    }
    Ok(())
}

pub async fn show_backup(api: &Api, id: &str) -> anyhow::Result<BackupInfo> {
    api.call("ShowBackup", |mut c| {
        let id = id.to_string();
        async move { c.show_backup(ShowBackupRequest { id }).await }
    })
    .await
}

/// Holds (or unholds) a backup; the answer is the backup with its retention as of now.
async fn hold(api: &Api, id: &str, held: bool, reason: String) -> anyhow::Result<BackupInfo> {
    api.call("HoldBackup", |mut c| {
        let req = HoldBackupRequest {
            backup_id: id.to_string(),
            held,
            reason: reason.clone(),
        };
        async move { c.hold_backup(req).await }
    })
    .await
}

pub async fn list_backups(api: &Api, service: &str) -> anyhow::Result<Vec<BackupInfo>> {
    let mut backups = api
        .call("ListBackups", |mut c| {
            let service = service.to_string();
            async move { c.list_backups(ListBackupsRequest { service }).await }
        })
        .await?
        .backups;
    backups.sort_by_key(|b| std::cmp::Reverse(b.created_unix_ms));
    Ok(backups)
}

/// Prints backups: a table like `wrangler d1 backup list`, or a JSON array.
pub fn print_backups(backups: &[BackupInfo], output: Output) {
    match output {
        Output::Json => output.json(&Value::Array(backups.iter().map(backup_json).collect())),
        Output::Table => {
            let now = strongbox_core::clock::now_ms();
            // Backups of several services: a service column tells them apart.
            let services = backups
                .iter()
                .map(|b| b.service.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let mut header = vec!["created", "id"];
            if services > 1 {
                header.push("service");
            }
            header.extend(["kind", "state", "tables", "size", "new", "chunks", "keep"]);
            let mut t = output::table(header);
            for b in backups {
                let mut row = vec![ago(b.created_unix_ms), b.id.clone()];
                if services > 1 {
                    row.push(b.service.clone());
                }
                row.extend([
                    b.kind().to_string(),
                    b.state().to_string(),
                    if b.state() == BackupState::Completed {
                        b.table_count.to_string()
                    } else {
                        "-".to_string()
                    },
                    size(b.plain_bytes),
                    size(b.stored_bytes),
                    b.chunk_count.to_string(),
                    keep_label(b, now),
                ]);
                t.add_row(row);
            }
            println!("{t}");
        }
    }
}

/// Fetches one sealed chunk (or the manifest) of backup `backup`.
async fn fetch_sealed(api: &Api, backup: &str, id: &[u8]) -> anyhow::Result<Bytes> {
    Ok(api
        .call("DownloadChunk", |mut c| {
            let req = DownloadChunkRequest {
                backup_id: backup.to_string(),
                id: Bytes::copy_from_slice(id),
            };
            async move { c.download_chunk(req).await }
        })
        .await?
        .sealed)
}

/// Fetches and opens a backup's manifest with the keyring (the CPU work on the blocking pool).
pub async fn open_manifest(
    api: &Api,
    info: &BackupInfo,
    keyring: Arc<Keyring>,
    key_file: &Path,
) -> anyhow::Result<Manifest> {
    if info.manifest_id.is_empty() {
        bail!(
            "backup {} has no manifest (it is {}): only completed backups can be opened",
            info.id,
            info.state()
        );
    }
    let sealed = fetch_sealed(api, &info.id, &info.manifest_id)
        .await
        .with_context(|| format!("fetching the manifest of backup {}", info.id))?;
    let service = info.service.clone();
    let m = tokio::task::spawn_blocking(move || manifest::open(&keyring, &service, &sealed))
        .await
        .context("the manifest check stopped")?
        .with_context(|| {
            format!(
                "the key file {} does not open backup {} of service {}: use the fleet keyring the backup was sealed with (nothing was written)",
                key_file.display(),
                info.id,
                info.service
            )
        })?;
    if m.service != info.service || (!m.backup_id.is_empty() && m.backup_id != info.id) {
        bail!(
            "the manifest names backup {} of service {}, but the catalog says backup {} of {}: refusing it",
            m.backup_id,
            m.service,
            info.id,
            info.service
        );
    }
    Ok(m)
}

fn load_keyring(path: &Path) -> anyhow::Result<Arc<Keyring>> {
    Keyring::load(path)
        .map(Arc::new)
        .with_context(|| format!("loading the fleet keyring {}", path.display()))
}

fn kind_name(kind: i32) -> &'static str {
    match PartKind::try_from(kind) {
        Ok(PartKind::Globals) => "globals",
        Ok(PartKind::Database) => "database",
        Ok(PartKind::File) => "file",
        _ => "unknown",
    }
}

fn manifest_json(m: &Manifest) -> Value {
    let t = m.totals.unwrap_or_else(|| m.compute_totals());
    json!({
        "engine": m.engine,
        "engine_version": m.engine_version,
        "table_count": t.table_count,
        "row_count": t.row_count,
        "parts": m.parts.iter().map(|p| json!({
            "name": p.name,
            "kind": kind_name(p.kind),
            "plain_bytes": p.plain_size(),
            "chunks": p.chunks.len(),
            "tables": p.tables.iter().map(|s| json!({"name": s.name, "rows": s.rows})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "not_in_backup": not_in_a_logical_backup(manifest_engine(m)),
        "left_out": m.left_out.iter().map(|l| json!({"name": l.name, "why": l.why})).collect::<Vec<_>>(),
    })
}

// ------------------------------------------------------------------------------ download plan

/// One file `download` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Index into the manifest's parts.
    pub part: usize,
    pub file_name: String,
    /// Convert the fetched PostgreSQL custom dump to SQL with pg_restore.
    pub to_sql: bool,
    /// MariaDB database parts: the file that takes the final definitions of the database's
    /// views out of its dump (written only when it has views; see [`split_views`]).
    pub views_file: Option<String>,
}

/// Longest file-name stem `download` writes: room is left for a suffix and the temporary
/// names' `.…partial-<pid>` within the 255 bytes a file name may have.
pub const MAX_STEM: usize = 200;

/// A part name reduced to a safe file-name stem: `[A-Za-z0-9._-]`, starting with neither a dot
/// nor a dash (a tool would read `-x.sql` as an option), at most [`MAX_STEM`] bytes.
pub fn safe_stem(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        s = "part".into();
    }
    if s.starts_with('.') || s.starts_with('-') {
        s.insert(0, '_');
    }
    // Only ASCII is left: any byte is a character boundary.
    s.truncate(MAX_STEM);
    s
}

/// The engine a manifest names (unspecified when it names none this build knows).
fn manifest_engine(m: &Manifest) -> Engine {
    Engine::from_word(&m.engine).unwrap_or_default()
}

/// The file name of one part, and whether it is converted to SQL.
pub fn file_for(engine: Engine, kind: PartKind, name: &str, format: Format) -> (String, bool) {
    let stem = safe_stem(name);
    match (engine, kind) {
        (Engine::Postgres, PartKind::Globals) => (format!("{stem}.sql"), false),
        (Engine::Postgres, PartKind::Database) if format == Format::Sql => {
            (format!("{stem}.sql"), true)
        }
        (Engine::Postgres, PartKind::Database) => (format!("{stem}.dump"), false),
        (Engine::Mysql, _) => (format!("{stem}.sql"), false),
        (Engine::Sqlite, _) => {
            let lower = stem.to_ascii_lowercase();
            let base = [".sqlite3", ".sqlite", ".db"]
                .iter()
                .find_map(|suffix| {
                    lower
                        .ends_with(suffix)
                        .then(|| stem[..stem.len() - suffix.len()].to_string())
                })
                .filter(|b| !b.is_empty() && b != "_")
                .unwrap_or(stem);
            (format!("{base}.sqlite3"), false)
        }
        _ => (format!("{stem}.bin"), false),
    }
}

/// Every file of a download, with names made unique.
pub fn plan(m: &Manifest, format: Format) -> Vec<PlannedFile> {
    let mut used = HashSet::new();
    let mut unique = |name: String| {
        let mut unique = name.clone();
        let mut n = 2;
        while !used.insert(unique.clone()) {
            unique = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}-{n}.{ext}"),
                None => format!("{name}-{n}"),
            };
            n += 1;
        }
        unique
    };
    let mut out = Vec::new();
    for (i, p) in m.parts.iter().enumerate() {
        let kind = PartKind::try_from(p.kind).unwrap_or(PartKind::Unspecified);
        let (name, to_sql) = file_for(manifest_engine(m), kind, &p.name, format);
        let file_name = unique(name);
        let views_file =
            (manifest_engine(m) == Engine::Mysql && kind == PartKind::Database).then(|| {
                let stem = file_name.strip_suffix(".sql").unwrap_or(&file_name);
                unique(format!("{stem}.views.sql"))
            });
        out.push(PlannedFile {
            part: i,
            file_name,
            to_sql,
            views_file,
        });
    }
    out
}

/// Takes the final definitions of a MariaDB database's views out of its downloaded dump
/// `path`, by statements as the agent's restore does ([`ViewSplit`], the engines' lexer of
/// MariaDB dumps): the dump is cut where they start (what stays creates the database, its
/// tables and data, triggers, events, routines, and each view as mariadb-dump's stand-in,
/// which refers to nothing), and they are returned with the dump's opening statements, to be
/// loaded once every database's tables exist (a view may read another database's). None when
/// the dump has no views.
pub fn split_views(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut split = ViewSplit::new();
    let mut kept: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        let now = split
            .push(&buf[..n])
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        kept += now.len() as u64;
    }
    let (rest, views) = split.finish();
    kept += rest.len() as u64;
    if views.is_some() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(kept))
            .with_context(|| format!("cutting {}", path.display()))?;
    }
    Ok(views)
}

/// `s` as one shell word: bare when it holds only characters no shell treats specially,
/// `'…'` otherwise (a `'` written `'\''`), and bash's `$'…'` when it holds control characters
/// (line breaks, tabs, escapes), so that the word stays on one line and no terminal control
/// is printed raw.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@=,".contains(c))
    {
        return s.to_string();
    }
    if !s.chars().any(char::is_control) {
        return format!("'{}'", s.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `path` as a shell word that no tool reads as an option or a URI: absolute, then quoted.
fn shell_path(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| Path::new(".").join(path));
    shell_quote(&abs.to_string_lossy())
}

/// `name` for a terminal: control characters escaped (`\n`, `\u{1b}`), the rest as it is.
pub fn printable(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
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

/// The databases `initdb` makes that a backup holds (template0 is never dumped).
const PG_INITDB_DATABASES: [&str; 2] = ["postgres", "template1"];

/// How to load a downloaded file with the engine's own tools: one line of shell (bash) text
/// in which every name is a quoted word (see the module's invariants). PostgreSQL databases
/// load with `--no-tablespaces`, into the default tablespace: a tablespace's location is a
/// path of the source machine, which the machine loading a download may not have (restores
/// onto spares keep tablespaces, under the restored server's folder).
pub fn load_hint(engine: Engine, kind: PartKind, path: &Path, to_sql: bool, part: &str) -> String {
    let q = shell_path(path);
    match (engine, kind) {
        (Engine::Postgres, PartKind::Globals) => format!("psql -d postgres -f {q}"),
        // The SQL makes its database (`pg_restore --create`), replacing initdb's own.
        (Engine::Postgres, _) if to_sql && part == "postgres" => {
            format!("psql -d template1 -f {q}")
        }
        (Engine::Postgres, _) if to_sql && part == "template1" => format!(
            "psql -d postgres -c 'ALTER DATABASE template1 IS_TEMPLATE false' && \
             psql -d postgres -f {q}"
        ),
        (Engine::Postgres, _) if to_sql => format!("psql -d postgres -f {q}"),
        // The archive replaces initdb's empty one with the backup's, database settings and
        // all (`--clean` drops only that database; a template must stop being one first).
        (Engine::Postgres, _) if part == "postgres" => {
            format!("pg_restore -d template1 --clean --if-exists --create --no-tablespaces -- {q}")
        }
        (Engine::Postgres, _) if part == "template1" => format!(
            "psql -d postgres -c 'ALTER DATABASE template1 IS_TEMPLATE false' && \
             pg_restore -d postgres --clean --if-exists --create --no-tablespaces -- {q}"
        ),
        (Engine::Postgres, _) => format!("pg_restore -d postgres --create --no-tablespaces -- {q}"),
        // --binary-mode: a name may hold `\r\n`, which the client would otherwise turn into `\n`.
        (Engine::Mysql, _) => format!("mariadb --binary-mode < {q}"),
        // sqlite3 knows no `--`: the absolute path is what keeps it from being an option.
        (Engine::Sqlite, _) => format!("sqlite3 {q}"),
        _ => "(unknown engine: raw part bytes)".to_string(),
    }
}

// ------------------------------------------------------------------------------ download

/// Temporary files of a download; removed on drop unless committed.
struct Staging {
    /// (temp, final)
    files: Vec<(PathBuf, PathBuf)>,
    /// Other temps (dumps being converted).
    scratch: Vec<PathBuf>,
    created_dir: Option<PathBuf>,
    committed: bool,
}

impl Staging {
    fn temp_for(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!(".{name}.partial-{}", std::process::id()))
    }

    /// Renames every temp to its final name (refusing to replace unless `force`).
    fn commit(&mut self, force: bool) -> anyhow::Result<()> {
        for (tmp, fin) in &self.files {
            if force {
                std::fs::rename(tmp, fin)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), fin.display()))?;
            } else {
                // hard_link fails if the target appeared meanwhile: never replace silently.
                std::fs::hard_link(tmp, fin).with_context(|| {
                    format!(
                        "writing {} (if it exists now, pass --force to replace it)",
                        fin.display()
                    )
                })?;
                std::fs::remove_file(tmp).with_context(|| format!("removing {}", tmp.display()))?;
            }
        }
        if let Some(dir) = self.files.first().and_then(|(_, f)| f.parent()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for p in &self.scratch {
            let _ = std::fs::remove_file(p);
        }
        if self.committed {
            return;
        }
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
        if let Some(d) = &self.created_dir {
            // Only if empty: never removes anything that was there.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Reads a backup's parts through the one read path (`strongbox_core::read`), fetching its
/// chunks with `DownloadChunk`.
struct Fetch<'a> {
    api: &'a Api,
    backup: &'a str,
    keys: Arc<ServiceKeySet>,
    parallel: usize,
}

impl Fetch<'_> {
    /// Fetches, opens and writes one part's chunks in order to a new file at `path`.
    async fn part(&self, part: &Part, path: &Path, bar: &Progress) -> anyhow::Result<u64> {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let mut w = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let (api, backup) = (self.api, self.backup);
        let fetch = move |id: ChunkId| async move {
            fetch_sealed(api, backup, id.as_bytes())
                .await
                .map(|b| b.to_vec())
        };
        let mut chunks = Box::pin(part_chunks(
            part.chunks.clone(),
            self.keys.clone(),
            self.parallel,
            fetch,
        ));
        let mut written = 0u64;
        while let Some(plain) = chunks.next().await {
            let plain = plain.with_context(|| format!("part {:?}", part.name))?;
            w.write_all(&plain)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            written += plain.len() as u64;
            bar.inc(plain.len() as u64);
        }
        w.flush()
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        w.into_inner()
            .sync_all()
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(written)
    }
}

/// `pg_restore --create --no-tablespaces --file=- DUMP > SQL` (see [`load_hint`] for the
/// tablespaces): the SQL makes its database itself, with its
/// owner, encoding, locale, settings, comment, limit and grants (from `template0`, so no
/// template's content leaks in); initdb's own databases (`database`) are dropped first
/// (`--clean --if-exists`), as a fresh server has them.
async fn dump_to_sql(
    pg_restore: &Path,
    dump: &Path,
    sql: &Path,
    database: &str,
) -> anyhow::Result<()> {
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(sql)
        .with_context(|| format!("creating {}", sql.display()))?;
    let mut cmd = tokio::process::Command::new(pg_restore);
    cmd.args(["--file=-", "--create", "--no-tablespaces"]);
    if PG_INITDB_DATABASES.contains(&database) {
        cmd.args(["--clean", "--if-exists"]);
    }
    let result = cmd
        .arg("--")
        .arg(dump)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        // Not `output()`: it would replace our stdout (the SQL file) with a pipe.
        .spawn()
        .with_context(|| format!("running {}", pg_restore.display()))?
        .wait_with_output()
        .await
        .with_context(|| format!("running {}", pg_restore.display()))?;
    if !result.status.success() {
        let err = String::from_utf8_lossy(&result.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        bail!(
            "{} could not convert the dump to SQL ({}): {}\n(an older pg_restore cannot read a newer pg_dump's format: install the PostgreSQL client of the server's version, or download with --format native)",
            pg_restore.display(),
            result.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

#[allow(clippy::too_many_arguments)]
async fn download(
    api: &Api,
    id: &str,
    key_file: &Path,
    out: Option<PathBuf>,
    format: Format,
    force: bool,
    parallel: usize,
    output: Output,
) -> anyhow::Result<()> {
    let info = show_backup(api, id).await?;
    if info.state() != BackupState::Completed {
        bail!(
            "backup {id} is {}{}: only completed backups can be downloaded (`strongbox backup list {}` shows them)",
            info.state(),
            if info.reason.is_empty() { String::new() } else { format!(" ({})", info.reason) },
            info.service
        );
    }
    let keyring = load_keyring(key_file)?;
    let m = open_manifest(api, &info, keyring.clone(), key_file).await?;
    let files = plan(&m, format);
    let dir = out.unwrap_or_else(|| PathBuf::from(safe_stem(id)));
    if !force {
        for name in files
            .iter()
            .flat_map(|f| std::iter::once(&f.file_name).chain(&f.views_file))
        {
            let p = dir.join(name);
            if p.exists() {
                bail!(
                    "{} exists already; pass --force to replace it, or -o DIR to write elsewhere (nothing was written)",
                    p.display()
                );
            }
        }
    }
    let pg_restore = if files.iter().any(|f| f.to_sql) {
        Some(tools::postgres_program("pg_restore", None).context(
            "--format sql needs pg_restore (PostgreSQL client tools), found neither on PATH nor in /usr/lib/postgresql/*/bin: install postgresql-client, or download with --format native",
        )?)
    } else {
        None
    };

    let mut staging = Staging {
        files: Vec::new(),
        scratch: Vec::new(),
        created_dir: None,
        committed: false,
    };
    if !dir.exists() {
        strongbox_core::private::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        staging.created_dir = Some(dir.clone());
    }
    let total = m
        .totals
        .map_or_else(|| m.compute_totals().plain_size, |t| t.plain_size);
    let bar = Progress::bytes(output, total, &format!("downloading {id}"));
    let fetch = Fetch {
        api,
        backup: id,
        keys: Arc::new(ServiceKeySet::new(&keyring, &info.service)?),
        parallel,
    };
    let started = std::time::Instant::now();
    let mut written = Vec::new();
    let work = async {
        for f in &files {
            let part = &m.parts[f.part];
            bar.message(&format!("{} ({})", f.file_name, printable(&part.name)));
            let fin = dir.join(&f.file_name);
            let tmp = Staging::temp_for(&dir, &f.file_name);
            let bytes = if let (true, Some(pg)) = (f.to_sql, pg_restore.as_deref()) {
                let dump = Staging::temp_for(&dir, &format!("{}.dump", f.file_name));
                staging.scratch.push(dump.clone());
                fetch.part(part, &dump, &bar).await?;
                staging.files.push((tmp.clone(), fin.clone()));
                dump_to_sql(pg, &dump, &tmp, &part.name).await?;
                let _ = std::fs::remove_file(&dump);
                std::fs::metadata(&tmp).map(|md| md.len()).unwrap_or(0)
            } else {
                staging.files.push((tmp.clone(), fin.clone()));
                fetch.part(part, &tmp, &bar).await?
            };
            let mut bytes = bytes;
            let mut views = None;
            if let Some(views_name) = &f.views_file {
                if let Some(sql) = split_views(&tmp)? {
                    let views_fin = dir.join(views_name);
                    let views_tmp = Staging::temp_for(&dir, views_name);
                    staging.files.push((views_tmp.clone(), views_fin.clone()));
                    strongbox_core::private::write_new(&views_tmp, &sql)
                        .with_context(|| format!("writing {}", views_tmp.display()))?;
                    bytes = std::fs::metadata(&tmp).map(|md| md.len()).unwrap_or(0);
                    views = Some((views_fin, sql.len() as u64));
                }
            }
            written.push((f.clone(), fin, bytes, views));
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = work => r?,
        _ = tokio::signal::ctrl_c() => {
            bar.finish();
            // Staging's drop removes every temporary file.
            bail!("interrupted: nothing was written (partial files removed)");
        }
    }
    bar.finish();
    staging.commit(force)?;
    let elapsed = started.elapsed();

    // In the order they load: MariaDB's databases first, then their views (which may read
    // any database's tables), then the grants (object grants need their objects).
    let mut rows: Vec<(u8, Value)> = Vec::new();
    for (f, path, bytes, views) in &written {
        let part = &m.parts[f.part];
        let kind = PartKind::try_from(part.kind).unwrap_or(PartKind::Unspecified);
        let stage = match (manifest_engine(&m), kind) {
            (Engine::Mysql, PartKind::Globals) => 2,
            _ => 0,
        };
        rows.push((
            stage,
            json!({
                "path": path.display().to_string(),
                "part": part.name,
                "kind": kind_name(part.kind),
                "bytes": bytes,
                "tables": part.tables.len(),
                "load": load_hint(manifest_engine(&m), kind, path, f.to_sql, &part.name),
            }),
        ));
        if let Some((views_path, views_bytes)) = views {
            rows.push((
                1,
                json!({
                    "path": views_path.display().to_string(),
                    "part": part.name,
                    "kind": "views",
                    "bytes": views_bytes,
                    "tables": 0,
                    "load": load_hint(manifest_engine(&m), kind, views_path, false, &part.name),
                }),
            ));
        }
    }
    rows.sort_by_key(|(stage, _)| *stage);
    let rows: Vec<Value> = rows.into_iter().map(|(_, r)| r).collect();
    match output {
        Output::Json => output.json(&json!({
            "backup": id,
            "service": info.service,
            "engine": m.engine,
            "engine_version": m.engine_version,
            "dir": dir.display().to_string(),
            "plain_bytes": total,
            "seconds": elapsed.as_secs_f64(),
            "files": rows,
        })),
        Output::Table => {
            println!(
                "Downloaded backup {id} of {} ({} {}, {}) into {} in {}:",
                info.service,
                m.engine,
                m.engine_version,
                size(total),
                dir.display(),
                output::duration(elapsed)
            );
            let mut t = output::table(["file", "part", "size", "tables"]);
            for r in &rows {
                t.add_row([
                    printable(&output::text(&r["path"])),
                    printable(&output::text(&r["part"])),
                    size(r["bytes"].as_u64().unwrap_or(0)),
                    output::text(&r["tables"]),
                ]);
            }
            println!("{t}");
            println!("\nLoad with the engine's own tools:");
            for r in &rows {
                println!("  {}", output::text(&r["load"]));
            }
        }
    }
    Ok(())
}

pub async fn run(cmd: Command, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        Command::Create {
            service,
            host,
            wait,
            timeout,
        } => {
            let job = api
                .call("CreateBackup", |mut c| {
                    let req = CreateBackupRequest {
                        service: service.clone(),
                        host: host.clone().unwrap_or_default(),
                    };
                    async move { c.create_backup(req).await }
                })
                .await?;
            if !wait {
                match output {
                    Output::Json => {
                        output.json(&json!({"job": job_json(&job), "backup": Value::Null}))
                    }
                    Output::Table => {
                        output::print_fields(&[
                            ("job", json!(job.id)),
                            ("backup", json!(job.backup_id)),
                            ("service", json!(job.service)),
                            ("host", json!(job.host)),
                            ("state", json!(job.state())),
                        ]);
                        println!(
                            "\nFollow it with `strongbox backup show {}` or `strongbox backup list {}`.",
                            job.backup_id, job.service
                        );
                    }
                }
                return Ok(());
            }
            output.note(&format!(
                "backup job {} (backup {}) of {} on {}",
                job.id, job.backup_id, job.service, job.host
            ));
            let (done, backup) =
                wait_backup_job(&api, &job, output, Duration::from_secs(timeout)).await?;
            match output {
                Output::Json => output.json(&json!({
                    "job": job_json(&done),
                    "backup": backup.as_ref().map(backup_json),
                })),
                Output::Table => print_backup_job_fields(&done, backup.as_ref()),
            }
            check_backup_job(&done)?;
        }
        Command::List { service } => {
            let service = service.unwrap_or_default();
            let backups = list_backups(&api, &service).await?;
            if backups.is_empty() && !service.is_empty() {
                let known = crate::service::list_services(&api).await?;
                if !known.iter().any(|s| s.name == service) {
                    return Err(crate::service::unknown_service(&service, &known));
                }
            }
            if output == Output::Table && backups.is_empty() {
                if service.is_empty() {
                    println!("No backups yet. Take one with `strongbox backup create SERVICE`.");
                } else {
                    println!("No backups of {service} yet. Take one with `strongbox backup create {service}`.");
                }
                return Ok(());
            }
            print_backups(&backups, output);
        }
        Command::Show { id, key_file } => {
            let info = show_backup(&api, &id).await?;
            let m = match &key_file {
                Some(k) => Some(open_manifest(&api, &info, load_keyring(k)?, k).await?),
                None => None,
            };
            match output {
                Output::Json => {
                    let mut v = backup_json(&info);
                    if let (Some(m), Some(obj)) = (&m, v.as_object_mut()) {
                        obj.insert("manifest".into(), manifest_json(m));
                    }
                    output.json(&v);
                }
                Output::Table => {
                    let mut f = backup_fields(&info);
                    if let Some(m) = &m {
                        let t = m.totals.unwrap_or_else(|| m.compute_totals());
                        f.push((
                            "engine",
                            json!(format!("{} {}", m.engine, m.engine_version)),
                        ));
                        f.push(("tables", json!(t.table_count)));
                        f.push(("rows", json!(t.row_count)));
                    }
                    output::print_fields(&f);
                    if let Some(m) = &m {
                        let mut t = output::table(["part", "kind", "size", "chunks", "tables"]);
                        for p in &m.parts {
                            t.add_row([
                                printable(&p.name),
                                kind_name(p.kind).to_string(),
                                size(p.plain_size()),
                                p.chunks.len().to_string(),
                                p.tables.len().to_string(),
                            ]);
                        }
                        println!("\n{t}");
                        let mut t = output::table(["part", "table", "rows"]);
                        let mut any = false;
                        for p in &m.parts {
                            for s in &p.tables {
                                any = true;
                                t.add_row([
                                    printable(&p.name),
                                    printable(&s.name),
                                    s.rows.to_string(),
                                ]);
                            }
                        }
                        if any {
                            println!("{t}");
                        }
                        if !m.left_out.is_empty() {
                            println!("\nDatabases of the server this backup leaves out:");
                            for l in &m.left_out {
                                println!("  {}: {}", printable(&l.name), l.why);
                            }
                        }
                        if let Some(note) = not_in_a_logical_backup(manifest_engine(m)) {
                            println!("\nNot in this backup: {note}");
                        }
                    } else if info.state() == BackupState::Completed {
                        println!("\nPass --key-file to see its engine, parts and row counts.");
                    }
                }
            }
        }
        Command::Download {
            id,
            key_file,
            out,
            format,
            force,
            parallel,
        } => {
            download(
                &api,
                &id,
                &key_file,
                out,
                format,
                force,
                parallel as usize,
                output,
            )
            .await?;
        }
        Command::Restore {
            id,
            to_host,
            to_region,
            in_place,
            yes,
            wait,
            timeout,
        } => {
            let job = api
                .call("RestoreBackup", |mut c| {
                    let req = RestoreBackupRequest {
                        backup_id: id.clone(),
                        to_host: to_host.clone().unwrap_or_default(),
                        to_region: to_region.clone().unwrap_or_default(),
                        in_place,
                        yes,
                    };
                    async move { c.restore_backup(req).await }
                })
                .await?;
            if !wait {
                match output {
                    Output::Json => output.json(&job_json(&job)),
                    Output::Table => {
                        output::print_fields(&[
                            ("job", json!(job.id)),
                            ("backup", json!(job.backup_id)),
                            ("target host", json!(job.host)),
                            ("in place", json!(job.in_place)),
                            ("state", json!(job.state())),
                        ]);
                        if !job.after_job.is_empty() {
                            println!(
                                "\nIt starts once the pre-restore backup (job {}) completes.",
                                job.after_job
                            );
                        }
                        println!(
                            "\nFollow it with `strongbox restore show {}` (or pass --wait).",
                            job.id
                        );
                    }
                }
                return Ok(());
            }
            output.note(&format!(
                "restore job {} of backup {id} onto {}",
                job.id,
                if job.host.is_empty() {
                    "a spare"
                } else {
                    &job.host
                }
            ));
            let done =
                restore::wait_job(&api, &job.id, output, Duration::from_secs(timeout)).await?;
            restore::report_restore(&done, output)?;
        }
        Command::Purge { id, yes } => {
            if !yes {
                bail!(
                    "purging deletes backup {id} for good (its chunks go once no other backup uses them); run `strongbox backup purge {id} --yes` to confirm"
                );
            }
            let purged = api
                .call_status("PurgeBackup", |mut c| {
                    let backup_id = id.clone();
                    async move { c.purge_backup(PurgeBackupRequest { backup_id }).await }
                })
                .await;
            match purged {
                Ok(_) => {}
                // Held or locked: the coordinators' sentence says why and what to do, as is.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    bail!("{}", s.message())
                }
                Err(s) => return Err(crate::connect::status_error(s).context("PurgeBackup failed")),
            }
            output.record(&[("purged", json!(id))]);
        }
        Command::Hold { id, reason } => {
            let b = hold(&api, &id, true, reason.unwrap_or_default()).await?;
            print_backup(&b, output);
        }
        Command::Unhold { id } => {
            let b = hold(&api, &id, false, String::new()).await?;
            print_backup(&b, output);
        }
    }
    Ok(())
}

/// The shared hostile-name corpus of the integration tests, for the download tests below.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/integration/src/hostile.rs"]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_per_engine() {
        use PartKind::*;
        assert_eq!(
            file_for(Engine::Postgres, Globals, "globals", Format::Native),
            ("globals.sql".into(), false)
        );
        assert_eq!(
            file_for(Engine::Postgres, Database, "app", Format::Native),
            ("app.dump".into(), false)
        );
        assert_eq!(
            file_for(Engine::Postgres, Database, "app", Format::Sql),
            ("app.sql".into(), true)
        );
        assert_eq!(
            file_for(Engine::Postgres, Globals, "globals", Format::Sql),
            ("globals.sql".into(), false)
        );
        assert_eq!(
            file_for(Engine::Mysql, Globals, "grants", Format::Native),
            ("grants.sql".into(), false)
        );
        assert_eq!(
            file_for(Engine::Mysql, Database, "shop", Format::Sql),
            ("shop.sql".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, "demo.db", Format::Native),
            ("demo.sqlite3".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, "demo.sqlite3", Format::Native),
            ("demo.sqlite3".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, "Demo.SQLITE", Format::Native),
            ("Demo.sqlite3".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, "notes", Format::Native),
            ("notes.sqlite3".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, ".db", Format::Native),
            ("_.db.sqlite3".into(), false)
        );
    }

    #[test]
    fn keep_column_says_why_or_when() {
        let now = 1_700_000_000_000;
        let b = |held: bool, kept: &str, expires: u64| BackupInfo {
            held,
            kept_because: kept.into(),
            expires_unix_ms: expires,
            ..Default::default()
        };
        assert_eq!(keep_label(&b(true, "hold", 0), now), "hold");
        assert_eq!(keep_label(&b(true, "", 0), now), "hold");
        assert_eq!(
            keep_label(&b(false, "daily 2023-11-14, monthly 2023-11", now + 1), now),
            "daily 2023-11-14"
        );
        assert_eq!(keep_label(&b(false, "manual", 0), now), "manual");
        assert_eq!(
            keep_label(&b(false, "", now + 3 * 86_400_000), now),
            "expires in 3 days"
        );
        assert_eq!(keep_label(&b(false, "", now - 1), now), "expiring");
        assert_eq!(keep_label(&b(false, "", 0), now), "-");
    }

    #[test]
    fn retention_lines_of_show() {
        let now = 1_700_000_000_000;
        let keys = |f: Vec<(&'static str, Value)>| -> Vec<String> {
            f.iter()
                .map(|(k, v)| format!("{k}: {}", output::text(v)))
                .collect()
        };
        let held = BackupInfo {
            held: true,
            hold_reason: "INC-42".into(),
            kept_because: "hold, daily 2023-11-14".into(),
            locked_until_unix_ms: now + 2 * 86_400_000,
            ..Default::default()
        };
        assert_eq!(
            keys(retention_fields(&held, now)),
            [
                "kept because: hold, daily 2023-11-14",
                "held: yes (INC-42)",
                "locked until: 2023-11-16T22:13:20Z (in 2 days)",
            ]
        );
        let daily = BackupInfo {
            kept_because: "daily 2023-11-14".into(),
            expires_unix_ms: now + 30 * 86_400_000,
            ..Default::default()
        };
        assert_eq!(
            keys(retention_fields(&daily, now)),
            [
                "kept because: daily 2023-11-14",
                "expires: 2023-12-14T22:13:20Z (in 1 month)",
            ]
        );
        let held = BackupInfo {
            held: true,
            ..Default::default()
        };
        assert_eq!(keys(retention_fields(&held, now)), ["held: yes"]);
        let expiring = BackupInfo {
            expires_unix_ms: now + 3_600_000,
            locked_until_unix_ms: now - 1,
            ..Default::default()
        };
        assert_eq!(
            keys(retention_fields(&expiring, now)),
            ["expires: 2023-11-14T23:13:20Z (in 1 hour)"]
        );
        assert!(retention_fields(&BackupInfo::default(), now).is_empty());
    }

    #[test]
    fn part_names_cannot_leave_the_folder() {
        assert_eq!(safe_stem("../../etc/passwd"), "_.._.._etc_passwd");
        assert_eq!(safe_stem(".."), "_..");
        assert_eq!(safe_stem(""), "part");
        assert_eq!(safe_stem("a b/c"), "a_b_c");
        for name in ["../x", "/abs", "..", ".", "a/../../b"] {
            let (f, _) = file_for(Engine::Mysql, PartKind::Database, name, Format::Native);
            assert!(!f.contains('/') && !f.starts_with('.'), "{name} → {f}");
        }
    }

    #[test]
    fn hostile_part_names_make_safe_file_names() {
        let mut names = hostile::mariadb_names();
        names.extend(hostile::postgres_names());
        names
            .extend(["..", ".", "", "/", "../../x", "-", "--", &"é".repeat(300)].map(String::from));
        for name in &names {
            for (engine, kind) in [
                (Engine::Postgres, PartKind::Globals),
                (Engine::Postgres, PartKind::Database),
                (Engine::Mysql, PartKind::Database),
                (Engine::Sqlite, PartKind::File),
            ] {
                for format in [Format::Native, Format::Sql] {
                    let (f, _) = file_for(engine, kind, name, format);
                    assert!(
                        !f.is_empty()
                            && !f.contains('/')
                            && !f.starts_with('.')
                            && !f.starts_with('-')
                            && f != ".."
                            && f.len() <= MAX_STEM + 8
                            && f.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                        "{name:?} → {f:?}"
                    );
                }
            }
        }
    }

    /// Every printed load command, run by bash against stand-ins of the tools that record
    /// their arguments (and stdin): each tool gets exactly the words meant for it, whatever
    /// the part's name and the output folder, and nothing else runs.
    #[test]
    fn printed_load_commands_keep_hostile_names_as_data() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        let seen = tmp.path().join("seen");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::create_dir_all(&seen).expect("seen");
        for tool in ["createdb", "psql", "pg_restore", "mariadb", "sqlite3"] {
            let stub = bin.join(tool);
            std::fs::write(
                &stub,
                format!(
                    "#!/bin/sh\nout={}/{tool}\n: > \"$out\"\n\
                     for a in \"$@\"; do printf '%s\\0' \"$a\" >> \"$out\"; done\n\
                     if [ {tool} = mariadb ]; then cat > \"$out.stdin\"; fi\n",
                    shell_quote(&seen.to_string_lossy())
                ),
            )
            .expect("stub");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        // The output folder is hostile too (the operator's -o, or a relative one).
        let out = tmp.path().join("-o dir $(touch x) it's\n\"q\"");
        std::fs::create_dir_all(&out).expect("out");
        let recorded = |tool: &str| -> Option<Vec<String>> {
            let bytes = std::fs::read(seen.join(tool)).ok()?;
            Some(
                bytes
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .split_last()
                    .map(|(_, args)| args.to_vec())
                    .unwrap_or_default(),
            )
        };
        let mut names = hostile::mariadb_names();
        names.extend(hostile::postgres_names());
        for name in &names {
            for (engine, kind, to_sql) in [
                (Engine::Postgres, PartKind::Globals, false),
                (Engine::Postgres, PartKind::Database, true),
                (Engine::Postgres, PartKind::Database, false),
                (Engine::Mysql, PartKind::Database, false),
                (Engine::Sqlite, PartKind::File, false),
            ] {
                let format = if to_sql { Format::Sql } else { Format::Native };
                let (file, _) = file_for(engine, kind, name, format);
                let path = out.join(&file);
                std::fs::write(&path, name.as_bytes()).expect("file");
                let abs = path.to_string_lossy().into_owned();
                for entry in std::fs::read_dir(&seen).expect("seen") {
                    std::fs::remove_file(entry.expect("entry").path()).expect("clear");
                }
                let hint = load_hint(engine, kind, Path::new(&path), to_sql, name);
                assert!(!hint.contains('\n') && !hint.contains('\r'), "{hint:?}");
                let run = std::process::Command::new("bash")
                    .arg("-c")
                    .arg(&hint)
                    .env("PATH", format!("{}:/usr/bin:/bin", bin.to_string_lossy()))
                    .current_dir(tmp.path())
                    .output()
                    .expect("bash");
                assert!(run.status.success(), "{hint}: {:?}", run);
                let words = |w: &[&str]| Some(w.iter().map(|s| s.to_string()).collect());
                match (engine, kind, to_sql) {
                    (Engine::Postgres, PartKind::Globals, _) => {
                        assert_eq!(
                            recorded("psql"),
                            words(&["-d", "postgres", "-f", &abs]),
                            "{hint}"
                        );
                    }
                    (Engine::Postgres, _, true) => {
                        // The SQL makes its own database: the name is in the file, not argv.
                        assert_eq!(recorded("createdb"), None, "{hint}");
                        assert_eq!(
                            recorded("psql"),
                            words(&["-d", "postgres", "-f", &abs]),
                            "{hint}"
                        );
                    }
                    (Engine::Postgres, _, false) => {
                        assert_eq!(
                            recorded("pg_restore"),
                            words(&["-d", "postgres", "--create", "--no-tablespaces", "--", &abs]),
                            "{hint}"
                        );
                    }
                    (Engine::Mysql, _, _) => {
                        assert_eq!(recorded("mariadb"), words(&["--binary-mode"]), "{hint}");
                        assert_eq!(
                            std::fs::read(seen.join("mariadb.stdin")).expect("stdin"),
                            name.as_bytes(),
                            "{hint}"
                        );
                    }
                    _ => {
                        assert_eq!(recorded("sqlite3"), words(&[&abs]), "{hint}");
                    }
                }
                assert!(
                    !Path::new(hostile::PWNED_FILE).exists() && !tmp.path().join("x").exists(),
                    "{hint} ran a command of the name"
                );
            }
        }
    }

    #[test]
    fn shell_words_round_trip() {
        for s in [
            "plain",
            "",
            "it's",
            "a\nb",
            "\u{1b}[31m",
            "tab\t\\'x",
            "é\u{85}",
        ] {
            let q = shell_quote(s);
            assert!(!q.contains('\n') && !q.contains('\u{1b}'), "{q}");
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("printf %s {q}"))
                .output()
                .expect("bash");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "{q}");
        }
        assert_eq!(printable("a\nb\u{1b}"), "a\\nb\\u{1b}");
    }

    /// An empty part of a manifest, for download plans.
    fn part(name: &str, kind: PartKind) -> Part {
        Part {
            name: name.into(),
            kind: kind as i32,
            chunks: vec![],
            tables: vec![],
        }
    }

    #[test]
    fn plan_makes_names_unique() {
        let m = Manifest {
            engine: "postgres".into(),
            parts: vec![
                part("globals", PartKind::Globals),
                part("a/b", PartKind::Database),
                part("a b", PartKind::Database),
            ],
            ..Default::default()
        };
        let names: Vec<String> = plan(&m, Format::Native)
            .into_iter()
            .map(|f| f.file_name)
            .collect();
        assert_eq!(names, ["globals.sql", "a_b.dump", "a_b-2.dump"]);
    }

    #[test]
    fn mariadb_views_files_are_planned_unique_and_split_by_statements() {
        let m = Manifest {
            engine: "mysql".into(),
            parts: vec![
                part("grants", PartKind::Globals),
                part("a", PartKind::Database),
                part("a.views", PartKind::Database),
            ],
            ..Default::default()
        };
        let files: Vec<(String, Option<String>)> = plan(&m, Format::Native)
            .into_iter()
            .map(|f| (f.file_name, f.views_file))
            .collect();
        assert_eq!(
            files,
            [
                ("grants.sql".to_string(), None),
                ("a.sql".to_string(), Some("a.views.sql".to_string())),
                (
                    "a.views-2.sql".to_string(),
                    Some("a.views-2.views.sql".to_string())
                ),
            ]
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let head = "/*!40101 SET NAMES utf8mb4 */;\nCREATE DATABASE `a`;\n";
        let body = "USE `a`;\nCREATE TABLE `t` (x INT);\nINSERT INTO `t` VALUES ('USE `b`;');\n";
        let views = "USE `a`;\n/*!50001 CREATE VIEW `v` AS select 1 */;\n";
        let path = dir.path().join("a.sql");
        std::fs::write(&path, format!("{head}{body}{views}")).expect("write");
        assert_eq!(
            split_views(&path).expect("split"),
            Some(format!("{head}{views}").into_bytes())
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{head}{body}")
        );
        // No views: nothing split, nothing cut.
        assert_eq!(split_views(&path).expect("split"), None);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{head}{body}")
        );
    }

    #[test]
    fn staging_removes_temps_unless_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        let tmp = Staging::temp_for(&out, "a.sql");
        std::fs::write(&tmp, b"x").expect("write");
        {
            let _s = Staging {
                files: vec![(tmp.clone(), out.join("a.sql"))],
                scratch: vec![],
                created_dir: Some(out.clone()),
                committed: false,
            };
        }
        assert!(!tmp.exists());
        assert!(!out.exists(), "the folder we created goes too");

        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(&tmp, b"x").expect("write");
        std::fs::write(out.join("a.sql"), b"old").expect("write");
        let mut s = Staging {
            files: vec![(tmp.clone(), out.join("a.sql"))],
            scratch: vec![],
            created_dir: None,
            committed: false,
        };
        assert!(s.commit(false).is_err(), "refuses to replace");
        s.commit(true).expect("replaces with force");
        drop(s);
        assert_eq!(std::fs::read(out.join("a.sql")).expect("read"), b"x");
    }

    #[test]
    fn initdbs_databases_replace_the_fresh_servers_own() {
        let path = Path::new("/dl/postgres.dump");
        assert_eq!(
            load_hint(Engine::Postgres, PartKind::Database, path, false, "postgres"),
            "pg_restore -d template1 --clean --if-exists --create --no-tablespaces -- /dl/postgres.dump"
        );
        let t = load_hint(
            Engine::Postgres,
            PartKind::Database,
            Path::new("/dl/template1.dump"),
            false,
            "template1",
        );
        assert!(t.starts_with("psql -d postgres -c 'ALTER DATABASE template1 IS_TEMPLATE false' && pg_restore -d postgres --clean"), "{t}");
        assert_eq!(
            load_hint(
                Engine::Postgres,
                PartKind::Database,
                Path::new("/dl/postgres.sql"),
                true,
                "postgres"
            ),
            "psql -d template1 -f /dl/postgres.sql"
        );
        assert_eq!(
            load_hint(
                Engine::Postgres,
                PartKind::Database,
                Path::new("/dl/shop.dump"),
                false,
                "shop"
            ),
            "pg_restore -d postgres --create --no-tablespaces -- /dl/shop.dump"
        );
    }
}
