//! The one read path for a backup (`core::read`): chunks come out in the part's order whatever
//! order their fetches finish in, checked; a fetch error, a tampered chunk, a wrong size or an
//! unknown key stops the stream with an error that says which chunk.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use strongbox_core::chunk::Sealer;
use strongbox_core::error::Error;
use strongbox_core::ids::ChunkId;
use strongbox_core::keys::{FleetKey, Keyring};
use strongbox_core::manifest::ChunkRef;
use strongbox_core::read::{part_chunks, ServiceKeySet};

/// Chunks the reads fetch at once.
const PARALLEL: usize = 4;

/// Fleet key `id`, the same on every call.
fn key(id: u32) -> FleetKey {
    FleetKey::from_bytes(id, [id as u8; 32])
}

/// A keyring, a part's chunk list, the sealed chunks by id, and each chunk's plaintext.
struct Part {
    keyring: Keyring,
    refs: Vec<ChunkRef>,
    store: HashMap<ChunkId, Vec<u8>>,
    plains: Vec<Vec<u8>>,
}

/// A keyring of two fleet keys, a part of four chunks sealed under both, and their store.
fn sealed_part() -> Part {
    let keyring = Keyring::new([key(1), key(2)]).unwrap();
    let mut sealer = Sealer::new(Some(3)).unwrap();
    let (mut refs, mut store, mut plains) = (Vec::new(), HashMap::new(), Vec::new());
    for i in 0..4u64 {
        let plain = common::random_bytes(10_000 + i as usize * 1000, i);
        let keys = keyring.service_keys(1 + (i % 2) as u32, "shop").unwrap();
        let sealed = sealer.seal(&keys, &plain).unwrap();
        refs.push(ChunkRef {
            id: sealed.id.as_bytes().to_vec(),
            plain_size: plain.len() as u64,
            stored_size: sealed.bytes.len() as u64,
        });
        store.insert(sealed.id, sealed.bytes);
        plains.push(plain);
    }
    Part {
        keyring,
        refs,
        store,
        plains,
    }
}

/// Reads `refs` with a fetch from `store` that answers the first chunks last: the fetch of
/// chunk `i` waits until every later chunk's fetch has answered (all of them are in flight
/// at once, as `refs` holds no more chunks than the read's parallelism).
async fn read(
    keys: ServiceKeySet,
    refs: Vec<ChunkRef>,
    store: HashMap<ChunkId, Vec<u8>>,
) -> Result<Vec<Vec<u8>>, Error> {
    let order: HashMap<ChunkId, u64> = refs
        .iter()
        .enumerate()
        .map(|(i, c)| (ChunkId::from_slice(&c.id).unwrap(), i as u64))
        .collect();
    let n = refs.len() as u64;
    assert!(n <= PARALLEL as u64, "every fetch in flight at once");
    let store = Arc::new(store);
    let (answered, _) = tokio::sync::watch::channel(0u64);
    let answered = Arc::new(answered);
    let fetch = move |id: ChunkId| {
        let (store, answered) = (store.clone(), answered.clone());
        let later = n - 1 - order.get(&id).copied().unwrap_or(0);
        async move {
            let mut seen = answered.subscribe();
            let _ = seen.wait_for(|done| *done >= later).await;
            let sealed = store.get(&id).cloned().ok_or("no node holds it");
            answered.send_modify(|done| *done += 1);
            sealed
        }
    };
    let mut out = Vec::new();
    let mut stream = Box::pin(part_chunks(refs, Arc::new(keys), PARALLEL, fetch));
    while let Some(chunk) = stream.next().await {
        out.push(chunk?.to_vec());
    }
    Ok(out)
}

#[tokio::test]
async fn chunks_come_out_in_order_and_opened_under_each_key() {
    let Part {
        keyring,
        refs,
        store,
        plains,
    } = sealed_part();
    let keys = ServiceKeySet::new(&keyring, "shop").unwrap();
    assert_eq!(read(keys, refs, store).await.unwrap(), plains);
}

#[tokio::test]
async fn a_missing_tampered_misnamed_or_wrongly_sized_chunk_stops_the_read() {
    let Part {
        keyring,
        refs,
        store,
        ..
    } = sealed_part();
    let id0 = ChunkId::from_slice(&refs[0].id).unwrap();
    let keys = || ServiceKeySet::new(&keyring, "shop").unwrap();

    let mut missing = store.clone();
    missing.remove(&id0);
    let e = read(keys(), refs.clone(), missing).await.unwrap_err();
    assert!(
        matches!(&e, Error::Fetch { id, message } if *id == id0.to_string() && message.contains("no node")),
        "{e}"
    );

    let mut tampered = store.clone();
    let bytes = tampered.get_mut(&id0).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let e = read(keys(), refs.clone(), tampered).await.unwrap_err();
    assert!(matches!(e, Error::ChunkAuth), "{e}");

    let mut sized = refs.clone();
    sized[2].plain_size += 1;
    let e = read(keys(), sized, store.clone()).await.unwrap_err();
    assert!(matches!(e, Error::ChunkSize { .. }), "{e}");

    // Another service's keys do not open them.
    let other = ServiceKeySet::new(&keyring, "crm").unwrap();
    assert!(read(other, refs.clone(), store.clone()).await.is_err());

    // A keyring without the key a chunk names says which key is missing.
    let only_one = Keyring::new([key(1)]).unwrap();
    let e = read(ServiceKeySet::new(&only_one, "shop").unwrap(), refs, store)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownKeyId { id: 2, .. }), "{e}");
}
