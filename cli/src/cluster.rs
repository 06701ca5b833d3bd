//! `strongbox cluster status|add-node|remove-node`: the coordinator cluster of a region.
//!
//! `status` asks every node for its own view (term, commit, applied), and the leader for each
//! node's replication progress; a node that does not answer is shown as unreachable.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::json;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, NodeRole, RemoveNodeRequest,
};

use crate::connect::{self, status_error, ConnectArgs};
use crate::output::Output;
use crate::views::cluster::{ClusterView, NodeView, WorkerView};

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
            let mut nodes = Vec::new();
            for n in &leader_view.nodes {
                let answer = status_of(&tls, &n.address).await;
                let own = answer
                    .as_ref()
                    .and_then(|s| s.nodes.iter().find(|m| m.id == n.id).cloned());
                let workers = answer
                    .map(|s| s.workers)
                    .unwrap_or_default()
                    .iter()
                    .map(WorkerView::from)
                    .collect();
                // An unreachable node's own figures are unknown: null, not 0.
                nodes.push(NodeView {
                    id: n.id,
                    name: n.name.clone(),
                    address: n.address.clone(),
                    role: if own.is_some() {
                        n.role()
                    } else {
                        NodeRole::Unreachable
                    },
                    voter: n.voter,
                    term: own.as_ref().map(|o| o.term),
                    commit_index: own.as_ref().map(|o| o.commit_index),
                    applied_index: own.as_ref().map(|o| o.applied_index),
                    matched: n.matched,
                    lag: own
                        .as_ref()
                        .map(|o| leader_commit.saturating_sub(o.applied_index)),
                    workers,
                });
            }
            let view = ClusterView {
                region: leader_view.region.clone(),
                leader_id: leader_view.leader_id,
                nodes,
            };
            match output {
                Output::Json => output.json(&serde_json::to_value(&view)?),
                Output::Table => {
                    let leader = view
                        .nodes
                        .iter()
                        .find(|n| n.id == view.leader_id)
                        .map_or_else(
                            || "none".to_string(),
                            |n| format!("{} (id {})", n.name, n.id),
                        );
                    println!("region {}   leader {leader}", view.region);
                    let mut t = Table::new();
                    t.load_preset(UTF8_FULL_CONDENSED);
                    t.set_header([
                        "id", "name", "address", "role", "voter", "term", "commit", "applied",
                        "lag",
                    ]);
                    for n in &view.nodes {
                        t.add_row(n.row());
                    }
                    println!("{t}");
                    let rows: Vec<Vec<String>> = view
                        .nodes
                        .iter()
                        .flat_map(|n| n.worker_rows(view.leader_id))
                        .collect();
                    if !rows.is_empty() {
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
                        for row in rows {
                            t.add_row(row);
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
