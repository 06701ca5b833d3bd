//! The Raft snapshots this node makes and takes (issue 17, point 3).
//!
//! A leader asked for a snapshot exports the catalog to a file on a thread of its own
//! ([`crate::catalog::snapshot`]) while Raft goes on: until the file is made, Raft hears that no
//! snapshot is available yet and asks again at its next heartbeat. The Raft message then carries
//! only a `SnapshotRef` (the file's node, index, size and BLAKE3), delivered by
//! `ClusterService.InstallSnapshot`. The follower fetches the file in pieces
//! (`ClusterService.FetchSnapshot`, resuming a partial file of the same snapshot), checks and
//! prepares it into its spare catalog tree, and only then steps the message: the Raft loop swaps
//! the prepared catalog in with the log's new start, atomically.
//!
//! Invariants: one export at a time, and only the newest file made is kept and served; a node
//! serves only files it made; neither side holds a file in memory (pieces of at most
//! [`PIECE`]); a follower steps a snapshot message only once its catalog is prepared, so the
//! loop never installs what it does not hold; one install at a time on a node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use raft::eraftpb::{ConfState, Snapshot, SnapshotMetadata};
use strongbox_proto::catalog::SnapshotRef;
use strongbox_proto::v1::cluster_service_client::ClusterServiceClient;
use strongbox_proto::v1::FetchSnapshotRequest;
use strongbox_proto::MAX_CLUSTER_MESSAGE_BYTES;

use crate::catalog::snapshot::FileFacts;
use crate::catalog::Catalog;
use crate::error::{Error, Result};

/// The most bytes one `SnapshotChunk` carries.
pub const PIECE: usize = 1 << 20;

/// A snapshot file this node made.
#[derive(Debug)]
pub struct Made {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    pub facts: FileFacts,
    pub path: PathBuf,
}

enum Export {
    Idle,
    Building,
    Made(Arc<Made>),
}

/// The snapshots of one node: the one it made (or is making), and the one it takes.
pub struct Snapshots {
    dir: PathBuf,
    node_id: u64,
    /// Bytes per second one transfer may take from this node (0: unlimited).
    send_rate: u64,
    export: Mutex<Export>,
    /// Held by the one install under way.
    install: tokio::sync::Mutex<()>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

impl Snapshots {
    /// The snapshots of the node whose data folder holds `dir`; files made before a restart
    /// are removed (a partial file being received stays, to resume).
    pub fn open(dir: PathBuf, node_id: u64, send_rate: u64) -> Result<Arc<Self>> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io(&dir))?;
        }
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("made-") || name.starts_with("making-") {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(Arc::new(Snapshots {
            dir,
            node_id,
            send_rate,
            export: Mutex::new(Export::Idle),
            install: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Export> {
        self.export.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest file made.
    pub fn made(&self) -> Option<Arc<Made>> {
        match &*self.lock() {
            Export::Made(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// A snapshot for Raft at an index of at least `request_index` whose members include `to`:
    /// the file made, as a reference; else an export begins at the applied index (`term` and `conf_state` in
    /// force there) and Raft hears it is not available yet. Called on the Raft thread, between
    /// applies.
    pub fn snapshot_for(
        self: &Arc<Self>,
        catalog: &Catalog,
        request_index: u64,
        to: u64,
        term_at: impl Fn(u64) -> raft::Result<u64>,
        conf_state: ConfState,
    ) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable);
        let mut state = self.lock();
        match &*state {
            // A file made before the peer was a member would be ignored by it.
            Export::Made(m)
                if m.index >= request_index
                    && (m.conf_state.voters.contains(&to)
                        || m.conf_state.learners.contains(&to)) =>
            {
                let reference = SnapshotRef {
                    node: self.node_id,
                    index: m.index,
                    bytes: m.facts.bytes,
                    blake3: m.facts.blake3.to_vec().into(),
                    format: crate::catalog::format::FORMAT,
                };
                let mut meta = SnapshotMetadata {
                    index: m.index,
                    term: m.term,
                    ..Default::default()
                };
                meta.set_conf_state(m.conf_state.clone());
                let mut snap = Snapshot {
                    data: reference.encode_to_vec().into(),
                    ..Default::default()
                };
                snap.set_metadata(meta);
                return Ok(snap);
            }
            Export::Building => return Err(unavailable()),
            _ => {}
        }
        let export = catalog
            .begin_export()
            .map_err(|e| raft::Error::Store(raft::StorageError::Other(e.to_string().into())))?;
        let index = export.index;
        let term = term_at(index)?;
        let previous = std::mem::replace(&mut *state, Export::Building);
        drop(state);
        tracing::info!(index, "exporting the catalog for a snapshot");
        let me = self.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let making = me.dir.join(format!("making-{index}"));
            let made = me.dir.join(format!("made-{index}"));
            let result = export.write_to(&making).and_then(|facts| {
                std::fs::rename(&making, &made).map_err(io(&made))?;
                Ok(facts)
            });
            let mut state = me.lock();
            match result {
                Ok(facts) => {
                    tracing::info!(index, bytes = facts.bytes, took = ?started.elapsed(), "snapshot file made");
                    *state = Export::Made(Arc::new(Made {
                        index,
                        term,
                        conf_state,
                        facts,
                        path: made.clone(),
                    }));
                    // (A file made again at the same index replaced the old one in place.)
                    if let Export::Made(old) = previous {
                        if old.path != made {
                            let _ = std::fs::remove_file(&old.path);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(index, error = %e, "exporting the catalog for a snapshot failed");
                    let _ = std::fs::remove_file(&making);
                    *state = previous;
                }
            }
        });
        Err(unavailable())
    }

    /// The file of snapshot `index` to serve, if this node made it.
    pub fn to_serve(&self, index: u64) -> Option<Arc<Made>> {
        self.made().filter(|m| m.index == index)
    }

    /// How long to wait after sending `bytes`, and the piece size, under the send rate.
    pub fn pace(&self, bytes: usize) -> (Duration, usize) {
        if self.send_rate == 0 {
            return (Duration::ZERO, PIECE);
        }
        let piece = (self.send_rate as usize).clamp(1, PIECE);
        (
            Duration::from_secs_f64(bytes as f64 / self.send_rate as f64),
            piece,
        )
    }

    /// Holds the node's one install.
    pub async fn one_install(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.install.lock().await
    }

    /// Fetches the file `r` names from its node into this node's folder, resuming a partial
    /// file of the same snapshot; the complete file's path. Files of other snapshots being
    /// received are removed.
    pub async fn fetch(
        &self,
        channel: tonic::transport::Channel,
        r: &SnapshotRef,
    ) -> Result<PathBuf> {
        let name = format!(
            "incoming-{}-{}",
            r.index,
            hex::encode(&r.blake3[..8.min(r.blake3.len())])
        );
        let path = self.dir.join(&name);
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let p = entry.map_err(io(&self.dir))?.path();
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if n.starts_with("incoming-") && n != name {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(io(&path))?;
        let mut have = file.metadata().await.map_err(io(&path))?.len();
        if have > r.bytes {
            file.set_len(0).await.map_err(io(&path))?;
            have = 0;
        }
        if have < r.bytes {
            if have > 0 {
                tracing::info!(
                    index = r.index,
                    have,
                    of = r.bytes,
                    "resuming a snapshot's transfer"
                );
            }
            let mut client = ClusterServiceClient::new(channel)
                .max_decoding_message_size(MAX_CLUSTER_MESSAGE_BYTES);
            let mut stream = client
                .fetch_snapshot(FetchSnapshotRequest {
                    index: r.index,
                    offset: have,
                })
                .await
                .map_err(|s| Error::Transport(format!("fetching the snapshot: {}", s.message())))?
                .into_inner();
            use tokio::io::AsyncWriteExt;
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| Error::Transport(format!("fetching the snapshot: {}", s.message())))?
            {
                if chunk.offset != have || have + chunk.data.len() as u64 > r.bytes {
                    return Err(Error::Transport(format!(
                        "the snapshot's node sent bytes {}..{} where {have} was due (of {})",
                        chunk.offset,
                        chunk.offset + chunk.data.len() as u64,
                        r.bytes
                    )));
                }
                file.write_all(&chunk.data).await.map_err(io(&path))?;
                have += chunk.data.len() as u64;
            }
            file.sync_all().await.map_err(io(&path))?;
        }
        if have != r.bytes {
            return Err(Error::Transport(format!(
                "the snapshot's transfer ended at {have} of {} bytes",
                r.bytes
            )));
        }
        Ok(path)
    }

    /// Removes a received file once installed (or found bad).
    pub fn done_with(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}
