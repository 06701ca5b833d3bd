//! Sending Raft messages to peers over `ClusterService` (mutual TLS), and channels to peers for
//! forwarding proposals and reads to the leader.
//!
//! Each peer has a task with a bounded queue; the Raft loop hands messages over without waiting
//! (a full queue drops messages, which Raft tolerates, and reports the peer unreachable).
//! Messages queued together go in one RPC.
//!
//! Invariants: the loop thread never blocks on the network; a peer's address comes from the
//! catalog's node table, or from the configuration until the catalog names it; a failed send
//! is reported to Raft (`report_unreachable`, and `report_snapshot` for snapshots); a snapshot
//! goes on its own `InstallSnapshot` call, never in a batch.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use strongbox_core::tls::TlsFiles;
use strongbox_proto::v1::cluster_service_client::ClusterServiceClient;
use strongbox_proto::v1::{InstallSnapshotRequest, RaftMessage};
use strongbox_proto::MAX_CLUSTER_MESSAGE_BYTES;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::inbox::{Outbox, Request};
use crate::catalog::Catalog;
use crate::error::{Error, Result};

const QUEUE: usize = 4096;
const BATCH: usize = 512;

struct Peer {
    address: String,
    channel: Channel,
    queue: mpsc::Sender<Message>,
}

pub struct Transport {
    my_id: u64,
    tls: TlsFiles,
    runtime: tokio::runtime::Handle,
    addresses: Mutex<HashMap<u64, String>>,
    peers: Mutex<HashMap<u64, Peer>>,
    loop_tx: OnceLock<Sender<Request>>,
}

/// The host part of `HOST:PORT` (brackets removed from IPv6), for TLS server name checks.
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A lazily connecting mTLS channel to `address`.
pub fn channel_to(tls: &TlsFiles, address: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .map_err(|e| Error::Transport(format!("bad address {address:?}: {e}")))?
        .tls_config(tls.client_config(host_of(address))?)
        .map_err(|e| Error::Transport(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

impl Transport {
    pub fn new(
        my_id: u64,
        tls: TlsFiles,
        runtime: tokio::runtime::Handle,
        initial: &[(u64, String)],
    ) -> Self {
        Transport {
            my_id,
            tls,
            runtime,
            addresses: Mutex::new(initial.iter().cloned().collect()),
            peers: Mutex::new(HashMap::new()),
            loop_tx: OnceLock::new(),
        }
    }

    pub(crate) fn set_loop(&self, tx: Sender<Request>) {
        let _ = self.loop_tx.set(tx);
    }

    /// Takes peer addresses from the catalog's node table (they win over the configuration).
    pub fn refresh_addresses(&self, catalog: &Catalog) {
        let Ok(nodes) = catalog.nodes() else { return };
        let mut addrs = lock(&self.addresses);
        for n in nodes {
            addrs.insert(n.id, n.address);
        }
    }

    /// The address of node `id`, if known.
    pub fn address(&self, id: u64) -> Option<String> {
        lock(&self.addresses).get(&id).cloned()
    }

    /// A channel to node `id` (shared with its Raft traffic).
    pub fn channel(&self, id: u64) -> Result<Channel> {
        self.with_peer(id, |p| p.channel.clone())
    }

    fn with_peer<T>(&self, id: u64, f: impl FnOnce(&Peer) -> T) -> Result<T> {
        let address = self
            .address(id)
            .ok_or_else(|| Error::Transport(format!("no address known for node {id}")))?;
        let mut peers = lock(&self.peers);
        if peers.get(&id).is_none_or(|p| p.address != address) {
            // Channels spawn their connection task: that needs the runtime, and this may run on
            // the Raft thread.
            let _runtime = self.runtime.enter();
            let channel = channel_to(&self.tls, &address)?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let loop_tx = self.loop_tx.get().cloned();
            self.runtime
                .spawn(peer_task(self.my_id, id, channel.clone(), rx, loop_tx));
            peers.insert(
                id,
                Peer {
                    address,
                    channel,
                    queue: tx,
                },
            );
        }
        let peer = peers
            .get(&id)
            .ok_or_else(|| Error::Transport(format!("node {id} has no channel")))?;
        Ok(f(peer))
    }

    /// Queues messages for their peers without blocking.
    pub fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            let queued = self.with_peer(to, |p| p.queue.try_send(m).is_ok());
            if !matches!(queued, Ok(true)) {
                if let Some(tx) = self.loop_tx.get() {
                    let _ = tx.send(Request::Unreachable(to));
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn peer_task(
    from: u64,
    to: u64,
    channel: Channel,
    mut rx: mpsc::Receiver<Message>,
    loop_tx: Option<Sender<Request>>,
) {
    let mut client = ClusterServiceClient::new(channel)
        .max_decoding_message_size(MAX_CLUSTER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLUSTER_MESSAGE_BYTES);
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // A snapshot goes on its own call, which lasts while the peer fetches and prepares it;
        // the other messages go on meanwhile.
        let (snapshots, rest): (Vec<Message>, Vec<Message>) = batch
            .drain(..)
            .partition(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        for m in snapshots {
            tokio::spawn(send_snapshot(from, to, client.clone(), m, loop_tx.clone()));
        }
        if rest.is_empty() {
            continue;
        }
        let messages: Vec<bytes::Bytes> = rest
            .into_iter()
            .filter_map(|m| m.write_to_bytes().ok().map(bytes::Bytes::from))
            .collect();
        let mut req = tonic::Request::new(RaftMessage { messages, from });
        req.set_timeout(Duration::from_secs(5));
        if let Err(status) = client.raft(req).await {
            tracing::debug!(peer = to, error = %status.message(), "Raft messages not delivered");
            if let Some(tx) = &loop_tx {
                let _ = tx.send(Request::Unreachable(to));
            }
        }
    }
}

/// How long a peer may take to fetch and prepare a snapshot before the leader tries again.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(3600);

/// Delivers a snapshot message (a reference to the file) with `InstallSnapshot`, and tells the
/// loop how it went.
async fn send_snapshot(
    from: u64,
    to: u64,
    mut client: ClusterServiceClient<Channel>,
    m: Message,
    loop_tx: Option<Sender<Request>>,
) {
    let index = m.get_snapshot().get_metadata().index;
    let message = match m.write_to_bytes() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(peer = to, error = %e, "encoding a snapshot message");
            return;
        }
    };
    let mut req = tonic::Request::new(InstallSnapshotRequest {
        message: message.into(),
        from,
    });
    req.set_timeout(SNAPSHOT_DEADLINE);
    tracing::info!(peer = to, index, "sending a snapshot");
    let ok = match client.install_snapshot(req).await {
        Ok(_) => {
            tracing::info!(peer = to, index, "the peer installed the snapshot");
            true
        }
        Err(status) => {
            tracing::warn!(peer = to, index, error = %status.message(), "the peer did not install the snapshot; it is sent again");
            false
        }
    };
    if let Some(tx) = loop_tx {
        if !ok {
            let _ = tx.send(Request::Unreachable(to));
        }
        let _ = tx.send(Request::SnapshotSent { to, ok });
    }
}

impl Outbox for Transport {
    fn send(&self, messages: Vec<Message>) {
        Transport::send(self, messages)
    }

    fn refresh_addresses(&self, catalog: &Catalog) {
        Transport::refresh_addresses(self, catalog)
    }
}
