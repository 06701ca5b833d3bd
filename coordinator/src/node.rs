//! The running node, below every layer that uses it (the gRPC services in `api/`, the workers,
//! chunk replication and maintenance, the HTTP listener): its identity, its Raft handle,
//! catalog and chunk store, and the two things everything needs from it — submitting a catalog
//! command from any node (proposed here on the leader, forwarded to the leader otherwise) and
//! linearizable reads.
//!
//! Invariants: a submission is answered with the outcome of the applied entry, or an error
//! after [`REQUEST_DEADLINE`]; retries reuse the request id, so a command lost with a leader is
//! re-proposed and applied at most once; a read is linearizable once `read_barrier` returns.
//! This module imports no `api/` code: services depend on the node, never the reverse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prost::Message as _;
use strongbox_core::pki::Identity;
use strongbox_proto::catalog::{Command, Outcome};
use strongbox_proto::v1::cluster_service_client::ClusterServiceClient;
use strongbox_proto::v1::ForwardProposalRequest;
use strongbox_proto::MAX_CLUSTER_MESSAGE_BYTES;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::raft::node::{RaftHandle, REQUEST_DEADLINE};
use crate::raft::transport::Transport;
use strongbox_core::clock::now_ms;

/// Shared state of a running node.
pub struct NodeContext {
    pub id: u64,
    pub name: String,
    pub region: String,
    pub raft: RaftHandle,
    pub catalog: Catalog,
    pub chunks: Arc<crate::chunks::store::ChunkStore>,
    pub transport: Arc<Transport>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The chunks each committed backup may serve to restores and downloads.
    pub scopes: crate::chunks::scopes::BackupScopes,
    /// The agent sessions open on this node, by host.
    pub sessions: Arc<Sessions>,
    /// What each background worker did last (`cluster status`).
    pub workers: crate::worker::Statuses,
    /// Set once the node stops (SIGTERM): sessions end, telling their agents to go to
    /// another node, so a stop never waits for them.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// How long an agent whose session ended has to come back before its open jobs fail.
    pub agent_grace: std::time::Duration,
    /// Restored servers one spare may run at once.
    pub max_restored_servers: usize,
    /// The Raft snapshot this node made (and serves), and the one it takes.
    pub snapshots: Arc<crate::raft::snapshots::Snapshots>,
}

impl NodeContext {
    /// A new command from `actor` with a fresh request id.
    pub fn command(&self, actor: &Identity, op: strongbox_proto::catalog::command::Op) -> Command {
        Command {
            request_id: uuid::Uuid::now_v7().to_string(),
            actor: Some(crate::catalog::actor(actor)),
            unix_ms: now_ms(),
            op: Some(op),
        }
    }

    /// Runs `op` for `actor` through Raft; a refusal by the catalog is the gRPC code of its
    /// kind (`catalog::refusal::status`) with the catalog's reason.
    pub async fn apply(
        &self,
        actor: &Identity,
        op: strongbox_proto::catalog::command::Op,
    ) -> std::result::Result<(), tonic::Status> {
        let outcome = self.submit(self.command(actor, op)).await?;
        if outcome.error.is_empty() {
            Ok(())
        } else {
            Err(crate::catalog::refusal::status(
                outcome.refusal(),
                outcome.error,
            ))
        }
    }

    /// Applies `cmd` through Raft from this node, waiting through elections up to the deadline.
    pub async fn submit(&self, cmd: Command) -> Result<Outcome> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let mut status = self.raft.subscribe();
        loop {
            let st = status.borrow_and_update().clone();
            let attempt =
                if st.leader_id == self.id && st.role == strongbox_proto::v1::NodeRole::Leader {
                    self.raft.propose(cmd.clone()).await
                } else if st.leader_id != 0 {
                    self.forward(st.leader_id, &cmd).await
                } else {
                    Err(Error::NoLeader)
                };
            match attempt {
                Ok(outcome) => return Ok(outcome),
                Err(e @ (Error::NoLeader | Error::Transport(_) | Error::Raft(_))) => {
                    tracing::debug!(request_id = %cmd.request_id, error = %e, "retrying a proposal");
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    // Wake on the next change of Raft state, or soon anyway.
                    let wait = left.min(std::time::Duration::from_millis(200));
                    let _ = tokio::time::timeout(wait, status.changed()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn forward(&self, leader: u64, cmd: &Command) -> Result<Outcome> {
        let channel = self.transport.channel(leader)?;
        let mut client = ClusterServiceClient::new(channel)
            .max_decoding_message_size(MAX_CLUSTER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CLUSTER_MESSAGE_BYTES);
        let mut req = tonic::Request::new(ForwardProposalRequest {
            command: cmd.encode_to_vec().into(),
        });
        req.set_timeout(REQUEST_DEADLINE);
        match client.forward_proposal(req).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Outcome {
                    index: r.index,
                    error: r.error,
                    refusal: r.refusal,
                })
            }
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    || s.code() == tonic::Code::DeadlineExceeded =>
            {
                Err(Error::Transport(s.message().to_string()))
            }
            Err(s) => Err(Error::Refused(s.message().to_string())),
        }
    }

    /// Waits until this node's catalog reflects every write committed before the call.
    pub async fn read_barrier(&self) -> Result<()> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        loop {
            match self.raft.read_barrier().await {
                Ok(_) => return Ok(()),
                Err(e @ (Error::NoLeader | Error::Timeout(_))) => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The agent sessions open on this node, by host: how many, and how to wake each when the
/// host's jobs change (the catalog's hook, [`Sessions::wake`]), so a session learns of a new
/// job at once rather than at its next poll.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Vec<Arc<tokio::sync::Notify>>>>,
    /// Ids of the sessions this process serves now: the recorded sessions a restarted node
    /// must not end ([`crate::api::session::end_stale_sessions`]).
    ids: Mutex<std::collections::HashSet<String>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<tokio::sync::Notify>>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more session of `host`, unless it holds `max` already: then `Err` with how
    /// many it holds. `Ok` with how many it held before, and what wakes the new session.
    pub fn enter(
        &self,
        host: &str,
        max: usize,
    ) -> std::result::Result<(usize, Arc<tokio::sync::Notify>), usize> {
        let mut open = self.lock();
        let held = open.entry(host.to_string()).or_default();
        if held.len() >= max {
            return Err(held.len());
        }
        let waker = Arc::new(tokio::sync::Notify::new());
        held.push(waker.clone());
        Ok((held.len() - 1, waker))
    }

    /// Counts the session that `waker` wakes, of `host`, no more.
    pub fn leave(&self, host: &str, waker: &Arc<tokio::sync::Notify>) {
        let mut open = self.lock();
        if let Some(held) = open.get_mut(host) {
            held.retain(|w| !Arc::ptr_eq(w, waker));
            if held.is_empty() {
                open.remove(host);
            }
        }
    }

    /// Marks session `id` as served by this process (`true`) or no longer (`false`).
    pub fn serving(&self, id: &str, serving: bool) {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if serving {
            ids.insert(id.to_string());
        } else {
            ids.remove(id);
        }
    }

    /// Whether this process serves session `id`.
    pub fn serves(&self, id: &str) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// Wakes every session of `host` (a permit is kept for one that is not waiting, so no
    /// change between two looks is missed).
    pub fn wake(&self, host: &str) {
        if let Some(held) = self.lock().get(host) {
            for w in held {
                w.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_every_session_of_the_host_even_between_two_looks() {
        let s = Sessions::default();
        let (_, a) = s.enter("db-1", 2).expect("a place");
        let (_, b) = s.enter("db-1", 2).expect("a second place");
        assert_eq!(s.enter("db-1", 2).expect_err("full"), 2);
        let (_, other) = s.enter("db-2", 2).expect("another host");
        // Woken while nobody waits: the permit is kept for the next look.
        s.wake("db-1");
        a.notified().await;
        b.notified().await;
        assert!(
            futures::FutureExt::now_or_never(other.notified()).is_none(),
            "another host's session is not woken"
        );
        s.leave("db-1", &a);
        s.leave("db-1", &b);
        assert!(s.enter("db-1", 1).is_ok(), "both places are free again");
    }
}
