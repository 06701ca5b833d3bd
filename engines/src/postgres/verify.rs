//! Verifying a server after a load: the databases a backup could hold, their exact row counts
//! (each database in one snapshot), and `pg_amcheck`.
//!
//! Invariant: verification reads; it leaves nothing behind and fires nothing of the user's
//! (on a fresh cluster, `amcheck` is installed for the check and removed again, each time in
//! one transaction in which no event trigger fires; on the live server nothing is installed).

use std::collections::HashMap;

use crate::error::Result;

use super::catalog::{count_tables, list_databases};
use super::conn::{compose, pg_error};
use super::load::{Loader, Mode};
use super::quote::{dbname_conninfo, escaped};

impl Loader {
    /// The databases that allow connections (`template0` excluded) and have a UTF-8 name: no
    /// backup holds another (see [`Engine::begin_backup`](crate::Engine::begin_backup)), so no
    /// restore made or replaced it.
    pub(super) async fn databases(&self) -> Result<Vec<String>> {
        let target = self.ep.target(&self.admin_db);
        let admin = self.ep.connect(&self.admin_db).await?;
        let mut names = Vec::new();
        for listed in list_databases(&admin, &target).await? {
            match listed.name {
                Ok(name) if listed.allows_connections => names.push(name),
                Ok(name) => {
                    tracing::debug!(service = %self.service, database = %name, "a database that refuses connections is in no backup; not counted")
                }
                Err(bytes) => {
                    tracing::debug!(service = %self.service, database = %escaped(&bytes), "a database not named in UTF-8 is in no backup; not counted")
                }
            }
        }
        Ok(names)
    }

    /// Exact row counts of the tables of `databases` (`<db>.<schema>.<table>`), each
    /// database counted in one snapshot.
    pub(super) async fn count(&self, databases: &[String]) -> Result<HashMap<String, u64>> {
        let mut found: HashMap<String, u64> = HashMap::new();
        for db in databases {
            let client = self.ep.connect(db).await?;
            let target = self.ep.target(db);
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| pg_error(&target, &e))?;
            for s in count_tables(&client, db, &target, &HashMap::new(), true).await? {
                found.insert(s.name, s.rows);
            }
            let _ = client.batch_execute("COMMIT").await;
        }
        Ok(found)
    }

    /// Of `databases`, those where the `amcheck` extension is installed.
    pub(super) async fn with_amcheck(&self, databases: &[String]) -> Result<Vec<String>> {
        let mut with = Vec::new();
        for db in databases {
            let client = self.ep.connect(db).await?;
            let installed: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'amcheck')",
                    &[],
                )
                .await
                .map_err(|e| pg_error(&self.ep.target(db), &e))?
                .try_get(0)
                .map_err(|e| pg_error(&self.ep.target(db), &e))?;
            if installed {
                with.push(db.clone());
            }
        }
        Ok(with)
    }

    /// `pg_amcheck` over `databases` (a fresh cluster: all of its databases but
    /// `template0`), with the `amcheck` extension installed, for the check only, where it is
    /// missing: it is made in a schema of its own and removed with that schema right after,
    /// each time in one transaction during which no event trigger of the user's fires
    /// ([`Loader::quietly`]), so that nothing of it remains and nothing of the user's runs
    /// (a `ddl_command_end` trigger logging DDL into a table logs nothing). (ok, what it said).
    pub(super) async fn amcheck_all(&self, databases: &[String]) -> Result<(bool, String)> {
        let with = self.with_amcheck(databases).await?;
        if self.mode != Mode::Fresh {
            // The live server: no extension is installed (see `PgInPlace::verify`).
            return self.amcheck(&with).await;
        }
        let mut installed: Vec<(&String, String)> = Vec::new();
        let mut problem = None;
        for db in databases.iter().filter(|d| !with.contains(d)) {
            match self.install_amcheck(db).await {
                Ok(schema) => installed.push((db, schema)),
                Err(e) => {
                    problem = Some(format!(
                        "pg_amcheck could not run: installing amcheck in {db:?} failed: {e}"
                    ));
                    break;
                }
            }
        }
        let (mut ok, mut text) = match problem {
            Some(p) => (false, p),
            None => self.amcheck(databases).await?,
        };
        for (db, schema) in installed {
            let form = "DROP SCHEMA %I CASCADE";
            if let Err(e) = self.quietly(db, &[(form, vec![schema.as_str()])]).await {
                ok = false;
                text.push_str(&format!(
                    "\nremoving the amcheck extension installed for the check from {db:?} \
                     (schema {schema:?}) failed: {e}"
                ));
            }
        }
        Ok((ok, text))
    }

    /// Installs `amcheck` in `db` in a new schema of its own, quietly; returns the schema.
    async fn install_amcheck(&self, db: &str) -> Result<String> {
        let client = self.ep.connect(db).await?;
        let target = self.ep.target(db);
        let mut schema = "strongbox_amcheck".to_string();
        for i in 1.. {
            let taken: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                    &[&schema],
                )
                .await
                .map_err(|e| pg_error(&target, &e))?
                .try_get(0)
                .map_err(|e| pg_error(&target, &e))?;
            if !taken {
                break;
            }
            schema = format!("strongbox_amcheck_{i}");
        }
        drop(client);
        self.quietly(
            db,
            &[
                ("CREATE SCHEMA %I", vec![schema.as_str()]),
                ("CREATE EXTENSION amcheck SCHEMA %I", vec![schema.as_str()]),
            ],
        )
        .await?;
        Ok(schema)
    }

    /// Runs `statements` (each a `format()` form and its arguments, composed by the server)
    /// in `db` in one transaction in which no event trigger fires: with
    /// `session_replication_role = replica` (which keeps ordinary event triggers from
    /// firing), and every event trigger that is enabled `ALWAYS` or `REPLICA` disabled
    /// meanwhile and enabled as it was before the transaction commits. Nothing outside the
    /// transaction ever sees them disabled. Superuser only (a fresh cluster).
    async fn quietly(&self, db: &str, statements: &[(&str, Vec<&str>)]) -> Result<()> {
        let client = self.ep.connect(db).await?;
        let target = self.ep.target(db);
        client
            .batch_execute("BEGIN; SET LOCAL session_replication_role = replica")
            .await
            .map_err(|e| pg_error(&target, &e))?;
        let triggers: Vec<(String, i8)> = client
            .query(
                "SELECT evtname::text, evtenabled FROM pg_catalog.pg_event_trigger \
                 WHERE evtenabled IN ('A', 'R')",
                &[],
            )
            .await
            .map_err(|e| pg_error(&target, &e))?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(|e| pg_error(&target, &e))?;
        let mut sql = Vec::new();
        for (name, _) in &triggers {
            sql.push(compose(&client, &target, "ALTER EVENT TRIGGER %I DISABLE", &[name]).await?);
        }
        for (form, args) in statements {
            sql.push(compose(&client, &target, form, args).await?);
        }
        for (name, enabled) in &triggers {
            let form = if *enabled == b'A' as i8 {
                "ALTER EVENT TRIGGER %I ENABLE ALWAYS"
            } else {
                "ALTER EVENT TRIGGER %I ENABLE REPLICA"
            };
            sql.push(compose(&client, &target, form, &[name]).await?);
        }
        for statement in &sql {
            if let Err(e) = client.batch_execute(statement).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(pg_error(&target, &e));
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error(&target, &e))
    }

    /// `pg_amcheck` over `databases`, which have the extension: (ok, what it said).
    pub(super) async fn amcheck(&self, databases: &[String]) -> Result<(bool, String)> {
        let mut cmd = match self.ep.tool(&self.tools, "pg_amcheck") {
            Ok(c) => c,
            Err(e) => return Ok((false, format!("pg_amcheck could not run: {e}"))),
        };
        cmd.args(["--jobs", "2", "--no-password"]);
        cmd.arg(format!(
            "--maintenance-db={}",
            dbname_conninfo(&self.admin_db)
        ));
        for db in databases {
            // A double-quoted pattern matches the name literally.
            cmd.arg(format!("--database=\"{}\"", db.replace('"', "\"\"")));
        }
        let out = cmd.capture().await?;
        let text = format!("{}{}", out.stdout.trim(), {
            let e = out.stderr.trim();
            if e.starts_with('(') {
                String::new()
            } else {
                format!("\n{e}")
            }
        });
        let text = text.trim().to_string();
        if out.success {
            Ok((
                true,
                if text.is_empty() {
                    "pg_amcheck: no corruption found".to_string()
                } else {
                    format!("pg_amcheck: ok\n{text}")
                },
            ))
        } else {
            Ok((false, format!("pg_amcheck ({}): {text}", out.status)))
        }
    }
}
