//! Content-defined chunking (FastCDC 2020): cuts a dump into chunks whose boundaries depend on
//! the content, so a mostly unchanged database yields mostly the same chunks night after night.
//!
//! Invariants: boundaries depend only on the bytes (never on how the stream was read or split
//! into reads), so [`chunk_slice`] and [`Chunker`] cut the same input at the same places; every
//! chunk is at most [`MAX_SIZE`] bytes and, except the last, at least [`MIN_SIZE`]; the async
//! [`Chunker`] holds at most about two chunks' worth of the stream in memory, never the whole
//! dump, and finds boundaries on the blocking pool, not on the reactor.

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::{FastCDC, Normalization};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};

/// Smallest chunk (except the last of a stream): 256 KiB.
pub const MIN_SIZE: usize = 256 * 1024;
/// Target average chunk: 1 MiB.
pub const AVG_SIZE: usize = 1024 * 1024;
/// Largest chunk: 4 MiB.
pub const MAX_SIZE: usize = 4 * 1024 * 1024;

/// Length of the first chunk of `buf`, given that `buf` holds at least [`MAX_SIZE`] bytes or
/// the rest of the stream. Returns 0 only for an empty `buf`.
pub fn cut_point(buf: &[u8]) -> usize {
    let window = &buf[..buf.len().min(MAX_SIZE)];
    FastCDC::with_level(window, MIN_SIZE, AVG_SIZE, MAX_SIZE, Normalization::Level1)
        .next()
        .map_or(0, |c| c.length)
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
