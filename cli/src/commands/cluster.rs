//! `strongbox cluster status|add-node|remove-node`: the coordinator cluster of a region.
//!
//! `status` asks every node for its own view (term, commit, applied), and the leader for each
//! node's replication progress; a node that does not answer is shown as unreachable.

use crate::grammar::cluster::*;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, RemoveNodeRequest,
};

use crate::connect::{self, status_error};
use crate::grammar::ConnectArgs;
use crate::output::Output;
use crate::views::cluster::{ClusterView, NodeAddedView, NodeRemovedView, NodeView};

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
                    .and_then(|s| s.nodes.iter().find(|m| m.id == n.id));
                let workers = answer.as_ref().map_or(&[][..], |s| &s.workers[..]);
                nodes.push(NodeView::new(n, own, workers, leader_commit));
            }
            let view = ClusterView {
                region: leader_view.region.clone(),
                leader_id: leader_view.leader_id,
                nodes,
            };
            match output {
                Output::Json => output.json(&view),
                Output::Table => {
                    println!("{}", view.heading());
                    println!("{}", view.nodes_table());
                    if let Some(t) = view.workers_table() {
                        println!("\nworkers");
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
            output.record(&NodeAddedView::new(id, &address));
        }
        Command::RemoveNode { id } => {
            client
                .remove_node(RemoveNodeRequest { id })
                .await
                .map_err(status_error)?;
            output.record(&NodeRemovedView { removed: id });
        }
    }
    Ok(())
}
