//! Counting a dump stream as it passes: a dump's [`Tap`] receives every piece of the stream,
//! in order, from whoever reads it (the backup pipeline hands it each chunk as it is cut), and
//! feeds a [`StreamCounter`] on the blocking pool (the MariaDB engine's SQL lexer, the
//! PostgreSQL engine's archive reader).
//!
//! Invariants: pieces are shared, never copied (a chunk goes to the counter as the same
//! `Bytes`); a full queue holds the reader back, so memory stays bounded and a slow counter
//! slows the stream rather than dropping pieces; the counter's result is given only for a
//! stream its reader ended ([`Tap::end`]) — a tap dropped part way gives none.

use bytes::Bytes;
use tokio::sync::mpsc;

/// Something that learns from a stream's bytes, fed in pieces of any size.
pub trait StreamCounter: Send + 'static {
    type Output: Send + 'static;
    fn feed(&mut self, bytes: &[u8]);
    fn finish(self) -> Self::Output;
}

impl StreamCounter for crate::mysql::sqlcount::SqlCounter {
    type Output = Vec<(String, u64)>;
    fn feed(&mut self, bytes: &[u8]) {
        crate::mysql::sqlcount::SqlCounter::feed(self, bytes)
    }
    fn finish(self) -> Self::Output {
        crate::mysql::sqlcount::SqlCounter::finish(self)
    }
}

impl StreamCounter for crate::postgres::archive::ArchiveCounter {
    type Output = std::result::Result<Vec<crate::postgres::archive::TableRows>, String>;
    fn feed(&mut self, bytes: &[u8]) {
        crate::postgres::archive::ArchiveCounter::feed(self, bytes)
    }
    fn finish(self) -> Self::Output {
        crate::postgres::archive::ArchiveCounter::finish(self)
    }
}

/// Pieces a counter may lag behind its stream.
const QUEUE: usize = 4;

/// Where a dump stream's pieces go besides the backup.
pub struct Tap {
    tx: mpsc::Sender<Bytes>,
}

impl Tap {
    /// The next piece of the stream (never empty pieces: they are skipped).
    pub async fn send(&self, piece: Bytes) {
        if !piece.is_empty() {
            // A counter that is gone reports why through its result.
            let _ = self.tx.send(piece).await;
        }
    }

    /// The stream ended: every piece was sent.
    pub async fn end(self) {
        let _ = self.tx.send(Bytes::new()).await;
    }
}

/// The counting task: the counter's result once its tap ended, `None` when the tap was
/// dropped before the stream's end.
pub type Counted<T> = tokio::task::JoinHandle<Option<T>>;

/// A tap feeding `counter` on the blocking pool.
pub fn tap<C: StreamCounter>(mut counter: C) -> (Tap, Counted<C::Output>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    let counted = tokio::task::spawn_blocking(move || {
        while let Some(piece) = rx.blocking_recv() {
            if piece.is_empty() {
                return Some(counter.finish());
            }
            counter.feed(&piece);
        }
        None
    });
    (Tap { tx }, counted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::sqlcount::SqlCounter;

    #[tokio::test]
    async fn a_tap_counts_what_it_is_sent_once_ended() {
        let dump = b"CREATE TABLE `t` (a int);\nINSERT INTO `t` VALUES (1),(2),(3);\n".repeat(1000);
        let (tap, counted) = tap(SqlCounter::new());
        for piece in dump.chunks(777) {
            tap.send(Bytes::copy_from_slice(piece)).await;
        }
        tap.end().await;
        assert_eq!(counted.await.unwrap(), Some(vec![("t".to_string(), 3000)]));

        let (tap, counted) = super::tap(SqlCounter::new());
        tap.send(Bytes::copy_from_slice(&dump[..100])).await;
        drop(tap);
        assert_eq!(counted.await.unwrap(), None, "a tap dropped part way");
    }
}
