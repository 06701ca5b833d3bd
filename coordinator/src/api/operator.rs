//! `OperatorService`: what the CLI does. Viewers and operators read; operators change.

use std::collections::HashSet;
use std::sync::Arc;

use strongbox_core::ids::ChunkId;
use strongbox_core::pki::Role;
use strongbox_core::tls::{peer_identity, require_role};
use strongbox_proto::catalog::{
    command::Op, CreateJob, HoldBackup, JobRecord, PurgeBackup, RemoveNode, SetNode,
    SetServiceState,
};
use strongbox_proto::v1::operator_service_server::OperatorService;
use strongbox_proto::v1::*;
use tonic::{Request, Response, Status};

use super::convert::{backup_info_with, job_info, member};
use super::fleet;
use super::jobs::{backup_host, restore_host};
use super::validate;
use crate::node::NodeContext;
use strongbox_core::clock::now_ms;

const READERS: &[Role] = &[Role::Viewer, Role::Operator];
const CHANGERS: &[Role] = &[Role::Operator];

pub struct OperatorApi {
    pub node: Arc<NodeContext>,
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
                role: super::convert::caller_role(who.role).into(),
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
                    NodeRole::Leader
                } else if st.learners.contains(&id) {
                    NodeRole::Learner
                } else if st.voters.contains(&id) {
                    NodeRole::Follower
                } else {
                    NodeRole::Joining
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
        let region = self
            .node
            .catalog
            .region(&self.node.region)?
            .unwrap_or_default();
        Ok(Response::new(ClusterStatusResponse {
            region: self.node.region.clone(),
            leader_id: st.leader_id,
            nodes,
            region_created_unix_ms: region.created_unix_ms,
            copies_to: region.copies_to,
            workers: self
                .node
                .workers
                .all()
                .into_iter()
                .map(super::convert::worker_status)
                .collect(),
        }))
    }

    async fn list_hosts(
        &self,
        req: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        require_role(&req, READERS)?;
        let (limit, after) = validate::page(req.get_ref().page.as_ref())?;
        self.node.read_barrier().await?;
        let presences = self.node.catalog.presences()?;
        let now = now_ms();
        let page = self.node.catalog.hosts_page(after.as_deref(), limit)?;
        Ok(Response::new(ListHostsResponse {
            hosts: page
                .items
                .into_iter()
                .map(|h| host_info(h, &presences, now))
                .collect(),
            next_page_token: validate::page_token(page.next),
        }))
    }

    async fn bind_host(&self, req: Request<BindHostRequest>) -> Result<Response<HostInfo>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        validate::name("host", &r.host)?;
        if r.services.len() > validate::MAX_MEMBERS_PER_HOST {
            return Err(Status::invalid_argument(format!(
                "{} services named; a host carries at most {}",
                r.services.len(),
                validate::MAX_MEMBERS_PER_HOST
            )));
        }
        for s in &r.services {
            validate::name("service", s)?;
        }
        self.node.read_barrier().await?;
        let current = self.node.catalog.host(&r.host)?;
        let mut bind = strongbox_proto::catalog::BindHost {
            host: r.host.clone(),
            ..Default::default()
        };
        if r.revoke {
            if r.services.is_empty() && !r.spare {
                return Err(Status::invalid_argument(
                    "name what to revoke: --service NAME (repeatable) and/or --spare",
                ));
            }
            bind.revoke = r.services;
            bind.spare = r.spare.then_some(false);
        } else if r.services.is_empty() && !r.spare {
            // Everything the host has pending, as `host list` shows it.
            let h = current.as_ref().ok_or_else(|| {
                Status::not_found(format!(
                    "no host {:?} has registered; name what to approve (--service, --spare) to bind it ahead of its agent",
                    r.host
                ))
            })?;
            bind.grant = h
                .pending_members
                .iter()
                .map(|m| m.service.clone())
                .collect();
            if h.spare_requested && !h.spare_approved {
                bind.spare = Some(true);
            }
            if bind.grant.is_empty() && bind.spare.is_none() {
                return Err(Status::failed_precondition(format!(
                    "host {} has nothing awaiting approval",
                    r.host
                )));
            }
        } else {
            bind.grant = r.services;
            bind.spare = r.spare.then_some(true);
        }
        self.node
            .apply(&who, strongbox_proto::catalog::command::Op::BindHost(bind))
            .await?;
        let h = self
            .node
            .catalog
            .host(&r.host)?
            .ok_or_else(|| Status::internal(format!("host {} vanished", r.host)))?;
        Ok(Response::new(host_info(
            h,
            &self.node.catalog.presences()?,
            now_ms(),
        )))
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
        validate::name("node name", &r.name)?;
        validate::line("address", &r.address, 300)?;
        if r.address.parse::<std::net::SocketAddr>().is_err() && !r.address.contains(':') {
            return Err(Status::invalid_argument(format!(
                "address {:?} is not HOST:PORT",
                r.address
            )));
        }
        // A node's id is its identity in Raft: adding one that exists would rewrite a live
        // member's address. The same node added again goes through as before (a retried
        // command, proposed again in case the first did not finish).
        self.node.read_barrier().await?;
        if let Some(n) = self
            .node
            .catalog
            .nodes()?
            .into_iter()
            .find(|n| n.id == r.id && (n.address != r.address || n.name != r.name))
        {
            return Err(Status::already_exists(format!(
                "node {} exists already ({} at {}): pick another id, or remove it first with \
                 `strongbox cluster remove-node --id {}` (`strongbox cluster status` lists the nodes)",
                r.id, n.name, n.address, r.id
            )));
        }
        let op = Op::SetNode(SetNode {
            id: r.id,
            address: r.address,
            name: r.name,
        });
        self.node.apply(&who, op).await?;
        Ok(Response::new(AddNodeResponse {}))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let id = req.into_inner().id;
        if id == 0 {
            return Err(Status::invalid_argument("node ids start at 1"));
        }
        self.node.read_barrier().await?;
        if !self.node.catalog.nodes()?.iter().any(|n| n.id == id) {
            return Err(Status::not_found(format!(
                "no node {id} in this cluster: `strongbox cluster status` lists the nodes"
            )));
        }
        self.node
            .apply(&who, Op::RemoveNode(RemoveNode { id }))
            .await?;
        Ok(Response::new(RemoveNodeResponse {}))
    }

    async fn list_backups(
        &self,
        req: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        require_role(&req, READERS)?;
        let r = req.into_inner();
        if !r.service.is_empty() {
            validate::name("service", &r.service)?;
        }
        let (limit, after) = validate::page(r.page.as_ref())?;
        self.node.read_barrier().await?;
        let page = self
            .node
            .catalog
            .backups_page(&r.service, after.as_deref(), limit)?;
        // Retention's verdicts, evaluated on the backups of the services on this page.
        let now = now_ms();
        let mut verdicts = std::collections::BTreeMap::new();
        let services: std::collections::BTreeSet<&str> =
            page.items.iter().map(|b| b.service.as_str()).collect();
        for service in services {
            let policy = self.node.catalog.effective_policy(service)?;
            let backups = self.node.catalog.service_backups(service)?;
            verdicts.extend(crate::policy::retention::evaluate(&policy, &backups, now));
        }
        let backups = page
            .items
            .into_iter()
            .map(|b| {
                let v = verdicts.get(&b.id);
                backup_info_with(b, v)
            })
            .collect();
        Ok(Response::new(ListBackupsResponse {
            backups,
            next_page_token: validate::page_token(page.next),
        }))
    }

    async fn purge_backup(
        &self,
        req: Request<PurgeBackupRequest>,
    ) -> Result<Response<PurgeBackupResponse>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let backup_id = req.into_inner().backup_id;
        validate::name("backup id", &backup_id)?;
        self.node
            .apply(&who, Op::PurgeBackup(PurgeBackup { backup_id }))
            .await?;
        Ok(Response::new(PurgeBackupResponse {}))
    }

    async fn show_backup(
        &self,
        req: Request<ShowBackupRequest>,
    ) -> Result<Response<BackupInfo>, Status> {
        require_role(&req, READERS)?;
        let id = req.into_inner().id;
        self.node.read_barrier().await?;
        Ok(Response::new(fleet::backup_with_retention(
            &self.node, &id,
        )?))
    }

    async fn get_job(&self, req: Request<GetJobRequest>) -> Result<Response<JobInfo>, Status> {
        require_role(&req, READERS)?;
        let id = req.into_inner().id;
        self.node.read_barrier().await?;
        let j = self
            .node
            .catalog
            .job(&id)?
            .ok_or_else(|| Status::not_found(format!("no job {id:?}")))?;
        Ok(Response::new(job_info(j)))
    }

    async fn list_jobs(
        &self,
        req: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        require_role(&req, READERS)?;
        let r = req.into_inner();
        if !r.service.is_empty() {
            validate::name("service", &r.service)?;
        }
        let kind = validate::required::<JobKind>("kind", r.kind)?;
        let (limit, after) = validate::page(r.page.as_ref())?;
        self.node.read_barrier().await?;
        if r.server_running {
            if kind != JobKind::Restore {
                return Err(Status::invalid_argument(
                    "only restores leave servers running: ask for kind restore",
                ));
            }
            // The spares list the restores whose servers run there (`restored_servers`).
            let mut jobs = Vec::new();
            for h in self.node.catalog.spares()? {
                for id in &h.restored_servers {
                    if let Some(j) = self.node.catalog.job(id)? {
                        if r.service.is_empty() || j.service == r.service {
                            jobs.push(j);
                        }
                    }
                }
            }
            jobs.sort_by_key(|j| std::cmp::Reverse(j.created_unix_ms));
            return Ok(Response::new(ListJobsResponse {
                jobs: jobs.into_iter().map(job_info).collect(),
                next_page_token: String::new(),
            }));
        }
        let page = self
            .node
            .catalog
            .jobs_page(kind, &r.service, after.as_deref(), limit)?;
        Ok(Response::new(ListJobsResponse {
            jobs: page.items.into_iter().map(job_info).collect(),
            next_page_token: validate::page_token(page.next),
        }))
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        require_role(&req, READERS)?;
        let (limit, after) = validate::page(req.get_ref().page.as_ref())?;
        self.node.read_barrier().await?;
        let page = self.node.catalog.services_page(after.as_deref(), limit)?;
        let snap = self.node.catalog.services_snapshot(page.items)?;
        Ok(Response::new(ListServicesResponse {
            services: fleet::services_of(&snap, now_ms()),
            next_page_token: validate::page_token(page.next),
        }))
    }

    async fn show_service(
        &self,
        req: Request<ShowServiceRequest>,
    ) -> Result<Response<ServiceInfo>, Status> {
        require_role(&req, READERS)?;
        let name = req.into_inner().name;
        validate::name("service", &name)?;
        self.node.read_barrier().await?;
        fleet::show_service(&self.node, &name).map(Response::new)
    }

    async fn get_policy(
        &self,
        req: Request<GetPolicyRequest>,
    ) -> Result<Response<GetPolicyResponse>, Status> {
        require_role(&req, READERS)?;
        let service = req.into_inner().service;
        self.node.read_barrier().await?;
        Ok(Response::new(fleet::get_policy(&self.node, &service)?))
    }

    async fn set_policy(
        &self,
        req: Request<SetPolicyRequest>,
    ) -> Result<Response<SetPolicyResponse>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        Ok(Response::new(fleet::set_policy(&self.node, &who, r).await?))
    }

    async fn hold_backup(
        &self,
        req: Request<HoldBackupRequest>,
    ) -> Result<Response<BackupInfo>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        validate::name("backup id", &r.backup_id)?;
        validate::line("reason", &r.reason, validate::MAX_REASON_LEN)?;
        let backup_id = r.backup_id.clone();
        self.node.read_barrier().await?;
        if self.node.catalog.backup(&backup_id)?.is_none() {
            return Err(Status::not_found(format!(
                "no backup {backup_id:?}; `strongbox backup list SERVICE` shows the backups"
            )));
        }
        self.node
            .apply(
                &who,
                Op::HoldBackup(HoldBackup {
                    backup_id: r.backup_id,
                    held: r.held,
                    reason: r.reason,
                }),
            )
            .await?;
        self.node.read_barrier().await?;
        Ok(Response::new(fleet::backup_with_retention(
            &self.node, &backup_id,
        )?))
    }

    async fn set_service_state(
        &self,
        req: Request<SetServiceStateRequest>,
    ) -> Result<Response<SetServiceStateResponse>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        validate::name("service", &r.service)?;
        let action = validate::required::<ServiceAction>("action", r.action)?;
        self.node.read_barrier().await?;
        let svc = fleet::known_service(&self.node, &r.service)?;
        let mut final_backup = None;
        if action == ServiceAction::Deprovision && svc.deprovisioned_unix_ms == 0 {
            if let Some(job) = fleet::final_backup_job(&self.node, &r.service)? {
                final_backup = Some(self.create_job(&who, job).await?.into_inner());
            }
        }
        self.node
            .apply(
                &who,
                Op::SetServiceState(SetServiceState {
                    service: r.service.clone(),
                    action: r.action,
                }),
            )
            .await?;
        self.node.read_barrier().await?;
        Ok(Response::new(SetServiceStateResponse {
            service: Some(fleet::show_service(&self.node, &r.service)?),
            final_backup,
        }))
    }

    async fn list_audit(
        &self,
        req: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        require_role(&req, READERS)?;
        let (limit, after) = validate::page(req.get_ref().page.as_ref())?;
        self.node.read_barrier().await?;
        let page = self.node.catalog.audit_page(after.as_deref(), limit)?;
        let entries = page
            .items
            .into_iter()
            .map(|a| AuditEntry {
                index: a.index,
                unix_ms: a.unix_ms,
                actor: a
                    .actor
                    .map(|a| format!("{}:{}", a.role(), a.name))
                    .unwrap_or_default(),
                what: a.what,
            })
            .collect();
        Ok(Response::new(ListAuditResponse {
            entries,
            next_page_token: validate::page_token(page.next),
        }))
    }

    async fn create_backup(
        &self,
        req: Request<CreateBackupRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        validate::name("service", &r.service)?;
        if !r.host.is_empty() {
            validate::name("host", &r.host)?;
        }
        self.node.read_barrier().await?;
        let (host, engine) = backup_host(
            &self.node.catalog.hosts_of_service(&r.service)?,
            &r.service,
            &r.host,
            &self.node.catalog.presences()?,
            now_ms(),
        )?;
        let job = JobRecord {
            id: format!("job-{}", uuid::Uuid::now_v7()),
            kind: JobKind::Backup.into(),
            service: r.service,
            host,
            backup_id: format!("bk-{}", uuid::Uuid::now_v7()),
            backup_kind: BackupKind::Manual.into(),
            engine: engine.into(),
            ..Default::default()
        };
        self.create_job(&who, job).await
    }

    async fn restore_backup(
        &self,
        req: Request<RestoreBackupRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        validate::name("backup id", &r.backup_id)?;
        if !r.to_host.is_empty() {
            validate::name("host", &r.to_host)?;
        }
        if r.in_place && !(r.to_host.is_empty() && r.to_region.is_empty()) {
            return Err(Status::invalid_argument(
                "--in-place restores into the service's own primary; leave out --to-host and --to-region",
            ));
        }
        if !r.to_region.is_empty() && r.to_region != self.node.region {
            return Err(Status::invalid_argument(format!(
                "this cluster serves region {:?}; to restore in {:?}, ask that region's coordinators",
                self.node.region, r.to_region
            )));
        }
        self.node.read_barrier().await?;
        let backup = self
            .node
            .catalog
            .backup(&r.backup_id)?
            .ok_or_else(|| Status::not_found(format!("no backup {:?}", r.backup_id)))?;
        if r.in_place {
            return self.restore_in_place(&who, backup, r.yes).await;
        }
        // The candidates (the named host, or the spares) and their open jobs, through the
        // catalog's indexes: never every host or every job.
        let candidates = if r.to_host.is_empty() {
            self.node.catalog.spares()?
        } else {
            self.node.catalog.host(&r.to_host)?.into_iter().collect()
        };
        let mut restoring = HashSet::new();
        for h in &candidates {
            let open = self.node.catalog.open_jobs_of_host(&h.name)?;
            if open.iter().any(|j| j.kind() == JobKind::Restore) {
                restoring.insert(h.name.clone());
            }
        }
        let host = restore_host(
            &candidates,
            &restoring,
            &r.to_host,
            &self.node.catalog.presences()?,
            now_ms(),
            self.node.max_restored_servers,
        )?;
        let engine = self
            .node
            .catalog
            .hosts_of_service(&backup.service)?
            .iter()
            .flat_map(|h| h.members.iter())
            .find(|m| m.service == backup.service)
            .map(|m| m.engine)
            .unwrap_or_default();
        let job = JobRecord {
            id: format!("job-{}", uuid::Uuid::now_v7()),
            kind: JobKind::Restore.into(),
            service: backup.service,
            host,
            backup_id: backup.id,
            engine,
            max_restored_servers: self.node.max_restored_servers as u32,
            ..Default::default()
        };
        self.create_job(&who, job).await
    }

    async fn stop_restore(
        &self,
        req: Request<StopRestoreRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        let who = require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        validate::name("job id", &r.job_id)?;
        self.node.read_barrier().await?;
        let target = self
            .node
            .catalog
            .job(&r.job_id)?
            .ok_or_else(|| Status::not_found(format!("no job {:?}", r.job_id)))?;
        // The catalog checks the rest (a finished restore onto a spare, still running).
        let job = JobRecord {
            id: format!("job-{}", uuid::Uuid::now_v7()),
            kind: JobKind::Stop.into(),
            service: target.service.clone(),
            host: target.host.clone(),
            backup_id: target.backup_id.clone(),
            engine: target.engine,
            target_job: target.id,
            keep_files: r.keep_files,
            ..Default::default()
        };
        self.create_job(&who, job).await
    }

    async fn download_chunk(
        &self,
        req: Request<DownloadChunkRequest>,
    ) -> Result<Response<FetchChunkResponse>, Status> {
        require_role(&req, CHANGERS)?;
        let r = req.into_inner();
        let id = ChunkId::from_slice(&r.id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !self
            .node
            .scopes
            .chunks(&self.node, &r.backup_id)
            .await?
            .contains(&id)
        {
            return Err(Status::permission_denied(format!(
                "chunk {id} is not part of backup {}",
                r.backup_id
            )));
        }
        match crate::chunks::replicate::fetch(&self.node, id).await? {
            Some(sealed) => Ok(Response::new(FetchChunkResponse { sealed })),
            None => Err(Status::data_loss(format!(
                "no node of this region holds a good copy of chunk {id}"
            ))),
        }
    }
}

impl OperatorApi {
    /// An in-place restore: a `pre-restore` backup of the service's primary first, then the
    /// restore into that live server, released by the catalog when the backup completed.
    async fn restore_in_place(
        &self,
        who: &strongbox_core::pki::Identity,
        backup: strongbox_proto::catalog::BackupRecord,
        yes: bool,
    ) -> Result<Response<JobInfo>, Status> {
        let (host, engine) = backup_host(
            &self.node.catalog.hosts_of_service(&backup.service)?,
            &backup.service,
            "",
            &self.node.catalog.presences()?,
            now_ms(),
        )?;
        if !yes {
            return Err(Status::failed_precondition(format!(
                "an in-place restore replaces the live data of {} on host {host} with backup {} (taken {}); a pre-restore backup of the current data is taken first. Add --yes to go ahead, or restore onto a spare with --to-host or --to-region to look first",
                backup.service,
                backup.id,
                crate::policy::time::rfc3339(backup.created_unix_ms)
            )));
        }
        if backup.state() != BackupState::Completed {
            return Err(Status::failed_precondition(format!(
                "backup {} is {}, only a completed backup restores",
                backup.id,
                backup.state()
            )));
        }
        let pre = JobRecord {
            id: format!("job-{}", uuid::Uuid::now_v7()),
            kind: JobKind::Backup.into(),
            service: backup.service.clone(),
            host: host.clone(),
            backup_id: format!("bk-{}", uuid::Uuid::now_v7()),
            backup_kind: BackupKind::PreRestore.into(),
            engine: engine.into(),
            ..Default::default()
        };
        let pre = self.create_job(who, pre).await?.into_inner();
        let restore = JobRecord {
            id: format!("job-{}", uuid::Uuid::now_v7()),
            kind: JobKind::Restore.into(),
            service: backup.service,
            host,
            backup_id: backup.id,
            engine: engine.into(),
            in_place: true,
            after_job: pre.id,
            ..Default::default()
        };
        self.create_job(who, restore).await
    }

    async fn create_job(
        &self,
        who: &strongbox_core::pki::Identity,
        mut job: JobRecord,
    ) -> Result<Response<JobInfo>, Status> {
        job.requested_by = Some(super::convert::actor(who));
        let id = job.id.clone();
        self.node
            .apply(who, Op::CreateJob(CreateJob { job: Some(job) }))
            .await?;
        self.node.read_barrier().await?;
        let job = self
            .node
            .catalog
            .job(&id)?
            .ok_or_else(|| Status::internal(format!("job {id} vanished after its creation")))?;
        Ok(Response::new(job_info(job)))
    }
}

/// A host as the operator sees it: what it serves, and what it claims that awaits approval.
fn host_info(
    h: strongbox_proto::catalog::HostRecord,
    presences: &crate::policy::presence::Presences,
    now_ms: u64,
) -> HostInfo {
    use crate::policy::presence::Presence;
    let (liveness, session_node, since_unix_ms) = match presences.of(&h, now_ms) {
        Presence::Connected { node } => (HostLiveness::Connected, node, 0),
        Presence::Away { since_unix_ms } => (HostLiveness::Away, 0, since_unix_ms),
        Presence::Silent { since_unix_ms } => (HostLiveness::Silent, 0, since_unix_ms),
    };
    HostInfo {
        liveness: liveness.into(),
        session_node,
        since_unix_ms,
        name: h.name,
        region: h.region,
        spare: h.spare,
        registered_unix_ms: h.registered_unix_ms,
        members: h.members.into_iter().map(member).collect(),
        spare_requested: h.spare_requested,
        spare_approved: h.spare_approved,
        bound_services: h.bound_services,
        pending_members: h.pending_members.into_iter().map(member).collect(),
        updated_unix_ms: h.updated_unix_ms,
    }
}
