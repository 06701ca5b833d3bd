//! The trait every engine implements ([`Engine`]) and what it speaks: a member's role
//! ([`Probe`]), a backup in progress ([`BackupRun`]) and its parts as streams ([`Dump`]), a
//! server a restore loads into ([`RestoreTarget`]); and the choice of engine for a service
//! ([`open`], [`provision`], [`teardown`]).
//!
//! Invariant: a part is dumped as a stream and loaded from one; a dump's table stats are
//! returned only once its tool ended well, from the pieces its tap saw.

use std::path::Path;

pub use strongbox_core::manifest::{PartKind, TableStat};
use tokio::io::AsyncRead;

use strongbox_proto::v1::MemberRole;

use crate::error::{Error, Result};
use crate::{Connection, EngineKind, ServiceSpec, Verification};

/// A member's role in its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    Standalone,
}

impl Role {
    /// The role as the wire names it.
    pub fn wire(self) -> MemberRole {
        match self {
            Role::Primary => MemberRole::Primary,
            Role::Replica => MemberRole::Replica,
            Role::Standalone => MemberRole::Standalone,
        }
    }
}

/// What a probe of the local server found.
#[derive(Clone, Debug)]
pub struct Probe {
    pub role: Role,
    /// The server answered queries.
    pub healthy: bool,
    /// e.g. "15.18" or "10.11.6-MariaDB".
    pub version: String,
}

/// One part of a backup to be dumped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartPlan {
    /// `globals`, a database name, or the SQLite file's name.
    pub name: String,
    pub kind: PartKind,
}

/// A part being dumped: read `reader` to its end, handing every piece to `tap` (when there is
/// one) in order and ending it, then await `finish`, which waits for the tool, fails with the
/// tool's error (its stderr) if it failed, and returns the part's table stats (counted from the
/// pieces the tap saw).
pub struct Dump {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub tap: Option<crate::counting::Tap>,
    pub finish: futures::future::BoxFuture<'static, Result<Vec<TableStat>>>,
}

impl Dump {
    /// Reads the whole stream into memory, feeding the tap (for small parts and tests; the
    /// backup pipeline streams instead).
    pub async fn read_all(&mut self) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        self.reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::Other(format!("reading a dump: {e}")))?;
        if let Some(tap) = self.tap.take() {
            tap.send(bytes::Bytes::copy_from_slice(&bytes)).await;
            tap.end().await;
        }
        Ok(bytes)
    }
}

/// A consistent backup of one service in progress: the parts to dump, in order.
#[async_trait::async_trait]
pub trait BackupRun: Send {
    fn parts(&self) -> &[PartPlan];
    /// Databases of the server this run leaves out (the service's `databases` names a
    /// subset), each with why.
    fn left_out(&self) -> Vec<strongbox_core::manifest::LeftOut> {
        Vec::new()
    }
    /// Starts dumping one part (one of `parts()`); parts are dumped one after another.
    async fn dump(&mut self, part: &PartPlan) -> Result<Dump>;
    /// Ends the run (closes snapshot transactions, removes temporary copies).
    async fn close(self: Box<Self>) -> Result<()>;
}

/// A fresh server (or file) a restore loads into, or the service's own server for an in-place
/// restore. A fresh server keeps running after the restore: it is what the restore delivers.
#[async_trait::async_trait]
pub trait RestoreTarget: Send {
    fn connection(&self) -> Connection;
    /// Loads one part, read from `reader` to its end. Parts come in the backup's order (globals
    /// first). An engine that needs a seekable file (pg_restore --jobs) spools it under the
    /// target's folder (in place: the scratch folder) and removes it after.
    async fn load(
        &mut self,
        part: &PartPlan,
        reader: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<()>;
    /// After the last part: leaves whatever the load needed (PostgreSQL: bulk-load settings),
    /// and starts flushing the loaded data to disk, which may go on while [`Self::verify`] runs.
    async fn finish_load(&mut self) -> Result<()> {
        Ok(())
    }
    /// Waits until what [`Self::finish_load`] started is done: the loaded data is on disk.
    async fn wait_durable(&mut self) -> Result<()> {
        Ok(())
    }
    /// Compares tables and row counts with `expected` (all parts' stats) and runs the engine's
    /// own check.
    async fn verify(&mut self, expected: &[TableStat]) -> Result<Verification>;
}

/// One engine: a service's server on this host, and the way to make fresh ones.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;
    fn spec(&self) -> &ServiceSpec;
    /// Asks the server its role, health and version. An unreachable server is
    /// `Ok(Probe { healthy: false, .. })` when the role cannot be read; errors are for
    /// misconfiguration.
    async fn probe(&self) -> Result<Probe>;
    /// Starts a consistent backup: fixes the snapshot and lists the parts.
    async fn begin_backup(&self) -> Result<Box<dyn BackupRun>>;
    /// This service's own (live) server as the target of an in-place restore, which the
    /// coordinator orders only after a `pre-restore` backup of it completed. Loading a database
    /// part replaces that database: its sessions are ended, it is dropped and recreated from the
    /// dump; a globals part is applied over the roles that exist; SQLite replaces the file's
    /// content through the online backup API, so open connections see the restored data.
    /// Verification is the same as after a restore onto a fresh server. `scratch` is an empty
    /// folder under the data root for spools; the caller removes it.
    async fn in_place(&self, scratch: &Path) -> Result<Box<dyn RestoreTarget>> {
        let _ = scratch;
        Err(Error::Other(format!(
            "in-place restore of {} services is not supported",
            self.kind().as_str()
        )))
    }
}

/// Makes a fresh, empty server for `kind` in `dir` (created; must not exist or be empty),
/// listening on `listen` (an address of this host) and a free port, and starts it.
/// `bin_dir`: where the engine's tools are (None: PATH and the usual places).
pub async fn provision(
    kind: EngineKind,
    dir: &Path,
    listen: &str,
    bin_dir: Option<&Path>,
    name: &str,
) -> Result<Box<dyn RestoreTarget>> {
    match kind {
        EngineKind::Postgres => crate::postgres::provision(dir, listen, bin_dir).await,
        EngineKind::Mysql => crate::mysql::provision(dir, listen, bin_dir).await,
        EngineKind::Sqlite => crate::sqlite::provision(dir, name).await,
    }
}

/// The engine for one configured service.
pub fn open(spec: ServiceSpec) -> Result<Box<dyn Engine>> {
    match spec.engine {
        EngineKind::Postgres => Ok(Box::new(crate::postgres::Postgres::new(spec)?)),
        EngineKind::Mysql => Ok(Box::new(crate::mysql::Mysql::new(spec)?)),
        EngineKind::Sqlite => Ok(Box::new(crate::sqlite::Sqlite::new(spec)?)),
    }
}

/// Stops a server that `provision` made (for teardown: drills, tests), given its folder.
pub async fn teardown(kind: EngineKind, dir: &Path) -> Result<()> {
    match kind {
        EngineKind::Postgres => crate::postgres::teardown(dir).await,
        EngineKind::Mysql => crate::mysql::teardown(dir).await,
        EngineKind::Sqlite => Ok(()),
    }
}
