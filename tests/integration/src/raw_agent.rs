//! An agent spoken to by hand: requests an agent's certificate may send, built without an
//! agent process, for tests of what a coordinator accepts (and refuses) from agents.
//!
//! Job: the registrations, sealed chunks and commits that `coordinator_*` tests send over
//! `AgentService` themselves, so each test states only what it changes.

use strongbox_core::chunk::Sealer;
use strongbox_core::ids::ChunkId;
use strongbox_core::keys::ServiceKeys;
use strongbox_core::manifest::{ChunkRef, Manifest, Part, PartKind};
use strongbox_proto::v1::{
    BackupKind, CommitBackupRequest, Engine, JobInfo, Member, MemberRole, RegisterRequest,
    UploadChunkRequest,
};

/// A sealed chunk: id, sealed bytes, plaintext.
pub type Sealed = (ChunkId, Vec<u8>, Vec<u8>);

/// A healthy PostgreSQL member of `service` in `role`.
pub fn member(service: &str, role: MemberRole) -> Member {
    Member {
        service: service.into(),
        engine: Engine::Postgres.into(),
        role: role.into(),
        healthy: true,
        engine_version: "15".into(),
    }
}

/// The registration of `host` in `region`.
pub fn register(host: &str, region: &str, spare: bool, members: Vec<Member>) -> RegisterRequest {
    RegisterRequest {
        host: host.into(),
        region: region.into(),
        spare,
        agent_version: "test".into(),
        members,
    }
}

/// `n` incompressible chunks of about `size` bytes each, sealed with `keys`; chunk `k` is
/// the same for the same `k` every time.
pub fn chunks(keys: &ServiceKeys, n: u32, size: usize) -> Vec<Sealed> {
    let mut sealer = Sealer::new(Some(3)).expect("sealer");
    (0..n)
        .map(|k| {
            let mut plain = vec![0u8; size];
            let mut x = blake3::Hasher::new();
            x.update(&k.to_le_bytes());
            x.finalize_xof().fill(&mut plain);
            let s = sealer.seal(keys, &plain).expect("seal");
            (s.id, s.bytes, plain)
        })
        .collect()
}

/// The upload of one sealed chunk within `job`.
pub fn upload(job: &JobInfo, id: &ChunkId, bytes: &[u8]) -> UploadChunkRequest {
    UploadChunkRequest {
        job_id: job.id.clone(),
        id: id.as_bytes().to_vec().into(),
        sealed: bytes.to_vec().into(),
    }
}

/// The commit of `job`'s backup whose one part is `parts`, with a manifest made for it.
pub fn commit_request(keys: &ServiceKeys, job: &JobInfo, parts: &[&Sealed]) -> CommitBackupRequest {
    let m = Manifest {
        backup_id: job.backup_id.clone(),
        service: job.service.clone(),
        created_unix_ms: 1,
        engine: "postgres".into(),
        engine_version: "15".into(),
        parts: vec![Part {
            name: job.service.clone(),
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
        left_out: vec![],
    };
    let sealed = m.seal(keys).expect("seal the manifest");
    CommitBackupRequest {
        job_id: job.id.clone(),
        backup_id: job.backup_id.clone(),
        manifest_id: bytes::Bytes::copy_from_slice(blake3::hash(&sealed).as_bytes()),
        manifest: sealed.into(),
        service: job.service.clone(),
        kind: BackupKind::Manual.into(),
        plain_bytes: 0,
        stored_bytes: 0,
        created_unix_ms: 1,
        table_count: 0,
    }
}
