//! The snapshot side of `ClusterService` (issue 17, point 3): a leader's snapshot message
//! taken in (`InstallSnapshot`: fetch, check, prepare, then step), and a snapshot file served
//! in pieces (`FetchSnapshot`). The trait methods in `cluster.rs` check the caller's role and
//! call these.
//!
//! Invariants: a snapshot message is stepped into Raft only by [`install`], once its catalog
//! is prepared; the reference is checked (its node, a 32-byte hash, the message's own index)
//! before anything is fetched; a piece served is at most [`crate::raft::snapshots::PIECE`].

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::MessageType;
use strongbox_proto::catalog::SnapshotRef;
use strongbox_proto::v1::{FetchSnapshotRequest, InstallSnapshotRequest, SnapshotChunk};
use tokio::sync::mpsc;
use tonic::Status;

use crate::catalog::snapshot::FileFacts;
use crate::node::NodeContext;

/// How long Raft may take to install a prepared snapshot (a swap and a small transaction).
const INSTALLED_WITHIN: Duration = Duration::from_secs(60);

/// Takes a leader's snapshot message: fetches the file it names, prepares it, steps the
/// message, and waits until the catalog is at the snapshot's index (or beyond).
pub async fn install(node: &Arc<NodeContext>, r: InstallSnapshotRequest) -> Result<(), Status> {
    let m = raft::eraftpb::Message::parse_from_bytes(&r.message)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))?;
    if m.get_msg_type() != MessageType::MsgSnapshot || m.to != node.id {
        return Err(Status::invalid_argument(format!(
            "InstallSnapshot takes a snapshot message for node {}",
            node.id
        )));
    }
    let snap = m.get_snapshot();
    let reference = SnapshotRef::decode(snap.get_data())
        .map_err(|e| Status::invalid_argument(format!("malformed snapshot reference: {e}")))?;
    let index = snap.get_metadata().index;
    let blake3: [u8; 32] = reference
        .blake3
        .as_ref()
        .try_into()
        .map_err(|_| Status::invalid_argument("a snapshot reference needs a 32-byte hash"))?;
    if reference.index != index || reference.node != m.from || reference.node == node.id {
        return Err(Status::invalid_argument(format!(
            "the snapshot reference (node {}, index {}) does not match its message (from {}, \
             index {index})",
            reference.node, reference.index, m.from
        )));
    }
    let members = snap.get_metadata().get_conf_state();
    if !members.voters.contains(&node.id) && !members.learners.contains(&node.id) {
        return Err(Status::failed_precondition(format!(
            "the snapshot at index {index} was made before node {} was a member: send a newer one",
            node.id
        )));
    }
    let _one = node.snapshots.one_install().await;
    if node.catalog.applied_index()? < index {
        tracing::info!(
            index,
            from = reference.node,
            bytes = reference.bytes,
            "fetching a snapshot from the leader"
        );
        let started = std::time::Instant::now();
        let channel = node.transport.channel(reference.node)?;
        let path = node.snapshots.fetch(channel, &reference).await?;
        let catalog = node.catalog.clone();
        let facts = FileFacts {
            bytes: reference.bytes,
            blake3,
        };
        let file = path.clone();
        let prepared =
            tokio::task::spawn_blocking(move || catalog.prepare_install(&file, index, &facts))
                .await
                .map_err(|e| Status::internal(format!("preparing the snapshot: {e}")))?;
        // A bad file is fetched anew next time; a good one is no longer needed.
        node.snapshots.done_with(&path);
        prepared?;
        tracing::info!(index, took = ?started.elapsed(), "snapshot fetched and prepared");
    }
    node.raft.step(m)?;
    // Raft installs it (or finds it behind what this node has); either way the node's
    // applied index, published after every loop turn, reaches the snapshot's.
    let mut status = node.raft.subscribe();
    let mut stopping = node.stopping.subscribe();
    tokio::select! {
        r = tokio::time::timeout(INSTALLED_WITHIN, status.wait_for(|s| s.applied >= index)) => match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Status::unavailable("the node is stopping")),
            Err(_) => Err(Status::aborted(format!(
                "Raft did not take the snapshot at index {index} within {} s",
                INSTALLED_WITHIN.as_secs()
            ))),
        },
        _ = stopping.wait_for(|s| *s) => Err(Status::unavailable("the node is stopping")),
    }
}

/// Streams the snapshot file of `r.index` from `r.offset`, paced by the node's send rate.
pub fn serve(
    node: &Arc<NodeContext>,
    r: FetchSnapshotRequest,
) -> Result<mpsc::Receiver<Result<SnapshotChunk, Status>>, Status> {
    let made = node.snapshots.to_serve(r.index).ok_or_else(|| {
        Status::not_found(format!(
            "node {} holds no snapshot at index {} (a newer one replaced it: the leader sends \
             its reference again)",
            node.id, r.index
        ))
    })?;
    if r.offset > made.facts.bytes {
        return Err(Status::out_of_range(format!(
            "offset {} is past the snapshot's {} bytes",
            r.offset, made.facts.bytes
        )));
    }
    let (tx, rx) = mpsc::channel(4);
    let node = node.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let fail = |e: std::io::Error| Status::internal(format!("reading the snapshot file: {e}"));
        let mut file = match tokio::fs::File::open(&made.path).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
        };
        if let Err(e) = file.seek(std::io::SeekFrom::Start(r.offset)).await {
            let _ = tx.send(Err(fail(e))).await;
            return;
        }
        let mut offset = r.offset;
        let (_, piece) = node.snapshots.pace(0);
        let mut buf = vec![0u8; piece];
        while offset < made.facts.bytes {
            let want = piece.min((made.facts.bytes - offset) as usize);
            if let Err(e) = file.read_exact(&mut buf[..want]).await {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
            let chunk = SnapshotChunk {
                offset,
                data: buf[..want].to_vec().into(),
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return; // the receiver went away
            }
            offset += want as u64;
            let (wait, _) = node.snapshots.pace(want);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    });
    Ok(rx)
}
