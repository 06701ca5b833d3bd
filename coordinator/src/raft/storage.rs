//! The Raft log, hard state and conf state in the node's [`crate::store`], behind raft-rs's
//! `Storage` trait.
//!
//! One tree `raft` holds `log/<index, big-endian>` → `term (8 bytes) ++ Entry`,
//! `meta/hs` (HardState), `meta/cs` (ConfState) and `meta/snap` (index and term of the last
//! entry folded into a snapshot: the log starts right after it).
//!
//! Invariants: every write of entries and hard state is one atomic batch, durable after
//! [`RaftStore::flush`], which the loop calls before sending messages that depend on it; the
//! log is contiguous from `first_index` to `last_index`; a snapshot handed to a peer is a
//! reference to the catalog's file at an applied index ([`super::snapshots`]), with that
//! index's term and the conf state then in force; a snapshot installs in one atomic batch with
//! the catalog's swap to the tree it was prepared in.

use std::sync::Mutex;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::store::{self, Store};

const KEY_HS: &[u8] = b"meta/hs";
const KEY_CS: &[u8] = b"meta/cs";
const KEY_SNAP: &[u8] = b"meta/snap";
const LOG_PREFIX: &[u8] = b"log/";

fn log_key(index: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(LOG_PREFIX);
    k[4..].copy_from_slice(&index.to_be_bytes());
    k
}

fn index_of_key(key: &[u8]) -> Option<u64> {
    key.strip_prefix(LOG_PREFIX)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

#[derive(Default, Clone)]
struct Cache {
    hs: HardState,
    cs: ConfState,
    snap_index: u64,
    snap_term: u64,
    last_index: u64,
}

/// The Raft storage of one node.
pub struct RaftStore {
    store: Store,
    tree: store::Tree,
    catalog: Catalog,
    snapshots: std::sync::Arc<super::snapshots::Snapshots>,
    cache: Mutex<Cache>,
}

fn decode<M: protobuf::Message>(what: &'static str, bytes: &[u8]) -> Result<M> {
    M::parse_from_bytes(bytes).map_err(|e| Error::corrupt(what, e))
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    // write_to_bytes only fails on messages missing required fields; proto3 has none.
    m.write_to_bytes().unwrap_or_default()
}

fn store_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl RaftStore {
    /// Opens the node's Raft storage in `db`.
    pub fn open(
        store: Store,
        catalog: Catalog,
        snapshots: std::sync::Arc<super::snapshots::Snapshots>,
    ) -> Result<Self> {
        let tree = store.tree("raft")?;
        let mut cache = Cache::default();
        if let Some(b) = tree.get(KEY_HS)? {
            cache.hs = decode("hard state", &b)?;
        }
        if let Some(b) = tree.get(KEY_CS)? {
            cache.cs = decode("conf state", &b)?;
        }
        if let Some(b) = tree.get(KEY_SNAP)? {
            if b.len() != 16 {
                return Err(Error::corrupt("snapshot marker", "wrong length"));
            }
            cache.snap_index = u64::from_be_bytes(b[..8].try_into().unwrap_or_default());
            cache.snap_term = u64::from_be_bytes(b[8..].try_into().unwrap_or_default());
        }
        cache.last_index = match tree.scan_prefix(LOG_PREFIX).next_back() {
            Some(kv) => {
                index_of_key(&kv?.0).ok_or_else(|| Error::corrupt("log key", "malformed"))?
            }
            None => cache.snap_index,
        };
        Ok(RaftStore {
            store,
            tree,
            catalog,
            snapshots,
            cache: Mutex::new(cache),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A poisoned lock means a panic on the loop thread, which ends the node anyway.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node has never been part of a cluster.
    pub fn is_empty(&self) -> bool {
        let c = self.cache();
        c.cs == ConfState::default() && c.last_index == 0
    }

    pub fn bootstrap(&self, id: u64) -> Result<()> {
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 1;
        snap.mut_metadata().term = 1;
        snap.mut_metadata().mut_conf_state().voters = vec![id];
        self.catalog.bootstrap(1)?;
        self.apply_snapshot(&snap)?;
        self.flush()
    }

    pub fn hard_state(&self) -> HardState {
        self.cache().hs.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.cache().cs.clone()
    }

    /// Appends entries, replacing any at or after the first new index, and sets the hard state
    /// if given: one atomic batch (durable after `flush`).
    pub fn append(&self, entries: &[Entry], hs: Option<&HardState>) -> Result<()> {
        let mut c = self.cache();
        let mut batch = self.store.batch();
        if let Some(first) = entries.first() {
            if first.index <= c.snap_index {
                return Err(Error::corrupt(
                    "append",
                    format!(
                        "entry {} is before the snapshot at {}",
                        first.index, c.snap_index
                    ),
                ));
            }
            for i in first.index..=c.last_index {
                batch.remove(&self.tree, log_key(i));
            }
            for e in entries {
                let mut v = Vec::with_capacity(8 + e.compute_size() as usize);
                v.extend_from_slice(&e.term.to_be_bytes());
                v.extend_from_slice(&encode(e));
                batch.insert(&self.tree, log_key(e.index), v);
            }
        }
        if let Some(hs) = hs {
            batch.insert(&self.tree, KEY_HS, encode(hs));
        }
        batch.commit()?;
        if let Some(last) = entries.last() {
            c.last_index = last.index;
        }
        if let Some(hs) = hs {
            c.hs = hs.clone();
        }
        Ok(())
    }

    /// Records the commit index (from a `LightReady`).
    pub fn set_commit(&self, commit: u64) -> Result<()> {
        let mut c = self.cache();
        c.hs.commit = commit;
        self.tree.insert(KEY_HS, encode(&c.hs))?;
        Ok(())
    }

    pub fn set_conf_state(&self, cs: &ConfState) -> Result<()> {
        self.tree.insert(KEY_CS, encode(cs))?;
        self.cache().cs = cs.clone();
        Ok(())
    }

    /// The writes that start the log after snapshot `snap` (every log entry removed, its
    /// index, term and conf state recorded), and the cache they make.
    fn snapshot_writes(&self, c: &Cache, snap: &Snapshot) -> Result<(store::Batch, Cache)> {
        let meta = snap.get_metadata();
        let mut next = c.clone();
        next.snap_index = meta.index;
        next.snap_term = meta.term;
        next.last_index = meta.index;
        next.hs.term = next.hs.term.max(meta.term);
        next.hs.commit = next.hs.commit.max(meta.index);
        next.cs = meta.get_conf_state().clone();
        let mut batch = self.store.batch();
        for kv in self.tree.scan_prefix(LOG_PREFIX) {
            batch.remove(&self.tree, kv?.0);
        }
        batch.insert(&self.tree, KEY_SNAP, snap_marker(meta.index, meta.term));
        batch.insert(&self.tree, KEY_HS, encode(&next.hs));
        batch.insert(&self.tree, KEY_CS, encode(&next.cs));
        Ok((batch, next))
    }

    /// Starts the log after a snapshot whose catalog is in place (a new region's first).
    fn apply_snapshot(&self, snap: &Snapshot) -> Result<()> {
        let mut c = self.cache();
        let (batch, next) = self.snapshot_writes(&c, snap)?;
        batch.commit()?;
        *c = next;
        Ok(())
    }

    /// Installs a snapshot from the leader whose catalog was prepared in the spare tree
    /// ([`Catalog::prepare_install`]): the catalog's swap, the log dropped, the snapshot's
    /// index, term and conf state recorded: one atomic batch.
    pub fn install_snapshot(&self, snap: &Snapshot) -> Result<()> {
        let mut c = self.cache();
        let (batch, next) = self.snapshot_writes(&c, snap)?;
        self.catalog
            .install_prepared(snap.get_metadata().index, batch)?;
        *c = next;
        Ok(())
    }

    /// Drops the log up to and including `index` (which must be applied).
    pub fn compact(&self, index: u64) -> Result<()> {
        let mut c = self.cache();
        if index <= c.snap_index || index > c.last_index {
            return Ok(());
        }
        let term = self
            .term_locked(&c, index)
            .map_err(|e| Error::corrupt("log", e))?;
        let mut batch = self.store.batch();
        for kv in self.tree.range(log_key(c.snap_index)..=log_key(index)) {
            batch.remove(&self.tree, kv?.0);
        }
        batch.insert(&self.tree, KEY_SNAP, snap_marker(index, term));
        batch.commit()?;
        c.snap_index = index;
        c.snap_term = term;
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.store.flush()?;
        Ok(())
    }

    pub fn first_index_now(&self) -> u64 {
        self.cache().snap_index + 1
    }

    pub fn last_index_now(&self) -> u64 {
        self.cache().last_index
    }

    fn term_locked(&self, c: &Cache, idx: u64) -> raft::Result<u64> {
        if idx == c.snap_index {
            return Ok(c.snap_term);
        }
        if idx < c.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > c.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let v = self
            .tree
            .get(log_key(idx))
            .map_err(store_err)?
            .ok_or_else(|| store_err(format!("log entry {idx} is missing")))?;
        let term: [u8; 8] = v
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| store_err(format!("log entry {idx} is truncated")))?;
        Ok(u64::from_be_bytes(term))
    }
}

fn snap_marker(index: u64, term: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&index.to_be_bytes());
    m[8..].copy_from_slice(&term.to_be_bytes());
    m
}

impl Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.cache();
        Ok(RaftState::new(c.hs.clone(), c.cs.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let c = self.cache();
        if low <= c.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > c.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for kv in self.tree.range(log_key(low)..log_key(high)) {
            let (_, v) = kv.map_err(store_err)?;
            let e = Entry::parse_from_bytes(v.get(8..).unwrap_or_default()).map_err(store_err)?;
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
        }
        if out.first().map(|e| e.index) != Some(low) {
            return Err(store_err(format!("log entries from {low} are missing")));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let c = self.cache();
        self.term_locked(&c, idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cache().snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cache().last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let applied = self.catalog.applied_index().map_err(store_err)?;
        if applied < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        // A snapshot older than the log's start would leave the follower a gap: it is made anew.
        let (cs, log_start) = {
            let c = self.cache();
            (c.cs.clone(), c.snap_index)
        };
        self.snapshots.snapshot_for(
            &self.catalog,
            request_index.max(log_start),
            to,
            |index| {
                let c = self.cache();
                self.term_locked(&c, index)
            },
            cs,
        )
    }
}
