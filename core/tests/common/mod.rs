//! Helpers shared by the core tests.
#![allow(dead_code)]

use rand::{RngCore, SeedableRng};
use strongbox_core::keys::{FleetKey, Keyring};

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Compressible text resembling a SQL dump.
pub fn text_bytes(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(
            format!(
                "{i}\t{}\t{}\tcustomer name {}\n",
                i * 7 % 1000,
                i % 13,
                i * 31 % 997
            )
            .as_bytes(),
        );
        i += 1;
    }
    v.truncate(len);
    v
}

pub fn keyring() -> Keyring {
    Keyring::new([FleetKey::from_bytes(1, [7u8; 32])]).expect("keyring")
}
