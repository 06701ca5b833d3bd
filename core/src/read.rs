//! One read path for a backup: the chunks of a manifest's part, fetched by a function the
//! caller gives (the agent over its restore job, the CLI over `DownloadChunk`), opened with
//! the service's keys on the blocking pool, checked against the manifest, and yielded in the
//! part's order. The agent's restore and the CLI's download both read through it; region
//! copies and drills will too.
//!
//! Invariants: every byte yielded passed its chunk's tag and id check ([`Opener`]) and its
//! chunk's size is the one the manifest records; chunks come out in the part's order whatever
//! order their fetches finish in; at most `parallel` chunks are fetched or opened at once;
//! opening never runs on the async reactor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::chunk::{Header, Opener};
use crate::error::{Error, Result};
use crate::ids::ChunkId;
use crate::keys::{Keyring, ServiceKeys};
use crate::manifest::ChunkRef;

/// One service's keys for every key id of a keyring: chunks name the key they were sealed
/// with, and a backup may hold chunks of several (a key rotated during its life).
pub struct ServiceKeySet {
    by_id: HashMap<u32, ServiceKeys>,
}

impl ServiceKeySet {
    /// The keys of `service` under every fleet key of `keyring`.
    pub fn new(keyring: &Keyring, service: &str) -> Result<ServiceKeySet> {
        let mut by_id = HashMap::new();
        for id in keyring.ids() {
            by_id.insert(id, keyring.service_keys(id, service)?);
        }
        Ok(ServiceKeySet { by_id })
    }

    /// The keys sealed under fleet key `id`.
    pub fn get(&self, id: u32) -> Result<&ServiceKeys> {
        self.by_id.get(&id).ok_or_else(|| {
            let mut have: Vec<u32> = self.by_id.keys().copied().collect();
            have.sort_unstable();
            Error::UnknownKeyId {
                id,
                have: have
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
    }
}

thread_local! {
    /// One opener per blocking-pool thread (it holds a decompression context).
    static OPENER: RefCell<Option<Opener>> = const { RefCell::new(None) };
}

/// Opens one sealed chunk `id` with the key its header names: its plaintext, checked.
pub fn open_sealed(keys: &ServiceKeySet, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>> {
    let header = Header::parse(sealed)?;
    let k = keys.get(header.key_id)?;
    OPENER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let opener = match slot.as_mut() {
            Some(o) => o,
            None => slot.insert(Opener::new()?),
        };
        opener.open(k, id, sealed)
    })
}

/// The plaintext of `chunks` (one part of a manifest), in order: each fetched by `fetch`
/// (which returns the sealed bytes, or why not), opened on the blocking pool and checked
/// against its [`ChunkRef`]; up to `parallel` at once (at least one). The stream ends at the
/// first error.
pub fn part_chunks<F, Fut, E>(
    chunks: Vec<ChunkRef>,
    keys: Arc<ServiceKeySet>,
    parallel: usize,
    fetch: F,
) -> impl Stream<Item = Result<Bytes>> + Send
where
    F: Fn(ChunkId) -> Fut + Clone + Send + Sync,
    Fut: Future<Output = std::result::Result<Vec<u8>, E>> + Send,
    E: Display,
{
    futures::stream::iter(chunks)
        .map(move |c| {
            let (fetch, keys) = (fetch.clone(), keys.clone());
            async move {
                let id = ChunkId::from_slice(&c.id)?;
                let sealed = fetch(id).await.map_err(|e| Error::Fetch {
                    id: id.to_string(),
                    message: e.to_string(),
                })?;
                let plain = tokio::task::spawn_blocking(move || open_sealed(&keys, &id, &sealed))
                    .await
                    .map_err(|e| Error::Worker(e.to_string()))??;
                if plain.len() as u64 != c.plain_size {
                    return Err(Error::ChunkSize {
                        id: id.to_string(),
                        found: plain.len() as u64,
                        expected: c.plain_size,
                    });
                }
                Ok(Bytes::from(plain))
            }
        })
        .buffered(parallel.max(1))
}
