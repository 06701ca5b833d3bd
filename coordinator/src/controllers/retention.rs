//! The retention controller: expires, service by service, the completed backups the policy no
//! longer keeps (their chunks go at the next GC, when no kept manifest names them), and forgets
//! history past its bounds (finished jobs, request ids, the audit log: `catalog/history.rs`).
//!
//! Invariant: it only proposes; the catalog re-evaluates retention at the command's time and
//! removes only what is still expired then (a hold placed meanwhile wins).

use std::collections::BTreeMap;
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
}

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
        Ok(Done::items(pass(node, now).await? as u64))
    }
}

/// Prunes old jobs and expires what the policy no longer keeps at `now`; how many backups
/// were expired.
pub async fn pass(node: &NodeContext, now: u64) -> Result<usize> {
    let snap = node.catalog.schedule_snapshot()?;
    let mut by_service: BTreeMap<&str, Vec<strongbox_proto::catalog::BackupRecord>> =
        BTreeMap::new();
    for b in &snap.backups {
        by_service.entry(&b.service).or_default().push(b.clone());
    }
    // Forgets history past its bounds (catalog/history.rs), when anything is due: a few
    // index keys read, not every job. The audit log outlives the longest lock of any policy.
    let lock_days = snap.max_lock_days();
    if let Some(prune) = node.catalog.history_due(now, lock_days)? {
        let cmd = node.command(&actor(node, "retention"), Op::PruneHistory(prune));
        node.submit(cmd).await?;
    }
    let mut expired = 0;
    for (service, backups) in by_service {
        let verdicts = evaluate(&snap.policy(service), &backups, now);
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
                service: service.to_string(),
                backup_ids,
            }),
        );
        let outcome = node.submit(cmd).await?;
        if outcome.error.is_empty() {
            expired += n;
            tracing::info!(service, backups = n, "retention expired backups");
        }
    }
    Ok(expired)
}
