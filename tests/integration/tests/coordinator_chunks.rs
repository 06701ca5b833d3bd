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
