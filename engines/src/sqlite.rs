//! SQLite: a service is one database file. Backup takes a consistent copy with the online
//! backup API and streams it as one part; restore writes the part to a new file and checks it;
//! an in-place restore then copies that file into the live one, again with the backup API.
//!
//! Invariants:
//! - **Consistent copy.** The copy is made in one backup step (`sqlite3_backup_step(-1)`),
//!   which reads the whole database inside one read transaction: writers (WAL mode) go on
//!   while it runs, and the copy is the database as of one commit. The table stats (every
//!   table of `sqlite_master` not named `sqlite_%`, exact `count(*)`) are counted on that
//!   copy, so they describe exactly the streamed bytes.
//! - A backup opens the source read-only; nothing here writes next to it. Only an in-place
//!   restore writes the live file, and only through the backup API.
//! - The copy lives in its own temp folder (removed when the backup is closed or dropped) and
//!   is the only local file a backup writes (see [`super`]). Copying and counting run on the
//!   blocking pool.
//! - A restore writes `<dir>/<name>` through a temp file in the same folder, fsynced and then
//!   renamed: the file is complete or absent. It never overwrites an existing file.
//! - **In place**, that file is written in the scratch folder the same way, then copied
//!   into the live file in one backup step, i.e. one write transaction on the live file:
//!   connections open on it see the old database or the restored one, never a mix, and the
//!   file keeps its journal mode (WAL stays WAL). The copy in the scratch folder is removed
//!   after. Verification (integrity check, row counts) runs on the live file.
//! - **Names are data.** Paths (the service's `path`, restore folders, part names) reach
//!   SQLite only through its API, and only as absolute paths ([`db_path`]): the bundled
//!   SQLite takes a name starting with `file:` as a URI (`file:app.db?mode=memory` would open
//!   an empty database, or in place write another file). No path is ever SQL text (no
//!   `VACUUM INTO`, no `ATTACH`) and no `sqlite3` tool runs. Table names reach SQL only as
//!   `"…"` identifiers with `"` doubled; a part name is a plain file name
//!   ([`check_file_name`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rusqlite::{Connection as Db, OpenFlags};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::{
    compare_stats, BackupRun, Connection, Dump, Engine, EngineKind, PartKind, PartPlan, Probe,
    RestoreTarget, Role, ServiceSpec, TableStat, Verification,
};
use crate::error::{Error, Result};

/// How long the copy may wait for a writer that holds the database locked.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

fn sqlite_error(path: &Path, what: &str, e: rusqlite::Error) -> Error {
    Error::Database {
        engine: "SQLite",
        target: path.display().to_string(),
        message: format!("{what}: {e}"),
    }
}

/// `path` as SQLite must be given it: absolute, so that no name is read as a `file:` URI
/// (the bundled SQLite is built with `SQLITE_USE_URI`). The path itself is not resolved
/// (symbolic links stay). Should the current folder be unknown, `./` in front does as well.
pub fn db_path(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| Path::new(".").join(path))
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Other(format!("a blocking SQLite task failed: {e}"))
}

/// Exact row counts of every user table of `db`.
fn count_tables(db: &Db, path: &Path) -> Result<Vec<TableStat>> {
    let names: Vec<String> = {
        let mut stmt = db
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
            .map_err(|e| sqlite_error(path, "listing tables", e))?;
        let rows = stmt
            .query_map([], |r| Ok(r.get_ref(0)?.as_bytes()?.to_vec()))
            .map_err(|e| sqlite_error(path, "listing tables", e))?;
        let raw: Vec<Vec<u8>> = rows
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| sqlite_error(path, "listing tables", e))?;
        raw.into_iter()
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|e| Error::Database {
                    engine: "SQLite",
                    target: path.display().to_string(),
                    message: format!(
                        "table {:?} has a name that is not UTF-8, which strongbox cannot \
                         record: rename it",
                        String::from_utf8_lossy(e.as_bytes())
                    ),
                })
            })
            .collect::<Result<_>>()?
    };
    let mut stats = Vec::with_capacity(names.len());
    for name in names {
        let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
        let n: i64 = db
            .query_row(&sql, [], |r| r.get(0))
            .map_err(|e| sqlite_error(path, &format!("counting the rows of {name:?}"), e))?;
        stats.push(TableStat {
            name,
            rows: u64::try_from(n).unwrap_or(0),
        });
    }
    Ok(stats)
}

/// A plain file name (no folder part, not `.`/`..`), as a part name must be.
fn check_file_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Other(format!(
            "{name:?} is not a plain file name; an SQLite part is named after its file"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

/// An SQLite database file on this host.
pub struct Sqlite {
    spec: ServiceSpec,
    path: PathBuf,
}

impl Sqlite {
    pub fn new(spec: ServiceSpec) -> Result<Sqlite> {
        let path = match &spec.path {
            Some(p) => p.clone(),
            None => {
                return Err(Error::Config {
                    service: spec.name.clone(),
                    message: "an SQLite service needs `path`, the database file".into(),
                })
            }
        };
        if path.file_name().is_none() {
            return Err(Error::Config {
                service: spec.name.clone(),
                message: format!("`path` {} does not name a file", path.display()),
            });
        }
        Ok(Sqlite {
            path: db_path(&path),
            spec,
        })
    }

    fn open_source(path: &Path) -> Result<Db> {
        let path = &db_path(path);
        if !path.is_file() {
            return Err(Error::Database {
                engine: "SQLite",
                target: path.display().to_string(),
                message: "no such file: check the service's `path`".into(),
            });
        }
        let db = Db::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sqlite_error(path, "opening", e))?;
        db.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite_error(path, "setting the busy timeout", e))?;
        Ok(db)
    }
}

#[async_trait::async_trait]
impl Engine for Sqlite {
    fn kind(&self) -> EngineKind {
        EngineKind::Sqlite
    }

    fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    async fn probe(&self) -> Result<Probe> {
        let path = self.path.clone();
        let healthy = tokio::task::spawn_blocking(move || -> Result<()> {
            let db = Sqlite::open_source(&path)?;
            db.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))
                .map_err(|e| sqlite_error(&path, "reading the schema", e))?;
            Ok(())
        })
        .await
        .map_err(join_error)?;
        if let Err(e) = &healthy {
            tracing::warn!(service = %self.spec.name, error = %e, "SQLite database does not open");
        }
        Ok(Probe {
            role: Role::Standalone,
            healthy: healthy.is_ok(),
            version: rusqlite::version().to_string(),
        })
    }

    async fn begin_backup(&self) -> Result<Box<dyn BackupRun>> {
        let source = self.path.clone();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "database.sqlite3".into());
        let copy_name = name.clone();
        let started = Instant::now();
        let (tmp, copy, stats) = tokio::task::spawn_blocking(move || -> Result<_> {
            let tmp = tempfile::Builder::new()
                .prefix("strongbox-sqlite-")
                .tempdir()
                .map_err(|source| Error::Io {
                    what: "creating a temp folder for the consistent copy",
                    path: std::env::temp_dir(),
                    source,
                })?;
            let copy = db_path(&tmp.path().join(&copy_name));
            consistent_copy(&source, &copy)?;
            let db = Db::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| sqlite_error(&copy, "opening the copy", e))?;
            let stats = count_tables(&db, &copy)?;
            Ok((tmp, copy, stats))
        })
        .await
        .map_err(join_error)??;
        tracing::info!(service = %self.spec.name, tables = stats.len(), elapsed = ?started.elapsed(), "SQLite consistent copy made");
        Ok(Box::new(SqliteBackup {
            service: self.spec.name.clone(),
            parts: vec![PartPlan {
                name,
                kind: PartKind::File,
            }],
            copy,
            stats,
            tmp: Some(tmp),
        }))
    }

    async fn in_place(&self, scratch: &Path) -> Result<Box<dyn RestoreTarget>> {
        Ok(Box::new(self.open_in_place(scratch).await?))
    }
}

/// Copies all of `src` into `dst` in one step of the online backup API (one transaction on
/// each), retrying while a lock is in the way for up to [`BUSY_TIMEOUT`]. `locked` is the
/// error message for a lock that stays; `path` names the file that errors are about.
fn backup_in_one_step(src: &Db, dst: &mut Db, path: &Path, locked: &str) -> Result<()> {
    use rusqlite::backup::{Backup, StepResult};
    let backup = Backup::new(src, dst).map_err(|e| sqlite_error(path, "starting the copy", e))?;
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match backup
            .step(-1)
            .map_err(|e| sqlite_error(path, "copying", e))?
        {
            StepResult::Done => return Ok(()),
            StepResult::More => continue,
            StepResult::Busy | StepResult::Locked => {
                if Instant::now() >= deadline {
                    return Err(Error::Database {
                        engine: "SQLite",
                        target: path.display().to_string(),
                        message: locked.to_string(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return Ok(()),
        }
    }
}

/// Copies `source` to `dest` in one step of the online backup API (one read transaction).
fn consistent_copy(source: &Path, dest: &Path) -> Result<()> {
    let src = Sqlite::open_source(source)?;
    let dest = &db_path(dest);
    let mut dst = Db::open(dest).map_err(|e| sqlite_error(dest, "creating the copy", e))?;
    backup_in_one_step(
        &src,
        &mut dst,
        source,
        &format!(
            "the database stayed locked for {BUSY_TIMEOUT:?}; a writer holds an exclusive lock \
             (rollback journal mode?): try again, or switch it to WAL mode"
        ),
    )?;
    // One self-contained file: no -wal beside it.
    dst.query_row("PRAGMA journal_mode = DELETE", [], |r| {
        r.get::<_, String>(0)
    })
    .map_err(|e| sqlite_error(dest, "finishing the copy", e))?;
    dst.close()
        .map_err(|(_, e)| sqlite_error(dest, "closing the copy", e))?;
    Ok(())
}

struct SqliteBackup {
    service: String,
    parts: Vec<PartPlan>,
    copy: PathBuf,
    stats: Vec<TableStat>,
    /// Removed on close or drop.
    tmp: Option<tempfile::TempDir>,
}

#[async_trait::async_trait]
impl BackupRun for SqliteBackup {
    fn parts(&self) -> &[PartPlan] {
        &self.parts
    }

    async fn dump(&mut self, part: &PartPlan) -> Result<Dump> {
        if !self.parts.contains(part) {
            return Err(Error::Other(format!(
                "part {:?} is not a part of this backup",
                part.name
            )));
        }
        let file = tokio::fs::File::open(&self.copy)
            .await
            .map_err(|source| Error::Io {
                what: "opening the consistent copy",
                path: self.copy.clone(),
                source,
            })?;
        let stats = self.stats.clone();
        Ok(Dump {
            reader: Box::new(file),
            tap: None,
            finish: async move { Ok(stats) }.boxed(),
        })
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            tokio::task::spawn_blocking(move || tmp.close())
                .await
                .map_err(join_error)?
                .map_err(|source| Error::Io {
                    what: "removing the consistent copy",
                    path,
                    source,
                })?;
        }
        tracing::info!(service = %self.service, "SQLite backup closed");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// A new database file that a restore writes.
pub struct SqliteTarget {
    file: PathBuf,
    loaded: bool,
}

/// Prepares `<dir>/<name>` (the folder is created; the file must not exist).
pub async fn provision(dir: &Path, name: &str) -> Result<Box<dyn RestoreTarget>> {
    Ok(Box::new(new_file(dir, name).await?))
}

async fn new_file(dir: &Path, name: &str) -> Result<SqliteTarget> {
    check_file_name(name)?;
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(strongbox_core::private::PRIVATE_DIR)
        .create(dir)
        .await
        .map_err(|source| Error::Io {
            what: "creating the restore folder",
            path: dir.to_path_buf(),
            source,
        })?;
    let file = db_path(&dir.join(name));
    if tokio::fs::try_exists(&file).await.unwrap_or(true) {
        return Err(Error::Other(format!(
            "{} exists already (or cannot be checked): a restore always writes a new file; \
             choose another folder",
            file.display()
        )));
    }
    Ok(SqliteTarget {
        file,
        loaded: false,
    })
}

#[async_trait::async_trait]
impl RestoreTarget for SqliteTarget {
    fn connection(&self) -> Connection {
        Connection {
            engine: EngineKind::Sqlite,
            host: self.file.display().to_string(),
            port: 0,
            user: String::new(),
            password_file: None,
            data_dir: self.file.clone(),
        }
    }

    async fn load(
        &mut self,
        part: &PartPlan,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        if part.kind != PartKind::File {
            return Err(Error::Other(format!(
                "an SQLite restore loads one file part, not {:?} of kind {:?}",
                part.name, part.kind
            )));
        }
        if self.loaded {
            return Err(Error::Other(
                "an SQLite restore loads exactly one part, and one was loaded already".into(),
            ));
        }
        let dir = self.file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = self
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.partial"));
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { what, path, source }
        };
        let result = async {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(strongbox_core::private::PRIVATE_FILE)
                .open(&temp)
                .await
                .map_err(io("creating", &temp))?;
            let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
            tokio::io::copy(&mut reader, &mut out)
                .await
                .map_err(|source| Error::Stream {
                    what: format!("receiving {} into {}", part.name, temp.display()),
                    source,
                })?;
            out.flush().await.map_err(io("writing", &temp))?;
            out.get_ref()
                .sync_all()
                .await
                .map_err(io("syncing", &temp))?;
            drop(out);
            if tokio::fs::try_exists(&self.file).await.unwrap_or(true) {
                return Err(Error::Other(format!(
                    "{} appeared while the restore wrote it; not overwriting it",
                    self.file.display()
                )));
            }
            tokio::fs::rename(&temp, &self.file)
                .await
                .map_err(io("renaming the restored file into place", &self.file))?;
            let d = tokio::fs::File::open(&dir)
                .await
                .map_err(io("opening", &dir))?;
            d.sync_all().await.map_err(io("syncing the folder", &dir))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        } else {
            self.loaded = true;
        }
        result
    }

    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        let v = verify_file(&self.file, expected).await?;
        tracing::info!(file = %self.file.display(), tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "verification done");
        Ok(v)
    }
}

/// Row counts compared with `expected`, and `PRAGMA integrity_check`, on `file` (opened
/// read-only, in one read transaction).
async fn verify_file(file: &Path, expected: &[TableStat]) -> Result<Verification> {
    let file = db_path(file);
    let expected = expected.to_vec();
    tokio::task::spawn_blocking(move || -> Result<Verification> {
        let db = Db::open_with_flags(&file, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sqlite_error(&file, "opening the restored file", e))?;
        db.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite_error(&file, "setting the busy timeout", e))?;
        db.execute_batch("BEGIN")
            .map_err(|e| sqlite_error(&file, "starting a read transaction", e))?;
        let found: HashMap<String, u64> = count_tables(&db, &file)?
            .into_iter()
            .map(|s| (s.name, s.rows))
            .collect();
        let mut v = compare_stats(&expected, &found);
        let results: Vec<String> = {
            let mut stmt = db
                .prepare("PRAGMA integrity_check")
                .map_err(|e| sqlite_error(&file, "checking integrity", e))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| sqlite_error(&file, "checking integrity", e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| sqlite_error(&file, "checking integrity", e))?
        };
        let _ = db.execute_batch("COMMIT");
        let check_ok = results == ["ok"];
        v.engine_check = format!("PRAGMA integrity_check: {}", results.join("; "));
        v.ok = v.mismatches.is_empty() && check_ok;
        Ok(v)
    })
    .await
    .map_err(join_error)?
}

// ---------------------------------------------------------------------------------------------
// In-place restore: the service's own file
// ---------------------------------------------------------------------------------------------

/// The service's own (live) database file as a restore's target ([`Engine::in_place`]).
pub struct SqliteInPlace {
    service: String,
    live: PathBuf,
    /// The restored file in the scratch folder, written by the fresh-file loader.
    copy: SqliteTarget,
}

impl Sqlite {
    async fn open_in_place(&self, scratch: &Path) -> Result<SqliteInPlace> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "database.sqlite3".into());
        let folder = self.path.parent().unwrap_or(Path::new("."));
        if !folder.as_os_str().is_empty() && !folder.is_dir() {
            return Err(Error::Config {
                service: self.spec.name.clone(),
                message: format!(
                    "the folder {} of `path` does not exist: create it or fix `path`",
                    folder.display()
                ),
            });
        }
        let copy = new_file(scratch, &name).await?;
        tracing::info!(service = %self.spec.name, file = %self.path.display(), "in-place restore into the live SQLite file");
        Ok(SqliteInPlace {
            service: self.spec.name.clone(),
            live: self.path.clone(),
            copy,
        })
    }
}

/// Copies the restored file `copy` into `live` (created if missing) in one backup step.
fn replace_live(copy: &Path, live: &Path) -> Result<()> {
    let (copy, live) = (&db_path(copy), &db_path(live));
    let src = Db::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| sqlite_error(copy, "opening the restored file", e))?;
    let mut dst = Db::open_with_flags(
        live,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(|e| sqlite_error(live, "opening the live file", e))?;
    dst.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sqlite_error(live, "setting the busy timeout", e))?;
    backup_in_one_step(
        &src,
        &mut dst,
        live,
        &format!(
            "the live database stayed locked for {BUSY_TIMEOUT:?}: a connection holds a \
             transaction open on it; end it (or stop the application) and retry"
        ),
    )?;
    dst.close()
        .map_err(|(_, e)| sqlite_error(live, "closing the live file", e))?;
    Ok(())
}

#[async_trait::async_trait]
impl RestoreTarget for SqliteInPlace {
    /// The live file (as `host` and as `data_dir`).
    fn connection(&self) -> Connection {
        Connection {
            engine: EngineKind::Sqlite,
            host: self.live.display().to_string(),
            port: 0,
            user: String::new(),
            password_file: None,
            data_dir: self.live.clone(),
        }
    }

    async fn load(
        &mut self,
        part: &PartPlan,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        self.copy.load(part, reader).await?;
        let (copy, live) = (self.copy.file.clone(), self.live.clone());
        let started = Instant::now();
        tokio::task::spawn_blocking(move || replace_live(&copy, &live))
            .await
            .map_err(join_error)??;
        if let Err(e) = tokio::fs::remove_file(&self.copy.file).await {
            tracing::warn!(service = %self.service, file = %self.copy.file.display(), error = %e, "could not remove the restored copy");
        }
        tracing::info!(service = %self.service, file = %self.live.display(), elapsed = ?started.elapsed(), "live SQLite file replaced");
        Ok(())
    }

    /// Runs on the live file: writes made to it since the restore show up as differences.
    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        let v = verify_file(&self.live, expected).await?;
        tracing::info!(service = %self.service, tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "in-place verification done");
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_read_as_uris() {
        for p in [
            "file:app.db?mode=memory",
            "-x.db",
            "a/file:b",
            "/abs/file:c",
        ] {
            let got = db_path(Path::new(p));
            assert!(got.is_absolute(), "{p} → {}", got.display());
            assert!(
                got.ends_with(p.trim_start_matches('/')),
                "{p} → {}",
                got.display()
            );
        }
    }

    #[test]
    fn part_names_are_plain_file_names() {
        assert!(check_file_name("app.db").is_ok());
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compare_reports_differences_and_missing_tables() {
        let expected = vec![
            TableStat {
                name: "a.public.t".into(),
                rows: 3,
            },
            TableStat {
                name: "a.public.u".into(),
                rows: 1,
            },
            TableStat {
                name: "a.public.gone".into(),
                rows: 0,
            },
        ];
        let found: HashMap<String, u64> =
            [("a.public.t".to_string(), 3), ("a.public.u".to_string(), 2)].into();
        let v = compare_stats(&expected, &found);
        assert_eq!(v.tables_checked, 3);
        assert_eq!(v.rows_checked, 5);
        assert_eq!(
            v.mismatches,
            vec![
                ("a.public.u".to_string(), 1, 2),
                ("a.public.gone (missing)".to_string(), 0, 0)
            ]
        );
    }
}
