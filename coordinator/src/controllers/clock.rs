//! The agreed time: about once a minute the leader asks every voter for its wall clock and
//! proposes what it gathered (`Tick`); the catalog takes the median when a majority answered.
//! Deletions by time are judged against that time ([`crate::catalog::Catalog::implausible_time`]),
//! so one node's stepped clock (a new leader running behind, or a year ahead) deletes nothing.
//!
//! The nodes that answered (voters and learners) are recorded as seen: an agent's session on
//! a node counts only while the node is seen ([`crate::policy::presence`]).
//!
//! Invariant: a tick carries only clocks read within this call (each voter asked once, with a
//! short timeout); the catalog, not this loop, decides whether they make a majority.

use std::sync::Arc;
use std::time::Duration;

use strongbox_proto::catalog::{command::Op, Tick};
use strongbox_proto::v1::cluster_service_client::ClusterServiceClient;
use strongbox_proto::v1::ClockRequest;

use super::actor;
use crate::catalog::TICK_EVERY_MS;
use crate::error::Result;
use crate::node::NodeContext;
use crate::worker::{Done, Worker};

/// The agreed clock as a leader-only worker.
pub struct Clock {
    pub(super) interval: Duration,
}

#[async_trait::async_trait]
impl Worker for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }
    fn leader_only(&self) -> bool {
        true
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn pass(&mut self, node: &Arc<NodeContext>) -> Result<Done> {
        Ok(Done::items(u64::from(tick(node).await?)))
    }
}

const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Proposes a tick when the agreed time is older than [`TICK_EVERY_MS`] on this clock;
/// whether it did.
pub async fn tick(node: &NodeContext) -> Result<bool> {
    let agreed = node.catalog.clock_ms()?;
    let now = strongbox_core::clock::now_ms();
    if agreed != 0 && now < agreed.saturating_add(TICK_EVERY_MS) && now + TICK_EVERY_MS > agreed {
        return Ok(false);
    }
    let status = node.raft.status();
    let voters = status.voters;
    // Learners are asked too: their answer says they are alive (their agents' sessions count,
    // `policy::presence`), but only voters' clocks make the agreed time.
    let asks = voters
        .iter()
        .chain(&status.learners)
        .filter(|v| **v != node.id)
        .map(|peer| async move {
            let channel = node.transport.channel(*peer).ok()?;
            let mut req = tonic::Request::new(ClockRequest {});
            req.set_timeout(ASK_TIMEOUT);
            let r = ClusterServiceClient::new(channel).clock(req).await.ok()?;
            Some((*peer, r.into_inner().unix_ms))
        });
    let answers: Vec<(u64, u64)> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut clocks: Vec<u64> = answers
        .iter()
        .filter(|(id, _)| voters.contains(id))
        .map(|(_, t)| *t)
        .collect();
    let mut answered: Vec<u64> = answers.iter().map(|(id, _)| *id).collect();
    answered.push(node.id);
    if voters.contains(&node.id) {
        clocks.push(strongbox_core::clock::now_ms());
    }
    let mut cmd = node.command(
        &actor(node, "clock"),
        Op::Tick(Tick {
            clocks,
            voters: voters.len() as u32,
            answered,
        }),
    );
    // One request record a minute at most (a retried tick of the same minute applies once).
    cmd.request_id = format!("tick/{}", now / TICK_EVERY_MS);
    let outcome = node.submit(cmd).await?;
    if !outcome.error.is_empty() {
        tracing::warn!(error = %outcome.error, "the voters did not agree on a time");
    }
    Ok(true)
}
