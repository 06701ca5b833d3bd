//! Loading database parts into one server, fresh or live ([`Loader`]): each part spooled
//! (`pg_restore --jobs` needs a seekable file), the database there dropped, and
//! `pg_restore --create` run, with what it failed on read from its log.
//!
//! Invariants: a spool and its log are removed after the load, also when it failed; a restore
//! loads everything it can (an object `pg_restore` fails on is named, the rest loads), and a
//! `pg_restore` that stopped part way fails the load.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::AsyncRead;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::process::ToolCommand;
use crate::FailedObject;

use super::conn::{pg_error, Endpoint};
use super::quote::dbname_conninfo;
use super::PgTools;

/// Parallel jobs of `pg_restore`.
const RESTORE_JOBS: &str = "2";

/// Writes a part into its spool file, on a blocking thread: the stream's pieces are copied
/// once into a buffer and written in calls of up to 1 MiB. `what` names a stream error (a fetch
/// or decryption failure), which is kept apart from a write error.
fn spool_file(reader: Box<dyn AsyncRead + Send + Unpin>, path: &Path, what: String) -> Result<()> {
    use std::io::{Read, Write};
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    let mut reader = tokio_util::io::SyncIoBridge::new(reader);
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(strongbox_core::private::PRIVATE_FILE)
            .open(path)
            .map_err(io("creating the spool file"))?
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|source| Error::Stream {
            what: what.clone(),
            source,
        })?;
        let Some(piece) = buf.get(..n).filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        file.write_all(piece)
            .map_err(io("writing the spool file"))?;
    }
}

/// What `pg_restore --verbose` said (its stderr, in a file).
struct RestoreLog {
    /// The objects it failed on.
    objects: Vec<FailedObject>,
    /// It went through the whole archive (`errors ignored on restore`).
    completed: bool,
    /// Its last lines, for an error.
    tail: String,
}

/// Reads the stderr of `pg_restore --verbose` restoring database `db` from `log`: each
/// `pg_restore: error: …` block (with the lines that follow it: the server's error, `Command
/// was: …`) is about the TOC entry the latest `pg_restore: from TOC entry <id>; <oids>
/// <kind> <name> <owner>` line named. Read line by line; only errors are kept.
fn restore_failures(log: &Path, db: &str) -> std::io::Result<RestoreLog> {
    use std::io::BufRead;
    const PREFIX: &str = "pg_restore: ";
    const MAX_REASON: usize = 4096;
    let file = std::io::BufReader::new(std::fs::File::open(log)?);
    let mut objects: Vec<FailedObject> = Vec::new();
    let mut completed = false;
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut entry: Option<String> = None;
    let mut error: Option<(Option<String>, String)> = None;
    let finish = |error: &mut Option<(Option<String>, String)>, objects: &mut Vec<FailedObject>| {
        if let Some((entry, reason)) = error.take() {
            let object = FailedObject {
                name: format!(
                    "{db}: {}",
                    entry.unwrap_or_else(|| "(an entry pg_restore did not name)".into())
                ),
                reason: reason.trim().to_string(),
            };
            if !objects.contains(&object) {
                objects.push(object);
            }
        }
    };
    for line in file.split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        tail.push_back(line.clone());
        if tail.len() > 20 {
            tail.pop_front();
        }
        let Some(said) = line.strip_prefix(PREFIX) else {
            if let Some((_, reason)) = &mut error {
                if reason.len() < MAX_REASON {
                    reason.push('\n');
                    reason.push_str(&line);
                }
            }
            continue;
        };
        finish(&mut error, &mut objects);
        if let Some(rest) = said.strip_prefix("from TOC entry ") {
            // `<id>; <table oid> <oid> ` then the entry's kind, name and owner.
            let described = rest.splitn(4, ' ').nth(3).unwrap_or(rest);
            entry = Some(described.to_string());
        } else if let Some(reason) = said.strip_prefix("error: ") {
            error = Some((entry.clone(), reason.to_string()));
        } else if said.starts_with("warning: errors ignored on restore:") {
            completed = true;
        }
    }
    finish(&mut error, &mut objects);
    Ok(RestoreLog {
        objects,
        completed,
        tail: Vec::from(tail).join("\n"),
    })
}

/// What a database part meets on the server it is loaded into. Either way a database the
/// server has already is dropped and made again from the dump (`pg_restore --create`), so
/// that everything about the database itself (owner, settings, per-role settings in it,
/// comment, connection limit, grants, template flag) comes from the backup too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// A fresh cluster: the databases it has already are initdb's empty `postgres` and
    /// `template1`; the cluster runs under the load settings of `provision.rs`
    /// meanwhile, and verification installs `amcheck` for its check and removes it again
    /// ([`Loader::amcheck_all`]).
    Fresh,
    /// The service's live server: the database is dropped (its sessions ended) and created
    /// again from the dump; commits stay synchronous; verification installs nothing.
    Replace,
}

/// Loads database parts into one server, counts its rows and runs `pg_amcheck`: the part of
/// a restore that a fresh cluster ([`PgTarget`](super::PgTarget)) and the live server
/// ([`PgInPlace`](super::PgInPlace)) share.
pub(super) struct Loader {
    pub(super) tools: PgTools,
    /// How the agent reaches the server.
    pub(super) ep: Endpoint,
    /// The database to connect to for cluster-wide statements.
    pub(super) admin_db: String,
    /// Where parts are spooled: `pg_restore --jobs` needs a seekable file.
    pub(super) spool_dir: PathBuf,
    pub(super) spools: u32,
    pub(super) mode: Mode,
    /// The objects that did not come back, of every part loaded so far.
    pub(super) failed: Vec<FailedObject>,
    /// For log lines: the service (in place; empty for a fresh cluster, which its folder names).
    pub(super) service: String,
}

impl Loader {
    /// A database to connect to while `db` is dropped or created: the admin database, or
    /// `postgres`/`template1` when `db` is that one.
    fn admin_for(&self, db: &str) -> &str {
        if db != self.admin_db {
            &self.admin_db
        } else if db != "postgres" {
            "postgres"
        } else {
            "template1"
        }
    }

    /// Spools a custom-format dump of `db` and restores it with `pg_restore --jobs`; the spool
    /// file is removed afterwards, also when the restore failed.
    pub(super) async fn load_database(
        &mut self,
        db: &str,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        self.spools += 1;
        let spool = self.spool_dir.join(format!("spool-{}.pgdump", self.spools));
        let log = self.spool_dir.join(format!("spool-{}.log", self.spools));
        let result = self.spool_and_restore(db, reader, &spool, &log).await;
        for file in [&spool, &log] {
            if let Err(e) = tokio::fs::remove_file(file).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(service = %self.service, dir = %self.spool_dir.display(), spool = %file.display(), error = %e, "could not remove a spool file");
                }
            }
        }
        let failed = result?;
        if !failed.is_empty() {
            tracing::warn!(service = %self.service, dir = %self.spool_dir.display(), database = db, failed = failed.len(), "objects of the database did not come back");
        }
        self.failed.extend(failed);
        Ok(())
    }

    /// Returns the objects `pg_restore` could not restore (it restores all the others).
    async fn spool_and_restore(
        &self,
        db: &str,
        reader: Box<dyn AsyncRead + Send + Unpin>,
        spool: &Path,
        log: &Path,
    ) -> Result<Vec<FailedObject>> {
        let began = Instant::now();
        let (path, what) = (
            spool.to_path_buf(),
            format!("receiving database part {db} into {}", spool.display()),
        );
        tokio::task::spawn_blocking(move || spool_file(reader, &path, what))
            .await
            .map_err(|e| Error::Other(format!("a worker thread failed: {e}")))??;
        let spooled = began.elapsed();

        let admin = self.admin_for(db);
        let client = self.ep.connect(admin).await?;
        let template: Option<bool> = client
            .query_opt(
                "SELECT datistemplate FROM pg_catalog.pg_database WHERE datname = $1",
                &[&db],
            )
            .await
            .map_err(|e| pg_error(&self.ep.target(admin), &e))?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(|e| pg_error(&self.ep.target(admin), &e))?;
        if let Some(template) = template {
            self.drop_database(&client, admin, db, template).await?;
        }
        drop(client);

        // `--verbose` names the entry each error is about; its stderr goes to a file, as it
        // may be long. No `--exit-on-error`: one object that fails does not keep the others
        // from coming back; the failures are reported with the verification.
        let pg_restore = self.tools.path("pg_restore")?;
        {
            // Private like the spool: errors may quote rows.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(strongbox_core::private::PRIVATE_FILE)
                .open(log)
                .map_err(|source| Error::Io {
                    what: "creating pg_restore's log",
                    path: log.to_path_buf(),
                    source,
                })?;
        }
        let mut cmd = self.ep.with_env(ToolCommand::new(Path::new("/bin/sh")));
        cmd.args(["-c", "exec \"$0\" \"$@\" 2>\"$STRONGBOX_RESTORE_LOG\""])
            .arg(&pg_restore)
            .args([
                "--jobs",
                RESTORE_JOBS,
                "--verbose",
                "--no-password",
                "--create",
            ])
            .arg(format!("--dbname={}", dbname_conninfo(admin)))
            .arg(spool)
            .env("STRONGBOX_RESTORE_LOG", log);
        let out = cmd.capture().await?;
        let said = match restore_failures(log, db) {
            Ok(said) => said,
            Err(e) => {
                return Err(Error::Other(format!(
                    "reading what pg_restore said about database {db:?} ({}) failed: {e}",
                    log.display()
                )))
            }
        };
        // pg_restore went through the whole archive when it succeeded or says it ignored
        // errors; else it stopped part way (it could not connect, or read the archive).
        if !out.success && !said.completed {
            return Err(Error::Tool {
                tool: "pg_restore".into(),
                status: out.status,
                stderr: said.tail,
            });
        }
        let failed = said.objects;
        tracing::info!(
            service = %self.service,
            dir = %self.spool_dir.display(),
            database = db,
            failed = failed.len(),
            spool_s = spooled.as_secs_f64(),
            pg_restore_s = (began.elapsed() - spooled).as_secs_f64(),
            "database restored"
        );
        Ok(failed)
    }

    /// Ends the other sessions of `db` and drops it (`WITH (FORCE)` from PostgreSQL 13 on;
    /// before, its backends are terminated first), connected to `admin`.
    async fn drop_database(
        &self,
        client: &Client,
        admin: &str,
        db: &str,
        template: bool,
    ) -> Result<()> {
        let target = self.ep.target(admin);
        if template {
            // A template cannot be dropped; the dump makes it a template again.
            let sql: String = client
                .query_one(
                    "SELECT pg_catalog.format('ALTER DATABASE %I IS_TEMPLATE false', $1::text)",
                    &[&db],
                )
                .await
                .map_err(|e| pg_error(&target, &e))?
                .try_get(0)
                .map_err(|e| pg_error(&target, &e))?;
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| pg_error(&target, &e))?;
        }
        let version: i32 = client
            .query_one(
                "SELECT pg_catalog.current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(|e| pg_error(&target, &e))?
            .try_get(0)
            .map_err(|e| pg_error(&target, &e))?;
        // The name is quoted by the server (`format('%I')`).
        let form = if version >= 130_000 {
            "DROP DATABASE IF EXISTS %I WITH (FORCE)"
        } else {
            client
                .execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
                    &[&db],
                )
                .await
                .map_err(|e| pg_error(&target, &e))?;
            "DROP DATABASE IF EXISTS %I"
        };
        let sql: String = client
            .query_one("SELECT pg_catalog.format($1, $2::text)", &[&form, &db])
            .await
            .map_err(|e| pg_error(&target, &e))?
            .try_get(0)
            .map_err(|e| pg_error(&target, &e))?;
        client.batch_execute(&sql).await.map_err(|e| {
            let mut err = pg_error(&target, &e);
            if let Error::Database { message, .. } = &mut err {
                *message = format!(
                    "dropping database {db:?} to replace it failed: {message} - the service's \
                     user must own the database (or be a superuser) and be allowed to end its \
                     sessions"
                );
            }
            err
        })?;
        tracing::info!(service = %self.service, dir = %self.spool_dir.display(), database = db, "database dropped to be replaced");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::restore_failures;

    fn read(text: &str) -> super::RestoreLog {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, text).unwrap();
        restore_failures(&path, "docs").unwrap()
    }

    #[test]
    fn each_failed_object_is_named_with_its_error() {
        let log = read(
            "pg_restore: connecting to database for restore\n\
             pg_restore: launching item 3360 MATERIALIZED VIEW DATA word_stats\n\
             pg_restore: while PROCESSING TOC:\n\
             pg_restore: from TOC entry 3360; 0 16411 MATERIALIZED VIEW DATA word_stats app\n\
             pg_restore: error: could not execute query: ERROR:  relation \"documents\" does not exist\n\
             LINE 1: SELECT to_tsvector('simple', body) FROM documents\n\
             Command was: REFRESH MATERIALIZED VIEW public.word_stats;\n\
             \n\
             pg_restore: finished item 3360 MATERIALIZED VIEW DATA word_stats\n\
             pg_restore: from TOC entry 3361; 0 16420 TABLE DATA my table app\n\
             pg_restore: error: COPY failed for table \"my table\": ERROR:  boom\n\
             pg_restore: error: could not execute query: ERROR:  relation \"documents\" does not exist\n\
             LINE 1: SELECT to_tsvector('simple', body) FROM documents\n\
             Command was: REFRESH MATERIALIZED VIEW public.word_stats;\n\
             pg_restore: warning: errors ignored on restore: 3\n",
        );
        assert!(log.completed);
        let named: Vec<(&str, &str)> = log
            .objects
            .iter()
            .map(|o| (o.name.as_str(), o.reason.lines().next().unwrap()))
            .collect();
        assert_eq!(
            named,
            [
                (
                    "docs: MATERIALIZED VIEW DATA word_stats app",
                    "could not execute query: ERROR:  relation \"documents\" does not exist"
                ),
                (
                    "docs: TABLE DATA my table app",
                    "COPY failed for table \"my table\": ERROR:  boom"
                ),
                (
                    "docs: TABLE DATA my table app",
                    "could not execute query: ERROR:  relation \"documents\" does not exist"
                ),
            ]
        );
        assert!(log.objects[0]
            .reason
            .ends_with("Command was: REFRESH MATERIALIZED VIEW public.word_stats;"));
    }

    #[test]
    fn a_restore_that_stopped_part_way_is_not_completed() {
        let log = read(
            "pg_restore: connecting to database for restore\n\
             pg_restore: error: connection to server on socket \"/x/.s.PGSQL.5432\" failed\n",
        );
        assert!(!log.completed);
        assert!(log.tail.contains("connection to server"));
    }
}
