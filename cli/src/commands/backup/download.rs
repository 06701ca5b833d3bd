//! `strongbox backup download`: fetches a backup's sealed manifest and chunks from the
//! coordinators and opens them here with the fleet key (coordinators hold ciphertext only),
//! writing the engine's native files: PostgreSQL `globals.sql` and `<db>.dump` (or `<db>.sql`
//! with `--format sql`), MariaDB `<part>.sql` (and `<db>.views.sql`), SQLite
//! `<name>.sqlite3`. Which file each part becomes, and how to load it, is [`super::plan`].
//!
//! Invariants:
//! - nothing is written before the manifest opened with the key given (a wrong key writes
//!   nothing), and no existing file is replaced without `--force`;
//! - every file is written under a temporary name and renamed only once every part of the
//!   backup was fetched, checked (AEAD tag and chunk id) and written: a failed or interrupted
//!   download (Ctrl-C) leaves no partial file, and removes the folder it created;
//! - decrypting and decompressing run on the blocking pool (the one read path,
//!   `strongbox_core::read`); at most `--parallel` chunks are in flight, written in order.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use futures::StreamExt;
use strongbox_core::ids::ChunkId;
use strongbox_core::manifest::{Part, PartKind};
use strongbox_core::read::{part_chunks, ServiceKeySet};
use strongbox_engines::tools;
use strongbox_proto::v1::{BackupState, Engine};
use tokio::io::AsyncWriteExt;

use super::plan::{load_hint, plan, safe_stem, split_views, PG_INITDB_DATABASES};
use super::{fetch_sealed, load_keyring, open_manifest, show_backup};
use crate::connect::Api;
use crate::grammar::backup::Format;
use crate::output::{printable, Output};
use crate::progress::Progress;
use crate::views::download::{DownloadView, DownloadedFile};
use crate::views::manifest::{kind_name, manifest_engine};

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

#[allow(clippy::too_many_arguments)]
pub async fn download(
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
    if format == Format::Sql && manifest_engine(&m) == Engine::Sqlite {
        bail!(
            "--format sql is for PostgreSQL backups (converted from pg_dump's archive); backup \
             {id} is of SQLite and downloads as its database file: download it without \
             --format, then `sqlite3 FILE .dump` gives SQL (nothing was written)"
        );
    }
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
    let engine = manifest_engine(&m);
    let mut listed: Vec<(u8, DownloadedFile)> = Vec::new();
    for (f, path, bytes, views) in &written {
        let part = &m.parts[f.part];
        let kind = PartKind::try_from(part.kind).unwrap_or(PartKind::Unspecified);
        let stage = match (engine, kind) {
            (Engine::Mysql, PartKind::Globals) => 2,
            _ => 0,
        };
        listed.push((
            stage,
            DownloadedFile {
                path: path.display().to_string(),
                part: part.name.clone(),
                kind: kind_name(part.kind),
                bytes: *bytes,
                tables: part.tables.len(),
                load: load_hint(engine, kind, path, f.to_sql, &part.name),
            },
        ));
        if let Some((views_path, views_bytes)) = views {
            listed.push((
                1,
                DownloadedFile {
                    path: views_path.display().to_string(),
                    part: part.name.clone(),
                    kind: "views",
                    bytes: *views_bytes,
                    tables: 0,
                    load: load_hint(engine, kind, views_path, false, &part.name),
                },
            ));
        }
    }
    listed.sort_by_key(|(stage, _)| *stage);
    let view = DownloadView {
        backup: id,
        service: &info.service,
        engine: &m.engine,
        engine_version: &m.engine_version,
        dir: dir.display().to_string(),
        plain_bytes: total,
        seconds: elapsed.as_secs_f64(),
        files: listed.into_iter().map(|(_, f)| f).collect(),
    };
    match output {
        Output::Json => output.json(&view),
        Output::Table => view.print(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
