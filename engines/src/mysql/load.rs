//! Loading parts into one server, fresh or live ([`Loader`]): the grants part (object-level
//! grants wait for their database), each database's dump (its views' final definitions wait
//! until every database is loaded), and, in place, the database dropped first.
//!
//! Invariants: our scripts stop at their first error; dumps load past the statements that
//! fail ([`forced`](super::forced)), which are named; a database is dropped only after its
//! sessions are ended, waiting a bounded time for locks.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};
use crate::process::ToolCommand;
use crate::FailedObject;

use super::conn::Endpoint;
use super::forced::Forced;
use super::grants::split_grants;
use super::quote::{hex_literal, quote_ident};
use super::sqlcount::ViewSplit;
use super::{MyTools, MAX_PACKET, SESSION_MODE};

/// Largest grants part a restore accepts (it is read whole: object grants wait for their
/// database).
const MAX_GRANTS_PART: usize = 64 << 20;
/// Seconds an in-place restore waits to drop a database whose table another session holds.
const DROP_LOCK_WAIT: u32 = 60;

/// Loads parts into one server, counts its rows and runs `mariadb-check`: the part of a
/// restore that a fresh server ([`MyTarget`](super::MyTarget)) and the live server
/// ([`MyInPlace`](super::MyInPlace)) share.
pub(super) struct Loader {
    pub(super) tools: MyTools,
    /// How the agent reaches the server.
    pub(super) ep: Endpoint,
    /// Replace databases (the live server): end their sessions and drop them before loading.
    pub(super) replace: bool,
    /// Object-level grants waiting for their database: (database, SQL).
    pub(super) waiting_grants: Vec<(String, String)>,
    /// The final view definitions of the databases loaded, waiting until every database is
    /// there (a view may read another database's tables): (database, the dump's script).
    pub(super) waiting_views: Vec<(String, Vec<u8>)>,
    /// What the statements of database dumps that failed were to create or fill, and why
    /// (the rest of each dump was loaded).
    pub(super) failed: Vec<FailedObject>,
    /// For log lines: the service (in place; empty for a fresh server) and the server's
    /// folder (a fresh server's; empty in place).
    pub(super) service: String,
    pub(super) dir: PathBuf,
}

impl Loader {
    /// The client (in `--binary-mode`, see [`Endpoint::client`]) for loading: it stops at the
    /// first error.
    fn client(&self) -> Result<ToolCommand> {
        let mut cmd = self.ep.client(&self.tools)?;
        cmd.arg(MAX_PACKET);
        Ok(cmd)
    }

    /// Applies the grants part (its statements are `IF NOT EXISTS` or repeatable, so accounts
    /// that exist are fine) except the statements naming an account of `skip` (user, host);
    /// object-level grants wait for their database.
    pub(super) async fn load_grants(
        &mut self,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
        skip: &[(String, String)],
    ) -> Result<()> {
        let mut text = Vec::new();
        (&mut reader)
            .take(MAX_GRANTS_PART as u64 + 1)
            .read_to_end(&mut text)
            .await
            .map_err(|source| Error::Stream {
                what: "receiving the grants part".into(),
                source,
            })?;
        if text.len() > MAX_GRANTS_PART {
            return Err(Error::Other(format!(
                "the grants part is larger than {} MiB; this restore cannot hold it",
                MAX_GRANTS_PART >> 20
            )));
        }
        let text = String::from_utf8(text).map_err(|_| {
            Error::Other(
                "the grants part is not UTF-8: it is damaged or was not made by \
                 strongbox-agent; restore without it or from another backup"
                    .into(),
            )
        })?;
        let (now, waiting) = split_grants(&text, skip)?;
        self.client()?
            .output_with_input(format!("{SESSION_MODE}{now}").as_bytes())
            .await?;
        self.waiting_grants.extend(waiting);
        tracing::info!(service = %self.service, dir = %self.dir.display(), "grants applied");
        Ok(())
    }

    /// Loads a database's dump (which creates the database), then its object-level grants.
    /// When replacing, the database's sessions are ended and it is dropped first.
    pub(super) async fn load_database(
        &mut self,
        db: &str,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        if self.replace {
            self.drop_database(db).await?;
        }
        let (views, failed) = self.feed_dump(db, reader).await?;
        self.note_failures(db, failed);
        if let Some(views) = views {
            self.waiting_views.push((db.to_string(), views));
        }
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_grants)
            .into_iter()
            .partition(|(d, _)| d == db);
        self.waiting_grants = others;
        for (_, sql) in mine {
            self.client()?
                .output_with_input(format!("{SESSION_MODE}{sql}").as_bytes())
                .await?;
        }
        tracing::info!(service = %self.service, dir = %self.dir.display(), database = ?db, "database restored");
        Ok(())
    }

    /// Feeds a database's dump to the client, all but its views' final definitions (see
    /// [`ViewSplit`]), which it returns, with the statements that failed.
    async fn feed_dump(
        &self,
        db: &str,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<(Option<Vec<u8>>, Vec<FailedObject>)> {
        enum Stop {
            Input(std::io::Error),
            Split(String),
            Closed,
        }
        let mut forced = Forced::start(&self.tools, &self.ep)?;
        let mut split = ViewSplit::new();
        let mut buf = vec![0u8; 64 * 1024];
        let fed = loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(Stop::Input(e)),
            };
            let now = match split.push(&buf[..n]) {
                Ok(now) => now,
                Err(e) => break Err(Stop::Split(e)),
            };
            if !forced.write(&now).await {
                break Err(Stop::Closed);
            }
        };
        let (rest, views) = split.finish();
        let fed = match fed {
            Ok(()) if !forced.write(&rest).await => Err(Stop::Closed),
            other => other,
        };
        match fed {
            Ok(()) => Ok((views, forced.finish().await?)),
            Err(Stop::Closed) => {
                forced.finish().await?;
                Err(Error::Other(format!(
                    "`mariadb` exited before it read all of the dump of database {db:?}"
                )))
            }
            Err(Stop::Input(source)) => {
                forced.abort().await;
                Err(Error::Stream {
                    what: format!("reading the dump of database {db:?}"),
                    source,
                })
            }
            Err(Stop::Split(why)) => {
                forced.abort().await;
                Err(Error::Other(format!(
                    "the dump of database {db:?} cannot be restored here: {why}"
                )))
            }
        }
    }

    /// Creates the views of every database loaded (their final definitions), now that all
    /// their tables are there; a view that cannot be created is noted and the others go on.
    pub(super) async fn load_views(&mut self) -> Result<()> {
        for (db, script) in std::mem::take(&mut self.waiting_views) {
            let mut forced = Forced::start(&self.tools, &self.ep)?;
            if !forced.write(&script).await {
                forced.finish().await?;
                return Err(Error::Other(format!(
                    "`mariadb` exited before it read the views of database {db:?}"
                )));
            }
            let failed = forced.finish().await?;
            self.note_failures(&db, failed);
            tracing::info!(service = %self.service, dir = %self.dir.display(), database = ?db, "views created");
        }
        Ok(())
    }

    fn note_failures(&mut self, db: &str, failed: Vec<FailedObject>) {
        if failed.is_empty() {
            return;
        }
        tracing::warn!(service = %self.service, dir = %self.dir.display(), database = ?db, failed = failed.len(), "statements of the dump failed; the rest of it was loaded");
        self.failed.extend(failed.into_iter().map(|f| FailedObject {
            name: format!("{db}: {}", f.name),
            reason: f.reason,
        }));
    }

    /// Kills the other sessions whose default database is `db`, then drops it (waiting at
    /// most [`DROP_LOCK_WAIT`] for a lock another session holds on one of its tables).
    async fn drop_database(&self, db: &str) -> Result<()> {
        let sessions = self
            .ep
            .query(
                &self.tools,
                &format!(
                    "SELECT ID FROM information_schema.PROCESSLIST \
                     WHERE HEX(DB) = {} AND ID <> CONNECTION_ID()",
                    hex_literal(db)
                ),
            )
            .await?;
        let ids: Vec<u64> = sessions
            .iter()
            .filter_map(|r| r.first()?.parse().ok())
            .collect();
        if !ids.is_empty() {
            let script: String = ids
                .iter()
                .map(|id| format!("KILL CONNECTION {id};\n"))
                .collect();
            // --force: a session that ended meanwhile is no reason to stop (the script holds
            // numbers only).
            let mut cmd = self.ep.client(&self.tools)?;
            cmd.arg("--force");
            let out = cmd.capture_with_input(script.as_bytes()).await?;
            if !out.success {
                tracing::warn!(service = %self.service, dir = %self.dir.display(), database = ?db, problems = %out.stderr, "some sessions could not be killed");
            }
            tracing::info!(service = %self.service, dir = %self.dir.display(), database = ?db, sessions = ids.len(), "sessions of the database ended");
        }
        // Foreign keys from other databases into this one do not stop the drop: the backup's
        // dump makes this database again, and mariadb-dump loads with the checks off too.
        let sql = format!(
            "SET SESSION lock_wait_timeout = {DROP_LOCK_WAIT};\nSET SESSION foreign_key_checks = 0;\n\
             DROP DATABASE IF EXISTS {};\n",
            quote_ident(db)
        );
        let hint = |message: &str| {
            if message.contains("ERROR 1205") || message.to_ascii_lowercase().contains("lock wait")
            {
                " - a lock wait timeout means another session holds a table of it in an open \
                 transaction: end that session (SHOW PROCESSLIST, KILL) and retry"
            } else {
                ""
            }
        };
        self.ep
            .query(&self.tools, &sql)
            .await
            .map_err(|e| match e {
                Error::Database {
                    engine,
                    target,
                    message,
                } => Error::Database {
                    engine,
                    target,
                    message: format!(
                        "dropping database {db:?} to replace it failed: {message}{}",
                        hint(&message)
                    ),
                },
                other => other,
            })?;
        tracing::info!(service = %self.service, dir = %self.dir.display(), database = ?db, "database dropped to be replaced");
        Ok(())
    }
}
