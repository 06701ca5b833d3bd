//! The agent's session with its region: register, then a stream of heartbeats and job reports
//! up and jobs down; on any break, the next coordinator node, again and again.
//!
//! Invariants: the agent always tries to be connected (backoff capped at 5 s); a new session
//! first registers (so the coordinator knows the host and its members) and sends again the
//! recent final job reports; jobs are started through `Agent::start_job`, which ignores a job
//! this process already started, so a reconnect neither loses nor repeats a job. When the
//! agent stops, the open session sends the reports queued so far (the interrupted jobs'),
//! closes its side, and waits (at most [`FLUSH`]) for the node to end the stream, which it does
//! once those reports are proposed.

use std::sync::Arc;
use std::time::Duration;

use strongbox_proto::v1::{
    agent_message, coordinator_message, AgentMessage, Heartbeat, JobReport, RegisterRequest,
};
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::rpc::client;
use strongbox_core::clock::now_ms;

const HEARTBEAT: Duration = Duration::from_secs(10);

/// How long a stopping agent waits for the node to take its last reports.
pub const FLUSH: Duration = Duration::from_secs(5);

/// Keeps a session up until the agent stops (then delivers its last reports and returns).
pub async fn run(agent: Arc<Agent>, mut reports: mpsc::UnboundedReceiver<JobReport>) {
    let mut failures = 0u32;
    let stopping = agent.stopping();
    loop {
        if *stopping.borrow() {
            return;
        }
        let (i, address, _) = agent.coordinators.current();
        let address = address.to_string();
        match session(&agent, &mut reports).await {
            Ok(()) if *stopping.borrow() => return,
            Ok(()) => tracing::info!(coordinator = %address, "session ended; reconnecting"),
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(coordinator = %address, error = %e, "session with the coordinator broke; trying the next node");
                } else {
                    tracing::debug!(coordinator = %address, error = %e, "session attempt failed");
                }
            }
        }
        agent.coordinators.rotate(i);
        let backoff = Duration::from_millis(200 * u64::from(failures.min(25)));
        tokio::time::sleep(backoff).await;
    }
}

async fn session(
    agent: &Arc<Agent>,
    reports: &mut mpsc::UnboundedReceiver<JobReport>,
) -> Result<(), String> {
    let (_, address, channel) = agent.coordinators.current();
    let address = address.to_string();
    let mut c = client(channel);
    let members = agent.members().await;
    c.register(RegisterRequest {
        host: agent.config.host.clone(),
        region: agent.config.region.clone(),
        spare: agent.config.spare,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        members: members.clone(),
    })
    .await
    .map_err(|s| format!("register: {} ({:?})", s.message(), s.code()))?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let heartbeat = |members| AgentMessage {
        body: Some(agent_message::Body::Heartbeat(Heartbeat {
            members,
            unix_ms: now_ms(),
        })),
    };
    let report = |r| AgentMessage {
        body: Some(agent_message::Body::Report(r)),
    };
    let _ = tx.send(heartbeat(members)).await;
    for r in agent.recent_finals() {
        let _ = tx.send(report(r)).await;
    }
    let mut inbound = c
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("session: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    tracing::info!(coordinator = %address, host = %agent.config.host, "session open");
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    let mut stopping = agent.stopping();
    loop {
        tokio::select! {
            () = async {
                let _ = stopping.wait_for(|s| *s).await;
            } => {
                while let Ok(r) = reports.try_recv() {
                    if tx.send(report(r)).await.is_err() {
                        return Err("the session closed before the last reports went".into());
                    }
                }
                drop(tx);
                // The node ends the stream once it has proposed what it took.
                let drained = tokio::time::timeout(FLUSH, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                if drained.is_err() {
                    tracing::warn!(coordinator = %address, "the node did not confirm the last reports in time");
                }
                return Ok(());
            }
            m = inbound.message() => match m {
                Ok(Some(msg)) => {
                    if let Some(coordinator_message::Body::Job(job)) = msg.body {
                        agent.start_job(job);
                    }
                }
                Ok(None) => return Ok(()),
                Err(s) => return Err(format!("{} ({:?})", s.message(), s.code())),
            },
            r = reports.recv() => match r {
                Some(r) => {
                    if tx.send(report(r)).await.is_err() {
                        return Err("the session closed".into());
                    }
                }
                None => return Ok(()),
            },
            _ = tick.tick() => {
                let members = agent.members().await;
                if tx.send(heartbeat(members)).await.is_err() {
                    return Err("the session closed".into());
                }
            }
        }
    }
}
