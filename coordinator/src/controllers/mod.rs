//! Controllers: the leader's [`Worker`]s that read the catalog, decide, and propose commands
//! (DESIGN.md "Controllers"): the region record, the agreed clock, the scheduler and retention.
//! Each runs in its own task ([`crate::worker::spawn`]), so a slow pass of one never delays
//! another; each pass starts after a read barrier (the runner's), so a new leader decides on
//! everything its predecessor committed; each proposal is idempotent, so a pass cut short by a
//! leader change is simply done again by the next leader.

pub mod clock;
pub mod retention;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use strongbox_core::pki::{Identity, Role};

use crate::error::Result;
use crate::node::NodeContext;
use crate::worker::{Done, Worker};

/// The leader's controllers, each passing every `interval` (the scheduler only if `schedule`).
pub fn workers(interval: Duration, schedule: bool) -> Vec<Box<dyn Worker>> {
    let mut all: Vec<Box<dyn Worker>> = vec![
        Box::new(RegionRecord { interval }),
        Box::new(clock::Clock { interval }),
        Box::new(retention::Retention {
            interval,
            clock_refused: false,
            after: None,
        }),
    ];
    if schedule {
        all.push(Box::new(scheduler::Scheduler { interval }));
    }
    all
}

/// Writes the catalog record of the region this cluster serves, once (the first leader does).
pub struct RegionRecord {
    interval: Duration,
}

#[async_trait::async_trait]
impl Worker for RegionRecord {
    fn name(&self) -> &'static str {
        "region"
    }
    fn leader_only(&self) -> bool {
        true
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn pass(&mut self, node: &Arc<NodeContext>) -> Result<Done> {
        if node.catalog.region(&node.region)?.is_some() {
            return Ok(Done::default());
        }
        let mut cmd = node.command(
            &actor(node, "regions"),
            strongbox_proto::catalog::command::Op::SetRegion(strongbox_proto::catalog::SetRegion {
                name: node.region.clone(),
                copies_to: Vec::new(),
            }),
        );
        cmd.request_id = format!("region/{}", node.region);
        node.submit(cmd).await?;
        Ok(Done::items(1))
    }
}

/// The identity a controller's commands carry (recorded in the audit log).
fn actor(node: &NodeContext, controller: &str) -> Identity {
    Identity {
        role: Role::Node,
        name: format!("{}/{controller}", node.name),
    }
}
