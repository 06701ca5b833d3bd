//! Dumping a server: which parts a backup has (`grants`, then each database), and each part
//! as a stream (`mariadb-dump --single-transaction` per database; the grants part written
//! from the server's accounts).
//!
//! Invariant: a database part's table stats are counted from that very stream as it passes
//! ([`sqlcount`](super::sqlcount)), so they describe exactly the dumped rows.

use strongbox_core::manifest::LeftOut;

use futures::FutureExt;

use crate::counting;
use crate::error::{Error, Result};
use crate::{BackupRun, Dump, PartKind, PartPlan, TableStat};

use super::conn::Endpoint;
use super::grants::dump_grants;
use super::quote::{hex_literal, unhex};
use super::sqlcount::SqlCounter;
use super::{MyTools, Mysql, MAX_PACKET};

impl Mysql {
    /// Starts a backup ([`Engine::begin_backup`](crate::Engine::begin_backup)): lists the
    /// databases and plans the parts.
    pub(super) async fn begin_backup_run(&self) -> Result<Box<dyn BackupRun>> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let existing: Vec<String> = ep
            .query(
                &self.tools,
                "SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
            )
            .await?
            .iter()
            .filter_map(|r| r.first())
            .map(|h| unhex(h))
            .collect::<Result<_>>()?;
        let databases: Vec<String> = if self.spec.databases.is_empty() {
            existing
                .iter()
                .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
                .cloned()
                .collect()
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
                        "databases {missing:?} (in `databases`) do not exist on {}; it has {existing:?}",
                        ep.target
                    ),
                });
            }
            self.spec.databases.clone()
        };
        // What a configured subset leaves out, and why, for `backup show`.
        let left_out: Vec<LeftOut> = existing
            .iter()
            .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()) && !databases.contains(d))
            .map(|d| LeftOut {
                name: d.clone(),
                why: "not in the service's `databases`".into(),
            })
            .collect();
        let mut parts = vec![PartPlan {
            name: "grants".into(),
            kind: PartKind::Globals,
        }];
        parts.extend(databases.into_iter().map(|name| PartPlan {
            name,
            kind: PartKind::Database,
        }));
        tracing::info!(service = %self.spec.name, parts = parts.len(), "MariaDB backup started");
        Ok(Box::new(MyBackup {
            service: self.spec.name.clone(),
            ep,
            tools: self.tools.clone(),
            parts,
            left_out,
        }))
    }
}

/// Databases that belong to the server, never dumped as parts.
const SYSTEM_DATABASES: &[&str] = &["information_schema", "performance_schema", "sys", "mysql"];

struct MyBackup {
    service: String,
    ep: Endpoint,
    tools: MyTools,
    parts: Vec<PartPlan>,
    left_out: Vec<LeftOut>,
}

#[async_trait::async_trait]
impl BackupRun for MyBackup {
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
                let sql = dump_grants(&self.ep, &self.tools, &self.service).await?;
                Ok(Dump {
                    reader: Box::new(std::io::Cursor::new(sql.into_bytes())),
                    tap: None,
                    finish: async { Ok(Vec::new()) }.boxed(),
                })
            }
            PartKind::Database => self.dump_database(&part.name).await,
            other => Err(Error::Other(format!(
                "a MariaDB backup has no part of kind {other:?}"
            ))),
        }
    }

    async fn close(self: Box<Self>) -> Result<()> {
        tracing::info!(service = %self.service, "MariaDB backup closed");
        Ok(())
    }
}

impl MyBackup {
    async fn dump_database(&self, db: &str) -> Result<Dump> {
        let dump = self.tools.path(&["mariadb-dump", "mysqldump"])?;
        // History rows of system-versioned tables, with their timestamps: `--dump-history`
        // (it reads them in the dump's own snapshot, and the dump sets
        // `system_versioning_insert_history` to load them back). mariadb-dump refuses the
        // whole database when one of its tables keeps transaction-precise history (its row
        // start is a transaction id, which no other server knows): such a database is dumped
        // without history, and the log says which tables lose it.
        // When the question fails (the server went away), the dump tool's own error says why.
        let precise: Vec<String> = match self
            .ep
            .query(
                &self.tools,
                &format!(
                    "SELECT HEX(TABLE_NAME) FROM information_schema.COLUMNS \
                     WHERE HEX(TABLE_SCHEMA) = {} AND GENERATION_EXPRESSION = 'ROW START' \
                     AND DATA_TYPE = 'bigint' ORDER BY 1",
                    hex_literal(db)
                ),
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| r.first())
                .map(|h| unhex(h))
                .collect::<Result<_>>()?,
            Err(e) => {
                tracing::warn!(service = %self.service, database = ?db, error = %e, "could not look for tables with transaction-precise history");
                Vec::new()
            }
        };
        let mut cmd = self.ep.command(&dump);
        if precise.is_empty() {
            cmd.arg("--dump-history");
        } else {
            tracing::warn!(service = %self.service, database = ?db, tables = ?precise, "tables with transaction-precise history: mariadb-dump cannot dump history there, so this database is dumped without the history of its system-versioned tables");
        }
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            // No `LOCK TABLES t WRITE` around a table's rows: an INSERT into a table whose
            // DEFAULT reads a sequence (NEXTVAL) fails under it ("was not locked").
            "--skip-add-locks",
            MAX_PACKET,
            "--databases",
            // The end of options: a database named `-Ah2130706434` is a name, not
            // `--all-databases --host=127.0.0.2`.
            "--",
            db,
        ]);
        let streaming = cmd.spawn_stream()?;
        let (tap, counted) = counting::tap(SqlCounter::new());
        let exit = streaming.exit;
        let db = db.to_string();
        let service = self.service.clone();
        let finish = async move {
            exit.wait().await?;
            let tables = counted
                .await
                .map_err(|e| {
                    Error::Other(format!("counting the rows of database {db:?} failed: {e}"))
                })?
                .ok_or_else(|| {
                    Error::Other(format!(
                        "the dump of database {db:?} was finished before its stream was read \
                         to its end (and its tap ended); read the reader to its end first"
                    ))
                })?;
            tracing::info!(service = %service, database = ?db, tables = tables.len(), "database dumped");
            Ok(tables
                .into_iter()
                .map(|(table, rows)| TableStat {
                    name: format!("{db}.{table}"),
                    rows,
                })
                .collect())
        };
        Ok(Dump {
            reader: Box::new(streaming.stdout),
            tap: Some(tap),
            finish: finish.boxed(),
        })
    }
}
