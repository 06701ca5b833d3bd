//! `ClusterService`: node to node. Only certificates with the role `node` get in.

use std::sync::Arc;

use prost::Message as _;
use protobuf::Message as _;
use strongbox_core::pki::Role;
use strongbox_core::tls::require_role;
use strongbox_proto::catalog::Command;
use strongbox_proto::v1::cluster_service_server::ClusterService;
use strongbox_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::chunks::replicate;
use crate::chunks::store::Lookup;
use crate::node::NodeContext;

pub struct ClusterApi {
    pub node: Arc<NodeContext>,
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn raft(&self, req: Request<RaftMessage>) -> Result<Response<RaftAck>, Status> {
        require_role(&req, &[Role::Node])?;
        let batch = req.into_inner();
        for bytes in batch.messages {
            let m = raft::eraftpb::Message::parse_from_bytes(&bytes)
                .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))?;
            if m.to != self.node.id {
                return Err(Status::invalid_argument(format!(
                    "Raft message for node {} sent to node {}",
                    m.to, self.node.id
                )));
            }
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                // Only `InstallSnapshot` steps a snapshot, once its catalog is prepared.
                return Err(Status::invalid_argument(
                    "a snapshot message comes through InstallSnapshot",
                ));
            }
            self.node.raft.step(m)?;
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn install_snapshot(
        &self,
        req: Request<InstallSnapshotRequest>,
    ) -> Result<Response<InstallSnapshotResponse>, Status> {
        require_role(&req, &[Role::Node])?;
        super::snapshot::install(&self.node, req.into_inner()).await?;
        Ok(Response::new(InstallSnapshotResponse {}))
    }

    type FetchSnapshotStream =
        tokio_stream::wrappers::ReceiverStream<Result<SnapshotChunk, Status>>;

    async fn fetch_snapshot(
        &self,
        req: Request<FetchSnapshotRequest>,
    ) -> Result<Response<Self::FetchSnapshotStream>, Status> {
        require_role(&req, &[Role::Node])?;
        let rx = super::snapshot::serve(&self.node, req.into_inner())?;
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn replicate_chunks(
        &self,
        req: Request<ReplicateChunksRequest>,
    ) -> Result<Response<ReplicateChunkResponse>, Status> {
        require_role(&req, &[Role::Node])?;
        let r = req.into_inner();
        let chunks = replicate::validate_batch(r.chunks)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        replicate::put_local(&self.node.chunks, chunks, !r.lazy).await?;
        Ok(Response::new(ReplicateChunkResponse {}))
    }

    async fn fetch_chunk(
        &self,
        req: Request<FetchChunkRequest>,
    ) -> Result<Response<FetchChunkResponse>, Status> {
        require_role(&req, &[Role::Node])?;
        let id = strongbox_core::ids::ChunkId::from_slice(&req.into_inner().id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match replicate::get_local(&self.node.chunks, id).await? {
            Lookup::Found(b) => Ok(Response::new(FetchChunkResponse { sealed: b.into() })),
            Lookup::Missing => Err(Status::not_found(format!(
                "node {} has no chunk {id}",
                self.node.id
            ))),
            Lookup::Corrupt(why) => Err(Status::data_loss(why)),
        }
    }

    async fn forward_proposal(
        &self,
        req: Request<ForwardProposalRequest>,
    ) -> Result<Response<ForwardProposalResponse>, Status> {
        require_role(&req, &[Role::Node])?;
        let mut cmd = Command::decode(req.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("malformed command: {e}")))?;
        // Commands are stamped by the leader's clock, whichever node made them: times the
        // catalog compares (a host's last report against now) then come from one clock while a
        // leader lasts, and a follower's skew never reaches the catalog.
        cmd.unix_ms = strongbox_core::clock::now_ms();
        let outcome = self.node.raft.propose(cmd).await?;
        Ok(Response::new(ForwardProposalResponse {
            index: outcome.index,
            error: outcome.error,
            refusal: outcome.refusal,
        }))
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        require_role(&req, &[Role::Node])?;
        let index = self.node.raft.read_barrier().await?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn clock(&self, req: Request<ClockRequest>) -> Result<Response<ClockResponse>, Status> {
        require_role(&req, &[Role::Node])?;
        Ok(Response::new(ClockResponse {
            unix_ms: strongbox_core::clock::now_ms(),
        }))
    }

    async fn missing_chunks(
        &self,
        req: Request<HaveChunksRequest>,
    ) -> Result<Response<HaveChunksResponse>, Status> {
        require_role(&req, &[Role::Node])?;
        let missing = replicate::missing_reply(&self.node.chunks, &req.into_inner().ids).await?;
        Ok(Response::new(missing))
    }
}
