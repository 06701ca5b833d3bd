//! The node's plain HTTP listener: `/healthz` (200 when the node has a leader, 503 otherwise)
//! and `/metrics` (Prometheus text format).
//!
//! Invariants: nothing here changes state; Raft and catalog metrics are read at scrape time, so
//! they cannot drift from what the node reports over gRPC; chunk totals are as of the last
//! maintenance pass plus writes since; RPC counts come from `metrics.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use strongbox_proto::v1::{BackupState, FailureClass, JobKind, RestoreOutcome, ServiceState};

use crate::error::{Error, Result};
use crate::node::NodeContext;

/// Serves `/healthz` and `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, node: Arc<NodeContext>) -> Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(node);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io {
            path: format!("HTTP listen address {addr}").into(),
            source: e,
        })?;
    axum::serve(listener, app)
        .await
        .map_err(|e| Error::Transport(e.to_string()))
}

async fn healthz(State(node): State<Arc<NodeContext>>) -> impl IntoResponse {
    let st = node.raft.status();
    if st.leader_id != 0 {
        (
            StatusCode::OK,
            format!(
                "ok: node {} is {}, leader {}\n",
                st.id, st.role, st.leader_id
            ),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no leader known to node {}\n", st.id),
        )
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

type Labels = Vec<(&'static str, String)>;

/// Per-service schedule metrics and failures by reason, from the catalog at scrape time.
fn fleet_metrics(node: &NodeContext, r: &mut Registry) {
    use crate::policy::plan::status;
    let Ok(snap) = node.catalog.schedule_snapshot() else {
        return;
    };
    let now = strongbox_core::clock::now_ms();
    let last = Family::<Labels, Gauge>::default();
    let next = Family::<Labels, Gauge>::default();
    let missed = Family::<Labels, Gauge>::default();
    let missing = Family::<Labels, Gauge>::default();
    let secs = |ms: u64| i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    for svc in &snap.services {
        let st = status(&snap, svc, now);
        let service = || vec![("service", svc.name.clone())];
        last.get_or_create(&service()).set(secs(st.last_success_ms));
        next.get_or_create(&service()).set(secs(st.next_ms()));
        missed.get_or_create(&service()).set(st.missed() as i64);
        missing
            .get_or_create(&vec![
                ("service", svc.name.clone()),
                ("state", st.state.to_string()),
            ])
            .set(i64::from(matches!(
                st.state,
                ServiceState::NoPrimary | ServiceState::Overdue | ServiceState::Failing
            )));
    }
    let failures = Family::<Labels, Gauge>::default();
    for class in FailureClass::ALL {
        failures
            .get_or_create(&vec![("reason", class.to_string())])
            .set(0);
    }
    for b in snap
        .backups
        .iter()
        .filter(|b| b.state() == BackupState::Failed)
    {
        let class = match b.failure() {
            FailureClass::Unspecified => FailureClass::Other,
            class => class,
        };
        failures
            .get_or_create(&vec![("reason", class.to_string())])
            .inc();
    }
    r.register(
        "service_last_success_timestamp_seconds",
        "Start of the newest completed backup of each service (0: none)",
        last,
    );
    r.register(
        "service_next_backup_timestamp_seconds",
        "When the next scheduled backup of each service is due (0: none scheduled)",
        next,
    );
    r.register(
        "service_backups_missed",
        "Schedule slots of each service that passed with no backup",
        missed,
    );
    r.register(
        "service_backup_missing",
        "1 when a service misses its backup: no primary (none is taken from a replica), overdue or failing",
        missing,
    );
    r.register(
        "backups_failed",
        "Failed backups in the catalog, by reason",
        failures,
    );
    let restores = Family::<Labels, Gauge>::default();
    for o in RestoreOutcome::ALL {
        restores
            .get_or_create(&vec![("outcome", o.to_string())])
            .set(0);
    }
    for j in snap.jobs.iter().filter(|j| j.kind() == JobKind::Restore) {
        if let Some(o) = RestoreOutcome::of_job(j.state(), j.restore.as_ref()) {
            restores
                .get_or_create(&vec![("outcome", o.to_string())])
                .inc();
        }
    }
    r.register(
        "restores",
        "Finished restore jobs in the catalog by outcome: verified, restored_with_errors (a server was delivered without everything), failed (none was)",
        restores,
    );
}

async fn metrics(State(node): State<Arc<NodeContext>>) -> impl IntoResponse {
    let st = node.raft.status();
    let mut r = Registry::with_prefix("strongbox");
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    gauge(&mut r, "raft_term", "Current Raft term", n(st.term));
    gauge(
        &mut r,
        "raft_leader_id",
        "Raft id of the leader this node knows (0: none)",
        n(st.leader_id),
    );
    gauge(
        &mut r,
        "raft_is_leader",
        "1 on the leader",
        i64::from(st.leader_id == st.id && st.id != 0),
    );
    gauge(
        &mut r,
        "raft_commit_index",
        "Highest log index known committed",
        n(st.commit),
    );
    gauge(
        &mut r,
        "raft_applied_index",
        "Highest log index applied to the catalog",
        n(st.applied),
    );
    gauge(
        &mut r,
        "raft_first_index",
        "First log index still held (after compaction)",
        n(st.first_index),
    );
    gauge(
        &mut r,
        "raft_last_index",
        "Last log index held",
        n(st.last_index),
    );
    gauge(
        &mut r,
        "raft_voters",
        "Voters in the configuration",
        st.voters.len() as i64,
    );
    gauge(
        &mut r,
        "raft_learners",
        "Learners in the configuration",
        st.learners.len() as i64,
    );
    let hosts = node.catalog.hosts().map(|h| h.len() as i64).unwrap_or(-1);
    gauge(
        &mut r,
        "catalog_hosts",
        "Hosts registered in the catalog",
        hosts,
    );
    let (chunks, chunk_bytes) = node.chunks.totals();
    gauge(
        &mut r,
        "chunks_stored",
        "Chunk and manifest files held by this node",
        n(chunks),
    );
    gauge(
        &mut r,
        "chunk_bytes_stored",
        "Bytes of chunk and manifest files held by this node",
        n(chunk_bytes),
    );
    r.register(
        "rpcs",
        "gRPC calls served, by method and code",
        node.metrics.rpcs.clone(),
    );
    fleet_metrics(&node, &mut r);
    let mut body = String::new();
    match encode(&mut body, &r) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("encoding metrics: {e}"),
        ),
    }
}
