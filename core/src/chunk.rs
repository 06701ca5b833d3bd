//! Sealing and opening one chunk: zstd, then AES-256-GCM under the service's data key.
//!
//! Layout of a sealed chunk (all integers big-endian):
//!
//! ```text
//! 0..4    magic "SBXC"
//! 4       format version (1)
//! 5       compression: 0 none, 1 zstd
//! 6..10   fleet key id
//! 10..14  plaintext length
//! 14..26  nonce (96 random bits, fresh per chunk)
//! 26..    ciphertext, then the 16-byte GCM tag
//! ```
//!
//! The associated data is the whole header followed by the chunk id, so a chunk cannot be
//! replayed under another id, and no header field can be altered without the tag failing.
//!
//! Invariants: opening never returns bytes that did not pass both the GCM tag and the id check
//! (the plaintext hashes to its id under the service's id key); a malformed input gives an error,
//! never a panic, and never allocates more than [`MAX_PLAIN_LEN`] for the plaintext; a chunk
//! whose zstd output is not smaller than its plaintext is stored uncompressed.

use std::io::Cursor;

use ring::aead::{self, Aad, Nonce, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};
use crate::ids::{ChunkId, CHUNK_ID_LEN};
use crate::keys::ServiceKeys;

pub const MAGIC: [u8; 4] = *b"SBXC";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 26;
pub const TAG_LEN: usize = 16;
/// The largest plaintext a chunk may hold (chunks are at most 4 MiB; this bounds what a
/// malformed header can make us allocate).
pub const MAX_PLAIN_LEN: usize = 16 * 1024 * 1024;
/// The default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// The parsed header of a sealed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub compression: Compression,
    pub key_id: u32,
    pub plain_len: u32,
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = self.version;
        h[5] = self.compression as u8;
        h[6..10].copy_from_slice(&self.key_id.to_be_bytes());
        h[10..14].copy_from_slice(&self.plain_len.to_be_bytes());
        h[14..26].copy_from_slice(&self.nonce);
        h
    }

    /// Parses and checks the header of a sealed chunk (not its authenticity).
    pub fn parse(sealed: &[u8]) -> Result<Header> {
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(Error::ChunkFormat(format!(
                "{} bytes is shorter than the smallest sealed chunk ({} bytes): truncated",
                sealed.len(),
                HEADER_LEN + TAG_LEN
            )));
        }
        if sealed[0..4] != MAGIC {
            return Err(Error::ChunkFormat(
                "not a strongbox chunk (bad magic)".into(),
            ));
        }
        let version = sealed[4];
        if version != FORMAT_VERSION {
            return Err(Error::ChunkFormat(format!(
                "format version {version}; this build reads version {FORMAT_VERSION}: upgrade strongbox"
            )));
        }
        let compression = match sealed[5] {
            0 => Compression::None,
            1 => Compression::Zstd,
            other => {
                return Err(Error::ChunkFormat(format!("unknown compression {other}")));
            }
        };
        let key_id = u32::from_be_bytes([sealed[6], sealed[7], sealed[8], sealed[9]]);
        let plain_len = u32::from_be_bytes([sealed[10], sealed[11], sealed[12], sealed[13]]);
        if plain_len as usize > MAX_PLAIN_LEN {
            return Err(Error::ChunkFormat(format!(
                "plaintext length {plain_len} exceeds the limit {MAX_PLAIN_LEN}"
            )));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[14..26]);
        Ok(Header {
            version,
            compression,
            key_id,
            plain_len,
            nonce,
        })
    }
}

fn aad(header: &[u8; HEADER_LEN], id: &ChunkId) -> [u8; HEADER_LEN + CHUNK_ID_LEN] {
    let mut a = [0u8; HEADER_LEN + CHUNK_ID_LEN];
    a[..HEADER_LEN].copy_from_slice(header);
    a[HEADER_LEN..].copy_from_slice(id.as_bytes());
    a
}

/// A chunk after sealing.
#[derive(Debug, Clone)]
pub struct SealedChunk {
    pub id: ChunkId,
    pub bytes: Vec<u8>,
    pub plain_len: usize,
}

/// Seals chunks; keeps a zstd context to reuse across chunks. One per thread.
pub struct Sealer {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    rng: SystemRandom,
}

impl Sealer {
    /// A sealer compressing at zstd `level` (1 to 22, or negative for the fast levels); `None`
    /// stores chunks uncompressed.
    pub fn new(level: Option<i32>) -> Result<Self> {
        let compressor = match level {
            None => None,
            Some(l) if l == 0 || !(-7..=22).contains(&l) => {
                return Err(Error::invalid(
                    "zstd level",
                    l.to_string(),
                    "choose 1 to 22 (3 is the default), or -7 to -1 for the fast levels",
                ));
            }
            Some(l) => Some(
                zstd::bulk::Compressor::new(l).map_err(|e| Error::Compression(e.to_string()))?,
            ),
        };
        Ok(Sealer {
            compressor,
            rng: SystemRandom::new(),
        })
    }

    /// Computes the chunk's id and seals it.
    pub fn seal(&mut self, keys: &ServiceKeys, plaintext: &[u8]) -> Result<SealedChunk> {
        let id = keys.chunk_id(plaintext);
        let bytes = self.seal_with_id(keys, &id, plaintext)?;
        Ok(SealedChunk {
            id,
            bytes,
            plain_len: plaintext.len(),
        })
    }

    /// Seals a chunk whose id the caller already computed with `keys.chunk_id`.
    pub fn seal_with_id(
        &mut self,
        keys: &ServiceKeys,
        id: &ChunkId,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_PLAIN_LEN {
            return Err(Error::ChunkFormat(format!(
                "plaintext of {} bytes exceeds the chunk limit {MAX_PLAIN_LEN}",
                plaintext.len()
            )));
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| Error::Random)?;

        let bound = zstd::zstd_safe::compress_bound(plaintext.len());
        let mut out = Vec::with_capacity(HEADER_LEN + bound.max(plaintext.len()) + TAG_LEN);
        out.resize(HEADER_LEN, 0);
        let mut compression = Compression::None;
        if let Some(c) = self.compressor.as_mut() {
            let mut cursor = Cursor::new(&mut out);
            cursor.set_position(HEADER_LEN as u64);
            let n = c
                .compress_to_buffer(plaintext, &mut cursor)
                .map_err(|e| Error::Compression(e.to_string()))?;
            if n < plaintext.len() {
                compression = Compression::Zstd;
            } else {
                out.truncate(HEADER_LEN);
            }
        }
        if compression == Compression::None {
            out.extend_from_slice(plaintext);
        }

        let header = Header {
            version: FORMAT_VERSION,
            compression,
            key_id: keys.key_id(),
            plain_len: plaintext.len() as u32,
            nonce,
        }
        .encode();
        out[..HEADER_LEN].copy_from_slice(&header);
        let tag = keys
            .data_key()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&header, id)),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| Error::ChunkFormat("encryption failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }
}

/// Opens sealed chunks; keeps a zstd context and a scratch buffer to reuse. One per thread.
pub struct Opener {
    decompressor: zstd::bulk::Decompressor<'static>,
    scratch: Vec<u8>,
}

impl Opener {
    pub fn new() -> Result<Self> {
        Ok(Opener {
            decompressor: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::Compression(e.to_string()))?,
            scratch: Vec::new(),
        })
    }

    /// Checks and opens a sealed chunk: the GCM tag under `keys`, then that the plaintext hashes
    /// to `id`. `keys` must be derived from the fleet key the header names
    /// ([`Header::parse`] tells which).
    pub fn open(&mut self, keys: &ServiceKeys, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>> {
        let header = Header::parse(sealed)?;
        if header.key_id != keys.key_id() {
            return Err(Error::ChunkFormat(format!(
                "sealed under fleet key {}, but the keys given are of fleet key {}",
                header.key_id,
                keys.key_id()
            )));
        }
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&sealed[..HEADER_LEN]);
        self.scratch.clear();
        self.scratch.extend_from_slice(&sealed[HEADER_LEN..]);
        let body = keys
            .data_key()
            .open_in_place(
                Nonce::assume_unique_for_key(header.nonce),
                Aad::from(aad(&head, id)),
                &mut self.scratch,
            )
            .map_err(|_| Error::ChunkAuth)?;
        let plain_len = header.plain_len as usize;
        let plaintext = match header.compression {
            Compression::None => body.to_vec(),
            Compression::Zstd => {
                let mut out = Vec::with_capacity(plain_len);
                self.decompressor
                    .decompress_to_buffer(&*body, &mut out)
                    .map_err(|e| Error::Compression(format!("zstd: {e}")))?;
                out
            }
        };
        if plaintext.len() != plain_len {
            return Err(Error::ChunkFormat(format!(
                "plaintext is {} bytes, the header says {plain_len}",
                plaintext.len()
            )));
        }
        if keys.chunk_id(&plaintext) != *id {
            return Err(Error::ChunkIdMismatch { id: id.to_hex() });
        }
        Ok(plaintext)
    }
}

/// Tag length check at compile time: ring's GCM tag is 16 bytes.
const _: () = assert!(aead::MAX_TAG_LEN == TAG_LEN);
