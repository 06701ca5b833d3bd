//! An agent's session with this node: heartbeats and job reports come up, jobs go down.
//!
//! Invariants: the session speaks for the host in the agent's certificate only; every job of
//! that host that is not finished is sent once per session (so an agent that reconnects, to this
//! node or another, gets its unfinished jobs again and must ignore the ones it is running); a
//! heartbeat writes the catalog only when the host's members changed or its last write is older
//! than a minute (liveness for spare choice), so a quiet fleet does not flood the Raft log.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use strongbox_core::pki::Identity;
use strongbox_proto::catalog::{command::Op, RegisterHost, UpdateJob};
use strongbox_proto::v1::{
    agent_message, coordinator_message, AgentMessage, CoordinatorMessage, Job,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::convert::member_record;
use super::NodeContext;
use crate::catalog::is_final;
use crate::raft::node::now_ms;

const REFRESH_MS: u64 = 60_000;

/// Serves one session until the agent goes away; jobs go out through `tx`.
pub async fn run(
    node: Arc<NodeContext>,
    who: Identity,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
) {
    let host = who.name.clone();
    tracing::info!(host = %host, "agent session opened");
    let mut sent: HashSet<String> = HashSet::new();
    let mut status = node.raft.subscribe();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(m)) => handle(&node, &who, m).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(host = %host, error = %e, "agent session broke");
                    break;
                }
            },
            changed = status.changed() => {
                if changed.is_err() {
                    break; // the node is stopping
                }
            }
            _ = poll.tick() => {}
            _ = tx.closed() => break,
        }
        // Deliver what is new for this host.
        let jobs = match node.catalog.jobs() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "reading jobs");
                continue;
            }
        };
        for j in jobs {
            // A waiting job (an in-place restore behind its pre-restore backup) goes out once
            // the catalog releases it.
            if j.host != host || is_final(&j.state) || j.state == "waiting" || sent.contains(&j.id)
            {
                continue;
            }
            let mut job = Job {
                job_id: j.id.clone(),
                kind: j.kind.clone(),
                service: j.service.clone(),
                backup_id: j.backup_id.clone(),
                backup_kind: j.backup_kind.clone(),
                manifest_id: Default::default(),
                engine: j.engine.clone(),
                in_place: j.in_place,
            };
            if j.kind == "restore" {
                match node.catalog.backup(&j.backup_id) {
                    Ok(Some(b)) => job.manifest_id = b.manifest_id,
                    _ => continue,
                }
            }
            tracing::info!(host = %host, job = %j.id, kind = %j.kind, service = %j.service, "job sent to agent");
            let msg = CoordinatorMessage {
                body: Some(coordinator_message::Body::Job(job)),
            };
            if tx.send(Ok(msg)).await.is_err() {
                break;
            }
            sent.insert(j.id);
        }
    }
    tracing::info!(host = %host, "agent session closed");
}

async fn handle(node: &Arc<NodeContext>, who: &Identity, m: AgentMessage) {
    match m.body {
        Some(agent_message::Body::Heartbeat(hb)) => {
            let members: Vec<_> = hb.members.into_iter().map(member_record).collect();
            let current = node.catalog.host(&who.name).ok().flatten();
            let stale = match &current {
                Some(h) => {
                    h.members != members || now_ms().saturating_sub(h.updated_unix_ms) > REFRESH_MS
                }
                None => true,
            };
            if let (true, Some(h)) = (stale, current) {
                let op = Op::RegisterHost(RegisterHost {
                    host: h.name.clone(),
                    region: h.region,
                    spare: h.spare,
                    members,
                });
                if let Err(e) = node.apply(who, op).await {
                    tracing::warn!(host = %who.name, error = %e.message(), "recording a heartbeat");
                }
            }
        }
        Some(agent_message::Body::Report(r)) => {
            let op = Op::UpdateJob(UpdateJob {
                job_id: r.job_id.clone(),
                host: who.name.clone(),
                state: r.state.clone(),
                reason: r.reason,
                bytes_done: r.bytes_done,
                bytes_total: r.bytes_total,
                result: r.result,
            });
            // Progress reports must not hold up the session: record them in the background.
            let (node, who) = (node.clone(), who.clone());
            tokio::spawn(async move {
                if let Err(e) = node.apply(&who, op).await {
                    tracing::warn!(host = %who.name, job = %r.job_id, state = %r.state, error = %e.message(), "job report refused");
                }
            });
        }
        None => {}
    }
}
