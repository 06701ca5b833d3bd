//! The chunk store across a 3-node cluster: uploads acknowledged by a majority, refused without
//! one, and reads that survive a missing or corrupt copy (and heal it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use strongbox_core::chunk::Sealer;
use strongbox_core::keys::FleetKey;
use strongbox_core::pki::Role;
use strongbox_core::tls::{install_crypto_provider, TlsFiles};
use strongbox_integration::cluster::{Cluster, ClusterOptions};
use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{
    ClusterStatusRequest, FetchChunkRequest, HaveChunksRequest, UploadChunkRequest,
};
use tonic::Code;

fn chunk_file(c: &Cluster, node: u64, id: &strongbox_core::ids::ChunkId) -> PathBuf {
    let hex = id.to_hex();
    c.data_dir(node)
        .join("chunks")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(hex)
}

async fn formed(c: &Cluster, tls: &TlsFiles) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut op = OperatorServiceClient::new(c.channel(1, tls).unwrap());
        if let Ok(r) = op.cluster_status(ClusterStatusRequest {}).await {
            let r = r.into_inner();
            if r.leader_id != 0 && r.nodes.iter().filter(|n| n.voter).count() == 3 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the cluster did not form");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sealed(n: u8) -> (strongbox_core::ids::ChunkId, Vec<u8>) {
    let keys = FleetKey::from_bytes(1, [n; 32]).service_keys("svc");
    let plain: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i ^ u32::from(n)).to_le_bytes())
        .collect();
    let s = Sealer::new(Some(3)).unwrap().seal(&keys, &plain).unwrap();
    (s.id, s.bytes)
}

fn upload(id: &strongbox_core::ids::ChunkId, bytes: &[u8]) -> UploadChunkRequest {
    UploadChunkRequest {
        job_id: String::new(),
        id: id.as_bytes().to_vec().into(),
        sealed: bytes.to_vec().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_need_a_majority_and_reads_survive_bad_copies() {
    install_crypto_provider();
    let mut c = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let agent = c.pki.issue(Role::Agent, "db-1", &[]).unwrap();
    formed(&c, &viewer).await;
    let mut ag = AgentServiceClient::new(c.channel(1, &agent).unwrap());

    // All up: acknowledged, and every node holds the chunk soon after.
    let (id1, bytes1) = sealed(1);
    let missing = ag
        .have_chunks(HaveChunksRequest {
            job_id: String::new(),
            ids: vec![id1.as_bytes().to_vec().into()],
        })
        .await
        .unwrap();
    assert_eq!(missing.into_inner().missing.len(), 1);
    ag.upload_chunk(upload(&id1, &bytes1))
        .await
        .expect("upload");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ![1, 2, 3].iter().all(|n| chunk_file(&c, *n, &id1).is_file()) {
        assert!(
            Instant::now() < deadline,
            "the chunk did not reach every node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = ag
        .have_chunks(HaveChunksRequest {
            job_id: String::new(),
            ids: vec![id1.as_bytes().to_vec().into()],
        })
        .await
        .unwrap();
    assert!(missing.into_inner().missing.is_empty());

    // A deleted, then a corrupted copy on node 1: reads through node 1 still give the right
    // bytes, and node 1's copy is healed.
    std::fs::remove_file(chunk_file(&c, 1, &id1)).unwrap();
    let got = ag
        .fetch_chunk(FetchChunkRequest {
            job_id: String::new(),
            id: id1.as_bytes().to_vec().into(),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().sealed.as_ref(), bytes1.as_slice());
    assert!(chunk_file(&c, 1, &id1).is_file(), "healed after the read");
    let mut raw = std::fs::read(chunk_file(&c, 1, &id1)).unwrap();
    raw[1000] ^= 0x20;
    std::fs::write(chunk_file(&c, 1, &id1), &raw).unwrap();
    let got = ag
        .fetch_chunk(FetchChunkRequest {
            job_id: String::new(),
            id: id1.as_bytes().to_vec().into(),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().sealed.as_ref(), bytes1.as_slice());

    // One node down: uploads still succeed.
    c.kill(3).unwrap();
    let (id2, bytes2) = sealed(2);
    ag.upload_chunk(upload(&id2, &bytes2))
        .await
        .expect("upload with one node down");
    assert!(chunk_file(&c, 1, &id2).is_file() && chunk_file(&c, 2, &id2).is_file());

    // Two down: refused with a clear error.
    c.kill(2).unwrap();
    let (id3, bytes3) = sealed(3);
    let s = ag.upload_chunk(upload(&id3, &bytes3)).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(s.message().contains("majority"), "{}", s.message());

    // Garbage is refused before it is stored.
    let s = ag
        .upload_chunk(upload(&id3, b"not a sealed chunk"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
}

mod gc {
    use super::*;
    use strongbox_core::chunk::Opener;
    use strongbox_core::manifest::{ChunkRef, Manifest, Part, PartKind};
    use strongbox_proto::v1::{CommitBackupRequest, Member, PurgeBackupRequest, RegisterRequest};

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

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
        ag.register(RegisterRequest {
            host: "db-1".into(),
            region: c.options.region.clone(),
            spare: false,
            agent_version: "test".into(),
            members: vec![Member {
                service: "orders".into(),
                engine: "postgres".into(),
                role: "primary".into(),
                healthy: true,
                engine_version: "15".into(),
            }],
        })
        .await
        .unwrap();

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
        for (id, bytes, _) in [&a, &b, &cc] {
            ag.upload_chunk(upload(id, bytes)).await.unwrap();
        }
        let commit = |backup: &str, parts: &[&(strongbox_core::ids::ChunkId, Vec<u8>, Vec<u8>)]| {
            let m = Manifest {
                backup_id: backup.into(),
                service: "orders".into(),
                created_unix_ms: 1,
                engine: "postgres".into(),
                engine_version: "15".into(),
                parts: vec![Part {
                    name: "orders".into(),
                    kind: PartKind::Database as i32,
                    chunks: parts
                        .iter()
                        .map(|(id, bytes, plain)| ChunkRef {
                            id: id.as_bytes().to_vec(),
                            plain_size: plain.len() as u64,
                            stored_size: bytes.len() as u64,
                        })
                        .collect(),
                    tables: vec![],
                }],
                totals: None,
            };
            let sealed = m.seal(&keys).unwrap();
            CommitBackupRequest {
                job_id: String::new(),
                backup_id: backup.into(),
                manifest_id: bytes::Bytes::copy_from_slice(blake3::hash(&sealed).as_bytes()),
                manifest: sealed.into(),
                service: "orders".into(),
                kind: "manual".into(),
                plain_bytes: 0,
                stored_bytes: 0,
                created_unix_ms: 1,
            }
        };
        ag.commit_backup(commit("b1", &[&a, &b]))
            .await
            .expect("commit b1");
        ag.commit_backup(commit("b2", &[&a, &cc]))
            .await
            .expect("commit b2");
        // Another host's agent may not commit a backup of this host's service.
        let other = c.pki.issue(Role::Agent, "db-2", &[]).unwrap();
        let mut other = AgentServiceClient::new(c.channel(1, &other).unwrap());
        let s = other.commit_backup(commit("b9", &[&a])).await.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        // A manifest naming a chunk no node holds is refused.
        let s = ag.commit_backup(commit("b3", &[&a, &d])).await.unwrap_err();
        assert!(s.message().contains("majority"), "{s:?}");

        // Repair: a deleted copy and a corrupt copy come back.
        std::fs::remove_file(chunk_file(&c, 2, &cc.0)).unwrap();
        let pa = chunk_file(&c, 3, &a.0);
        let mut raw = std::fs::read(&pa).unwrap();
        raw[10] ^= 1;
        std::fs::write(&pa, &raw).unwrap();
        until("repair of the deleted copy", || {
            chunk_file(&c, 2, &b.0).is_file()
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
                .all(|n| age(chunk_file(&c, *n, &b.0)).is_ok_and(|a| a > Duration::from_secs(4)))
        })
        .await;
        let mut op = OperatorServiceClient::new(c.channel(2, &operator).unwrap());
        op.purge_backup(PurgeBackupRequest {
            backup_id: "b1".into(),
        })
        .await
        .expect("purge");
        ag.upload_chunk(upload(&d.0, &d.1)).await.unwrap(); // an upload in progress
        until("b1's own chunk swept from every node", || {
            [1, 2, 3].iter().all(|n| !chunk_file(&c, *n, &b.0).exists())
        })
        .await;
        for n in [1, 2, 3] {
            assert!(
                chunk_file(&c, n, &a.0).is_file(),
                "shared chunk kept on node {n}"
            );
            assert!(
                chunk_file(&c, n, &cc.0).is_file(),
                "b2's chunk kept on node {n}"
            );
        }
        assert!(
            [1, 2, 3]
                .iter()
                .filter(|n| chunk_file(&c, **n, &d.0).is_file())
                .count()
                >= 2,
            "the in-progress upload is kept"
        );

        // b2 still restores: every chunk opens with the keys.
        let mut opener = Opener::new().unwrap();
        for (id, _, plain) in [&a, &cc] {
            let got = ag
                .fetch_chunk(FetchChunkRequest {
                    job_id: String::new(),
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
