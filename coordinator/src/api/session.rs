//! An agent's session with this node: heartbeats and job reports come up, jobs go down.
//!
//! Invariants: the session speaks for the host in the agent's certificate only; a host holds at
//! most [`MAX_SESSIONS_PER_HOST`] sessions on one node at once; every job of that host that is
//! not finished is sent once per session (so an agent that reconnects, to this node or another,
//! gets its unfinished jobs again and must ignore the ones it is running), as soon as the
//! catalog writes it: the apply step's hook wakes the host's sessions ([`crate::node::Sessions`];
//! an idle session costs nothing but a backstop look every 10 s); a heartbeat writes the
//! catalog only when the host's members changed: whether the agent is there comes from its
//! recorded session and the node serving it ([`crate::policy::presence`]), so a quiet fleet
//! writes nothing. An agent that sends nothing for [`AGENT_SILENCE`] (a hung agent on a live
//! connection) has its session ended; a node that starts ends the sessions it recorded before
//! it stopped ([`end_stale_sessions`]), each after the grace period, unless the agent came
//! back.
//!
//! A session is recorded in the catalog when it opens (`HostSession`, the host's newest
//! session). When it ends because the agent went away (not because this node stops), the node
//! waits `agent_grace`; if the agent has not opened a newer session by then, it proposes the
//! end: the catalog marks the host away (no backup is sent to it) and fails its open jobs as
//! abandoned, so they can be retried without waiting [`crate::catalog::ABANDONED_MS`] (issue
//! 14, faults 3 and 4).
//!
//! Reports are checked before anything is proposed: bounded fields ([`validate::report`]),
//! and a job that exists, is this host's, and is neither finished nor waiting. Accepted reports
//! are merged per job and proposed one at a time by the session's one reporter task, so a flood
//! of progress reports becomes at most one proposal in flight, holding the newest report of
//! each job; a final report replaces any progress still pending for its job.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strongbox_core::pki::{Identity, Role};
use strongbox_proto::catalog::{command::Op, HostSession, RegisterHost, UpdateJob};
use strongbox_proto::v1::{
    agent_message, coordinator_message, AgentMessage, CoordinatorMessage, Job, JobKind, JobReport,
    JobState,
};
use tokio::sync::{mpsc, Notify};
use tonic::{Status, Streaming};

use super::convert::member_record;
use super::validate;
use crate::catalog::claimed_members;
use crate::node::NodeContext;

/// A session whose agent sent nothing for this long is ended (agents send a heartbeat every
/// 10 s): its host is then away after the grace period, as if the agent had gone.
pub const AGENT_SILENCE: Duration = Duration::from_secs(90);

/// How often an idle session looks at its host's jobs without being woken: a backstop for a
/// change the catalog's hook did not report (an installed snapshot).
const BACKSTOP_POLL: Duration = Duration::from_secs(10);

/// Sessions one host may hold open on one node at once: a reconnecting agent's new session
/// may overlap its old one for a moment; more than that is refused (`RESOURCE_EXHAUSTED`).
pub const MAX_SESSIONS_PER_HOST: usize = 2;

/// Refused messages logged one by one per session; the rest are counted and logged once when
/// the session ends, so a flood does not flood the log.
const LOGGED_REFUSALS: u64 = 5;

/// A session whose agent sent this many refused messages is ended (`PERMISSION_DENIED`): a
/// working agent sends a refused report rarely (a job failed under it as abandoned), and each
/// refusal of an unknown job costs a linearizable read.
pub const MAX_REFUSALS: u64 = 100;

/// One open session; dropping it frees its place.
pub struct SessionSlot {
    node: Arc<NodeContext>,
    host: String,
    /// Woken when the host's jobs change (the catalog's hook).
    changed: Arc<Notify>,
}

/// Takes a session place for `host` on this node, or refuses when it holds
/// [`MAX_SESSIONS_PER_HOST`] already.
pub fn enter(node: &Arc<NodeContext>, host: &str) -> Result<SessionSlot, Status> {
    let (before, changed) = node
        .sessions
        .enter(host, MAX_SESSIONS_PER_HOST)
        .map_err(|n| {
            Status::resource_exhausted(format!(
                "host {host} has {n} sessions open on this node already (at most \
                 {MAX_SESSIONS_PER_HOST}); an agent needs one: stop the other agent running with \
                 this host's certificate"
            ))
        })?;
    if before >= 1 {
        tracing::warn!(host = %host, open = before, "another session of this host opened: a reconnect, or two agents running with its certificate if this repeats");
    }
    Ok(SessionSlot {
        node: node.clone(),
        host: host.to_string(),
        changed,
    })
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.node.sessions.leave(&self.host, &self.changed);
    }
}

/// Accepted reports waiting to be proposed: the newest per job, in the order jobs first
/// reported.
#[derive(Default)]
struct Pending {
    order: VecDeque<String>,
    latest: HashMap<String, UpdateJob>,
    closed: bool,
}

struct Reporter {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Reporter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `op`, replacing a report of the same job that is still waiting.
    fn push(&self, op: UpdateJob) {
        let mut p = self.lock();
        if !p.latest.contains_key(&op.job_id) {
            p.order.push_back(op.job_id.clone());
        }
        p.latest.insert(op.job_id.clone(), op);
        drop(p);
        self.wake.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Proposes queued reports one at a time until closed and drained.
    async fn run(self: Arc<Self>, node: Arc<NodeContext>, who: Identity) {
        loop {
            let next = {
                let mut p = self.lock();
                match p.order.pop_front() {
                    Some(id) => p.latest.remove(&id),
                    None if p.closed => return,
                    None => None,
                }
            };
            let Some(op) = next else {
                self.wake.notified().await;
                continue;
            };
            let (job, state) = (op.job_id.clone(), op.state());
            if let Err(e) = node.apply(&who, Op::UpdateJob(op)).await {
                tracing::warn!(host = %who.name, job = %job, state = %state, error = %e.message(), "job report refused");
            }
        }
    }
}

/// Serves one session until the agent goes away; jobs go out through `tx`.
pub async fn run(
    node: Arc<NodeContext>,
    who: Identity,
    slot: SessionSlot,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
) {
    let host = who.name.clone();
    let session_id = uuid::Uuid::now_v7().to_string();
    node.sessions.serving(&session_id, true);
    tracing::info!(host = %host, session = %session_id, "agent session opened");
    let mut stopping = node.stopping.subscribe();
    // The node may be told to stop while the session's opening is still being committed: the
    // agent is told to go elsewhere then too, not left waiting for a commit that never comes.
    let opened = tokio::select! {
        r = node.apply(
            &who,
            Op::HostSession(session_op(&node, &host, &session_id, true)),
        ) => Some(r),
        _ = stopping.wait_for(|s| *s) => None,
    };
    let recorded = match opened {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            tracing::warn!(host = %host, error = %e.message(), "could not record the session; its end will not fail the host's jobs");
            false
        }
        None => {
            let _ = tx.send(Err(stopping_status(&node))).await;
            node.sessions.serving(&session_id, false);
            drop(slot);
            tracing::info!(host = %host, session = %session_id, "agent session closed: the node is stopping");
            return;
        }
    };
    let mut node_stopping = false;
    let reporter = Arc::new(Reporter {
        pending: Mutex::default(),
        wake: Notify::new(),
    });
    let reporting = tokio::spawn(reporter.clone().run(node.clone(), who.clone()));
    let mut refused = 0u64;
    let mut sent: HashSet<String> = HashSet::new();
    let mut status = node.raft.subscribe();
    // Woken when the host's jobs change; the poll is only a backstop (a snapshot installed,
    // a change the hook did not see).
    let changed = slot.changed.clone();
    let mut poll = tokio::time::interval(BACKSTOP_POLL);
    let silence = tokio::time::sleep(AGENT_SILENCE);
    tokio::pin!(silence);
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    silence.as_mut().reset(tokio::time::Instant::now() + AGENT_SILENCE);
                    if let Err(e) = handle(&node, &who, &reporter, m).await {
                        refused += 1;
                        if refused <= LOGGED_REFUSALS {
                            tracing::warn!(host = %host, error = %e.message(), "agent message refused");
                        }
                        if refused >= MAX_REFUSALS {
                            tracing::warn!(host = %host, refused, "agent session ended: too many refused messages");
                            let _ = tx
                                .send(Err(Status::permission_denied(format!(
                                    "{refused} messages of this session were refused (the last: {}); \
                                     the session is ended",
                                    e.message()
                                ))))
                                .await;
                            break;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(host = %host, error = %e, "agent session broke");
                    break;
                }
            },
            changed = status.changed() => {
                if changed.is_err() {
                    node_stopping = true;
                    break;
                }
                // Raft moves on every commit: that says nothing of this host's jobs (the
                // catalog's hook does), so a busy region does not wake every session.
                continue;
            }
            changed = stopping.changed() => {
                let stop = changed.is_err() || *stopping.borrow_and_update();
                if !stop {
                    continue;
                }
                let _ = tx.send(Err(stopping_status(&node))).await;
                node_stopping = true;
                break;
            }
            _ = changed.notified() => {}
            _ = poll.tick() => {}
            () = &mut silence => {
                tracing::warn!(host = %host, session = %session_id, silence = ?AGENT_SILENCE, "agent session ended: the agent sent nothing (not even a heartbeat)");
                let _ = tx
                    .send(Err(Status::deadline_exceeded(format!(
                        "this session sent nothing for {} s (agents send a heartbeat every 10 s); \
                         it is ended: reconnect",
                        AGENT_SILENCE.as_secs()
                    ))))
                    .await;
                break;
            }
            _ = tx.closed() => break,
        }
        // Deliver what is new for this host (its open jobs, read through their index).
        let jobs = match node.catalog.open_jobs_of_host(&host) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "reading jobs");
                continue;
            }
        };
        for j in jobs {
            // A waiting job (an in-place restore behind its pre-restore backup) goes out once
            // the catalog releases it.
            if j.host != host
                || j.state().is_final()
                || j.state() == JobState::Waiting
                || sent.contains(&j.id)
            {
                continue;
            }
            let mut job = Job {
                job_id: j.id.clone(),
                kind: j.kind,
                service: j.service.clone(),
                backup_id: j.backup_id.clone(),
                backup_kind: j.backup_kind,
                manifest_id: Default::default(),
                engine: j.engine,
                in_place: j.in_place,
                target_job: j.target_job.clone(),
                keep_files: j.keep_files,
            };
            if j.kind() == JobKind::Restore {
                match node.catalog.backup(&j.backup_id) {
                    Ok(Some(b)) => job.manifest_id = b.manifest_id,
                    _ => continue,
                }
            }
            tracing::info!(host = %host, job = %j.id, kind = %j.kind(), service = %j.service, "job sent to agent");
            let msg = CoordinatorMessage {
                body: Some(coordinator_message::Body::Job(job)),
            };
            if tx.send(Ok(msg)).await.is_err() {
                break;
            }
            sent.insert(j.id);
        }
    }
    // Reports accepted before the end are still proposed.
    reporter.close();
    let _ = reporting.await;
    node.sessions.serving(&session_id, false);
    drop(slot);
    tracing::info!(host = %host, session = %session_id, refused, "agent session closed");
    if recorded && !node_stopping {
        tokio::spawn(async move {
            // The host is away at once (no new work goes to it); its jobs wait for the grace.
            let mut op = session_op(&node, &host, &session_id, false);
            op.grace_begins = true;
            if let Err(e) = node.apply(&session_actor(&node), Op::HostSession(op)).await {
                tracing::debug!(host = %host, session = %session_id, reason = %e.message(), "the session's end not recorded (the agent came back)");
            }
            end_after_grace(node, host, session_id).await
        });
    }
}

/// Who proposes a session's end: the node's session keeper.
fn session_actor(node: &NodeContext) -> Identity {
    Identity {
        role: Role::Node,
        name: format!("{}/sessions", node.name),
    }
}

fn session_op(node: &NodeContext, host: &str, session_id: &str, open: bool) -> HostSession {
    HostSession {
        host: host.to_string(),
        session_id: session_id.to_string(),
        open,
        node: node.name.clone(),
        grace_ms: node.agent_grace.as_millis() as u64,
        node_id: node.id,
        grace_begins: false,
    }
}

/// After the grace period, proposes the end of a session whose agent went away (the host is
/// marked away, its open jobs fail), unless the node is stopping; the catalog refuses it when
/// the agent opened a newer session meanwhile.
async fn end_after_grace(node: Arc<NodeContext>, host: String, session_id: String) {
    let mut stopping = node.stopping.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(node.agent_grace) => {}
        _ = stopping.wait_for(|s| *s) => return,
    }
    match node.catalog.host(&host) {
        Ok(Some(h)) if h.session_id == session_id => {}
        Ok(Some(_)) => {
            tracing::info!(host = %host, session = %session_id, "the agent came back within the grace period (a newer session)");
            return;
        }
        _ => return, // the host is gone
    }
    match node
        .apply(
            &session_actor(&node),
            Op::HostSession(session_op(&node, &host, &session_id, false)),
        )
        .await
    {
        Ok(()) => {
            tracing::warn!(host = %host, session = %session_id, grace = ?node.agent_grace, "the agent went away and did not come back: its open jobs failed as abandoned")
        }
        Err(e) => {
            tracing::info!(host = %host, session = %session_id, reason = %e.message(), "session end not recorded")
        }
    }
}

/// What a session's agent is told when the node stops: go to another node.
fn stopping_status(node: &NodeContext) -> Status {
    Status::unavailable(format!(
        "node {} is stopping: reconnect to another node of the region",
        node.name
    ))
}

/// Takes one message of the agent: a heartbeat records the host's members (when they changed
/// or a minute passed); a report, once checked, is queued for the reporter. `Err` is a refusal,
/// with nothing proposed.
async fn handle(
    node: &Arc<NodeContext>,
    who: &Identity,
    reporter: &Reporter,
    m: AgentMessage,
) -> Result<(), Status> {
    match m.body {
        Some(agent_message::Body::Heartbeat(hb)) => {
            validate::members(&hb.members)?;
            let members: Vec<_> = hb.members.into_iter().map(member_record).collect();
            let current = node.catalog.host(&who.name)?;
            // Presence comes from the session (`policy::presence`): a heartbeat that changes
            // nothing writes nothing.
            let changed = match &current {
                Some(h) => {
                    let mut sorted = members.clone();
                    sorted.sort_by(|a, b| a.service.cmp(&b.service));
                    claimed_members(h) != sorted
                }
                None => true,
            };
            if let (true, Some(h)) = (changed, current) {
                let op = Op::RegisterHost(RegisterHost {
                    host: h.name.clone(),
                    region: h.region,
                    spare: h.spare_requested,
                    members,
                });
                node.apply(who, op).await?;
            }
            Ok(())
        }
        Some(agent_message::Body::Report(mut r)) => {
            validate::report(&mut r)?;
            check_report(node, who, &r).await?;
            reporter.push(UpdateJob {
                job_id: r.job_id,
                host: who.name.clone(),
                state: r.state,
                reason: r.reason,
                bytes_done: r.bytes_done,
                bytes_total: r.bytes_total,
                restore: r.restore,
                phase: r.phase,
                failure: r.failure,
                stop: r.stop,
            });
            Ok(())
        }
        None => Ok(()),
    }
}

/// A report names a job of this host that is neither finished nor waiting; a backup job
/// completes by its commit, not by a report. The catalog checks again when it applies.
async fn check_report(node: &NodeContext, who: &Identity, r: &JobReport) -> Result<(), Status> {
    let job = match node.catalog.job(&r.job_id)? {
        Some(j) => Some(j),
        None => {
            node.read_barrier().await?;
            node.catalog.job(&r.job_id)?
        }
    };
    let job = job.ok_or_else(|| Status::not_found(format!("no job {}", r.job_id)))?;
    if job.host != who.name {
        return Err(Status::permission_denied(format!(
            "job {} is not assigned to {who}",
            job.id
        )));
    }
    if job.state().is_final() || job.state() == JobState::Waiting {
        return Err(Status::failed_precondition(format!(
            "job {} is {}; reports are taken only while it runs",
            job.id,
            job.state()
        )));
    }
    if job.kind() == JobKind::Backup && r.state() == JobState::Completed {
        return Err(Status::invalid_argument(format!(
            "backup job {} completes by its commit, not by a report",
            job.id
        )));
    }
    Ok(())
}

/// Ends, after the grace period, the sessions this node recorded before it (re)started: their
/// agents were cut off by the restart and either came back (to this node or another: a newer
/// session, and nothing is proposed) or did not (their hosts become away, their open jobs
/// fail as abandoned). Waits until the node has caught up with the region, so it judges the
/// newest sessions; gives up when the node stops.
pub async fn end_stale_sessions(node: Arc<NodeContext>) {
    let mut stopping = node.stopping.subscribe();
    loop {
        let caught_up = tokio::select! {
            r = node.read_barrier() => r.map_err(|e| e.to_string()),
            _ = stopping.wait_for(|s| *s) => return,
        };
        match caught_up {
            Ok(()) => break,
            Err(e) => {
                tracing::debug!(error = %e, "waiting for the region before ending stale sessions");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let stale = match node.catalog.hosts_of_session_node(node.id) {
        Ok(hosts) => hosts
            .into_iter()
            .filter(|h| !node.sessions.serves(&h.session_id))
            .collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!(error = %e, "reading the sessions this node recorded");
            return;
        }
    };
    if !stale.is_empty() {
        tracing::info!(sessions = stale.len(), grace = ?node.agent_grace, "sessions recorded before this node started end unless their agents come back");
    }
    for h in stale {
        tokio::spawn(end_after_grace(node.clone(), h.name, h.session_id));
    }
}
