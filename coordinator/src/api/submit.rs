//! What every service handler needs from the node: submitting a catalog command from any node
//! (proposed here on the leader, forwarded to the leader otherwise) and linearizable reads.
//!
//! Invariants: a submission is answered with the outcome of the applied entry, or an error
//! after [`REQUEST_DEADLINE`]; retries reuse the request id, so a command lost with a leader is
//! re-proposed and applied at most once; a read is linearizable once `read_barrier` returns.

use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use strongbox_core::pki::Identity;
use strongbox_proto::catalog::{Command, Outcome};
use strongbox_proto::v1::cluster_service_client::ClusterServiceClient;
use strongbox_proto::v1::ForwardProposalRequest;
use strongbox_proto::MAX_CLUSTER_MESSAGE_BYTES;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::raft::node::{now_ms, RaftHandle, REQUEST_DEADLINE};
use crate::raft::transport::Transport;

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
    pub scopes: super::jobs::BackupScopes,
    /// The agent sessions open on this node, by host.
    pub sessions: super::session::Sessions,
    /// Set once the node stops (SIGTERM): sessions end, telling their agents to go to
    /// another node, so a stop never waits for them.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// How long an agent whose session ended has to come back before its open jobs fail.
    pub agent_grace: std::time::Duration,
    /// Restored servers one spare may run at once.
    pub max_restored_servers: usize,
}

impl NodeContext {
    /// A new command from `actor` with a fresh request id.
    pub fn command(&self, actor: &Identity, op: strongbox_proto::catalog::command::Op) -> Command {
        Command {
            request_id: uuid::Uuid::now_v7().to_string(),
            actor: Some(super::convert::actor(actor)),
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
