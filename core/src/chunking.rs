//! Content-defined chunking (FastCDC-style gear hash with normalized chunking): cuts a dump into chunks whose boundaries depend on
//! the content, so a mostly unchanged database yields mostly the same chunks night after night.
//!
//! Invariants: boundaries depend only on the bytes (never on how the stream was read or split
//! into reads), so [`chunk_slice`] and [`Chunker`] cut the same input at the same places; every
//! chunk is at most [`MAX_SIZE`] bytes and, except the last, at least [`MIN_SIZE`]; the async
//! [`Chunker`] holds at most about two chunks' worth of the stream in memory, never the whole
//! dump, and finds boundaries on the blocking pool, not on the reactor.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};

/// Smallest chunk (except the last of a stream): 256 KiB.
pub const MIN_SIZE: usize = 256 * 1024;
/// Target average chunk: 1 MiB.
pub const AVG_SIZE: usize = 1024 * 1024;
/// Largest chunk: 4 MiB.
pub const MAX_SIZE: usize = 4 * 1024 * 1024;

/// Bits of the gear hash that must be zero for a cut before the average size (harder) and after
/// it (easier): FastCDC's normalized chunking, level 1, around 2^20 = 1 MiB. The top bits are
/// used, as each depends on the last 44 or more bytes.
const BITS_BEFORE_AVG: u32 = 21;
const BITS_AFTER_AVG: u32 = 19;
/// The gear hash covers the last 64 bytes: older bytes are shifted out.
const WINDOW: usize = 64;

/// The gear table: 256 pseudo-random words from splitmix64 with a fixed seed. Part of the chunk
/// format: changing it changes every boundary (and so defeats dedup against older backups).
static GEAR: [u64; 256] = gear_table();

const fn gear_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x5354_524f_4e47_424f; // "STRONGBO"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
}

/// The first position `i` in `start..end` whose gear hash (over `buf[i-63..=i]`) has none of
/// the top `bits` bits set, as the length of the chunk ending there (`i + 1`). Needs
/// `start >= WINDOW`.
///
/// Four bytes per step: the hash after each of the four is computed from the hash before them
/// plus sums that do not depend on it, so the loop-carried chain is one shift and one add per
/// four bytes instead of per byte; "top bits clear" is "hash below a threshold", so one compare
/// of the four hashes' minimum tells whether any of them cuts.
#[inline]
fn find_cut(buf: &[u8], start: usize, end: usize, bits: u32) -> Option<usize> {
    let below = 1u64 << (64 - bits);
    let g = |b: u8| GEAR[b as usize];
    let mut h = 0u64;
    for &b in &buf[start - WINDOW..start] {
        h = (h << 1).wrapping_add(g(b));
    }
    let mut quads = buf[start..end].chunks_exact(4);
    let mut at = start;
    for q in &mut quads {
        let (g0, g1, g2, g3) = (g(q[0]), g(q[1]), g(q[2]), g(q[3]));
        let p2 = (g0 << 1).wrapping_add(g1);
        let p3 = (p2 << 1).wrapping_add(g2);
        let p4 = (p3 << 1).wrapping_add(g3);
        let h1 = (h << 1).wrapping_add(g0);
        let h2 = (h << 2).wrapping_add(p2);
        let h3 = (h << 3).wrapping_add(p3);
        let h4 = (h << 4).wrapping_add(p4);
        if h1.min(h2).min(h3.min(h4)) < below {
            let first = [h1, h2, h3, h4]
                .iter()
                .position(|x| *x < below)
                .unwrap_or(3);
            return Some(at + first + 1);
        }
        h = h4;
        at += 4;
    }
    for &b in quads.remainder() {
        h = (h << 1).wrapping_add(g(b));
        if h < below {
            return Some(at + 1);
        }
        at += 1;
    }
    None
}

/// Length of the first chunk of `buf`, given that `buf` holds at least [`MAX_SIZE`] bytes or
/// the rest of the stream. Returns 0 only for an empty `buf`.
pub fn cut_point(buf: &[u8]) -> usize {
    let len = buf.len().min(MAX_SIZE);
    if len <= MIN_SIZE {
        return len;
    }
    let avg = len.min(AVG_SIZE);
    find_cut(buf, MIN_SIZE, avg, BITS_BEFORE_AVG)
        .or_else(|| {
            (avg < len)
                .then(|| find_cut(buf, avg, len, BITS_AFTER_AVG))
                .flatten()
        })
        .unwrap_or(len)
}

/// The chunks of an in-memory buffer, in order.
pub fn chunk_slice(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let n = cut_point(rest);
        if n == 0 {
            return None;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// Cuts an async byte stream (a dump tool's stdout) into chunks.
pub struct Chunker<R> {
    reader: R,
    buf: BytesMut,
    eof: bool,
}

impl<R: AsyncRead + Unpin> Chunker<R> {
    pub fn new(reader: R) -> Self {
        Chunker {
            reader,
            buf: BytesMut::with_capacity(2 * MAX_SIZE),
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        while !self.eof && self.buf.len() < MAX_SIZE {
            if self.buf.capacity() - self.buf.len() < MAX_SIZE / 4 {
                self.buf.reserve(MAX_SIZE);
            }
            let n = self
                .reader
                .read_buf(&mut self.buf)
                .await
                .map_err(Error::Stream)?;
            if n == 0 {
                self.eof = true;
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let buf = std::mem::take(&mut self.buf);
        let (mut buf, n) = tokio::task::spawn_blocking(move || {
            let n = cut_point(&buf);
            (buf, n)
        })
        .await
        .map_err(|e| Error::Stream(std::io::Error::other(e)))?;
        let chunk = buf.split_to(n).freeze();
        self.buf = buf;
        Ok(Some(chunk))
    }
}
const _: () = assert!(MIN_SIZE >= WINDOW && MIN_SIZE < AVG_SIZE && AVG_SIZE < MAX_SIZE);
