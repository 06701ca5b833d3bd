//! Dumping a cluster: which parts a backup has (`globals`, then each database), and each
//! part as a stream (`pg_dumpall --globals-only`; `pg_dump --format=custom` in an exported
//! snapshot).
//!
//! Invariants: every database but `template0` is in the backup, or the backup fails naming
//! it; names are UTF-8, or the backup fails naming them; a database part's table stats are
//! counted from its archive as it streams (or with `count(*)`) inside the snapshot `pg_dump`
//! uses, which stays open until `pg_dump` finished.

use std::collections::HashMap;
use strongbox_core::manifest::LeftOut;

use futures::FutureExt;

use crate::counting;
use crate::error::{Error, Result};
use crate::{BackupRun, Dump, PartKind, PartPlan};

use super::archive::ArchiveCounter;
use super::catalog::{count_tables, list_databases, ROLES_SQL};
use super::conn::{pg_error, Endpoint};
use super::quote::{dbname_conninfo, escaped, utf8_name};
use super::{PgTools, Postgres};

impl Postgres {
    /// Starts a backup ([`Engine::begin_backup`](crate::Engine::begin_backup)): lists the
    /// databases, checks their names and the roles', and plans the parts.
    pub(super) async fn begin_backup_run(&self) -> Result<Box<dyn BackupRun>> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let db = self.maintenance_db();
        let target = ep.target(db);
        let client = ep.connect(db).await?;
        let listed = list_databases(&client, &target).await?;
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| pg_error(&target, &e))?
            .try_get(0)
            .map_err(|e| pg_error(&target, &e))?;
        // The globals part names every role, in UTF-8: a role whose name is not UTF-8 would
        // make pg_dumpall fail, or write a part no restore can apply.
        for row in client
            .query(ROLES_SQL, &[])
            .await
            .map_err(|e| pg_error(&target, &e))?
        {
            let name: Vec<u8> = row.try_get(0).map_err(|e| pg_error(&target, &e))?;
            if let Err(bytes) = utf8_name(name) {
                return Err(Error::Other(format!(
                    "{target} has a role named {}, which is not UTF-8 (made in a SQL_ASCII \
                     database): strongbox dumps roles in UTF-8 and cannot back up this \
                     cluster's roles; rename the role to UTF-8 (ALTER ROLE ... RENAME TO, \
                     in a session on a SQL_ASCII database) or drop it",
                    escaped(&bytes)
                )));
            }
        }
        let mut existing = Vec::with_capacity(listed.len());
        let mut not_utf8 = Vec::new();
        let mut fenced = Vec::new();
        for listed in listed {
            match listed.name {
                Ok(name) => {
                    if !listed.allows_connections {
                        fenced.push(name.clone());
                    }
                    existing.push(name);
                }
                Err(bytes) => not_utf8.push(escaped(&bytes)),
            }
        }
        // A database that refuses connections cannot be dumped without changing the source:
        // the backup fails naming it, never leaves it out silently.
        let refused: Vec<&String> = fenced
            .iter()
            .filter(|d| self.spec.databases.is_empty() || self.spec.databases.contains(d))
            .collect();
        if !refused.is_empty() {
            let names: Vec<String> = refused.iter().map(|d| format!("{d:?}")).collect();
            return Err(Error::Other(format!(
                "database {} on {target} does not allow connections (datallowconn = false), \
                 so it cannot be dumped: allow them (ALTER DATABASE ... ALLOW_CONNECTIONS \
                 true), or list the databases to back up in the service's `databases`",
                names.join(", ")
            )));
        }
        let databases = if self.spec.databases.is_empty() {
            if !not_utf8.is_empty() {
                return Err(Error::Other(format!(
                    "{target} has databases named {}, which are not UTF-8 (made in a \
                     SQL_ASCII database): strongbox names every database of a backup in \
                     UTF-8 and cannot back them up; rename them to UTF-8 (ALTER DATABASE \
                     ... RENAME TO, in a session on a SQL_ASCII database), or list the \
                     databases to back up in the service's `databases`",
                    not_utf8.join(", ")
                )));
            }
            existing.clone()
        } else {
            let missing: Vec<&String> = self
                .spec
                .databases
                .iter()
                .filter(|d| !existing.contains(d))
                .collect();
            if !missing.is_empty() {
                return Err(Error::Config {
                    service: self.spec.name.clone(),
                    message: format!(
                        "databases {missing:?} (in `databases`) do not exist on {target} or do \
                         not allow connections; it has {existing:?}"
                    ),
                });
            }
            self.spec.databases.clone()
        };
        // What a configured subset leaves out, and why, for `backup show`.
        let listed = |d: &String| databases.contains(d);
        let mut left_out: Vec<LeftOut> = existing
            .iter()
            .filter(|d| !listed(d))
            .map(|d| LeftOut {
                name: d.clone(),
                why: if fenced.contains(d) {
                    "not in the service's `databases` (and it does not allow connections)".into()
                } else {
                    "not in the service's `databases`".into()
                },
            })
            .collect();
        left_out.extend(not_utf8.iter().map(|d| LeftOut {
            name: d.clone(),
            why: "its name is not UTF-8 (and it is not in the service's `databases`)".into(),
        }));
        if !superuser {
            tracing::warn!(service = %self.spec.name, user = %ep.user, "not a superuser: role passwords are left out of the globals part");
        }
        let mut parts = vec![PartPlan {
            name: "globals".into(),
            kind: PartKind::Globals,
        }];
        parts.extend(databases.into_iter().map(|name| PartPlan {
            name,
            kind: PartKind::Database,
        }));
        tracing::info!(service = %self.spec.name, parts = parts.len(), "PostgreSQL backup started");
        Ok(Box::new(PgBackup {
            service: self.spec.name.clone(),
            ep,
            tools: self.tools.clone(),
            parts,
            superuser,
            left_out,
        }))
    }
}

/// A backup in progress: each database part holds its own snapshot transaction while it is
/// dumped.
struct PgBackup {
    service: String,
    ep: Endpoint,
    tools: PgTools,
    parts: Vec<PartPlan>,
    superuser: bool,
    left_out: Vec<LeftOut>,
}

#[async_trait::async_trait]
impl BackupRun for PgBackup {
    fn parts(&self) -> &[PartPlan] {
        &self.parts
    }

    fn left_out(&self) -> Vec<LeftOut> {
        self.left_out.clone()
    }

    async fn dump(&mut self, part: &PartPlan) -> Result<Dump> {
        if !self.parts.contains(part) {
            return Err(Error::Other(format!(
                "part {:?} is not a part of this backup",
                part.name
            )));
        }
        match part.kind {
            PartKind::Globals => {
                let mut cmd = self.ep.tool(&self.tools, "pg_dumpall")?;
                // In UTF-8 whatever the server's encoding, as a restore applies it.
                cmd.env("PGCLIENTENCODING", "UTF8")
                    .args(["--globals-only", "--no-password"]);
                if !self.superuser {
                    cmd.arg("--no-role-passwords");
                }
                let streaming = cmd.spawn_stream()?;
                let exit = streaming.exit;
                Ok(Dump {
                    reader: Box::new(streaming.stdout),
                    tap: None,
                    finish: async move { exit.wait().await.map(|_| Vec::new()) }.boxed(),
                })
            }
            PartKind::Database => self.dump_database(&part.name).await,
            other => Err(Error::Other(format!(
                "a PostgreSQL backup has no part of kind {other:?}"
            ))),
        }
    }

    async fn close(self: Box<Self>) -> Result<()> {
        tracing::info!(service = %self.service, "PostgreSQL backup closed");
        Ok(())
    }
}

impl PgBackup {
    async fn dump_database(&self, db: &str) -> Result<Dump> {
        let target = self.ep.target(db);
        let client = self.ep.connect(db).await?;
        client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL row_security = off",
            )
            .await
            .map_err(|e| pg_error(&target, &e))?;
        let snapshot: String = client
            .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
            .await
            .map_err(|e| pg_error(&target, &e))?
            .try_get(0)
            .map_err(|e| pg_error(&target, &e))?;
        tracing::debug!(service = %self.service, database = db, %snapshot, "snapshot exported");

        let mut cmd = self.ep.tool(&self.tools, "pg_dump")?;
        cmd.args(["--format=custom", "--compress=0", "--no-password"])
            .arg(format!("--snapshot={snapshot}"))
            .arg(format!("--dbname={}", dbname_conninfo(db)));
        let streaming = cmd.spawn_stream()?;
        // Rows are counted from the archive as it streams by; a table the stream did not
        // count (or every table, should the archive not be readable) is counted with
        // `count(*)` in the snapshot's own transaction, still open until pg_dump finished.
        let (tap, counted) = counting::tap(ArchiveCounter::new());
        let exit = streaming.exit;
        let service = self.service.clone();
        let db = db.to_string();
        let finish = async move {
            let dumped = exit.wait().await;
            let streamed = match counted.await {
                Ok(Some(r)) => r,
                Ok(None) => Err("the stream was not read to its end".to_string()),
                Err(e) => Err(format!("the counting task failed: {e}")),
            };
            let known: HashMap<(String, String), u64> = match streamed {
                Ok(tables) => tables
                    .into_iter()
                    .map(|t| ((t.schema, t.table), t.rows))
                    .collect(),
                Err(why) => {
                    if dumped.is_ok() {
                        tracing::warn!(service = %service, database = %db, why, "could not count rows from the dump stream; counting with count(*)");
                    }
                    HashMap::new()
                }
            };
            let counted = match &dumped {
                Ok(_) => count_tables(&client, &db, &target, &known, false).await,
                Err(_) => Ok(Vec::new()),
            };
            // The snapshot may end only now that pg_dump has finished.
            let ended = client.batch_execute("COMMIT").await;
            dumped?;
            let stats = counted?;
            ended.map_err(|e| pg_error(&target, &e))?;
            tracing::info!(service = %service, database = %db, tables = stats.len(), from_stream = known.len(), "database dumped");
            Ok(stats)
        };
        Ok(Dump {
            reader: Box::new(streaming.stdout),
            tap: Some(tap),
            finish: finish.boxed(),
        })
    }
}
