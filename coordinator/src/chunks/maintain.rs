//! Background care of a node's chunk store, on every node: **repair** fetches from a peer any
//! chunk that a committed backup uses and this node lacks or holds corrupt; **GC** deletes chunk
//! files no committed backup uses, once they are older than the grace period.
//!
//! It is a [`Worker`] on every node: a pass runs only once the node knows its region (a leader,
//! and a read barrier passed: the catalog caught up), so a node that has just started never
//! judges chunks by a stale catalog or before its peers answer; and a chunk is called
//! unrepairable only when every other node answered that it holds no good copy (one that could
//! not be asked makes it *deferred*, tried again next pass; issue 14, fault 6).
//!
//! Invariants: GC marks from the catalog's committed backups (their manifests, and every chunk
//! each manifest names) and only sweeps files older than `grace`, so the chunks of an upload in
//! progress (written, not yet committed) are never swept; if a live manifest cannot be read, the
//! pass sweeps nothing; each node sweeps only its own files.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use strongbox_core::ids::ChunkId;

use super::replicate;
use super::store::Lookup;
use crate::error::{Error, Result};
use crate::node::NodeContext;
use crate::worker::{Done, Worker};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub live: usize,
    pub repaired: usize,
    /// No node holds a good copy (every other node answered).
    pub unrepairable: usize,
    /// Not repaired because some node could not be asked; tried again next pass.
    pub deferred: usize,
    pub swept: usize,
}

/// Repair and GC as a worker on every node.
pub struct Maintenance {
    interval: Duration,
    grace: Duration,
    /// The first pass is logged whatever it did; later ones only when they did something.
    first: bool,
}

impl Maintenance {
    /// A pass every `interval`, sweeping files older than `grace`.
    pub fn new(interval: Duration, grace: Duration) -> Maintenance {
        Maintenance {
            interval,
            grace,
            first: true,
        }
    }
}

#[async_trait::async_trait]
impl Worker for Maintenance {
    fn name(&self) -> &'static str {
        "maintenance"
    }
    fn leader_only(&self) -> bool {
        false
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn pass(&mut self, node: &Arc<NodeContext>) -> Result<Done> {
        let r = pass(node, self.grace).await?;
        let done = r.repaired + r.swept + r.unrepairable + r.deferred;
        if self.first || done > 0 {
            tracing::info!(
                live = r.live,
                repaired = r.repaired,
                unrepairable = r.unrepairable,
                deferred = r.deferred,
                swept = r.swept,
                first = self.first,
                "chunk maintenance pass"
            );
            self.first = false;
        }
        Ok(Done::items((r.repaired + r.swept) as u64))
    }
}

/// Counts and logs a chunk (or manifest) no copy came back for: unrepairable when every node
/// answered, deferred when some could not be asked.
fn note_miss(
    report: &mut PassReport,
    miss: &replicate::Miss,
    what: &str,
    id: &ChunkId,
    backup: &str,
) {
    if miss.unasked.is_empty() {
        tracing::error!(chunk = %id, what, backup, "{miss}: this copy is lost in this region");
        report.unrepairable += 1;
    } else {
        tracing::warn!(chunk = %id, what, backup, "not repaired yet: {miss}; trying again next pass");
        report.deferred += 1;
    }
}

/// One repair and GC pass.
pub async fn pass(node: &Arc<NodeContext>, grace: Duration) -> Result<PassReport> {
    let mut report = PassReport::default();
    let mut live: HashSet<ChunkId> = HashSet::new();
    let mut marking_complete = true;
    // Only committed backups have manifests; pending ones own nothing yet (their chunks are
    // protected by the grace period).
    for backup in node
        .catalog
        .backups()?
        .into_iter()
        .filter(|b| b.state() == strongbox_proto::v1::BackupState::Completed)
    {
        let Ok(manifest_id) = ChunkId::from_slice(&backup.manifest_id) else {
            marking_complete = false;
            continue;
        };
        live.insert(manifest_id);
        // `fetch` reads the local copy, or repairs it from a peer.
        let manifest = match replicate::fetch_or_miss(node, manifest_id).await? {
            Ok(m) => m,
            Err(miss) => {
                note_miss(&mut report, &miss, "manifest", &manifest_id, &backup.id);
                marking_complete = false;
                continue;
            }
        };
        match strongbox_core::manifest::parse(&manifest) {
            Ok(env) => live.extend(env.chunk_ids),
            Err(e) => {
                tracing::error!(backup = %backup.id, error = %e, "manifest does not parse");
                marking_complete = false;
            }
        }
    }
    report.live = live.len();

    // Repair: every live chunk present and sound here.
    for id in &live {
        match replicate::get_local(&node.chunks, *id).await? {
            Lookup::Found(_) => {}
            Lookup::Missing | Lookup::Corrupt(_) => {
                match replicate::fetch_or_miss(node, *id).await? {
                    Ok(_) => report.repaired += 1,
                    Err(miss) => note_miss(&mut report, &miss, "chunk", id, ""),
                }
            }
        }
    }

    // GC: unreferenced and older than the grace period. The same walk recounts the store.
    let store = node.chunks.clone();
    let now = SystemTime::now();
    report.swept = tokio::task::spawn_blocking(move || -> Result<usize> {
        let (mut swept, mut count, mut bytes) = (0, 0u64, 0u64);
        for (id, len, mtime) in store.list()? {
            let age = now.duration_since(mtime).unwrap_or_default();
            if marking_complete && !live.contains(&id) && age > grace {
                store.remove(&id)?;
                swept += 1;
            } else {
                count += 1;
                bytes += len;
            }
        }
        store.set_totals(count, bytes);
        Ok(swept)
    })
    .await
    .map_err(|e| Error::Refused(format!("GC task: {e}")))??;
    Ok(report)
}
