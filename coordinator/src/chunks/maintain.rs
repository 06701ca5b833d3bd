//! Background care of a node's chunk store, on every node: **repair** fetches from a peer any
//! chunk that a committed backup uses and this node lacks or holds corrupt; **GC** deletes chunk
//! files no committed backup uses, once they are older than the grace period.
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
use crate::api::NodeContext;
use crate::error::{Error, Result};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub live: usize,
    pub repaired: usize,
    pub unrepairable: usize,
    pub swept: usize,
}

/// Runs a pass every `interval`, forever.
pub async fn run(node: Arc<NodeContext>, interval: Duration, grace: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pass(&node, grace).await {
            Ok(r) if r.repaired + r.swept + r.unrepairable > 0 => {
                tracing::info!(
                    live = r.live,
                    repaired = r.repaired,
                    unrepairable = r.unrepairable,
                    swept = r.swept,
                    "chunk maintenance pass"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "chunk maintenance pass failed; will retry"),
        }
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
        .filter(|b| b.state == "completed")
    {
        let Ok(manifest_id) = ChunkId::from_slice(&backup.manifest_id) else {
            marking_complete = false;
            continue;
        };
        live.insert(manifest_id);
        // `fetch` reads the local copy, or repairs it from a peer.
        let manifest = match replicate::fetch(node, manifest_id).await? {
            Some(m) => m,
            None => {
                tracing::error!(backup = %backup.id, manifest = %manifest_id, "no node holds a good copy of this backup's manifest");
                report.unrepairable += 1;
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
            Lookup::Missing | Lookup::Corrupt(_) => match replicate::fetch(node, *id).await? {
                Some(_) => report.repaired += 1,
                None => {
                    tracing::error!(chunk = %id, "no node holds a good copy of this chunk");
                    report.unrepairable += 1;
                }
            },
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
