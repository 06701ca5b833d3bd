//! Sealed manifests: round trip, key-free parsing of the chunk list, and tampering.

mod common;

use common::keyring;
use strongbox_core::manifest::{self, ChunkRef, Manifest, Part, PartKind, TableStat};
use strongbox_core::Error;

fn sample(keys: &strongbox_core::keys::ServiceKeys) -> Manifest {
    let c = |s: &[u8], plain: u64| ChunkRef {
        id: keys.chunk_id(s).as_bytes().to_vec(),
        plain_size: plain,
        stored_size: plain / 3,
    };
    Manifest {
        backup_id: "0190c0de-0000-7000-8000-000000000001".into(),
        service: "svc-a".into(),
        created_unix_ms: 1_763_900_000_000,
        engine: "postgres".into(),
        engine_version: "15.8".into(),
        parts: vec![
            Part {
                name: "globals".into(),
                kind: PartKind::Globals as i32,
                chunks: vec![c(b"g", 1000)],
                tables: vec![],
            },
            Part {
                name: "bench".into(),
                kind: PartKind::Database as i32,
                chunks: vec![c(b"a", 1 << 20), c(b"b", 700_000), c(b"a", 1 << 20)],
                tables: vec![
                    TableStat {
                        name: "public.pgbench_accounts".into(),
                        rows: 100_000,
                    },
                    TableStat {
                        name: "public.pgbench_branches".into(),
                        rows: 1,
                    },
                ],
            },
        ],
        totals: None,
        left_out: vec![],
    }
}

#[test]
fn round_trips_and_lists_chunks_without_a_key() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let m = sample(&keys);
    let sealed = m.seal(&keys).unwrap();

    let opened = manifest::open(&ring, "svc-a", &sealed).unwrap();
    let totals = opened.totals.unwrap();
    assert_eq!(opened.parts, m.parts);
    assert_eq!(totals.chunk_count, 4);
    assert_eq!(totals.table_count, 2);
    assert_eq!(totals.row_count, 100_001);
    assert_eq!(totals.plain_size, 1000 + 2 * (1 << 20) + 700_000);

    let env = manifest::parse(&sealed).unwrap();
    assert_eq!(env.key_id, 1);
    assert_eq!(env.chunk_ids, m.chunk_ids().unwrap());
    assert_eq!(env.chunk_ids.len(), 3, "distinct ids only");
    // The coordinator-visible bytes reveal no table name.
    assert!(!sealed.windows(7).any(|w| w == b"pgbench"));
}

#[test]
fn every_flipped_byte_is_refused() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let sealed = sample(&keys).seal(&keys).unwrap();
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(manifest::open(&ring, "svc-a", &bad).is_err(), "byte {i}");
    }
}

#[test]
fn other_service_and_truncation_are_refused() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let sealed = sample(&keys).seal(&keys).unwrap();
    let err = manifest::open(&ring, "svc-b", &sealed).unwrap_err();
    assert!(matches!(err, Error::ManifestAuth), "{err}");
    for cut in 0..sealed.len() {
        assert!(
            manifest::open(&ring, "svc-a", &sealed[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(manifest::open(&ring, "svc-a", &longer).is_err());
}
