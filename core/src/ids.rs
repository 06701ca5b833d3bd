//! Chunk ids: 32 bytes, BLAKE3 keyed with the service's id key over the chunk's plaintext.
//!
//! Invariant: a `ChunkId` is always exactly 32 bytes; its text form is 64 lowercase hex digits,
//! which is also its file name in a chunk store (`chunks/ab/<hex>`).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Length of a chunk id in bytes.
pub const CHUNK_ID_LEN: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; CHUNK_ID_LEN]);

impl ChunkId {
    pub fn as_bytes(&self) -> &[u8; CHUNK_ID_LEN] {
        &self.0
    }

    /// The id from wire bytes; errors unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; CHUNK_ID_LEN] = bytes.try_into().map_err(|_| {
            Error::invalid(
                "chunk id",
                format!("{} bytes", bytes.len()),
                "a chunk id is 32 bytes",
            )
        })?;
        Ok(ChunkId(arr))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl FromStr for ChunkId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut out = [0u8; CHUNK_ID_LEN];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| Error::invalid("chunk id", s, "expected 64 hex digits"))?;
        Ok(ChunkId(out))
    }
}
