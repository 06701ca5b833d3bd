//! The chunk store across a 3-node cluster: uploads acknowledged by a majority, refused without
//! one, and reads that survive a missing or corrupt copy (and heal it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use strongbox_core::chunk::Sealer;
use strongbox_core::keys::FleetKey;
use strongbox_core::pki::Role;
use strongbox_core::tls::{install_crypto_provider, TlsFiles};
use strongbox_integration::cluster::{Cluster, ClusterOptions};
use strongbox_integration::raw_agent::{chunks, commit_request, member, register, upload, Sealed};
use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::MemberRole;
use strongbox_proto::v1::{DownloadChunkRequest, HaveChunksRequest, JobInfo, RegisterRequest};
use tonic::Code;

async fn formed(c: &Cluster, tls: &TlsFiles) {
    c.wait_for_leader(tls, 3)
        .await
        .expect("the cluster did not form");
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn register_orders(c: &Cluster) -> RegisterRequest {
    register(
        "db-1",
        &c.options.region,
        false,
        vec![member("orders", MemberRole::Primary)],
    )
}

/// A new backup job for `orders` (on db-1), made by an operator.
async fn backup_job(c: &Cluster, operator: &TlsFiles) -> JobInfo {
    c.create_backup_job(operator, "orders").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_were_down_get_their_chunks_back_by_repair() {
    install_crypto_provider();
    let options = ClusterOptions {
        maintenance_interval: Duration::from_millis(200),
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start(3, options).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let agent = c.pki.issue(Role::Agent, "db-1", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    formed(&c, &viewer).await;
    let mut ag = AgentServiceClient::new(c.channel(1, &agent).unwrap());
    ag.register(register_orders(&c)).await.unwrap();
    let job = backup_job(&c, &operator).await;
    let keys = FleetKey::from_bytes(1, [9; 32]).service_keys("orders");
    let chunks = chunks(&keys, 3, 300_000);

    // Node 3 down: two chunks are acknowledged by nodes 1 and 2.
    c.kill(3).unwrap();
    for (id, bytes, _) in &chunks[..2] {
        ag.upload_chunk(upload(&job, id, bytes))
            .await
            .expect("upload");
    }
    // Node 2 down too: refused, and the error says why.
    c.kill(2).unwrap();
    let s = ag
        .upload_chunk(upload(&job, &chunks[2].0, &chunks[2].1))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(s.message().contains("majority"), "{}", s.message());

    // Both return; a backup of the first two chunks commits, and repair copies them to node 3.
    c.start_node(2).unwrap();
    c.start_node(3).unwrap();
    formed(&c, &viewer).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ag
            .commit_backup(commit_request(&keys, &job, &[&chunks[0], &chunks[1]]))
            .await
        {
            Ok(_) => break,
            Err(s) if Instant::now() < deadline && s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("commit after the nodes returned: {s:?}"),
        }
    }
    until("repair to bring both chunks to node 3", || {
        chunks[..2]
            .iter()
            .all(|(id, _, _)| c.chunk_file(3, id).is_file())
    })
    .await;
    for (id, _, _) in &chunks[..2] {
        for n in [1, 2, 3] {
            assert!(c.chunk_file(n, id).is_file(), "node {n} holds {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_uploads_and_leaves_the_node_sound() {
    install_crypto_provider();
    const RESERVE: u64 = 8 << 20;
    let options = ClusterOptions {
        min_free_bytes: RESERVE,
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start(3, options).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let agent = c.pki.issue(Role::Agent, "db-1", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    formed(&c, &viewer).await;
    // Nodes 2 and 3 move onto small tmpfs disks, so a majority lacks room.
    let mut mounts = Vec::new();
    for n in [2, 3] {
        c.stop_node(n).unwrap();
        mounts.push(c.move_data_to_tmpfs(n, 64 << 20).expect("tmpfs"));
        c.start_node(n).unwrap();
    }
    formed(&c, &viewer).await;
    let mut ag = AgentServiceClient::new(c.channel(1, &agent).unwrap());
    ag.register(register_orders(&c)).await.unwrap();
    let job = backup_job(&c, &operator).await;
    let keys = FleetKey::from_bytes(1, [7; 32]).service_keys("orders");
    let chunks = chunks(&keys, 2, 3 << 20);

    // Fill both disks to 10 MiB free: a 3 MiB chunk would eat into the 8 MiB reserve.
    let fillers: Vec<PathBuf> = mounts.iter().map(|m| m.path().join("filler")).collect();
    for f in &fillers {
        let st = nix::sys::statvfs::statvfs(f.parent().unwrap()).unwrap();
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        let len = free.saturating_sub(10 << 20);
        std::fs::write(f, vec![0u8; len as usize]).unwrap();
    }
    let s = ag
        .upload_chunk(upload(&job, &chunks[0].0, &chunks[0].1))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    for needle in ["node 2", "node 3", "free space", "majority"] {
        assert!(s.message().contains(needle), "{needle}: {}", s.message());
    }
    for n in [2, 3] {
        assert!(
            !c.chunk_file(n, &chunks[0].0).exists(),
            "nothing stored on node {n}"
        );
    }
    // Refused again and again: each node logs the episode once, not once a chunk.
    for _ in 0..5 {
        ag.upload_chunk(upload(&job, &chunks[0].0, &chunks[0].1))
            .await
            .unwrap_err();
    }
    let refusals = |n: u64| {
        c.node(n)
            .log_text()
            .matches("chunk writes refused: the disk reserve is reached")
            .count()
    };
    for n in [2, 3] {
        assert_eq!(refusals(n), 1, "node {n}:\n{}", c.node(n).log_text());
    }

    // The catalog still takes writes through every node, and every node still answers.
    for n in [1, 2, 3] {
        let mut ag = AgentServiceClient::new(c.channel(n, &agent).unwrap());
        ag.register(register_orders(&c))
            .await
            .unwrap_or_else(|s| panic!("catalog write through node {n} on a full disk: {s:?}"));
    }
    assert_eq!(c.running_ids(), vec![1, 2, 3], "no node died");

    // Room again on node 3: uploads succeed.
    std::fs::remove_file(&fillers[1]).unwrap();
    ag.upload_chunk(upload(&job, &chunks[1].0, &chunks[1].1))
        .await
        .expect("upload once node 3 has room");
    assert!(c.chunk_file(3, &chunks[1].0).is_file());
    assert!(
        c.node(3).log_text().contains("chunk writes taken again"),
        "{}",
        c.node(3).log_text()
    );
    drop(c);
    drop(mounts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_need_a_majority_and_reads_survive_bad_copies() {
    install_crypto_provider();
    let mut c = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let agent = c.pki.issue(Role::Agent, "db-1", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    formed(&c, &viewer).await;
    let mut ag = AgentServiceClient::new(c.channel(1, &agent).unwrap());
    ag.register(register_orders(&c)).await.unwrap();
    let keys = FleetKey::from_bytes(1, [3; 32]).service_keys("orders");
    let chunks = chunks(&keys, 3, 300_000);
    let (id1, bytes1) = (chunks[0].0, chunks[0].1.clone());
    let have = |job: &JobInfo| HaveChunksRequest {
        job_id: job.id.clone(),
        ids: vec![id1.as_bytes().to_vec().into()],
    };

    // Chunk calls need a backup job of this host.
    let s = ag
        .have_chunks(HaveChunksRequest {
            job_id: String::new(),
            ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let job = backup_job(&c, &operator).await;

    // All up: acknowledged, and every node holds the chunk soon after.
    let missing = ag.have_chunks(have(&job)).await.unwrap();
    assert_eq!(missing.into_inner().missing.len(), 1);
    ag.upload_chunk(upload(&job, &id1, &bytes1))
        .await
        .expect("upload");
    until("the chunk to reach every node", || {
        [1, 2, 3].iter().all(|n| c.chunk_file(*n, &id1).is_file())
    })
    .await;
    let missing = ag.have_chunks(have(&job)).await.unwrap();
    assert!(missing.into_inner().missing.is_empty());
    ag.commit_backup(commit_request(&keys, &job, &[&chunks[0]]))
        .await
        .expect("commit");
    // The job is done: its id no longer opens chunk calls.
    let s = ag.have_chunks(have(&job)).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");

    // A deleted, then a corrupted copy on node 1: reads through node 1 still give the right
    // bytes, and node 1's copy is healed.
    let mut op = OperatorServiceClient::new(c.channel(1, &operator).unwrap());
    let download = |id: &strongbox_core::ids::ChunkId| DownloadChunkRequest {
        backup_id: job.backup_id.clone(),
        id: id.as_bytes().to_vec().into(),
    };
    std::fs::remove_file(c.chunk_file(1, &id1)).unwrap();
    let got = op.download_chunk(download(&id1)).await.unwrap();
    assert_eq!(got.into_inner().sealed.as_ref(), bytes1.as_slice());
    assert!(c.chunk_file(1, &id1).is_file(), "healed after the read");
    let mut raw = std::fs::read(c.chunk_file(1, &id1)).unwrap();
    raw[1000] ^= 0x20;
    std::fs::write(c.chunk_file(1, &id1), &raw).unwrap();
    let got = op.download_chunk(download(&id1)).await.unwrap();
    assert_eq!(got.into_inner().sealed.as_ref(), bytes1.as_slice());
    // Only the backup's own chunks are served.
    let s = op.download_chunk(download(&chunks[1].0)).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // One node down: uploads still succeed.
    let job = backup_job(&c, &operator).await;
    c.kill(3).unwrap();
    let (id2, bytes2) = (chunks[1].0, &chunks[1].1);
    ag.upload_chunk(upload(&job, &id2, bytes2))
        .await
        .expect("upload with one node down");
    assert!(c.chunk_file(1, &id2).is_file() && c.chunk_file(2, &id2).is_file());

    // Two down: refused with a clear error.
    c.kill(2).unwrap();
    let (id3, bytes3) = (chunks[2].0, &chunks[2].1);
    let s = ag
        .upload_chunk(upload(&job, &id3, bytes3))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(s.message().contains("majority"), "{}", s.message());

    // Garbage is refused before it is stored.
    let s = ag
        .upload_chunk(upload(&job, &id3, b"not a sealed chunk"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
}

mod gc {
    use super::*;
    use strongbox_core::chunk::Opener;
    use strongbox_proto::v1::PurgeBackupRequest;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repair_restores_copies_and_gc_sweeps_only_unused_old_chunks() {
        install_crypto_provider();
        let options = ClusterOptions {
            maintenance_interval: Duration::from_millis(200),
            gc_grace: Duration::from_secs(4),
            ..ClusterOptions::default()
        };
        let c = Cluster::start(3, options).expect("cluster");
        let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
        let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
        let agent = c.pki.issue(Role::Agent, "db-1", &[]).unwrap();
        formed(&c, &viewer).await;
        let mut ag = AgentServiceClient::new(c.channel(1, &agent).unwrap());
        ag.register(register_orders(&c)).await.unwrap();

        let keys = FleetKey::from_bytes(1, [42; 32]).service_keys("orders");
        let mut sealer = Sealer::new(Some(3)).unwrap();
        let mut chunk = |seed: u32| {
            let plain: Vec<u8> = (0..100_000u32)
                .flat_map(|i| (i.wrapping_mul(seed)).to_le_bytes())
                .collect();
            let s = sealer.seal(&keys, &plain).unwrap();
            (s.id, s.bytes, plain)
        };
        let (a, b, cc, d) = (chunk(3), chunk(5), chunk(7), chunk(11));
        let j1 = backup_job(&c, &operator).await;
        for (id, bytes, _) in [&a, &b, &cc] {
            ag.upload_chunk(upload(&j1, id, bytes)).await.unwrap();
        }
        let commit = |job: &JobInfo, parts: &[&Sealed]| commit_request(&keys, job, parts);
        ag.commit_backup(commit(&j1, &[&a, &b]))
            .await
            .expect("commit b1");
        let b1 = j1.backup_id.clone();
        let j2 = backup_job(&c, &operator).await;
        ag.commit_backup(commit(&j2, &[&a, &cc]))
            .await
            .expect("commit b2");
        let j3 = backup_job(&c, &operator).await;
        // Another host's agent may not commit a backup of this host's service.
        let other = c.pki.issue(Role::Agent, "db-2", &[]).unwrap();
        let mut other = AgentServiceClient::new(c.channel(1, &other).unwrap());
        let s = other.commit_backup(commit(&j3, &[&a])).await.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        // A manifest naming a chunk no node holds is refused.
        let s = ag.commit_backup(commit(&j3, &[&a, &d])).await.unwrap_err();
        assert!(s.message().contains("majority"), "{s:?}");

        // Repair: a deleted copy and a corrupt copy come back.
        std::fs::remove_file(c.chunk_file(2, &cc.0)).unwrap();
        let pa = c.chunk_file(3, &a.0);
        let mut raw = std::fs::read(&pa).unwrap();
        raw[10] ^= 1;
        std::fs::write(&pa, &raw).unwrap();
        until("repair of the deleted copy", || {
            c.chunk_file(2, &b.0).is_file()
        })
        .await;
        until("repair of the corrupt copy", || {
            std::fs::read(&pa).is_ok_and(|now| now != raw)
        })
        .await;

        // GC: once b1's own chunk is older than the grace period, purge b1 and start another
        // upload; b1's chunk goes from every node, shared and in-progress chunks stay.
        let age = |p: PathBuf| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default())
        };
        until("b1's chunk to age past the grace period", || {
            [1, 2, 3]
                .iter()
                .all(|n| age(c.chunk_file(*n, &b.0)).is_ok_and(|a| a > Duration::from_secs(4)))
        })
        .await;
        let mut op = OperatorServiceClient::new(c.channel(2, &operator).unwrap());
        op.purge_backup(PurgeBackupRequest { backup_id: b1 })
            .await
            .expect("purge");
        ag.upload_chunk(upload(&j3, &d.0, &d.1)).await.unwrap(); // an upload in progress
        until("b1's own chunk swept from every node", || {
            [1, 2, 3].iter().all(|n| !c.chunk_file(*n, &b.0).exists())
        })
        .await;
        for n in [1, 2, 3] {
            assert!(
                c.chunk_file(n, &a.0).is_file(),
                "shared chunk kept on node {n}"
            );
            assert!(
                c.chunk_file(n, &cc.0).is_file(),
                "b2's chunk kept on node {n}"
            );
        }
        assert!(
            [1, 2, 3]
                .iter()
                .filter(|n| c.chunk_file(**n, &d.0).is_file())
                .count()
                >= 2,
            "the in-progress upload is kept"
        );

        // b2 still restores: every chunk opens with the keys.
        let mut opener = Opener::new().unwrap();
        for (id, _, plain) in [&a, &cc] {
            let got = op
                .download_chunk(DownloadChunkRequest {
                    backup_id: j2.backup_id.clone(),
                    id: id.as_bytes().to_vec().into(),
                })
                .await
                .unwrap();
            assert_eq!(
                &opener.open(&keys, id, &got.into_inner().sealed).unwrap(),
                plain
            );
        }
    }
}
