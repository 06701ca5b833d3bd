//! An in-place restore: the service's own (live) server as a restore's target
//! ([`PgInPlace`]).
//!
//! Invariants: never a replica; a database part replaces exactly that database, and databases
//! not in the backup are never touched nor counted; no role is dropped and the agent's own
//! keeps its password and attributes; no extension is installed (`pg_amcheck` checks only the
//! restored databases that have `amcheck`).

use std::path::{Path, PathBuf};

use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::{
    compare_stats, Connection, EngineKind, PartKind, PartPlan, RestoreTarget, TableStat,
    Verification,
};

use super::conn::{pg_error, Endpoint};
use super::globals::{apply_globals, read_globals, Tablespaces};
use super::load::{Loader, Mode};
use super::Postgres;

/// The service's own (live) server as a restore's target
/// ([`Engine::in_place`](crate::Engine::in_place)).
pub struct PgInPlace {
    service: String,
    password_file: Option<PathBuf>,
    /// Reaches the server as the service's configured user; spools in the scratch folder.
    loader: Loader,
    /// The database parts loaded so far.
    loaded: Vec<String>,
}

impl Postgres {
    /// The live server as a restore target: checks that it answers and is no replica.
    pub(super) async fn open_in_place(&self, scratch: &Path) -> Result<PgInPlace> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let admin = self.maintenance_db().to_string();
        let client = ep.connect(&admin).await?;
        let in_recovery: bool = client
            .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
            .await
            .map_err(|e| pg_error(&ep.target(&admin), &e))?
            .try_get(0)
            .map_err(|e| pg_error(&ep.target(&admin), &e))?;
        if in_recovery {
            return Err(Error::Other(format!(
                "{} is a replica (in recovery) and cannot be written: run the in-place restore \
                 of service {} on its primary",
                ep.target(&admin),
                self.spec.name
            )));
        }
        tracing::info!(service = %self.spec.name, server = %ep.target(&admin), "in-place restore into the live PostgreSQL server");
        Ok(PgInPlace {
            service: self.spec.name.clone(),
            password_file: self.spec.password_file.clone(),
            loader: Loader {
                tools: self.tools.clone(),
                ep,
                admin_db: admin,
                spool_dir: scratch.to_path_buf(),
                spools: 0,
                mode: Mode::Replace,
                failed: Vec::new(),
                service: self.spec.name.clone(),
            },
            loaded: Vec::new(),
        })
    }
}

impl PgInPlace {
    /// Applies the globals part over the roles that exist ([`apply_globals`]): `CREATE ROLE`
    /// is left out for roles that exist, and so is every change of the attributes (password
    /// included) of the role the agent connects as, which keeps its way in. A statement that
    /// fails (e.g. a tablespace that exists) is skipped and reported with the verification.
    async fn load_globals(&mut self, reader: Box<dyn AsyncRead + Send + Unpin>) -> Result<()> {
        let script = read_globals(reader).await?;
        let failed = apply_globals(
            &self.loader.ep,
            &self.loader.admin_db,
            &script,
            &self.service,
            &Tablespaces::AsDumped,
        )
        .await?;
        if !failed.is_empty() {
            tracing::warn!(service = %self.service, failed = failed.len(), "statements of the globals part failed and were skipped");
        }
        self.loader.failed.extend(failed);
        tracing::info!(service = %self.service, "globals applied over the existing roles");
        Ok(())
    }
}

#[async_trait::async_trait]
impl RestoreTarget for PgInPlace {
    /// The live server as the service's config names it; `data_dir` is empty (the server's
    /// data folder is not the agent's to name).
    fn connection(&self) -> Connection {
        Connection {
            engine: EngineKind::Postgres,
            host: self.loader.ep.host.clone(),
            port: self.loader.ep.port,
            user: self.loader.ep.user.clone(),
            password_file: self.password_file.clone(),
            data_dir: PathBuf::new(),
        }
    }

    async fn load(
        &mut self,
        part: &PartPlan,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        match part.kind {
            PartKind::Globals => self.load_globals(reader).await,
            PartKind::Database => {
                self.loader.load_database(&part.name, reader).await?;
                self.loaded.push(part.name.clone());
                Ok(())
            }
            other => Err(Error::Other(format!(
                "a PostgreSQL restore cannot load part {:?} of kind {other:?}",
                part.name
            ))),
        }
    }

    /// Counts rows in the databases of the backup only (those loaded, or named in
    /// `expected`): the live server may hold others. `pg_amcheck` checks those of them where
    /// the `amcheck` extension is installed; an in-place restore installs no extension, so
    /// where none has it the engine check is skipped and `ok` rests on the row counts.
    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        let databases: Vec<String> = self
            .loader
            .databases()
            .await?
            .into_iter()
            .filter(|d| crate::in_backup(d, &self.loaded, expected))
            .collect();
        let found = self.loader.count(&databases).await?;
        let mut v = compare_stats(expected, &found);
        let with = self.loader.with_amcheck(&databases).await?;
        let (check_ok, check) = if with.is_empty() {
            (
                true,
                "pg_amcheck: skipped for in-place (the amcheck extension is installed in none of \
                 the restored databases, and an in-place restore installs no extension)"
                    .to_string(),
            )
        } else {
            let (ok, mut text) = self.loader.amcheck(&with).await?;
            let without: Vec<&String> = databases.iter().filter(|d| !with.contains(d)).collect();
            if !without.is_empty() {
                text.push_str(&format!(
                    "\nnot checked (no amcheck extension): {without:?}"
                ));
            }
            (ok, text)
        };
        v.engine_check = check;
        v.failed_objects = self.loader.failed.clone();
        v.ok = v.mismatches.is_empty() && check_ok && v.failed_objects.is_empty();
        tracing::info!(service = %self.service, tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "in-place verification done");
        Ok(v)
    }
}
