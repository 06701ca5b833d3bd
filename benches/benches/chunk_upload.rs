//! Chunk upload into 3 local coordinator processes (each chunk acknowledged once a majority
//! fsynced it) against the least such durability costs on one disk: writing the same bytes to
//! two local files with fsync. Target: at most 1.3x the baseline's time.
//!
//! The third (minority) copy is written lazily, without fsync, so its flush is off the critical
//! path; on this one shared disk the kernel still writes it back, partly after the timed upload
//! ends. Each side starts after a `sync`, so neither pays for the other's dirty pages.
//!
//! Chunks go up as the agent sends them: `UploadChunks` calls of a few chunks each.
//!
//! `cargo bench -p strongbox-benches --bench chunk_upload`; `UPLOAD_MB` (default 2048),
//! `STREAMS` (concurrent calls, default 8) and `BATCH` (chunks a call, default 4).

use std::io::Write;
use std::sync::Arc;

use strongbox_benches::{cluster_options, Timer};
use strongbox_core::chunk::Sealer;
use strongbox_core::keys::FleetKey;
use strongbox_core::pki::Role;
use strongbox_integration::cluster::Cluster;
use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::v1::{Member, RegisterRequest, SealedChunk, UploadChunksRequest};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Distinct sealed chunks of about 1 MiB (random, so stored uncompressed like real sealed data).
fn chunks(total: usize) -> Vec<(Vec<u8>, bytes::Bytes)> {
    use rand::{RngCore, SeedableRng};
    let keys = FleetKey::from_bytes(1, [1; 32]).service_keys("bench");
    let mut sealer = Sealer::new(None).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut plain = vec![0u8; 1 << 20];
    (0..total.div_ceil(1 << 20))
        .map(|_| {
            rng.fill_bytes(&mut plain);
            let s = sealer.seal(&keys, &plain).unwrap();
            (s.id.as_bytes().to_vec(), s.bytes.into())
        })
        .collect()
}

#[tokio::main]
async fn main() {
    strongbox_core::tls::install_crypto_provider();
    let smoke = !std::env::args().any(|a| a == "--bench");
    let total = if smoke {
        32 << 20
    } else {
        env_num("UPLOAD_MB", 2048) << 20
    };
    let streams = env_num("STREAMS", 8);
    let batch = env_num("BATCH", 4).max(1);
    let data = Arc::new(chunks(total));
    let bytes: usize = data.iter().map(|(_, b)| b.len()).sum();

    // Baseline: the same chunks written to two files each (temp, write, fsync), as two nodes
    // on this one disk must at least do.
    let dir = tempfile::tempdir().unwrap();
    let t = Timer::start();
    for (i, (_, b)) in data.iter().enumerate() {
        for copy in 0..2 {
            let mut f = std::fs::File::create(dir.path().join(format!("{i}.{copy}"))).unwrap();
            f.write_all(b).unwrap();
            f.sync_all().unwrap();
        }
    }
    let baseline = t.stop();
    // The baseline's files stay until the end: deleting them here would make our side pay the
    // file system's work on thousands of freshly freed inodes.
    let _baseline_files = dir;

    let c = Cluster::start(3, cluster_options()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "bench", &[]).unwrap();
    let agent = c.pki.issue(Role::Agent, "bench-host", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "bench", &[]).unwrap();
    let leader = c.wait_for_leader(&viewer, 3).await.expect("cluster");
    let channel = c.channel(leader, &agent).unwrap();
    AgentServiceClient::new(channel.clone())
        .register(RegisterRequest {
            host: "bench-host".into(),
            region: c.options.region.clone(),
            spare: false,
            agent_version: "bench".into(),
            members: vec![Member {
                service: "bench".into(),
                engine: strongbox_proto::v1::Engine::Sqlite.into(),
                role: strongbox_proto::v1::MemberRole::Standalone.into(),
                healthy: true,
                engine_version: "3".into(),
            }],
        })
        .await
        .expect("register");
    let job = c.create_backup_job(&operator, "bench").await.expect("job");
    let calls: Arc<Vec<Vec<SealedChunk>>> = Arc::new(
        data.chunks(batch)
            .map(|b| {
                b.iter()
                    .map(|(id, sealed)| SealedChunk {
                        id: id.clone().into(),
                        sealed: sealed.clone(),
                    })
                    .collect()
            })
            .collect(),
    );
    let t = Timer::start();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let (calls, channel, job_id) = (calls.clone(), channel.clone(), job.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = AgentServiceClient::new(channel)
                .max_encoding_message_size(strongbox_proto::MAX_MESSAGE_BYTES);
            for chunks in calls.iter().skip(s).step_by(streams) {
                client
                    .upload_chunks(UploadChunksRequest {
                        job_id: job_id.clone(),
                        chunks: chunks.clone(),
                    })
                    .await
                    .expect("upload");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ours = t.stop();
    let ratio = ours.wall.as_secs_f64() / baseline.wall.as_secs_f64();
    println!(
        "chunk upload of {:.0} MB in {} chunks, {streams} streams of {batch}-chunk calls",
        bytes as f64 / 1e6,
        data.len()
    );
    println!(
        "  two local files with fsync  {baseline}  {:>7.1} MB/s",
        bytes as f64 / 1e6 / baseline.wall.as_secs_f64()
    );
    println!(
        "  3 nodes, majority ack       {ours}  {:>7.1} MB/s",
        bytes as f64 / 1e6 / ours.wall.as_secs_f64()
    );
    println!(
        "  ratio {ratio:.2} (target <= 1.30) {}",
        if ratio <= 1.3 { "ok" } else { "ABOVE TARGET" }
    );
}
