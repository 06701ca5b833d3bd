//! `strongbox cluster status|add-node|remove-node`: the coordinator cluster of a region.
//!
//! `status` asks every node for its own view (term, commit, applied), and the leader for each
//! node's replication progress; a node that does not answer is shown as unreachable.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::{json, Value};
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, NodeRole, RemoveNodeRequest,
    WorkerStatus,
};

use crate::connect::{self, status_error, ConnectArgs};
use crate::output::{self, Output};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Nodes, their roles, the term, the leader, indexes and replication lag.
    Status,
    /// Add a node (started with the cluster's peers in its configuration) to the cluster.
    AddNode {
        /// The new node's Raft id.
        #[arg(long)]
        id: u64,
        /// Its gRPC address, HOST:PORT.
        #[arg(long)]
        address: String,
        /// The name in its certificate.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
}

async fn status_of(
    tls: &strongbox_core::tls::TlsFiles,
    address: &str,
) -> Option<ClusterStatusResponse> {
    let ch = connect::connect(tls, address).await.ok()?;
    OperatorServiceClient::new(ch)
        .cluster_status(ClusterStatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

pub async fn run(cmd: Command, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    let mut client = OperatorServiceClient::new(connect::any(conn).await?);
    match cmd {
        Command::Status => {
            let first = client
                .cluster_status(ClusterStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let tls = conn.tls()?;
            // The leader knows every node's progress; each node knows its own indexes.
            let leader_view = match first.nodes.iter().find(|n| n.id == first.leader_id) {
                Some(l) if !l.address.is_empty() => {
                    status_of(&tls, &l.address).await.unwrap_or(first.clone())
                }
                _ => first.clone(),
            };
            let leader_commit = leader_view
                .nodes
                .iter()
                .find(|n| n.id == leader_view.leader_id)
                .map_or(0, |n| n.commit_index);
            let mut rows = Vec::new();
            let mut workers = Vec::new();
            for n in &leader_view.nodes {
                let answer = status_of(&tls, &n.address).await;
                let own = answer
                    .as_ref()
                    .and_then(|s| s.nodes.iter().find(|m| m.id == n.id).cloned());
                let node_workers: Vec<Value> = answer
                    .map(|s| s.workers)
                    .unwrap_or_default()
                    .iter()
                    .map(worker_json)
                    .collect();
                if own.is_none() {
                    // Its workers cannot be asked: one row says so.
                    workers.push((n.name.clone(), json!({"name": "-", "unreachable": true})));
                }
                for w in &node_workers {
                    // A leader-only worker idles on the other nodes: shown where it runs.
                    if !(w["leader_only"] == json!(true) && n.id != leader_view.leader_id) {
                        workers.push((n.name.clone(), w.clone()));
                    }
                }
                let (role, term, commit, applied) = match &own {
                    Some(o) => (n.role(), o.term, o.commit_index, o.applied_index),
                    None => (NodeRole::Unreachable, 0, 0, 0),
                };
                let lag = if own.is_some() {
                    leader_commit.saturating_sub(applied)
                } else {
                    0
                };
                // An unreachable node's own figures are unknown: null, not 0.
                let known = |v: u64| own.as_ref().map(|_| v);
                rows.push(json!({
                    "id": n.id, "name": n.name, "address": n.address, "role": role, "voter": n.voter,
                    "term": known(term), "commit_index": known(commit),
                    "applied_index": known(applied), "matched": n.matched, "lag": known(lag),
                    "workers": node_workers,
                }));
            }
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"region": leader_view.region, "leader_id": leader_view.leader_id, "nodes": rows})
                ),
                Output::Table => {
                    let leader = leader_view
                        .nodes
                        .iter()
                        .find(|n| n.id == leader_view.leader_id)
                        .map_or_else(
                            || "none".to_string(),
                            |n| format!("{} (id {})", n.name, n.id),
                        );
                    println!("region {}   leader {leader}", leader_view.region);
                    let mut t = Table::new();
                    t.load_preset(UTF8_FULL_CONDENSED);
                    t.set_header([
                        "id", "name", "address", "role", "voter", "term", "commit", "applied",
                        "lag",
                    ]);
                    for r in &rows {
                        t.add_row([
                            r["id"].to_string(),
                            r["name"].as_str().unwrap_or_default().to_string(),
                            r["address"].as_str().unwrap_or_default().to_string(),
                            r["role"].as_str().unwrap_or_default().to_string(),
                            if r["voter"] == json!(true) {
                                "yes"
                            } else {
                                "no"
                            }
                            .to_string(),
                            output::text(&r["term"]),
                            output::text(&r["commit_index"]),
                            output::text(&r["applied_index"]),
                            output::text(&r["lag"]),
                        ]);
                    }
                    println!("{t}");
                    if !workers.is_empty() {
                        println!("\nworkers");
                        let mut t = Table::new();
                        t.load_preset(UTF8_FULL_CONDENSED);
                        t.set_header([
                            "node",
                            "worker",
                            "runs on",
                            "every",
                            "last pass",
                            "took",
                            "items",
                            "state",
                        ]);
                        for (node, w) in &workers {
                            t.add_row(worker_row(node, w));
                        }
                        println!("{t}");
                    }
                }
            }
        }
        Command::AddNode { id, address, name } => {
            client
                .add_node(AddNodeRequest {
                    id,
                    address: address.clone(),
                    name,
                })
                .await
                .map_err(status_error)?;
            output.record(&[
                ("added", json!(id)),
                ("address", json!(address)),
                ("next", json!("it joins as a learner and becomes a voter once caught up: watch `strongbox cluster status`")),
            ]);
        }
        Command::RemoveNode { id } => {
            client
                .remove_node(RemoveNodeRequest { id })
                .await
                .map_err(status_error)?;
            output.record(&[("removed", json!(id))]);
        }
    }
    Ok(())
}

/// A worker's status as JSON for scripts.
fn worker_json(w: &WorkerStatus) -> Value {
    json!({
        "name": w.name,
        "leader_only": w.leader_only,
        "interval_ms": w.interval_ms,
        "passes": w.passes,
        "items": w.items,
        "last_pass_unix_ms": w.last_pass_unix_ms,
        "last_pass": output::timestamp(w.last_pass_unix_ms),
        "last_pass_took_ms": w.last_pass_took_ms,
        "last_error": w.last_error,
        "waiting": w.waiting,
    })
}

/// A worker's row for people: where it runs, how often, its last pass and what it said.
fn worker_row(node: &str, w: &Value) -> Vec<String> {
    if w["unreachable"] == json!(true) {
        let mut row = vec![node.to_string(), "-".to_string()];
        row.extend(["-"; 5].map(String::from));
        row.push("unreachable: its workers cannot be asked".to_string());
        return row;
    }
    let ms = |key: &str| w[key].as_u64().unwrap_or(0);
    let text = |key: &str| w[key].as_str().unwrap_or_default().to_string();
    let last = ms("last_pass_unix_ms");
    // A pass overdue by three intervals (and at least 30 s) with no reason given: stuck in
    // one (a read barrier waiting for a majority, a slow pass).
    let late = last != 0
        && strongbox_core::clock::now_ms().saturating_sub(last)
            > (3 * ms("interval_ms")).max(30_000);
    let state = match (text("last_error"), text("waiting")) {
        (e, _) if !e.is_empty() => format!("error: {e}"),
        (_, why) if !why.is_empty() => format!("waiting: {why}"),
        _ if late => "late: no pass for over three intervals".to_string(),
        _ => "ok".to_string(),
    };
    vec![
        node.to_string(),
        text("name"),
        if w["leader_only"] == json!(true) {
            "leader"
        } else {
            "every node"
        }
        .to_string(),
        output::duration(std::time::Duration::from_millis(ms("interval_ms"))),
        if ms("last_pass_unix_ms") == 0 {
            "never".to_string()
        } else {
            output::ago(ms("last_pass_unix_ms"))
        },
        format!("{} ms", ms("last_pass_took_ms")),
        ms("items").to_string(),
        state,
    ]
}
