//! Chunk durability across the cluster: an upload is acknowledged once a majority of the voters
//! hold the chunk durably; a read falls back to a peer when the local copy is missing or corrupt
//! (and heals the local copy).
//!
//! Invariants: `put_majority` returns Ok only after at least a majority of voters (this node
//! counted if it is one) fsynced every chunk of the batch; replication to the rest goes on
//! after the answer; every file operation runs on the blocking pool; a batch travels to a peer
//! as one call and is written there as one blocking task.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strongbox_core::ids::ChunkId;
use strongbox_proto::v1::cluster_service_client::ClusterServiceClient;
use strongbox_proto::v1::{FetchChunkRequest, ReplicateChunksRequest, SealedChunk};
use strongbox_proto::MAX_CLUSTER_MESSAGE_BYTES;
use tokio::sync::mpsc;

use super::store::{ChunkStore, Lookup};
use crate::error::{Error, Result};
use crate::node::NodeContext;

const PEER_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks what a coordinator can check of a sealed chunk before storing it: its id and size,
/// and that it parses as a strongbox chunk or manifest.
pub fn validate(id: &[u8], sealed: &[u8]) -> Result<ChunkId> {
    let id = ChunkId::from_slice(id).map_err(|e| Error::Refused(e.to_string()))?;
    if sealed.len() > super::store::MAX_SEALED_LEN {
        return Err(Error::Refused(format!(
            "chunk {id} is {} bytes, over the limit",
            sealed.len()
        )));
    }
    let is_chunk = strongbox_core::chunk::Header::parse(sealed).is_ok();
    let is_manifest = strongbox_core::manifest::parse(sealed).is_ok();
    if !is_chunk && !is_manifest {
        return Err(Error::Refused(format!(
            "chunk {id} is neither a sealed chunk nor a sealed manifest"
        )));
    }
    Ok(id)
}

/// A batch of checked chunks, shared by the local write and the copies to peers.
pub type Batch = Arc<Vec<(ChunkId, Bytes)>>;

/// Checks a wire batch (see [`validate`]); refuses an empty one.
pub fn validate_batch(chunks: Vec<SealedChunk>) -> Result<Batch> {
    if chunks.is_empty() {
        return Err(Error::Refused("a batch of no chunks".into()));
    }
    chunks
        .into_iter()
        .map(|c| Ok((validate(&c.id, &c.sealed)?, c.sealed)))
        .collect::<Result<Vec<_>>>()
        .map(Arc::new)
}

/// Writes a batch to this node's store; how many chunks were new.
pub async fn put_local(store: &Arc<ChunkStore>, chunks: Batch, durable: bool) -> Result<usize> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<(ChunkId, &[u8])> = chunks.iter().map(|(id, b)| (*id, &b[..])).collect();
        store.put_many(&refs, durable)
    })
    .await
    .map_err(|e| Error::Refused(format!("chunk write task: {e}")))?
}

/// Names a batch in messages: its chunk, or how many and the first.
fn describe(chunks: &[(ChunkId, Bytes)]) -> String {
    match chunks {
        [(id, _)] => format!("chunk {id}"),
        [(id, _), rest @ ..] => format!("{} chunks ({id} and {} more)", chunks.len(), rest.len()),
        [] => "no chunks".into(),
    }
}

pub async fn get_local(store: &Arc<ChunkStore>, id: ChunkId) -> Result<Lookup> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.get(&id))
        .await
        .map_err(|e| Error::Refused(format!("chunk read task: {e}")))?
}

fn client(
    node: &NodeContext,
    peer: u64,
) -> Result<ClusterServiceClient<tonic::transport::Channel>> {
    Ok(ClusterServiceClient::new(node.transport.channel(peer)?)
        .max_decoding_message_size(MAX_CLUSTER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLUSTER_MESSAGE_BYTES))
}

/// Stores a batch of chunks here and on the other voters; returns once a majority holds every
/// one durably.
///
/// This node (when a voter) and the first peers up to a majority write durably; the others get
/// a lazy copy (no fsync: on one shared disk, or any disk, the minority's flush is off the
/// critical path). When a durable write fails, a lazy peer is asked again, durably, in its place.
pub async fn put_majority(node: &Arc<NodeContext>, chunks: Batch) -> Result<()> {
    type Report = (u64, bool, std::result::Result<(), String>);
    let voters = node.raft.status().voters;
    let total = voters.len().max(1);
    let need = total / 2 + 1;
    let (tx, mut rx) = mpsc::channel::<Report>(2 * total + 1);
    let to_peer = |peer: u64, lazy: bool| {
        let (node, chunks, tx) = (node.clone(), chunks.clone(), tx.clone());
        tokio::spawn(async move {
            let r = async {
                let mut req = tonic::Request::new(ReplicateChunksRequest {
                    chunks: chunks
                        .iter()
                        .map(|(id, sealed)| SealedChunk {
                            id: Bytes::copy_from_slice(id.as_bytes()),
                            sealed: sealed.clone(),
                        })
                        .collect(),
                    lazy,
                });
                req.set_timeout(PEER_TIMEOUT);
                client(&node, peer)?
                    .replicate_chunks(req)
                    .await
                    .map_err(|s| Error::Transport(s.message().to_string()))?;
                Ok::<_, Error>(())
            }
            .await
            .map_err(|e| format!("node {peer}: {e}"));
            let _ = tx.send((peer, !lazy, r)).await;
        });
    };
    let mut outstanding = 0usize;
    let mut durable_peers = need;
    if voters.is_empty() || voters.contains(&node.id) {
        durable_peers -= 1;
        outstanding += 1;
        let (store, chunks, tx, me) = (node.chunks.clone(), chunks.clone(), tx.clone(), node.id);
        tokio::spawn(async move {
            let r = put_local(&store, chunks, true)
                .await
                .map(|_| ())
                .map_err(|e| format!("node {me}: {e}"));
            let _ = tx.send((me, true, r)).await;
        });
    }
    // Lazy peers that may still be asked for a durable copy.
    let mut spare = std::collections::VecDeque::new();
    for (i, peer) in voters.iter().filter(|p| **p != node.id).enumerate() {
        let lazy = i >= durable_peers;
        to_peer(*peer, lazy);
        outstanding += 1;
        if lazy {
            spare.push_back(*peer);
        }
    }
    let mut acks = 0;
    let mut failures = Vec::new();
    while outstanding > 0 {
        let Some((from, durable, r)) = rx.recv().await else {
            break;
        };
        outstanding -= 1;
        match (durable, r) {
            (true, Ok(())) => {
                acks += 1;
                if acks >= need {
                    return Ok(());
                }
            }
            (true, Err(e)) => {
                failures.push(e);
                // Another node must hold a durable copy instead.
                if let Some(peer) = spare.pop_front() {
                    to_peer(peer, false);
                    outstanding += 1;
                }
            }
            (false, Ok(())) => {}
            (false, Err(e)) => {
                tracing::debug!(chunks = %describe(&chunks), node = from, error = %e, "a lazy minority copy failed; repair copies it later");
                if spare.iter().any(|p| *p == from) {
                    spare.retain(|p| *p != from);
                    failures.push(e);
                }
            }
        }
    }
    Err(Error::NoMajority {
        what: describe(&chunks),
        acks,
        total,
        failures: failures.join("; "),
    })
}

/// Why no good copy of a chunk came back: every other node answered that it has none
/// (`unasked` empty), or some could not be asked (down, unreachable, unknown address): then the
/// chunk may well be there, and the question is for later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    pub unasked: Vec<u64>,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unasked.is_empty() {
            write!(f, "no node of this region holds a good copy")
        } else {
            let nodes: Vec<String> = self.unasked.iter().map(u64::to_string).collect();
            write!(
                f,
                "no node that answered holds a good copy, and node(s) {} could not be asked",
                nodes.join(", ")
            )
        }
    }
}

/// A checked copy of a chunk: the local one, or a peer's (which then heals the local copy).
pub async fn fetch(node: &Arc<NodeContext>, id: ChunkId) -> Result<Option<Bytes>> {
    Ok(fetch_or_miss(node, id).await?.ok())
}

/// As [`fetch`], saying why when no copy came back.
pub async fn fetch_or_miss(
    node: &Arc<NodeContext>,
    id: ChunkId,
) -> Result<std::result::Result<Bytes, Miss>> {
    match get_local(&node.chunks, id).await? {
        Lookup::Found(b) => return Ok(Ok(b.into())),
        Lookup::Missing => {}
        Lookup::Corrupt(why) => {
            tracing::warn!(chunk = %id, why, "local chunk copy is corrupt; fetching it from a peer")
        }
    }
    let st = node.raft.status();
    let mut unasked = Vec::new();
    for peer in st
        .voters
        .iter()
        .chain(st.learners.iter())
        .filter(|p| **p != node.id)
    {
        let Ok(mut c) = client(node, *peer) else {
            unasked.push(*peer);
            continue;
        };
        let mut req = tonic::Request::new(FetchChunkRequest {
            job_id: String::new(),
            id: Bytes::copy_from_slice(id.as_bytes()),
        });
        req.set_timeout(PEER_TIMEOUT);
        match c.fetch_chunk(req).await {
            Ok(r) => {
                let sealed = r.into_inner().sealed;
                if validate(id.as_bytes(), &sealed).is_ok() {
                    let copy = Arc::new(vec![(id, sealed.clone())]);
                    if let Err(e) = put_local(&node.chunks, copy, true).await {
                        tracing::warn!(chunk = %id, error = %e, "could not heal the local chunk copy");
                    }
                    return Ok(Ok(sealed));
                }
            }
            // The peer answered: it has none, or only a bad one.
            Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::DataLoss) => {}
            Err(_) => unasked.push(*peer),
        }
    }
    Ok(Err(Miss { unasked }))
}

/// Ids one call may ask about (a 4 TiB dump at 1 MiB chunks is 4M ids: many calls).
pub const MAX_IDS_PER_CALL: usize = 65_536;

/// Parses wire ids, refusing a malformed one or too many.
pub fn parse_ids(ids: &[Bytes]) -> std::result::Result<Vec<ChunkId>, tonic::Status> {
    if ids.len() > MAX_IDS_PER_CALL {
        return Err(tonic::Status::invalid_argument(format!(
            "at most {MAX_IDS_PER_CALL} ids per call"
        )));
    }
    ids.iter()
        .map(|b| ChunkId::from_slice(b).map_err(|e| tonic::Status::invalid_argument(e.to_string())))
        .collect()
}

/// The ids this node holds no intact copy of (a corrupt copy counts as missing).
pub async fn missing_local(store: &Arc<ChunkStore>, ids: Vec<ChunkId>) -> Result<Vec<ChunkId>> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .filter(|id| !store.held_intact(id))
            .collect()
    })
    .await
    .map_err(|e| Error::Refused(format!("chunk lookup task: {e}")))
}

/// The answer to "which of these wire ids does this node lack" (agents' `HaveChunks` and
/// peers' `MissingChunks` alike).
pub async fn missing_reply(
    store: &Arc<ChunkStore>,
    ids: &[Bytes],
) -> std::result::Result<strongbox_proto::v1::HaveChunksResponse, tonic::Status> {
    let missing = missing_local(store, parse_ids(ids)?).await?;
    Ok(strongbox_proto::v1::HaveChunksResponse {
        missing: missing
            .iter()
            .map(|id| Bytes::copy_from_slice(id.as_bytes()))
            .collect(),
    })
}

/// Makes sure every chunk in `ids` is held intact by a majority of the voters before a commit:
/// counts the intact copies (a corrupt one counts as missing), then copies each chunk held by
/// too few from a good copy (here or a peer's) to a majority, which replaces the corrupt ones.
/// `Err(NoMajority)` names a chunk no reachable node holds intact: the agent must upload it
/// again.
pub async fn require_majority(node: &Arc<NodeContext>, ids: &[ChunkId]) -> Result<()> {
    let voters = node.raft.status().voters;
    let total = voters.len().max(1);
    let need = total / 2 + 1;
    let mut holders: std::collections::HashMap<ChunkId, usize> =
        ids.iter().map(|id| (*id, 0)).collect();
    for voter in &voters {
        let mut missing = Vec::new();
        for batch in ids.chunks(MAX_IDS_PER_CALL) {
            if *voter == node.id {
                missing.extend(missing_local(&node.chunks, batch.to_vec()).await?);
                continue;
            }
            match missing_on_peer(node, *voter, batch).await {
                Ok(m) => missing.extend(m),
                // An unreachable node holds nothing we can count on.
                Err(_) => missing.extend_from_slice(batch),
            }
        }
        let missing: std::collections::HashSet<ChunkId> = missing.into_iter().collect();
        for (id, n) in holders.iter_mut() {
            if !missing.contains(id) {
                *n += 1;
            }
        }
    }
    let mut short: Vec<(ChunkId, usize)> = holders.into_iter().filter(|(_, n)| *n < need).collect();
    short.sort();
    for (id, n) in short {
        let sealed = match fetch_or_miss(node, id).await? {
            Ok(sealed) => sealed,
            Err(miss) => {
                return Err(Error::NoMajority {
                    what: format!("chunk {id} of the manifest"),
                    acks: n,
                    total,
                    failures: format!("{miss}: upload it again, then commit"),
                })
            }
        };
        tracing::warn!(chunk = %id, intact = n, need, "chunk held intact by too few nodes; copying it to a majority before the commit");
        put_majority(node, Arc::new(vec![(id, sealed)])).await?;
    }
    Ok(())
}

/// The ids of `batch` that `peer` holds no intact copy of.
async fn missing_on_peer(
    node: &Arc<NodeContext>,
    peer: u64,
    batch: &[ChunkId],
) -> Result<Vec<ChunkId>> {
    let mut req = tonic::Request::new(strongbox_proto::v1::HaveChunksRequest {
        job_id: String::new(),
        ids: batch
            .iter()
            .map(|id| Bytes::copy_from_slice(id.as_bytes()))
            .collect(),
    });
    req.set_timeout(PEER_TIMEOUT);
    let r = client(node, peer)?
        .missing_chunks(req)
        .await
        .map_err(|s| Error::Transport(s.message().to_string()))?;
    r.into_inner()
        .missing
        .iter()
        .map(|b| ChunkId::from_slice(b).map_err(|e| Error::Transport(e.to_string())))
        .collect()
}
