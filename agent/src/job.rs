//! What a job's pipeline gets from the running agent: a narrow context — the job, the engine
//! of its service (if this host has one), the keyring, the coordinators, the configuration and
//! a way to report — so the pipelines (`backup.rs`, `restore.rs`) never import `agent.rs`,
//! which starts them.
//!
//! Invariant: a context is cheap to clone and holds no lock: a pipeline hands clones to the
//! tasks it spawns.

use std::sync::Arc;

use strongbox_core::connect::Coordinators;
use strongbox_core::keys::Keyring;
use strongbox_engines::Engine;
use strongbox_proto::v1::{Job, JobReport};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::error::{Error, Result};

/// One job's view of the agent.
#[derive(Clone)]
pub struct JobCtx {
    pub job: Job,
    /// The engine of the job's service on this host (none on a spare restoring a service it
    /// does not carry).
    pub engine: Option<Arc<dyn Engine>>,
    pub keyring: Arc<Keyring>,
    pub coordinators: Arc<Coordinators>,
    pub config: Arc<Config>,
    pub(crate) reports: mpsc::UnboundedSender<JobReport>,
}

impl JobCtx {
    /// The engine of the job's service, or why this host has none.
    pub fn engine(&self) -> Result<&dyn Engine> {
        self.engine.as_deref().ok_or_else(|| {
            Error::Other(format!(
                "service {:?} is not configured on host {}; add a [[service]] table for it",
                self.job.service, self.config.host
            ))
        })
    }

    /// Queues a progress report for the session (the newest per job is sent).
    pub fn report(&self, report: JobReport) {
        let _ = self.reports.send(report);
    }
}
