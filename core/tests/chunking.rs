//! Content-defined chunking: stable boundaries, bounded sizes, and locality of edits.

mod common;

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::{keyring, random_bytes, text_bytes};
use strongbox_core::chunking::{chunk_slice, Chunker, MAX_SIZE, MIN_SIZE};
use strongbox_core::ids::ChunkId;
use tokio::io::{AsyncRead, ReadBuf};

fn ids(data: &[u8]) -> Vec<ChunkId> {
    let keys = keyring().current_service_keys("svc-a").unwrap();
    chunk_slice(data).map(|c| keys.chunk_id(c)).collect()
}

#[test]
fn sizes_are_bounded_and_cover_the_input() {
    let data = random_bytes(40 << 20, 3);
    let chunks: Vec<&[u8]> = chunk_slice(&data).collect();
    assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), data.len());
    let (last, rest) = chunks.split_last().unwrap();
    assert!(rest
        .iter()
        .all(|c| c.len() >= MIN_SIZE && c.len() <= MAX_SIZE));
    assert!(last.len() <= MAX_SIZE);
    let avg = data.len() / chunks.len();
    assert!(
        (512 << 10..=2 << 20).contains(&avg),
        "average chunk {avg} bytes"
    );
    assert_eq!(chunk_slice(&[]).count(), 0);
}

#[test]
fn inserting_100_bytes_in_200_mib_changes_at_most_3_chunks() {
    let data = random_bytes(200 << 20, 4);
    let before = ids(&data);
    assert_eq!(before, ids(&data), "same input, same ids");

    let mid = data.len() / 2;
    let mut edited = Vec::with_capacity(data.len() + 100);
    edited.extend_from_slice(&data[..mid]);
    edited.extend_from_slice(&random_bytes(100, 5));
    edited.extend_from_slice(&data[mid..]);
    let after = ids(&edited);

    let old: HashSet<_> = before.iter().collect();
    let new_chunks = after.iter().filter(|id| !old.contains(id)).count();
    assert!((1..=3).contains(&new_chunks), "{new_chunks} chunks changed");
}

/// A reader that hands out the data in small, uneven pieces, as a pipe does.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.step = (self.step * 7 + 13) % 70_001 + 1;
        let n = self
            .step
            .min(buf.remaining())
            .min(self.data.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_chunker_cuts_where_the_slice_chunker_does() {
    for data in [
        random_bytes(23 << 20, 6),
        text_bytes(9 << 20),
        vec![],
        b"tiny".to_vec(),
    ] {
        let expected: Vec<Vec<u8>> = chunk_slice(&data).map(|c| c.to_vec()).collect();
        let mut chunker = Chunker::new(Trickle {
            data: data.clone(),
            pos: 0,
            step: 1,
        });
        let mut got = Vec::new();
        while let Some(c) = chunker.next_chunk().await.unwrap() {
            got.push(c.to_vec());
        }
        assert_eq!(got, expected);
    }
}
