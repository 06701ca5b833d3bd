//! `AgentService`: what agents call. Only certificates with the role `agent` get in, and an
//! agent acts only for its own host.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use strongbox_core::pki::Role;
use strongbox_core::tls::require_role;
use strongbox_proto::catalog::{command::Op, MemberRecord, RegisterHost};
use strongbox_proto::v1::agent_service_server::AgentService;
use strongbox_proto::v1::*;
use tonic::{Request, Response, Status, Streaming};

use super::NodeContext;
use crate::chunks::replicate;
use strongbox_core::ids::ChunkId;

/// Ids one HaveChunks call may ask about (a 4 TiB dump at 1 MiB chunks is 4M ids: many calls).
const MAX_IDS_PER_CALL: usize = 65_536;

pub struct AgentApi {
    pub node: Arc<NodeContext>,
}

const NOT_YET: &str = "not part of this build yet";

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let who = require_role(&req, &[Role::Agent])?;
        let r = req.into_inner();
        if r.host != who.name {
            return Err(Status::permission_denied(format!(
                "{who} may register only its own host {:?}, not {:?}",
                who.name, r.host
            )));
        }
        if r.region != self.node.region {
            return Err(Status::invalid_argument(format!(
                "host {} says region {:?}, but this cluster serves {:?}: fix the agent's region or coordinator addresses",
                r.host, r.region, self.node.region
            )));
        }
        for m in &r.members {
            strongbox_core::pki::validate_name(&m.service)
                .map_err(|e| Status::invalid_argument(format!("service name: {e}")))?;
            if !matches!(m.engine.as_str(), "postgres" | "mysql" | "sqlite") {
                return Err(Status::invalid_argument(format!(
                    "unknown engine {:?}",
                    m.engine
                )));
            }
            if !matches!(m.role.as_str(), "primary" | "replica" | "standalone") {
                return Err(Status::invalid_argument(format!(
                    "unknown member role {:?}",
                    m.role
                )));
            }
        }
        let cmd = self.node.command(
            &who,
            Op::RegisterHost(RegisterHost {
                host: r.host.clone(),
                region: r.region,
                spare: r.spare,
                members: r
                    .members
                    .into_iter()
                    .map(|m| MemberRecord {
                        service: m.service,
                        engine: m.engine,
                        role: m.role,
                        healthy: m.healthy,
                        engine_version: m.engine_version,
                    })
                    .collect(),
            }),
        );
        let outcome = self.node.submit(cmd).await?;
        if !outcome.error.is_empty() {
            return Err(Status::failed_precondition(outcome.error));
        }
        let coordinators = self
            .node
            .catalog
            .nodes()?
            .into_iter()
            .map(|n| n.address)
            .collect();
        Ok(Response::new(RegisterResponse {
            host_id: r.host,
            coordinators,
        }))
    }

    type SessionStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        require_role(&req, &[Role::Agent])?;
        Err(Status::unimplemented(format!(
            "agent sessions are {NOT_YET}"
        )))
    }

    async fn have_chunks(
        &self,
        req: Request<HaveChunksRequest>,
    ) -> Result<Response<HaveChunksResponse>, Status> {
        require_role(&req, &[Role::Agent])?;
        let ids = req.into_inner().ids;
        if ids.len() > MAX_IDS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_IDS_PER_CALL} ids per call"
            )));
        }
        let ids = ids
            .iter()
            .map(|b| ChunkId::from_slice(b).map_err(|e| Status::invalid_argument(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.node.chunks.clone();
        let missing = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .filter(|id| !store.has(id))
                .map(|id| bytes::Bytes::copy_from_slice(id.as_bytes()))
                .collect()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(HaveChunksResponse { missing }))
    }

    async fn upload_chunk(
        &self,
        req: Request<UploadChunkRequest>,
    ) -> Result<Response<UploadChunkResponse>, Status> {
        require_role(&req, &[Role::Agent])?;
        let r = req.into_inner();
        let id = replicate::validate(&r.id, &r.sealed)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        replicate::put_majority(&self.node, id, r.sealed).await?;
        Ok(Response::new(UploadChunkResponse {}))
    }

    async fn commit_backup(
        &self,
        req: Request<CommitBackupRequest>,
    ) -> Result<Response<CommitBackupResponse>, Status> {
        require_role(&req, &[Role::Agent])?;
        Err(Status::unimplemented(format!("backups are {NOT_YET}")))
    }

    async fn fetch_chunk(
        &self,
        req: Request<FetchChunkRequest>,
    ) -> Result<Response<FetchChunkResponse>, Status> {
        require_role(&req, &[Role::Agent])?;
        let id = ChunkId::from_slice(&req.into_inner().id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match replicate::fetch(&self.node, id).await? {
            Some(sealed) => Ok(Response::new(FetchChunkResponse { sealed })),
            None => Err(Status::not_found(format!(
                "no node of this region holds a good copy of chunk {id}"
            ))),
        }
    }
}
