//! Parsing and opening arbitrary bytes as a sealed manifest must give an error or a manifest,
//! never a panic: the key-free parse (what coordinators run) on raw input, and the body checks
//! of `open` on input sealed with a valid MAC (which random bytes never have).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_core::ids::ChunkId;
use strongbox_core::keys::{FleetKey, Keyring};
use strongbox_core::manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = manifest::parse(data) {
        assert!(env.chunk_ids.len() * 32 <= data.len());
    }
    let ring = Keyring::new([FleetKey::from_bytes(1, [5u8; 32])]).expect("keyring");
    let _ = manifest::open(&ring, "fuzz", data);

    // The first byte says how many 32-byte ids to take as the public list; the rest is the body.
    if let Some((&n, rest)) = data.split_first() {
        let n = usize::from(n % 4).min(rest.len() / 32);
        let (ids, body) = rest.split_at(n * 32);
        let ids: Vec<ChunkId> = ids
            .chunks_exact(32)
            .filter_map(|c| ChunkId::from_slice(c).ok())
            .collect();
        let keys = ring.current_service_keys("fuzz").expect("keys");
        let sealed = manifest::seal_body(&keys, "bk-fuzz", &ids, body).expect("seal");
        if let Ok(m) = manifest::open(&ring, "fuzz", &sealed) {
            assert_eq!(m.chunk_ids().expect("ids"), ids);
        }
    }
});
