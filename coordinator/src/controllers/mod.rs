//! Controllers: loops that run on the leader only, read the catalog, decide, and propose
//! commands (DESIGN.md "Controllers"). Each pass starts with a read barrier, so a new leader
//! decides on everything its predecessor committed; each proposal is idempotent, so a pass cut
//! short by a leader change is simply done again by the next leader.

pub mod clock;
pub mod retention;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use strongbox_core::pki::{Identity, Role};

use crate::api::NodeContext;

/// Runs the scheduler (if `schedule`) and retention passes every `interval` while this node
/// leads.
pub async fn run(node: Arc<NodeContext>, interval: Duration, schedule: bool) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the retention pass is being skipped for a wrong clock (logged once an episode).
    let mut clock_refused = false;
    loop {
        tick.tick().await;
        if node.raft.status().leader_id != node.id {
            continue;
        }
        if let Err(e) = node.read_barrier().await {
            tracing::debug!(error = %e, "controllers: no read barrier; next tick");
            continue;
        }
        if let Err(e) = record_region(&node).await {
            tracing::warn!(error = %e, "recording the region failed; retrying next tick");
        }
        if let Err(e) = clock::tick(&node).await {
            tracing::warn!(error = %e, "recording the voters' clocks failed; retrying next tick");
        }
        let now = crate::raft::node::now_ms();
        if schedule {
            if let Err(e) = scheduler::pass(&node, now).await {
                tracing::warn!(error = %e, "scheduler pass failed; retrying next tick");
            }
        }
        // Retention deletes by time: never on a clock the catalog's disagrees with.
        match node.catalog.implausible_time(now) {
            Ok(Some(why)) => {
                if !clock_refused {
                    tracing::error!(
                        why,
                        "retention pass skipped: it deletes nothing on this clock"
                    );
                    clock_refused = true;
                }
            }
            Ok(None) => {
                if clock_refused {
                    tracing::warn!("retention runs again: this clock agrees with the catalog's");
                    clock_refused = false;
                }
                if let Err(e) = retention::pass(&node, now).await {
                    tracing::warn!(error = %e, "retention pass failed; retrying next tick");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the catalog's clock failed; retrying next tick")
            }
        }
    }
}

/// The region this cluster serves gets its catalog record once (the first leader writes it).
async fn record_region(node: &NodeContext) -> crate::error::Result<()> {
    if node.catalog.region(&node.region)?.is_some() {
        return Ok(());
    }
    let mut cmd = node.command(
        &actor(node, "regions"),
        strongbox_proto::catalog::command::Op::SetRegion(strongbox_proto::catalog::SetRegion {
            name: node.region.clone(),
            copies_to: Vec::new(),
        }),
    );
    cmd.request_id = format!("region/{}", node.region);
    node.submit(cmd).await.map(|_| ())
}

/// The identity a controller's commands carry (recorded in the audit log).
fn actor(node: &NodeContext, controller: &str) -> Identity {
    Identity {
        role: Role::Node,
        name: format!("{}/{controller}", node.name),
    }
}
