//! `AgentService`: what agents call. Only certificates with the role `agent` get in, and an
//! agent acts only for its own host: chunk presence, uploads and commits within a backup job
//! assigned to it, chunk reads within a restore job assigned to it (and only that backup's
//! chunks).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use strongbox_core::pki::Identity;
use strongbox_core::pki::Role;
use strongbox_core::tls::require_role;
use strongbox_proto::catalog::{command::Op, BackupRecord, CommitBackup, RegisterHost};
use strongbox_proto::v1::agent_service_server::AgentService;
use strongbox_proto::v1::*;
use tonic::{Request, Response, Status, Streaming};

use super::convert::member_record;
use super::jobs::agent_job;
use super::validate;
use crate::chunks::replicate;
use crate::node::NodeContext;
use strongbox_core::ids::ChunkId;

pub struct AgentApi {
    pub node: Arc<NodeContext>,
}

impl AgentApi {
    pub fn new(node: Arc<NodeContext>) -> Self {
        AgentApi { node }
    }

    /// An agent's chunks for its backup job (`UploadChunk`, `UploadChunks`): checked, then
    /// stored on a majority.
    async fn store_chunks(
        &self,
        who: &Identity,
        job_id: &str,
        chunks: Vec<SealedChunk>,
    ) -> Result<Response<UploadChunkResponse>, Status> {
        agent_job(&self.node, who, job_id, JobKind::Backup).await?;
        let chunks = replicate::validate_batch(chunks)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        replicate::put_majority(&self.node, chunks).await?;
        Ok(Response::new(UploadChunkResponse {}))
    }
}

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
        validate::text("agent_version", &r.agent_version, validate::MAX_VERSION_LEN)?;
        validate::members(&r.members)?;
        self.node
            .apply(
                &who,
                Op::RegisterHost(RegisterHost {
                    host: r.host.clone(),
                    region: r.region,
                    spare: r.spare,
                    members: r.members.into_iter().map(member_record).collect(),
                }),
            )
            .await?;
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
        let who = require_role(&req, &[Role::Agent])?;
        let slot = super::session::enter(&self.node, &who.name)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(super::session::run(
            self.node.clone(),
            who,
            slot,
            req.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn have_chunks(
        &self,
        req: Request<HaveChunksRequest>,
    ) -> Result<Response<HaveChunksResponse>, Status> {
        let who = require_role(&req, &[Role::Agent])?;
        let r = req.into_inner();
        agent_job(&self.node, &who, &r.job_id, JobKind::Backup).await?;
        let missing = replicate::missing_reply(&self.node.chunks, &r.ids).await?;
        Ok(Response::new(missing))
    }

    async fn upload_chunk(
        &self,
        req: Request<UploadChunkRequest>,
    ) -> Result<Response<UploadChunkResponse>, Status> {
        let who = require_role(&req, &[Role::Agent])?;
        let r = req.into_inner();
        let chunk = SealedChunk {
            id: r.id,
            sealed: r.sealed,
        };
        self.store_chunks(&who, &r.job_id, vec![chunk]).await
    }

    async fn upload_chunks(
        &self,
        req: Request<UploadChunksRequest>,
    ) -> Result<Response<UploadChunkResponse>, Status> {
        let who = require_role(&req, &[Role::Agent])?;
        let r = req.into_inner();
        self.store_chunks(&who, &r.job_id, r.chunks).await
    }

    async fn commit_backup(
        &self,
        req: Request<CommitBackupRequest>,
    ) -> Result<Response<CommitBackupResponse>, Status> {
        let who = require_role(&req, &[Role::Agent])?;
        let r = req.into_inner();
        let invalid = |e: String| Status::invalid_argument(e);
        strongbox_core::pki::validate_name(&r.backup_id)
            .map_err(|e| invalid(format!("backup id: {e}")))?;
        let kind = validate::required::<BackupKind>("backup kind", r.kind)?;
        if kind == BackupKind::Copy {
            return Err(invalid(
                "an agent commits its own backups; copies come from other regions".into(),
            ));
        }
        // An agent commits only the backup of its own job, of a service on its own host.
        let job = agent_job(&self.node, &who, &r.job_id, JobKind::Backup).await?;
        if job.backup_id != r.backup_id || job.service != r.service {
            return Err(Status::permission_denied(format!(
                "job {} is the backup {} of {}, not {} of {}",
                job.id, job.backup_id, job.service, r.backup_id, r.service
            )));
        }
        let host = self.node.catalog.host(&who.name)?;
        if !host.is_some_and(|h| h.members.iter().any(|m| m.service == r.service)) {
            return Err(Status::permission_denied(format!(
                "{who} may not commit a backup of {:?}: that service is not on its host",
                r.service
            )));
        }
        let manifest_id =
            ChunkId::from_slice(&r.manifest_id).map_err(|e| invalid(e.to_string()))?;
        if blake3::hash(&r.manifest).as_bytes() != manifest_id.as_bytes() {
            return Err(invalid(
                "manifest_id is not the BLAKE3 hash of the manifest".into(),
            ));
        }
        let envelope =
            strongbox_core::manifest::parse(&r.manifest).map_err(|e| invalid(e.to_string()))?;
        if envelope.backup_id != r.backup_id {
            return Err(Status::permission_denied(format!(
                "the manifest was made for backup {:?}, not {}: a backup commits only a manifest made for it",
                envelope.backup_id, r.backup_id
            )));
        }
        let chunk_ids = envelope.chunk_ids.clone();
        replicate::put_majority(
            &self.node,
            Arc::new(vec![(manifest_id, r.manifest.clone())]),
        )
        .await?;
        replicate::require_majority(&self.node, &chunk_ids).await?;
        let op = Op::CommitBackup(CommitBackup {
            backup: Some(BackupRecord {
                id: r.backup_id,
                service: r.service,
                host: who.name.clone(),
                kind: r.kind,
                state: BackupState::Completed.into(),
                reason: String::new(),
                created_unix_ms: r.created_unix_ms,
                completed_unix_ms: 0,
                manifest_id: r.manifest_id,
                plain_bytes: r.plain_bytes,
                stored_bytes: r.stored_bytes,
                chunk_count: chunk_ids.len() as u64,
                table_count: r.table_count,
                ..Default::default()
            }),
            job_id: r.job_id,
        });
        self.node.apply(&who, op).await?;
        Ok(Response::new(CommitBackupResponse {}))
    }

    async fn fetch_chunk(
        &self,
        req: Request<FetchChunkRequest>,
    ) -> Result<Response<FetchChunkResponse>, Status> {
        let who = require_role(&req, &[Role::Agent])?;
        let r = req.into_inner();
        let id = ChunkId::from_slice(&r.id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let job = agent_job(&self.node, &who, &r.job_id, JobKind::Restore).await?;
        if !self
            .node
            .scopes
            .chunks(&self.node, &job.backup_id)
            .await?
            .contains(&id)
        {
            return Err(Status::permission_denied(format!(
                "chunk {id} is not part of backup {} (job {})",
                job.backup_id, job.id
            )));
        }
        match replicate::fetch(&self.node, id).await? {
            Some(sealed) => Ok(Response::new(FetchChunkResponse { sealed })),
            None => Err(Status::not_found(format!(
                "no node of this region holds a good copy of chunk {id}"
            ))),
        }
    }
}
