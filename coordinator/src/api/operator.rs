//! `OperatorService`: what the CLI does. Viewers and operators read; operators change.

use std::sync::Arc;

use strongbox_core::pki::Role;
use strongbox_core::tls::{peer_identity, require_role};
use strongbox_proto::catalog::{command::Op, PurgeBackup, RemoveNode, SetNode};
use strongbox_proto::v1::operator_service_server::OperatorService;
use strongbox_proto::v1::*;
use tonic::{Request, Response, Status};

use super::NodeContext;

const READERS: &[Role] = &[Role::Viewer, Role::Operator];
const CHANGERS: &[Role] = &[Role::Operator];

pub struct OperatorApi {
    pub node: Arc<NodeContext>,
}

fn outcome(o: strongbox_proto::catalog::Outcome) -> Result<(), Status> {
    if o.error.is_empty() {
        Ok(())
    } else {
        Err(Status::failed_precondition(o.error))
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn who_am_i(
        &self,
        req: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let who = peer_identity(&req)?;
        Ok(Response::new(WhoAmIResponse {
            identity: Some(Identity {
                role: who.role.to_string(),
                name: who.name,
            }),
            node: self.node.name.clone(),
            region: self.node.region.clone(),
        }))
    }

    async fn cluster_status(
        &self,
        req: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        require_role(&req, READERS)?;
        let st = self.node.raft.status();
        let records = self.node.catalog.nodes().map_err(Status::from)?;
        let mut ids: Vec<u64> = st
            .voters
            .iter()
            .chain(st.learners.iter())
            .copied()
            .collect();
        ids.extend(records.iter().map(|r| r.id));
        ids.sort_unstable();
        ids.dedup();
        let nodes = ids
            .into_iter()
            .map(|id| {
                let rec = records.iter().find(|r| r.id == id);
                let progress = st.progress.iter().find(|p| p.id == id);
                let role = if id == st.leader_id {
                    "leader"
                } else if st.learners.contains(&id) {
                    "learner"
                } else if st.voters.contains(&id) {
                    "follower"
                } else {
                    "joining"
                };
                NodeStatus {
                    id,
                    name: rec.map(|r| r.name.clone()).unwrap_or_default(),
                    address: rec
                        .map(|r| r.address.clone())
                        .or_else(|| self.node.transport.address(id))
                        .unwrap_or_default(),
                    role: role.into(),
                    term: if id == st.id { st.term } else { 0 },
                    commit_index: if id == st.id { st.commit } else { 0 },
                    applied_index: if id == st.id { st.applied } else { 0 },
                    voter: st.voters.contains(&id),
                    matched: progress.map_or(0, |p| p.matched),
                }
            })
            .collect();
        Ok(Response::new(ClusterStatusResponse {
            region: self.node.region.clone(),
            leader_id: st.leader_id,
            nodes,
        }))
    }

    async fn list_hosts(
        &self,
        req: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        require_role(&req, READERS)?;
        self.node.read_barrier().await?;
        let hosts = self
            .node
            .catalog
            .hosts()?
            .into_iter()
            .map(|h| HostInfo {
                name: h.name,
                region: h.region,
                spare: h.spare,
                registered_unix_ms: h.registered_unix_ms,
                members: h
                    .members
                    .into_iter()
                    .map(|m| Member {
                        service: m.service,
                        engine: m.engine,
                        role: m.role,
                        healthy: m.healthy,
                        engine_version: m.engine_version,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    async fn add_node(
        &self,
        req: Request<AddNodeRequest>,
    ) -> Result<Response<AddNodeResponse>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("node ids start at 1"));
        }
        if r.address.parse::<std::net::SocketAddr>().is_err() && !r.address.contains(':') {
            return Err(Status::invalid_argument(format!(
                "address {:?} is not HOST:PORT",
                r.address
            )));
        }
        let cmd = self.node.command(
            &who,
            Op::SetNode(SetNode {
                id: r.id,
                address: r.address,
                name: r.name,
            }),
        );
        outcome(self.node.submit(cmd).await?)?;
        Ok(Response::new(AddNodeResponse {}))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let id = req.into_inner().id;
        let cmd = self.node.command(&who, Op::RemoveNode(RemoveNode { id }));
        outcome(self.node.submit(cmd).await?)?;
        Ok(Response::new(RemoveNodeResponse {}))
    }

    async fn list_backups(
        &self,
        req: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        require_role(&req, READERS)?;
        let service = req.into_inner().service;
        self.node.read_barrier().await?;
        let mut backups: Vec<BackupInfo> = self
            .node
            .catalog
            .backups()?
            .into_iter()
            .filter(|b| service.is_empty() || b.service == service)
            .map(|b| BackupInfo {
                id: b.id,
                service: b.service,
                host: b.host,
                kind: b.kind,
                state: b.state,
                reason: b.reason,
                created_unix_ms: b.created_unix_ms,
                completed_unix_ms: b.completed_unix_ms,
                plain_bytes: b.plain_bytes,
                stored_bytes: b.stored_bytes,
                chunk_count: b.chunk_count,
            })
            .collect();
        backups.sort_by_key(|b| std::cmp::Reverse(b.created_unix_ms));
        Ok(Response::new(ListBackupsResponse { backups }))
    }

    async fn purge_backup(
        &self,
        req: Request<PurgeBackupRequest>,
    ) -> Result<Response<PurgeBackupResponse>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let backup_id = req.into_inner().backup_id;
        let cmd = self
            .node
            .command(&who, Op::PurgeBackup(PurgeBackup { backup_id }));
        outcome(self.node.submit(cmd).await?)?;
        Ok(Response::new(PurgeBackupResponse {}))
    }
}
