//! An in-place restore: the service's own (live) server as a restore's target
//! ([`MyInPlace`]).
//!
//! Invariants: never a read-only server or a replica; a database part replaces exactly that
//! database, and databases not in the backup are never touched, counted or checked; the
//! grants part leaves out every statement naming the account the agent connects as.

use std::path::PathBuf;

use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::{
    compare_stats, Connection, Engine, EngineKind, PartKind, PartPlan, RestoreTarget, Role,
    TableStat, Verification,
};

use super::conn::Endpoint;
use super::load::Loader;
use super::quote::unhex;
use super::{Mysql, SUPERUSER};

/// The service's own (live) server as a restore's target ([`Engine::in_place`]).
pub struct MyInPlace {
    service: String,
    connection: Connection,
    /// Reaches the server as the service's configured user, replacing databases.
    loader: Loader,
    /// The agent's own account as (user, host), which the grants part leaves alone: every
    /// split of `CURRENT_USER()` at an `@` (a user name may hold one), so it is never missed.
    me: Vec<(String, String)>,
    /// The database parts loaded so far.
    loaded: Vec<String>,
}

impl Mysql {
    /// The live server as a restore target: checks that it answers and is no replica.
    pub(super) async fn open_in_place(&self) -> Result<MyInPlace> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let probe = self.probe().await?;
        if !probe.healthy {
            return Err(Error::Database {
                engine: "MariaDB",
                target: ep.target.clone(),
                message: "the server does not answer: check that it runs and that \
                          host/port/socket in the service's config are right"
                    .into(),
            });
        }
        if probe.role == Role::Replica {
            return Err(Error::Other(format!(
                "{} is read-only or replicates from another server: run the in-place restore \
                 of service {} on its primary",
                ep.target, self.spec.name
            )));
        }
        let me = ep
            .query(&self.tools, "SELECT HEX(CURRENT_USER())")
            .await?
            .first()
            .and_then(|r| r.first())
            .map(|h| unhex(h))
            .transpose()?
            .unwrap_or_default();
        let mut me: Vec<(String, String)> = me
            .match_indices('@')
            .map(|(at, _)| (me[..at].to_string(), me[at + 1..].to_string()))
            .collect();
        if me.is_empty() {
            return Err(Error::Database {
                engine: "MariaDB",
                target: ep.target.clone(),
                message: "CURRENT_USER() named no user@host: the in-place restore cannot tell \
                          which account to leave alone; check the service's user"
                    .into(),
            });
        }
        me.dedup();
        let host = self.spec.host.clone().unwrap_or_else(|| {
            if self.spec.port.is_some() {
                "127.0.0.1".into()
            } else {
                "localhost".into()
            }
        });
        let port = self
            .spec
            .port
            .unwrap_or(if host.starts_with('/') { 0 } else { 3306 });
        tracing::info!(service = %self.spec.name, server = %ep.target, "in-place restore into the live MariaDB server");
        Ok(MyInPlace {
            service: self.spec.name.clone(),
            connection: Connection {
                engine: EngineKind::Mysql,
                host,
                port,
                user: self
                    .spec
                    .user
                    .clone()
                    .unwrap_or_else(|| SUPERUSER.to_string()),
                password_file: self.spec.password_file.clone(),
                data_dir: PathBuf::new(),
            },
            loader: Loader {
                tools: self.tools.clone(),
                ep,
                replace: true,
                waiting_grants: Vec::new(),
                waiting_views: Vec::new(),
                failed: Vec::new(),
                service: self.spec.name.clone(),
                dir: PathBuf::new(),
            },
            me,
            loaded: Vec::new(),
        })
    }
}

#[async_trait::async_trait]
impl RestoreTarget for MyInPlace {
    /// The live server as the service's config names it; `data_dir` is empty (the server's
    /// data folder is not the agent's to name).
    fn connection(&self) -> Connection {
        self.connection.clone()
    }

    async fn load(
        &mut self,
        part: &PartPlan,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()> {
        match part.kind {
            PartKind::Globals => self.loader.load_grants(reader, &self.me).await,
            PartKind::Database => {
                self.loader.load_database(&part.name, reader).await?;
                self.loaded.push(part.name.clone());
                Ok(())
            }
            other => Err(Error::Other(format!(
                "a MariaDB restore cannot load part {:?} of kind {other:?}",
                part.name
            ))),
        }
    }

    /// Counts and checks the databases of the backup only (those loaded, or named in
    /// `expected`): the live server may hold others.
    async fn finish_load(&mut self) -> Result<()> {
        self.loader.load_views().await
    }

    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification> {
        self.loader.load_views().await?;
        let loaded = &self.loaded;
        let found = self
            .loader
            .count(|db: &str| crate::in_backup(db, loaded, expected))
            .await?;
        let mut v = compare_stats(expected, &found);
        let (check_ok, check) = self.loader.check(Some(&self.loaded)).await?;
        v.engine_check = check;
        v.failed_objects = self.loader.failed.clone();
        v.ok = v.mismatches.is_empty() && check_ok && v.failed_objects.is_empty();
        tracing::info!(service = %self.service, tables = v.tables_checked, rows = v.rows_checked, ok = v.ok, "in-place verification done");
        Ok(v)
    }
}
