//! A Raft snapshot carries the whole catalog: every record kind written by real commands comes
//! back byte for byte in another node's catalog, and a snapshot or a catalog of another record
//! format is refused with a message that says what to do (catalog/format.rs).

mod common;
use common::{CallerRole, Sim};

use prost::Message;
use strongbox_coordinator::catalog::format::FORMAT;
use strongbox_coordinator::catalog::Catalog;
use strongbox_proto::catalog::{
    command::Op, BackupRecord, BindHost, CatalogSnapshot, CommitBackup, CreateJob, HoldBackup,
    HostSession, JobRecord, MemberRecord, Policy, RegisterHost, SetNode, SetPolicy, SetRegion,
    Tick,
};
use strongbox_proto::v1::{BackupKind, BackupState, Engine, JobKind, JobState, MemberRole};

const T0: u64 = 1_800_000_000_000;

/// Every kind of key the catalog writes (catalog/mod.rs), each present after the commands below.
const KINDS: [&str; 26] = [
    "applied",
    "format",
    "clock",
    "region/",
    "node/",
    "node-seen/",
    "host/",
    "service/",
    "policy/",
    "backup/",
    "manifest/",
    "job/",
    "jobs-open-service/",
    "jobs-open-host/",
    "jobs-waiting/",
    "jobs-finished/",
    "jobs-finished-service/",
    "jobs-created/",
    "backups-service/",
    "backups-time/",
    "hosts-service/",
    "hosts-spare/",
    "hosts-session-node/",
    "req/",
    "req-time/",
    "audit/",
];

fn applied(sim: &mut Sim, role: CallerRole, at: u64, op: Op) {
    let e = sim.apply_as(role, None, at, op);
    assert!(e.is_empty(), "{e}");
}

fn job(id: &str, kind: JobKind, backup: &str, backup_kind: BackupKind) -> JobRecord {
    JobRecord {
        id: id.into(),
        kind: kind.into(),
        service: "orders".into(),
        host: "db-1".into(),
        backup_id: backup.into(),
        backup_kind: backup_kind.into(),
        engine: Engine::Postgres.into(),
        ..Default::default()
    }
}

/// A catalog holding every record kind, made by the commands that make them in a region.
fn full_catalog() -> Sim {
    let mut sim = Sim::new();
    let t = T0;
    applied(
        &mut sim,
        CallerRole::Node,
        t,
        Op::SetRegion(SetRegion {
            name: "test-1".into(),
            copies_to: vec![],
        }),
    );
    applied(
        &mut sim,
        CallerRole::Node,
        t,
        Op::SetNode(SetNode {
            id: 1,
            address: "127.0.0.11:7443".into(),
            name: "node-1".into(),
        }),
    );
    applied(
        &mut sim,
        CallerRole::Agent,
        t,
        Op::RegisterHost(RegisterHost {
            host: "db-1".into(),
            region: "test-1".into(),
            spare: false,
            members: vec![MemberRecord {
                service: "orders".into(),
                engine: Engine::Postgres.into(),
                role: MemberRole::Primary.into(),
                healthy: true,
                engine_version: "15".into(),
            }],
        }),
    );
    // Its agent's session on node 1, which answered the leader's clock ask.
    applied(
        &mut sim,
        CallerRole::Node,
        t,
        Op::HostSession(HostSession {
            host: "db-1".into(),
            session_id: "s-1".into(),
            open: true,
            node: "node-1".into(),
            grace_ms: 1000,
            node_id: 1,
        }),
    );
    applied(
        &mut sim,
        CallerRole::Node,
        t,
        Op::Tick(Tick {
            clocks: vec![t],
            voters: 1,
            answered: vec![1],
        }),
    );
    // An approved spare.
    applied(
        &mut sim,
        CallerRole::Agent,
        t,
        Op::RegisterHost(RegisterHost {
            host: "spare-1".into(),
            region: "test-1".into(),
            spare: true,
            members: vec![],
        }),
    );
    applied(
        &mut sim,
        CallerRole::Operator,
        t,
        Op::BindHost(BindHost {
            host: "spare-1".into(),
            spare: Some(true),
            ..Default::default()
        }),
    );
    applied(
        &mut sim,
        CallerRole::Operator,
        t,
        Op::SetPolicy(SetPolicy {
            service: String::new(),
            policy: Some(Policy {
                daily: Some(7),
                ..Default::default()
            }),
            reset: false,
        }),
    );
    // A committed backup (its manifest indexed), held.
    applied(
        &mut sim,
        CallerRole::Operator,
        t + 1000,
        Op::CreateJob(CreateJob {
            job: Some(job("j0", JobKind::Backup, "b0", BackupKind::Manual)),
        }),
    );
    applied(
        &mut sim,
        CallerRole::Agent,
        t + 2000,
        Op::CommitBackup(CommitBackup {
            backup: Some(BackupRecord {
                id: "b0".into(),
                service: "orders".into(),
                host: "db-1".into(),
                manifest_id: vec![7; 32].into(),
                plain_bytes: 1000,
                ..Default::default()
            }),
            job_id: "j0".into(),
        }),
    );
    applied(
        &mut sim,
        CallerRole::Operator,
        t + 3000,
        Op::HoldBackup(HoldBackup {
            backup_id: "b0".into(),
            held: true,
            reason: "audit".into(),
        }),
    );
    // An in-place restore of it behind its pre-restore backup: open and waiting jobs.
    applied(
        &mut sim,
        CallerRole::Operator,
        t + 4000,
        Op::CreateJob(CreateJob {
            job: Some(job("j1", JobKind::Backup, "b1", BackupKind::PreRestore)),
        }),
    );
    let mut restore = job("j2", JobKind::Restore, "b0", BackupKind::Unspecified);
    restore.in_place = true;
    restore.after_job = "j1".into();
    applied(
        &mut sim,
        CallerRole::Operator,
        t + 4000,
        Op::CreateJob(CreateJob { job: Some(restore) }),
    );
    sim
}

/// The catalog's keys and values, in order.
fn entries(c: &Catalog) -> CatalogSnapshot {
    CatalogSnapshot::decode(c.snapshot_bytes().expect("snapshot").as_slice()).expect("decodes")
}

#[test]
fn a_snapshot_with_every_record_kind_round_trips_byte_for_byte() {
    let sim = full_catalog();
    let snap = entries(&sim.catalog);
    assert_eq!(snap.format, FORMAT);
    for kind in KINDS {
        assert!(
            snap.entries
                .iter()
                .any(|kv| kv.key.starts_with(kind.as_bytes())),
            "no {kind} record in the snapshot"
        );
    }
    let bytes = sim.catalog.snapshot_bytes().expect("snapshot");

    let other = Sim::new();
    other.catalog.restore(&bytes, sim.index).expect("installs");
    assert_eq!(
        entries(&other.catalog),
        snap,
        "the same records, byte for byte"
    );
    // Read back as records, with their enums.
    let b0 = other.catalog.backup("b0").expect("read").expect("b0");
    assert_eq!(b0.state(), BackupState::Completed);
    assert!(b0.held);
    let j2 = other.catalog.job("j2").expect("read").expect("j2");
    assert_eq!(
        (j2.kind(), j2.state()),
        (JobKind::Restore, JobState::Waiting)
    );
    assert_eq!(other.catalog.applied_index().expect("index"), sim.index);
}

#[test]
fn a_snapshot_or_a_catalog_of_another_format_is_refused() {
    let sim = full_catalog();
    let mut old = entries(&sim.catalog);
    old.format = FORMAT - 1;
    let other = Sim::new();
    let e = other
        .catalog
        .restore(&old.encode_to_vec(), 9)
        .expect_err("another format");
    assert!(e.to_string().contains("format"), "{e}");
    assert_eq!(
        other.catalog.applied_index().expect("index"),
        0,
        "nothing installed"
    );

    // A node's own catalog written by another format, or before formats were recorded.
    for format in [Some(FORMAT + 1), None] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new().path(dir.path()).open().expect("sled");
        let tree = db.open_tree("catalog").expect("tree");
        tree.insert(b"host/db-1", vec![]).expect("insert");
        if let Some(f) = format {
            tree.insert(b"format", &f.to_be_bytes()).expect("insert");
        }
        let e = Catalog::open(&db).err().expect("refused");
        assert!(
            e.to_string().contains("empty data folder"),
            "says what to do: {e}"
        );
    }
}
