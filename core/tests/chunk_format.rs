//! Sealing and opening chunks: round trips, and every way a chunk can be wrong.

mod common;

use common::{keyring, random_bytes, text_bytes};
use strongbox_core::chunk::{Compression, Header, Opener, Sealer, HEADER_LEN};
use strongbox_core::ids::ChunkId;
use strongbox_core::Error;

fn roundtrip(plain: &[u8]) -> Compression {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let mut sealer = Sealer::new(Some(3)).unwrap();
    let sealed = sealer.seal(&keys, plain).unwrap();
    assert_eq!(sealed.id, keys.chunk_id(plain));
    assert_eq!(sealed.plain_len, plain.len());
    let mut opener = Opener::new().unwrap();
    let opened = opener.open(&keys, &sealed.id, &sealed.bytes).unwrap();
    assert_eq!(opened, plain);
    Header::parse(&sealed.bytes).unwrap().compression
}

#[test]
fn round_trips_empty_tiny_large_and_incompressible() {
    roundtrip(b"");
    roundtrip(b"x");
    roundtrip(b"hello, strongbox");
    assert_eq!(roundtrip(&text_bytes(4 * 1024 * 1024)), Compression::Zstd);
    assert_eq!(
        roundtrip(&random_bytes(4 * 1024 * 1024, 1)),
        Compression::None
    );
}

#[test]
fn uncompressed_sealer_round_trips() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let plain = text_bytes(100_000);
    let sealed = Sealer::new(None).unwrap().seal(&keys, &plain).unwrap();
    assert_eq!(
        Header::parse(&sealed.bytes).unwrap().compression,
        Compression::None
    );
    assert_eq!(
        Opener::new()
            .unwrap()
            .open(&keys, &sealed.id, &sealed.bytes)
            .unwrap(),
        plain
    );
}

#[test]
fn same_plaintext_same_id_fresh_nonce() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let mut sealer = Sealer::new(Some(3)).unwrap();
    let a = sealer.seal(&keys, b"same bytes").unwrap();
    let b = sealer.seal(&keys, b"same bytes").unwrap();
    assert_eq!(a.id, b.id);
    assert_ne!(a.bytes, b.bytes, "each seal uses a fresh nonce");
}

#[test]
fn every_flipped_byte_is_refused() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let mut opener = Opener::new().unwrap();
    for plain in [text_bytes(3000), random_bytes(3000, 2)] {
        let sealed = Sealer::new(Some(3)).unwrap().seal(&keys, &plain).unwrap();
        for i in 0..sealed.bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.bytes.clone();
                bad[i] ^= bit;
                let r = opener.open(&keys, &sealed.id, &bad);
                assert!(
                    r.is_err(),
                    "flipping bit {bit:#x} of byte {i} was not detected"
                );
            }
        }
    }
}

#[test]
fn flipped_bytes_in_a_large_chunk_are_refused() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let plain = text_bytes(4 * 1024 * 1024);
    let sealed = Sealer::new(Some(3)).unwrap().seal(&keys, &plain).unwrap();
    let mut opener = Opener::new().unwrap();
    let len = sealed.bytes.len();
    for i in (0..HEADER_LEN)
        .chain((HEADER_LEN..len).step_by(len / 97))
        .chain([len - 1])
    {
        let mut bad = sealed.bytes.clone();
        bad[i] ^= 0x40;
        assert!(opener.open(&keys, &sealed.id, &bad).is_err(), "byte {i}");
    }
}

#[test]
fn other_service_other_id_or_truncation_is_refused() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let other = ring.current_service_keys("svc-b").unwrap();
    let plain = text_bytes(50_000);
    let sealed = Sealer::new(Some(3)).unwrap().seal(&keys, &plain).unwrap();
    let mut opener = Opener::new().unwrap();

    let err = opener.open(&other, &sealed.id, &sealed.bytes).unwrap_err();
    assert!(matches!(err, Error::ChunkAuth), "{err}");
    assert!(err.to_string().contains("another service"), "{err}");

    let wrong_id = keys.chunk_id(b"something else");
    assert!(matches!(
        opener.open(&keys, &wrong_id, &sealed.bytes),
        Err(Error::ChunkAuth)
    ));

    for cut in [
        0,
        1,
        10,
        HEADER_LEN,
        HEADER_LEN + 15,
        sealed.bytes.len() / 2,
        sealed.bytes.len() - 1,
    ] {
        let err = opener
            .open(&keys, &sealed.id, &sealed.bytes[..cut])
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("truncated") || matches!(err, Error::ChunkAuth),
            "cut {cut}: {msg}"
        );
    }
}

#[test]
fn a_chunk_under_an_unknown_fleet_key_names_it() {
    let ring = keyring();
    let keys = ring.current_service_keys("svc-a").unwrap();
    let sealed = Sealer::new(Some(3)).unwrap().seal(&keys, b"data").unwrap();
    let header = Header::parse(&sealed.bytes).unwrap();
    assert_eq!(header.key_id, 1);
    let empty = strongbox_core::keys::Keyring::new([]).unwrap();
    let err = empty.service_keys(header.key_id, "svc-a").unwrap_err();
    assert!(
        err.to_string().contains("key id 1 is not in the keyring"),
        "{err}"
    );
}

#[test]
fn chunk_id_text_round_trips() {
    let id = keyring()
        .current_service_keys("s")
        .unwrap()
        .chunk_id(b"abc");
    let text = id.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<ChunkId>().unwrap(), id);
    assert!("abc".parse::<ChunkId>().is_err());
}
