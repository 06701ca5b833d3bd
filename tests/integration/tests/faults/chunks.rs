//! Corrupted chunk files: "held" means held intact, for dedup, commit and repair alike.

use std::io::{Seek, SeekFrom, Write};

use strongbox_core::ids::ChunkId;
use strongbox_integration::cluster::{Cluster, ClusterOptions};
use strongbox_integration::wait;
use strongbox_proto::v1::JobState;

/// Flips one byte in the middle of node `node`'s file of `chunk` (same size, same inode).
pub fn corrupt(c: &Cluster, node: u64, chunk: &ChunkId) {
    let path = c.chunk_file(node, chunk);
    let len = std::fs::metadata(&path).expect("chunk file").len();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = len / 2;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    std::io::Read::read_exact(&mut f, &mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte[0] ^ 0x5a]).unwrap();
    f.sync_all().unwrap();
    assert!(!intact(c, node, chunk), "the corruption took");
}

/// Whether node `node` holds `chunk` with its checksum right.
pub fn intact(c: &Cluster, node: u64, chunk: &ChunkId) -> bool {
    let Ok(bytes) = std::fs::read(c.chunk_file(node, chunk)) else {
        return false;
    };
    bytes.len() >= 32 && {
        let (sealed, sum) = bytes.split_at(bytes.len() - 32);
        blake3::hash(sealed).as_bytes() == sum
    }
}

/// The chunks a committed backup's manifest names, read from node 1's copy of the manifest.
pub fn chunks_of(c: &Cluster, manifest_id: &[u8]) -> Vec<ChunkId> {
    let id = ChunkId::from_slice(manifest_id).unwrap();
    let sealed = c.stored_chunk(1, &id).expect("node 1 holds the manifest");
    strongbox_core::manifest::parse(&sealed)
        .expect("the manifest parses")
        .chunk_ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_over_corrupted_copies_uploads_them_again_and_heals_the_older_backup() {
    let (f, _db, _agent, _spare) = crate::fleet_with_till(ClusterOptions::default()).await;
    let (job, a) = f.backup("till").await;
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);
    let chunks = chunks_of(&f.cluster, &a.manifest_id);
    assert!(chunks.len() >= 3, "backup A has {} chunks", chunks.len());
    // One chunk corrupt everywhere, and two more on two nodes each (one of them the node the
    // agent asks, one not): dedup must re-upload what the asked node lacks intact, and the
    // commit must copy what too few nodes hold intact.
    let (x, y, z) = (chunks[0], chunks[1], chunks[2]);
    // The copies beyond the majority are written after the commit: wait for them first.
    wait::poll(
        "every node to hold A's chunks",
        std::time::Duration::from_secs(30),
        || {
            let all = [x, y, z]
                .iter()
                .all(|id| [1, 2, 3].iter().all(|n| intact(&f.cluster, *n, id)));
            async move {
                if all {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            }
        },
    )
    .await;
    for n in [1, 2, 3] {
        corrupt(&f.cluster, n, &x);
    }
    for n in [2, 3] {
        corrupt(&f.cluster, n, &y);
    }
    for n in [1, 2] {
        corrupt(&f.cluster, n, &z);
    }

    // B of the unchanged database commits, and every copy of A's chunks is intact again: the
    // re-upload or the commit's copy replaced each corrupt one (repair is not due for
    // minutes in this cluster, so it did not).
    let (job, b) = f.backup("till").await;
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);
    assert!(
        b.stored_bytes > 0,
        "B re-uploaded nothing: {} bytes stored",
        b.stored_bytes
    );
    wait::poll(
        "every copy of the corrupted chunks to be replaced",
        std::time::Duration::from_secs(30),
        || {
            let bad: Vec<String> = [x, y, z]
                .iter()
                .flat_map(|id| [1, 2, 3].map(move |n| (n, *id)))
                .filter(|(n, id)| !intact(&f.cluster, *n, id))
                .map(|(n, id)| format!("node {n}: {id}"))
                .collect();
            let r = if bad.is_empty() {
                Ok(())
            } else {
                Err(format!("corrupt still: {bad:?}"))
            };
            async move { r }
        },
    )
    .await;

    // Both restore, verified.
    for backup in [&b, &a] {
        f.restore_verified(&backup.id, "spare-1").await;
    }
}
