//! A Raft snapshot is the whole catalog as a file (catalog/snapshot.rs): every record kind
//! written by real commands comes back byte for byte in another node's catalog, exactly as of
//! its index even while applies go on; a damaged or foreign file is refused and changes
//! nothing; a crash between prepare and install leaves the old catalog; and a catalog of
//! another record format is refused with a message that says what to do (catalog/format.rs).

mod common;
use common::{CallerRole, Sim};

use std::path::{Path, PathBuf};

use strongbox_coordinator::catalog::format::FORMAT;
use strongbox_coordinator::catalog::snapshot::FileFacts;
use strongbox_coordinator::catalog::Catalog;
use strongbox_proto::catalog::{
    command::Op, BackupRecord, BindHost, CommitBackup, CreateJob, HoldBackup, HostSession,
    JobRecord, MemberRecord, Policy, RegisterHost, SetPolicy, SetRegion, Tick,
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
    sim.node(t, 1);
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
            grace_begins: false,
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

/// Exports `sim`'s catalog to a file in `dir`: its path, index and facts.
fn export(sim: &Sim, dir: &Path) -> (PathBuf, u64, FileFacts) {
    let e = sim.catalog.begin_export().expect("export");
    let index = e.index;
    let path = dir.join(format!("made-{index}"));
    let facts = e.write_to(&path).expect("written");
    (path, index, facts)
}

/// Prepares and installs the file in `sim`'s catalog (with no Raft log to move).
fn install(sim: &Sim, path: &Path, index: u64, facts: &FileFacts) {
    sim.catalog
        .prepare_install(path, index, facts)
        .expect("prepared");
    sim.catalog
        .install_prepared(index, sim.db.batch())
        .expect("installed");
}

#[test]
fn a_snapshot_with_every_record_kind_round_trips_byte_for_byte() {
    let sim = full_catalog();
    let entries = sim.catalog.entries().expect("entries");
    for kind in KINDS {
        assert!(
            entries.iter().any(|(k, _)| k.starts_with(kind.as_bytes())),
            "no {kind} record in the catalog"
        );
    }
    let (path, index, facts) = export(&sim, sim.dir.path());
    assert_eq!(index, sim.index);

    let other = Sim::new();
    install(&other, &path, index, &facts);
    assert_eq!(
        other.catalog.entries().expect("entries"),
        entries,
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
    // It survives a reopen: the swap was recorded.
    drop(other.catalog);
    let reopened = Catalog::open(&other.db).expect("reopen");
    assert_eq!(reopened.entries().expect("entries"), entries);
}

/// Registers `n` hosts from `from` at `at`.
fn register_hosts(sim: &mut Sim, from: usize, n: usize, at: u64) {
    for i in from..from + n {
        applied(
            sim,
            CallerRole::Agent,
            at,
            Op::RegisterHost(RegisterHost {
                host: format!("host-{i:05}"),
                region: "test-1".into(),
                spare: false,
                members: vec![MemberRecord {
                    service: format!("svc-{i:05}"),
                    engine: Engine::Postgres.into(),
                    role: MemberRole::Primary.into(),
                    healthy: true,
                    engine_version: "15".into(),
                }],
            }),
        );
    }
}

/// An export walks the catalog while applies go on: the file is the catalog exactly as of the
/// index it began at, whatever was written, overwritten or removed meanwhile.
#[test]
fn an_export_is_the_catalog_at_its_index_while_applies_go_on() {
    let mut sim = full_catalog();
    register_hosts(&mut sim, 0, 20_000, T0 + 10_000);
    // The same commands in a second catalog: what the snapshot must equal.
    let mut twin = full_catalog();
    register_hosts(&mut twin, 0, 20_000, T0 + 10_000);
    let want = twin.catalog.entries().expect("entries");
    assert_eq!(sim.catalog.entries().expect("entries"), want);

    let e = sim.catalog.begin_export().expect("export");
    let index = e.index;
    let path = sim.dir.path().join("made");
    let walking = {
        let path = path.clone();
        std::thread::spawn(move || e.write_to(&path).expect("written"))
    };
    // Meanwhile: new hosts, changed hosts (a failover: roles change), and removals (history
    // pruned far in the future is refused, so hosts are rebound instead).
    register_hosts(&mut sim, 20_000, 2_000, T0 + 20_000);
    for i in (0..20_000).step_by(7) {
        applied(
            &mut sim,
            CallerRole::Agent,
            T0 + 30_000,
            Op::RegisterHost(RegisterHost {
                host: format!("host-{i:05}"),
                region: "test-1".into(),
                spare: false,
                members: vec![],
            }),
        );
    }
    let facts = walking.join().expect("the walk");
    assert_ne!(
        sim.catalog.entries().expect("entries"),
        want,
        "the catalog moved on meanwhile"
    );

    let other = Sim::new();
    install(&other, &path, index, &facts);
    assert_eq!(
        other.catalog.entries().expect("entries"),
        want,
        "the snapshot is the catalog at index {index}"
    );
}

/// A file that is not what its reference says is refused, and so is one of another format or
/// index; nothing changes in the catalog.
#[test]
fn a_damaged_or_foreign_snapshot_file_is_refused_and_changes_nothing() {
    let sim = full_catalog();
    let (path, index, facts) = export(&sim, sim.dir.path());
    let other = full_catalog();
    let before = other.catalog.entries().expect("entries");

    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let damaged = sim.dir.path().join("damaged");
    std::fs::write(&damaged, &bytes).expect("write");
    let e = other
        .catalog
        .prepare_install(&damaged, index, &facts)
        .expect_err("a flipped bit");
    assert!(e.to_string().contains("hash"), "{e}");
    refused_unprepared(&other, &path, index + 1, &facts, "index");
    assert_eq!(other.catalog.entries().expect("entries"), before);
}

/// Preparing the file at `path` as snapshot `index` is refused with a message that says
/// `says`, and then nothing is prepared to install.
fn refused_unprepared(sim: &Sim, path: &Path, index: u64, facts: &FileFacts, says: &str) {
    let e = sim
        .catalog
        .prepare_install(path, index, facts)
        .expect_err(says);
    assert!(e.to_string().contains(says), "{says}: {e}");
    let e = sim
        .catalog
        .install_prepared(index, sim.db.batch())
        .expect_err("nothing prepared");
    assert!(e.to_string().contains("prepared"), "{e}");
}

/// A file whose every byte is the one its reference names, but whose entries are not in key
/// order (a leader's bug, or a file made by hand), is refused and changes nothing; so is a
/// frame that declares more bytes than a piece may hold.
#[test]
fn a_snapshot_file_out_of_key_order_or_with_an_oversized_frame_is_refused() {
    use prost::Message;
    use strongbox_proto::catalog::{KeyValue, SnapshotFileHeader, SnapshotPiece};
    let mut other = Sim::new();
    register_hosts(&mut other, 0, 3, T0);
    let before = other.catalog.entries().expect("entries");
    let frame = |m: &dyn Fn() -> Vec<u8>| {
        let body = m();
        [(body.len() as u32).to_be_bytes().to_vec(), body].concat()
    };
    let index = 7u64;
    let header = frame(&|| {
        SnapshotFileHeader {
            format: FORMAT,
            index,
        }
        .encode_to_vec()
    });
    let kv = |k: &[u8], v: &[u8]| KeyValue {
        key: k.to_vec().into(),
        value: v.to_vec().into(),
    };
    let piece = frame(&|| {
        SnapshotPiece {
            entries: vec![
                kv(b"format", &FORMAT.to_be_bytes()),
                kv(b"applied", &index.to_be_bytes()),
            ],
        }
        .encode_to_vec()
    });
    let oversized = [header.clone(), (u32::MAX).to_be_bytes().to_vec()].concat();
    for (name, bytes, says) in [
        ("unordered", [header, piece].concat(), "order"),
        ("oversized", oversized, "frame"),
    ] {
        let path = other.dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let facts = strongbox_coordinator::catalog::snapshot::file_facts(&path).expect("facts");
        refused_unprepared(&other, &path, index, &facts, says);
    }
    assert_eq!(other.catalog.entries().expect("entries"), before);
}

/// A node that crashes after preparing a snapshot, before installing it, restarts with its old
/// catalog, and the spare tree is emptied.
#[test]
fn a_crash_between_prepare_and_install_leaves_the_old_catalog() {
    let sim = full_catalog();
    let (path, index, facts) = export(&sim, sim.dir.path());
    let mut other = Sim::new();
    register_hosts(&mut other, 0, 10, T0);
    let before = other.catalog.entries().expect("entries");
    other
        .catalog
        .prepare_install(&path, index, &facts)
        .expect("prepared");
    drop(other.catalog);
    let reopened = Catalog::open(&other.db).expect("reopen");
    assert_eq!(reopened.entries().expect("entries"), before);
    let names = other.db.tree_names();
    let catalogs: Vec<_> = names.iter().filter(|n| n.starts_with("catalog")).collect();
    assert_eq!(
        catalogs,
        vec!["catalog"],
        "the loaded tree is dropped: {names:?}"
    );
}

/// A node restarted after it installed a snapshot and applied more has both: the loaded tree
/// and the writes after it (fjall replays its journal at the start; a journaled "clear" of the
/// tree would wipe the loaded tables, which is why the store never clears a tree).
#[test]
fn an_installed_snapshot_and_the_writes_after_it_survive_a_restart() {
    let sim = full_catalog();
    let (path, index, facts) = export(&sim, sim.dir.path());
    let mut other = Sim::new();
    register_hosts(&mut other, 0, 10, T0);
    install(&other, &path, index, &facts);
    other.index = index;
    register_hosts(&mut other, 100, 20, T0 + 60_000);
    let before = other.catalog.entries().expect("entries");
    assert!(before
        .iter()
        .any(|(k, _)| k.starts_with(b"host/host-00119")));
    let Sim {
        catalog, db, dir, ..
    } = other;
    drop(catalog);
    drop(db);
    let db = strongbox_coordinator::store::Store::open(dir.path(), 8 << 20).expect("store");
    let reopened = Catalog::open(&db).expect("reopen");
    assert_eq!(reopened.entries().expect("entries"), before);
    let catalogs = db
        .tree_names()
        .into_iter()
        .filter(|n| n.starts_with("catalog"))
        .count();
    assert_eq!(catalogs, 1, "the replaced catalog is dropped");
}

#[test]
fn a_catalog_of_another_format_is_refused() {
    // A node's own catalog written by another format, or before formats were recorded.
    for format in [Some(FORMAT + 1), None] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = strongbox_coordinator::store::Store::open(dir.path(), 8 << 20).expect("store");
        let tree = db.tree("catalog").expect("tree");
        tree.insert(b"host/db-1", vec![]).expect("insert");
        if let Some(f) = format {
            tree.insert(b"format", f.to_be_bytes()).expect("insert");
        }
        let e = Catalog::open(&db).err().expect("refused");
        assert!(
            e.to_string().contains("empty data folder"),
            "says what to do: {e}"
        );
    }
}
