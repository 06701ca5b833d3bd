//! The scheduler controller: creates the scheduled backup jobs that `policy::plan` finds due.
//!
//! Invariants: a job is proposed with its deterministic id as request id, so the same slot
//! proposed twice (a retry, a new leader) applies once; the catalog itself refuses a second
//! backup of a service under way and a scheduled backup of an excluded service, whatever the
//! plan said.

use std::sync::Arc;
use std::time::Duration;

use strongbox_core::clock::now_ms;
use strongbox_proto::catalog::{command::Op, CreateJob};

use super::actor;
use crate::error::Result;
use crate::node::NodeContext;
use crate::policy::plan::plan;
use crate::worker::{Done, Worker};

/// The scheduler as a leader-only worker.
pub struct Scheduler {
    pub(super) interval: Duration,
}

#[async_trait::async_trait]
impl Worker for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }
    fn leader_only(&self) -> bool {
        true
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn pass(&mut self, node: &Arc<NodeContext>) -> Result<Done> {
        Ok(Done::items(pass(node, now_ms()).await? as u64))
    }
}

/// Creates the jobs due at `now`; how many were created.
pub async fn pass(node: &NodeContext, now: u64) -> Result<usize> {
    let snap = node.catalog.schedule_snapshot()?;
    let jobs = plan(&snap, now);
    let mut created = 0;
    for mut job in jobs {
        // The backup id is new on every proposal; a duplicate proposal is refused by job id.
        job.backup_id = format!("bk-{}", uuid::Uuid::now_v7());
        let (service, slot, attempt, id) = (
            job.service.clone(),
            job.slot_unix_ms,
            job.attempt,
            job.id.clone(),
        );
        let mut cmd = node.command(
            &actor(node, "scheduler"),
            Op::CreateJob(CreateJob { job: Some(job) }),
        );
        cmd.request_id = id.clone();
        let outcome = node.submit(cmd).await?;
        if outcome.error.is_empty() {
            created += 1;
            tracing::info!(service = %service, job = %id, slot, attempt, "scheduled backup started");
        } else {
            tracing::debug!(service = %service, job = %id, error = %outcome.error, "scheduled backup not started");
        }
    }
    Ok(created)
}
