//! The retention controller: expires, service by service, the completed backups the policy no
//! longer keeps (their chunks go at the next GC, when no kept manifest names them), and forgets
//! history past its bounds (finished jobs, request ids, the audit log: `catalog/history.rs`).
//!
//! Invariant: it only proposes; the catalog re-evaluates retention at the command's time and
//! removes only what is still expired then (a hold placed meanwhile wins).

use std::sync::Arc;
use std::time::Duration;

use strongbox_core::clock::now_ms;
use strongbox_proto::catalog::{command::Op, ExpireBackups};

use super::actor;
use crate::error::Result;
use crate::node::NodeContext;
use crate::policy::retention::evaluate;
use crate::worker::{Done, Worker};

/// Retention as a leader-only worker. It deletes by time, so never on a clock the catalog's
/// agreed time disagrees with (`Catalog::implausible_time`): such a pass deletes nothing, and
/// says so once an episode.
pub struct Retention {
    pub(super) interval: Duration,
    /// Whether passes are being skipped for a wrong clock (logged once an episode).
    pub(super) clock_refused: bool,
    /// The last service the previous pass judged: the next goes on after it.
    pub(super) after: Option<String>,
}

/// Services one pass judges: a pass costs a slice of the fleet, and the whole fleet is judged
/// every `services / SLICE` passes.
pub const SLICE: usize = 500;

#[async_trait::async_trait]
impl Worker for Retention {
    fn name(&self) -> &'static str {
        "retention"
    }
    fn leader_only(&self) -> bool {
        true
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn pass(&mut self, node: &Arc<NodeContext>) -> Result<Done> {
        let now = now_ms();
        if let Some(why) = node.catalog.implausible_time(now)? {
            if !self.clock_refused {
                tracing::error!(
                    why,
                    "retention pass skipped: it deletes nothing on this clock"
                );
                self.clock_refused = true;
            }
            return Ok(Done::default());
        }
        if self.clock_refused {
            tracing::warn!("retention runs again: this clock agrees with the catalog's");
            self.clock_refused = false;
        }
        let (expired, next) = pass(node, now, self.after.as_deref(), SLICE).await?;
        self.after = next;
        Ok(Done::items(expired as u64))
    }
}

/// Prunes old history, and expires what the policy no longer keeps at `now` among up to
/// `slice` services after `after` (by name): how many backups were expired, and the service
/// to go on after (`None`: the next pass starts from the first).
pub async fn pass(
    node: &NodeContext,
    now: u64,
    after: Option<&str>,
    slice: usize,
) -> Result<(usize, Option<String>)> {
    // Forgets history past its bounds (catalog/history.rs), when anything is due: a few
    // index keys read, not every job. The audit log outlives the longest lock of any policy.
    let lock_days = node.catalog.max_lock_days()?;
    if let Some(prune) = node.catalog.history_due(now, lock_days)? {
        let cmd = node.command(&actor(node, "retention"), Op::PruneHistory(prune));
        node.submit(cmd).await?;
    }
    let (services, next) = node.catalog.retention_slice(after, slice)?;
    let mut expired = 0;
    for (service, backups) in services {
        let verdicts = evaluate(&node.catalog.effective_policy(&service)?, &backups, now);
        let backup_ids: Vec<String> = verdicts
            .into_iter()
            .filter(|(_, v)| v.expired())
            .map(|(id, _)| id)
            .collect();
        if backup_ids.is_empty() {
            continue;
        }
        let n = backup_ids.len();
        let cmd = node.command(
            &actor(node, "retention"),
            Op::ExpireBackups(ExpireBackups {
                service: service.clone(),
                backup_ids,
            }),
        );
        let outcome = node.submit(cmd).await?;
        if outcome.error.is_empty() {
            expired += n;
            tracing::info!(service = %service, backups = n, "retention expired backups");
        }
    }
    Ok((expired, next))
}
