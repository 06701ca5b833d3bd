//! Which chunks each committed backup may serve to restores and downloads: its manifest and
//! the chunks the manifest names, read from the manifest once and kept (a committed manifest
//! never changes).
//!
//! Invariants: the backup record is read on every call, so a purged backup stops serving at
//! once; at most [`CACHED`] backups' chunk sets are kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use strongbox_core::ids::ChunkId;
use strongbox_proto::v1::BackupState;

use crate::error::{Error, Result};
use crate::node::NodeContext;

/// Backups whose chunk sets are kept at once (the set is dropped whole beyond it).
pub const CACHED: usize = 64;

#[derive(Default)]
pub struct BackupScopes {
    cache: Mutex<HashMap<String, Arc<HashSet<ChunkId>>>>,
}

impl BackupScopes {
    /// Every chunk of `backup_id`, a completed backup (`NotFound` otherwise; `DataLoss` when no
    /// node holds a good copy of its manifest).
    pub async fn chunks(
        &self,
        node: &Arc<NodeContext>,
        backup_id: &str,
    ) -> Result<Arc<HashSet<ChunkId>>> {
        let backup = node
            .catalog
            .backup(backup_id)?
            .filter(|b| b.state() == BackupState::Completed)
            .ok_or_else(|| Error::NotFound(format!("no completed backup {backup_id}")))?;
        if let Some(ids) = self.lock().get(backup_id) {
            return Ok(ids.clone());
        }
        let manifest_id = ChunkId::from_slice(&backup.manifest_id)
            .map_err(|e| Error::corrupt("backup record", format!("backup {backup_id}: {e}")))?;
        let manifest = super::replicate::fetch(node, manifest_id)
            .await?
            .ok_or_else(|| {
                Error::DataLoss(format!(
                    "no node holds a good copy of the manifest of {backup_id}"
                ))
            })?;
        let env = strongbox_core::manifest::parse(&manifest)
            .map_err(|e| Error::DataLoss(format!("manifest of {backup_id}: {e}")))?;
        let mut ids: HashSet<ChunkId> = env.chunk_ids.into_iter().collect();
        ids.insert(manifest_id);
        let ids = Arc::new(ids);
        let mut cache = self.lock();
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(backup_id.to_string(), ids.clone());
        Ok(ids)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<HashSet<ChunkId>>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
