//! Bounded history (catalog/history.rs): request ids, finished jobs and the audit log are
//! forgotten past their windows by a `PruneHistory`, which deletes exactly what is older,
//! never cuts inside a window (nor inside the region's lock for the audit log), and reads what
//! it forgets. Driven through the real apply path with a clock the test controls.

mod common;
use common::{CallerRole, Sim};

use strongbox_coordinator::catalog::{AUDIT_KEEP_MS, JOB_KEEP_MS, MAX_PRUNED, REQUEST_KEEP_MS};
use strongbox_proto::catalog::{command::Op, Policy, PruneHistory, SetPolicy};

const T0: u64 = 1_800_000_000_000;
const DAY: u64 = 86_400_000;

/// An operator's policy change: one audit entry, one request id.
fn policy(daily: u32) -> Op {
    Op::SetPolicy(SetPolicy {
        service: String::new(),
        policy: Some(Policy {
            daily: Some(daily),
            ..Default::default()
        }),
        reset: false,
    })
}

fn lock(days: u32) -> Op {
    Op::SetPolicy(SetPolicy {
        service: String::new(),
        policy: Some(Policy {
            lock_days: Some(days),
            ..Default::default()
        }),
        reset: false,
    })
}

fn prune(p: PruneHistory) -> Op {
    Op::PruneHistory(p)
}

#[test]
fn request_ids_are_forgotten_after_their_window_and_not_before() {
    let mut sim = Sim::new();
    assert!(
        sim.catalog.history_due(T0, 0).expect("read").is_none(),
        "nothing is due in a new catalog"
    );
    // A command applied twice within the window answers its first outcome, once.
    assert!(sim
        .apply_as(CallerRole::Operator, Some("op-1"), T0, policy(5))
        .is_empty());
    assert!(sim
        .apply_as(CallerRole::Operator, Some("op-1"), T0 + DAY / 2, policy(9))
        .is_empty());
    assert_eq!(sim.catalog.effective_policy("").expect("read").daily, 5);

    // Inside the window: refused, and nothing goes.
    let early = T0 + REQUEST_KEEP_MS - DAY / 4;
    let e = sim.apply_as(
        CallerRole::Node,
        None,
        early,
        prune(PruneHistory {
            requests_before_unix_ms: T0 + 1,
            ..Default::default()
        }),
    );
    assert!(e.contains("a day"), "{e}");

    // Past it: due, and pruned.
    let later = T0 + REQUEST_KEEP_MS + DAY;
    let due = sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .expect("request ids are due");
    assert!(due.requests_before_unix_ms > T0, "{due:?}");
    assert_eq!(due.jobs_before_unix_ms, 0, "no finished job: {due:?}");
    let e = sim.apply_as(CallerRole::Node, None, later, prune(due));
    assert!(e.is_empty(), "{e}");
    // The forgotten id is a new command now: it applies (the window is what idempotency
    // promises, and no client retries for a day).
    assert!(sim
        .apply_as(CallerRole::Operator, Some("op-1"), later, policy(9))
        .is_empty());
    assert_eq!(sim.catalog.effective_policy("").expect("read").daily, 9);
    // The ids recorded since are within the window: not due.
    assert!(sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .is_none_or(|p| p.requests_before_unix_ms == 0));
}

#[test]
fn the_audit_log_keeps_a_year_and_never_less_than_the_lock() {
    let mut sim = Sim::new();
    for i in 0..5u64 {
        assert!(sim
            .apply_as(
                CallerRole::Operator,
                None,
                T0 + i * DAY,
                policy(3 + i as u32)
            )
            .is_empty());
    }
    let times = |sim: &Sim| -> Vec<u64> {
        sim.catalog
            .audit()
            .expect("read")
            .iter()
            .map(|a| a.unix_ms)
            .collect()
    };
    let all = times(&sim);
    assert!(all.len() >= 5, "{all:?}");

    // A year and two days on: the first two days' entries go, the rest stay.
    let later = T0 + AUDIT_KEEP_MS + 2 * DAY;
    let due = sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .expect("the audit log is due");
    let cutoff = later - AUDIT_KEEP_MS;
    assert_eq!(due.audit_before_unix_ms, cutoff);
    let before_reads = sim.catalog.records_read();
    assert!(sim
        .apply_as(CallerRole::Node, None, later, prune(due))
        .is_empty());
    assert!(
        sim.catalog.records_read() - before_reads < 20,
        "a prune reads what it forgets, not the log"
    );
    let kept: Vec<u64> = all.iter().copied().filter(|t| *t >= cutoff).collect();
    assert_eq!(
        times(&sim),
        kept,
        "exactly the entries older than the cutoff went"
    );
    assert!(kept.len() < all.len() && !kept.is_empty());

    // A lock longer than a year keeps the audit log as long: a prune inside it is refused.
    let mut sim = Sim::new();
    assert!(sim
        .apply_as(CallerRole::Operator, None, T0, lock(500))
        .is_empty());
    let entries = sim.catalog.audit().expect("read").len();
    let later = T0 + AUDIT_KEEP_MS + 10 * DAY;
    assert!(
        sim.catalog
            .history_due(later, 500)
            .expect("read")
            .is_none_or(|p| p.audit_before_unix_ms == 0),
        "no audit entry is due inside the lock"
    );
    let e = sim.apply_as(
        CallerRole::Node,
        None,
        later,
        prune(PruneHistory {
            audit_before_unix_ms: T0 + 1,
            ..Default::default()
        }),
    );
    assert!(e.contains("lock_days"), "{e}");
    assert_eq!(
        sim.catalog.audit().expect("read").len(),
        entries,
        "nothing went"
    );
}

#[test]
fn no_prune_cuts_inside_a_window() {
    let mut sim = Sim::new();
    let now = T0 + 1000 * DAY;
    for (p, what) in [
        (
            PruneHistory {
                jobs_before_unix_ms: now - JOB_KEEP_MS + 1,
                ..Default::default()
            },
            "90 days",
        ),
        (
            PruneHistory {
                requests_before_unix_ms: now - REQUEST_KEEP_MS + 1,
                ..Default::default()
            },
            "a day",
        ),
        (
            PruneHistory {
                audit_before_unix_ms: now - AUDIT_KEEP_MS + 1,
                ..Default::default()
            },
            "a year",
        ),
    ] {
        let e = sim.apply_as(CallerRole::Node, None, now, prune(p));
        assert!(e.contains(what), "{what}: {e}");
    }
}

#[test]
fn a_backlog_is_pruned_over_several_passes_each_bounded() {
    let mut sim = Sim::new();
    let n = MAX_PRUNED + 50;
    for i in 0..n {
        // Each command records its request id (`r<index>`).
        let e = sim.apply_as(CallerRole::Node, Some(&format!("req-{i}")), T0, policy(3));
        assert!(e.is_empty() || e.contains("nothing"), "{e}");
    }
    let later = T0 + REQUEST_KEEP_MS + DAY;
    let first = sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .expect("due");
    let out = sim.apply_as(CallerRole::Node, None, later, prune(first));
    assert!(out.is_empty(), "{out}");
    // The first pass took its bound; the rest is still due, and the next pass takes it.
    let again = sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .expect("the rest is due");
    assert!(again.requests_before_unix_ms != 0);
    assert!(sim
        .apply_as(CallerRole::Node, None, later, prune(again))
        .is_empty());
    assert!(sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .is_none_or(|p| p.requests_before_unix_ms == 0));
    // A pruned id is a new command again.
    assert!(sim
        .apply_as(CallerRole::Operator, Some("req-0"), later, policy(11))
        .is_empty());
    assert_eq!(sim.catalog.effective_policy("").expect("read").daily, 11);
}

mod by_count {
    use super::*;
    use strongbox_coordinator::catalog::JOBS_KEPT_PER_SERVICE;
    use strongbox_proto::catalog::{
        BackupRecord, BindHost, CommitBackup, CreateJob, JobRecord, MemberRecord, RegisterHost,
        UpdateJob,
    };
    use strongbox_proto::v1::{
        BackupKind, Connection, Engine, JobKind, JobState, MemberRole, RestoreResult,
    };

    fn ok(sim: &mut Sim, role: CallerRole, at: u64, op: Op) {
        let e = sim.apply_as(role, None, at, op);
        assert!(e.is_empty(), "{e}");
    }

    fn job(id: &str, kind: JobKind, host: &str, backup: &str) -> Op {
        Op::CreateJob(CreateJob {
            job: Some(JobRecord {
                id: id.into(),
                kind: kind.into(),
                service: "orders".into(),
                host: host.into(),
                backup_id: backup.into(),
                backup_kind: if kind == JobKind::Backup {
                    BackupKind::Manual.into()
                } else {
                    BackupKind::Unspecified.into()
                },
                engine: Engine::Postgres.into(),
                ..Default::default()
            }),
        })
    }

    fn report(id: &str, host: &str, state: JobState, restore: Option<RestoreResult>) -> Op {
        Op::UpdateJob(UpdateJob {
            job_id: id.into(),
            host: host.into(),
            state: state.into(),
            reason: "test".into(),
            restore,
            ..Default::default()
        })
    }

    /// A service keeps its newest finished jobs; older ones go as new ones finish, but a
    /// restore whose server still runs stays (stopping it needs the job).
    #[test]
    fn a_service_keeps_its_newest_finished_jobs_and_running_restores() {
        let mut sim = Sim::new();
        let member = MemberRecord {
            service: "orders".into(),
            engine: Engine::Postgres.into(),
            role: MemberRole::Primary.into(),
            healthy: true,
            engine_version: "15".into(),
        };
        let register = |host: &str, spare: bool, members: Vec<MemberRecord>| {
            Op::RegisterHost(RegisterHost {
                host: host.into(),
                region: "test-1".into(),
                spare,
                members,
            })
        };
        ok(
            &mut sim,
            CallerRole::Agent,
            T0,
            register("db-1", false, vec![member]),
        );
        ok(
            &mut sim,
            CallerRole::Agent,
            T0,
            register("spare-1", true, vec![]),
        );
        ok(
            &mut sim,
            CallerRole::Operator,
            T0,
            Op::BindHost(BindHost {
                host: "spare-1".into(),
                spare: Some(true),
                ..Default::default()
            }),
        );
        // The oldest finished job: a restore onto the spare whose server runs on.
        ok(
            &mut sim,
            CallerRole::Operator,
            T0,
            job("b0", JobKind::Backup, "db-1", "bk-0"),
        );
        ok(
            &mut sim,
            CallerRole::Agent,
            T0 + 1,
            Op::CommitBackup(CommitBackup {
                backup: Some(BackupRecord {
                    id: "bk-0".into(),
                    service: "orders".into(),
                    host: "db-1".into(),
                    manifest_id: vec![1; 32].into(),
                    ..Default::default()
                }),
                job_id: "b0".into(),
            }),
        );
        ok(
            &mut sim,
            CallerRole::Operator,
            T0 + 2,
            job("r0", JobKind::Restore, "spare-1", "bk-0"),
        );
        let made = RestoreResult {
            connection: Some(Connection {
                engine: Engine::Postgres.into(),
                host: "127.0.0.1".into(),
                port: 5433,
                ..Default::default()
            }),
            ..Default::default()
        };
        ok(
            &mut sim,
            CallerRole::Agent,
            T0 + 3,
            report("r0", "spare-1", JobState::Completed, Some(made)),
        );
        // Then many failed backups, each finishing one after the other.
        let n = JOBS_KEPT_PER_SERVICE + 5;
        for i in 1..=n {
            let (id, at) = (format!("b{i}"), T0 + 10 * i as u64);
            ok(
                &mut sim,
                CallerRole::Operator,
                at,
                job(&id, JobKind::Backup, "db-1", &format!("bk-{i}")),
            );
            ok(
                &mut sim,
                CallerRole::Agent,
                at + 1,
                report(&id, "db-1", JobState::Failed, None),
            );
        }
        let jobs = sim.catalog.jobs().expect("read");
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        // JOBS_KEPT_PER_SERVICE in all: the restore whose server runs, however old, and the
        // newest of the rest.
        assert_eq!(jobs.len(), JOBS_KEPT_PER_SERVICE, "{ids:?}");
        assert!(ids.contains(&"r0"), "the running restore stays: {ids:?}");
        assert!(!ids.contains(&"b0") && !ids.contains(&"b1"), "{ids:?}");
        assert!(ids.contains(&format!("b{n}").as_str()));
    }
}
