//! Counting a dump stream as it passes: [`CountingReader`] hands the bytes on unchanged while
//! a copy of each piece goes to a [`StreamCounter`] on the blocking pool (the MariaDB engine's
//! SQL lexer, the PostgreSQL engine's archive reader).
//!
//! Invariants: the bytes read are exactly the inner reader's; a full queue to the counter holds
//! reading back, so memory stays bounded and a slow counter slows the stream rather than
//! dropping pieces; the counter sees every piece in order, and its result is ready once the
//! reader reached the end (or was dropped).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Something that learns from a stream's bytes, fed in pieces of any size.
pub trait StreamCounter: Send + 'static {
    type Output: Send + 'static;
    fn feed(&mut self, bytes: &[u8]);
    fn finish(self) -> Self::Output;
}

impl StreamCounter for super::sqlcount::SqlCounter {
    type Output = Vec<(String, u64)>;
    fn feed(&mut self, bytes: &[u8]) {
        super::sqlcount::SqlCounter::feed(self, bytes)
    }
    fn finish(self) -> Self::Output {
        super::sqlcount::SqlCounter::finish(self)
    }
}

impl StreamCounter for super::pgarchive::ArchiveCounter {
    type Output = std::result::Result<Vec<super::pgarchive::TableRows>, String>;
    fn feed(&mut self, bytes: &[u8]) {
        super::pgarchive::ArchiveCounter::feed(self, bytes)
    }
    fn finish(self) -> Self::Output {
        super::pgarchive::ArchiveCounter::finish(self)
    }
}

type Permit = mpsc::OwnedPermit<Vec<u8>>;
type Reserve =
    Pin<Box<dyn Future<Output = std::result::Result<Permit, mpsc::error::SendError<()>>> + Send>>;

/// The counting task: the counter's result once the stream ended.
pub type Counted<T> = tokio::task::JoinHandle<T>;

/// Passes a dump stream through unchanged while a copy of each piece goes to a counter.
pub struct CountingReader<R> {
    inner: R,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    reserving: Option<Reserve>,
    permit: Option<Permit>,
    read_to_end: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> CountingReader<R> {
    /// The reader, the counting task (its result once the reader reached the end or was
    /// dropped), and a flag set when the end was reached.
    pub fn new<C: StreamCounter>(
        inner: R,
        mut counter: C,
    ) -> (Self, Counted<C::Output>, Arc<AtomicBool>) {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let counted = tokio::task::spawn_blocking(move || {
            while let Some(piece) = rx.blocking_recv() {
                counter.feed(&piece);
            }
            counter.finish()
        });
        let flag = Arc::new(AtomicBool::new(false));
        (
            CountingReader {
                inner,
                tx: Some(tx),
                reserving: None,
                permit: None,
                read_to_end: Arc::clone(&flag),
            },
            counted,
            flag,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // Room in the counter's queue first, so a slow counter slows the stream down.
        if this.permit.is_none() {
            if let Some(tx) = &this.tx {
                let reserving = this
                    .reserving
                    .get_or_insert_with(|| Box::pin(tx.clone().reserve_owned()));
                match reserving.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(p)) => this.permit = Some(p),
                    // The counter is gone; its task reports why.
                    Poll::Ready(Err(_)) => this.tx = None,
                }
                this.reserving = None;
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    this.read_to_end.store(true, Ordering::SeqCst);
                    this.permit = None;
                    this.tx = None;
                } else if let Some(p) = this.permit.take() {
                    p.send(new.to_vec());
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::engines::sqlcount::SqlCounter;

    #[tokio::test]
    async fn counting_reader_passes_bytes_and_counts() {
        let dump = b"CREATE TABLE `t` (a int);\nINSERT INTO `t` VALUES (1),(2),(3);\n".repeat(1000);
        let (mut reader, counted, done) = CountingReader::new(&dump[..], SqlCounter::new());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, dump);
        assert!(done.load(Ordering::SeqCst));
        drop(reader);
        assert_eq!(counted.await.unwrap(), vec![("t".to_string(), 3000)]);
    }
}
