//! The scheduler's plan over the catalog's own apply, with a clock the test controls: the
//! concurrency limit, a manual backup resetting `every 24h`, failover moving the schedule to the
//! new primary with one backup per slot, two leaders planning the same slot, retries with
//! backoff, and exclusion.

use strongbox_coordinator::policy::plan::{plan, status};
use strongbox_coordinator::policy::schedule::Next;
use strongbox_proto::catalog::{
    command::Op, BackupRecord, BindHost, CommitBackup, CreateJob, JobRecord, MemberRecord, Policy,
    RegisterHost, SetPolicy, SetServiceState, UpdateJob,
};
use strongbox_proto::v1::{
    BackupKind, BackupState, CallerRole, Engine, FailureClass, JobKind, JobState, MemberRole,
    ServiceAction, ServiceState,
};

const HOUR: u64 = 3_600_000;
const T0: u64 = 1_790_208_000_000; // 2026-09-25T00:00:00Z

mod common;
use common::Sim;

impl Sim {
    fn apply_with(&mut self, request_id: &str, at: u64, op: Op) -> String {
        self.apply_as(CallerRole::Operator, Some(request_id), at, op)
    }

    fn apply(&mut self, at: u64, op: Op) -> String {
        self.apply_as(CallerRole::Operator, None, at, op)
    }

    fn policy(&mut self, at: u64, p: Policy) {
        let e = self.apply(
            at,
            Op::SetPolicy(SetPolicy {
                service: String::new(),
                policy: Some(p),
                reset: false,
            }),
        );
        assert!(e.is_empty(), "{e}");
    }

    fn host(&mut self, at: u64, host: &str, members: &[(&str, MemberRole, bool)]) {
        let members = members
            .iter()
            .map(|(service, role, healthy)| MemberRecord {
                service: service.to_string(),
                engine: Engine::Postgres.into(),
                role: (*role).into(),
                healthy: *healthy,
                ..Default::default()
            })
            .collect::<Vec<MemberRecord>>();
        // Every host's services are bound to it, as the inventory does (a second host of a
        // known service would otherwise wait for approval).
        let grant: Vec<String> = members.iter().map(|m| m.service.clone()).collect();
        if !grant.is_empty() {
            let bind = BindHost {
                host: host.into(),
                grant,
                ..Default::default()
            };
            let e = self.apply(at, Op::BindHost(bind));
            assert!(e.is_empty(), "{e}");
        }
        let e = self.apply(
            at,
            Op::RegisterHost(RegisterHost {
                host: host.into(),
                region: "r".into(),
                spare: false,
                members,
            }),
        );
        assert!(e.is_empty(), "{e}");
    }

    /// Runs the plan at `at` and creates its jobs, as the controller does (request id = job id),
    /// after a heartbeat of every host.
    fn schedule(&mut self, at: u64) -> Vec<JobRecord> {
        // The agents' heartbeats: every host reports its members as they are.
        for h in self.catalog.hosts().expect("hosts") {
            let e = self.apply(
                at,
                Op::RegisterHost(RegisterHost {
                    host: h.name,
                    region: h.region,
                    spare: h.spare,
                    members: h.members,
                }),
            );
            assert!(e.is_empty(), "{e}");
        }
        let snap = self.catalog.schedule_snapshot().expect("snapshot");
        let mut created = Vec::new();
        for mut job in plan(&snap, at) {
            job.backup_id = format!("bk-{}-{}", job.service, self.index);
            let id = job.id.clone();
            if self
                .apply_with(
                    &id,
                    at,
                    Op::CreateJob(CreateJob {
                        job: Some(job.clone()),
                    }),
                )
                .is_empty()
            {
                created.push(job);
            }
        }
        created
    }

    fn finish(&mut self, job: &JobRecord, at: u64) {
        let e = self.apply(
            at,
            Op::CommitBackup(CommitBackup {
                backup: Some(BackupRecord {
                    id: job.backup_id.clone(),
                    service: job.service.clone(),
                    host: job.host.clone(),
                    // Each backup has a manifest of its own (a manifest commits once).
                    manifest_id: bytes::Bytes::copy_from_slice(
                        blake3::hash(job.backup_id.as_bytes()).as_bytes(),
                    ),
                    ..Default::default()
                }),
                job_id: job.id.clone(),
            }),
        );
        assert!(e.is_empty(), "{e}");
    }

    /// A manual backup of `service` on db-1, started at `at` (its job, as the operator API
    /// makes it).
    fn manual(&mut self, service: &str, at: u64) -> JobRecord {
        let manual = JobRecord {
            id: "job-manual".into(),
            kind: JobKind::Backup.into(),
            service: service.into(),
            host: "db-1".into(),
            backup_id: "bk-manual".into(),
            backup_kind: BackupKind::Manual.into(),
            ..Default::default()
        };
        let e = self.apply(
            at,
            Op::CreateJob(CreateJob {
                job: Some(manual.clone()),
            }),
        );
        assert!(e.is_empty(), "{e}");
        manual
    }

    /// Service `shop` on db-1 under `daily 02:00 UTC` (with `extra` policy fields), and the
    /// backup of today's 02:00 slot taken (T0 is a midnight UTC).
    fn daily_two_am_taken(&mut self, extra: Policy) {
        self.policy(
            T0,
            Policy {
                schedule: Some("daily 02:00 UTC".into()),
                jitter_ms: Some(0),
                ..extra
            },
        );
        self.host(T0, "db-1", &[("shop", MemberRole::Primary, true)]);
        let jobs = self.schedule(T0 + 2 * HOUR + 1000);
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        self.finish(&jobs[0], T0 + 2 * HOUR + 30_000);
    }

    fn fail(&mut self, job: &JobRecord, at: u64) {
        let e = self.apply(
            at,
            Op::UpdateJob(UpdateJob {
                job_id: job.id.clone(),
                host: job.host.clone(),
                state: JobState::Failed.into(),
                failure: FailureClass::Dump.into(),
                reason: "pg_dump: connection refused".into(),
                ..Default::default()
            }),
        );
        assert!(e.is_empty(), "{e}");
    }

    fn scheduled(&self, service: &str) -> Vec<BackupRecord> {
        let mut v: Vec<_> = self
            .catalog
            .backups()
            .expect("backups")
            .into_iter()
            .filter(|b| b.service == service && b.kind() == BackupKind::Scheduled)
            .collect();
        v.sort_by_key(|b| b.created_unix_ms);
        v
    }
}

fn every(h: &str, jitter: u64) -> Policy {
    Policy {
        schedule: Some(format!("every {h}")),
        jitter_ms: Some(jitter),
        ..Default::default()
    }
}

#[test]
fn twenty_due_services_run_at_most_four_at_once_and_all_complete() {
    let mut sim = Sim::new();
    sim.policy(
        T0,
        Policy {
            max_concurrent: Some(4),
            ..every("24h", 0)
        },
    );
    for h in 0..5 {
        let services: Vec<String> = (0..4).map(|i| format!("svc{:02}", h * 4 + i)).collect();
        let members: Vec<(&str, MemberRole, bool)> = services
            .iter()
            .map(|s| (s.as_str(), MemberRole::Primary, true))
            .collect();
        sim.host(T0, &format!("db-{h}"), &members);
    }
    let mut t = T0 + 1000;
    let mut running: Vec<JobRecord> = Vec::new();
    let mut done = 0;
    let mut max = 0;
    while done < 20 {
        running.extend(sim.schedule(t));
        max = max.max(running.len());
        assert!(running.len() <= 4, "{} under way", running.len());
        // The oldest one finishes.
        let job = running.remove(0);
        t += 30_000;
        sim.finish(&job, t);
        done += 1;
        assert!(t < T0 + HOUR, "stalled with {done} done");
    }
    assert_eq!(max, 4);
    let mut services: Vec<String> = sim
        .catalog
        .backups()
        .expect("b")
        .into_iter()
        .map(|b| b.service)
        .collect();
    services.sort();
    services.dedup();
    assert_eq!(services.len(), 20);
    // Nothing more is due until tomorrow.
    assert!(sim.schedule(t + 1000).is_empty());
}

#[test]
fn a_manual_backup_at_15_moves_the_next_every_24h_backup_to_15_the_next_day() {
    let mut sim = Sim::new();
    sim.policy(T0, every("24h", 0));
    sim.host(T0, "db-1", &[("orders", MemberRole::Primary, true)]);
    let jobs = sim.schedule(T0 + 2 * HOUR);
    assert_eq!(jobs.len(), 1);
    sim.finish(&jobs[0], T0 + 2 * HOUR + 60_000);
    // A manual backup at 15:00.
    let manual = sim.manual("orders", T0 + 15 * HOUR);
    sim.finish(&manual, T0 + 15 * HOUR + 60_000);
    let snap = sim.catalog.schedule_snapshot().expect("snap");
    let svc = sim.catalog.service("orders").expect("s").expect("service");
    let st = status(&snap, &svc, T0 + 16 * HOUR);
    assert_eq!(st.next, Next::At(T0 + 39 * HOUR), "15:00 the next day");
    // Not at 02:00 the next day; at 15:00.
    assert!(sim.schedule(T0 + 26 * HOUR + 1).is_empty());
    let jobs = sim.schedule(T0 + 39 * HOUR + 1);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].slot_unix_ms, T0 + 39 * HOUR);
}

#[test]
fn failover_moves_the_schedule_to_the_new_primary_with_one_backup_per_slot() {
    let mut sim = Sim::new();
    sim.policy(T0, every("1h", 0));
    sim.host(T0, "db-1", &[("orders", MemberRole::Primary, true)]);
    sim.host(T0, "db-2", &[("orders", MemberRole::Replica, true)]);
    let mut t = T0;
    for hour in 0..6u64 {
        t = T0 + hour * HOUR + 1000;
        if hour == 3 {
            // The primary goes down: reported, nothing is taken from the replica.
            sim.host(t, "db-1", &[("orders", MemberRole::Primary, false)]);
            let snap = sim.catalog.schedule_snapshot().expect("snap");
            let svc = sim.catalog.service("orders").expect("s").expect("svc");
            let st = status(&snap, &svc, t);
            assert_eq!(st.state, ServiceState::NoPrimary, "{st:?}");
            assert!(sim.schedule(t).is_empty());
            // The standby is promoted a few minutes later.
            t += 5 * 60_000;
            sim.host(t, "db-2", &[("orders", MemberRole::Primary, true)]);
        }
        let jobs = sim.schedule(t);
        assert_eq!(jobs.len(), 1, "hour {hour}");
        let want = if hour < 3 { "db-1" } else { "db-2" };
        assert_eq!(jobs[0].host, want, "hour {hour}");
        // A second leader planning the same slot proposes the same job: refused, not doubled.
        assert!(sim.schedule(t + 10).is_empty());
        sim.finish(&jobs[0], t + 60_000);
    }
    let backups = sim.scheduled("orders");
    let slots: Vec<u64> = backups.iter().map(|b| b.slot_unix_ms).collect();
    let want: Vec<u64> = (0..6).map(|h| T0 + h * HOUR).collect();
    assert_eq!(slots, want, "exactly one backup per hourly slot");
    let svc = sim.catalog.service("orders").expect("s").expect("svc");
    assert_eq!(svc.primary_host, "db-2");
    // (host, (role, down) before, (role, down) after)
    type Change = (String, (MemberRole, bool), (MemberRole, bool));
    let changes: Vec<Change> = svc
        .role_changes
        .iter()
        .map(|c| (c.host.clone(), (c.from(), c.from_down), (c.to(), c.to_down)))
        .collect();
    assert!(
        changes.contains(&(
            "db-1".into(),
            (MemberRole::Primary, false),
            (MemberRole::Primary, true)
        )),
        "{changes:?}"
    );
    assert!(
        changes.contains(&(
            "db-2".into(),
            (MemberRole::Replica, false),
            (MemberRole::Primary, false)
        )),
        "{changes:?}"
    );
    let _ = t;
}

#[test]
fn a_failed_scheduled_backup_is_retried_with_backoff_and_stays_visible() {
    let mut sim = Sim::new();
    sim.policy(T0, every("24h", 0));
    sim.host(T0, "db-1", &[("orders", MemberRole::Primary, true)]);
    let first = sim.schedule(T0 + 1000);
    assert_eq!(first.len(), 1);
    sim.fail(&first[0], T0 + 2000);
    // Not before a minute has passed.
    assert!(sim.schedule(T0 + 30_000).is_empty());
    let snap = sim.catalog.schedule_snapshot().expect("snap");
    let svc = sim.catalog.service("orders").expect("s").expect("svc");
    assert_eq!(
        status(&snap, &svc, T0 + 30_000).state,
        ServiceState::Failing
    );
    let retry = sim.schedule(T0 + 2000 + 60_000);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempt, 1);
    assert_eq!(retry[0].slot_unix_ms, first[0].slot_unix_ms);
    sim.fail(&retry[0], T0 + 70_000);
    // Second retry after two minutes.
    assert!(sim.schedule(T0 + 70_000 + 100_000).is_empty());
    let again = sim.schedule(T0 + 70_000 + 120_000);
    assert_eq!(again[0].attempt, 2);
    sim.finish(&again[0], T0 + 200_000);
    let all = sim.scheduled("orders");
    assert_eq!(
        all.iter()
            .filter(|b| b.state() == BackupState::Failed)
            .count(),
        2
    );
    assert_eq!(
        all.iter()
            .filter(|b| b.state() == BackupState::Completed)
            .count(),
        1
    );
}

#[test]
fn an_excluded_service_gets_no_automatic_backup_and_keeps_its_old_ones() {
    let mut sim = Sim::new();
    sim.policy(T0, every("1h", 0));
    sim.host(T0, "db-1", &[("orders", MemberRole::Primary, true)]);
    let jobs = sim.schedule(T0 + 1000);
    sim.finish(&jobs[0], T0 + 2000);
    assert!(sim
        .apply(
            T0 + 3000,
            Op::SetServiceState(SetServiceState {
                service: "orders".into(),
                action: ServiceAction::Exclude.into()
            })
        )
        .is_empty());
    assert!(sim.schedule(T0 + 2 * HOUR).is_empty());
    assert_eq!(sim.scheduled("orders").len(), 1);
    assert!(sim
        .apply(
            T0 + 2 * HOUR,
            Op::SetServiceState(SetServiceState {
                service: "orders".into(),
                action: ServiceAction::Include.into()
            })
        )
        .is_empty());
    let jobs = sim.schedule(T0 + 2 * HOUR + 1);
    assert_eq!(jobs.len(), 1);
    // Slot of now; the hour in between is counted as missed, not caught up.
    assert_eq!(jobs[0].slot_unix_ms, T0 + 2 * HOUR);
}

/// The scheduler's rule as a property (issue 15, fault 1): for generated sequences of what
/// happens to a service (backups that complete, fail or are abandoned by their agent, an
/// operator purging backups, retention passes, passes skipped or run twice as leaders change,
/// leaders whose clocks are minutes behind or ahead), no job id is ever proposed twice, and once the trouble stops,
/// the newest slot gets a completed backup and `service show` says `ok` with the next slot
/// ahead. The example of the issue: a scheduled backup purged after it completed left its slot
/// due forever, its job id proposed (and refused) every pass.
#[test]
fn no_sequence_of_actions_wedges_the_schedule() {
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;
    use strongbox_proto::catalog::{ExpireBackups, PurgeBackup};
    for seed in 0..30u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut sim = Sim::new();
        let schedule = if seed % 2 == 0 {
            "every 1h"
        } else {
            "daily 02:00 UTC"
        };
        sim.policy(
            T0,
            Policy {
                schedule: Some(schedule.into()),
                jitter_ms: Some(0),
                max_age_ms: Some(if seed % 3 == 0 { 6 * HOUR } else { 0 }),
                ..Default::default()
            },
        );
        sim.host(T0, "db-1", &[("shop", MemberRole::Primary, true)]);
        let mut proposed: HashSet<String> = HashSet::new();
        let mut running: Vec<JobRecord> = Vec::new();
        let mut propose = |sim: &mut Sim, at: u64, running: &mut Vec<JobRecord>| {
            let snap = sim.catalog.schedule_snapshot().expect("snapshot");
            // The pass reads each service's newest records only (catalog/passes.rs): it decides
            // as a read of every record would.
            let full = sim.catalog.full_schedule_snapshot().expect("full read");
            for svc in &snap.services {
                assert_eq!(
                    status(&snap, svc, at),
                    status(&full, svc, at),
                    "seed {seed}: the pass's read and a full read disagree on {}",
                    svc.name
                );
                // And `service show`'s read of the one service.
                let one = sim
                    .catalog
                    .services_snapshot(vec![svc.clone()])
                    .expect("one service");
                assert_eq!(
                    status(&one, svc, at),
                    status(&full, svc, at),
                    "seed {seed}: service show's read and a full read disagree on {}",
                    svc.name
                );
            }
            assert_eq!(plan(&snap, at), plan(&full, at), "seed {seed}");
            for job in plan(&snap, at) {
                assert!(
                    proposed.insert(job.id.clone()),
                    "seed {seed}: job id {} proposed twice",
                    job.id
                );
            }
            running.extend(sim.schedule(at));
        };
        // A job the catalog gave up on (its agent silent for ten minutes) takes no report.
        let open = |sim: &Sim, job: &JobRecord| {
            sim.catalog
                .job(&job.id)
                .expect("job")
                .is_some_and(|j| !j.state().is_final())
        };
        let mut t = T0 + 60_000;
        for _ in 0..200 {
            t += rng.gen_range(1..40u64) * 60_000;
            match rng.gen_range(0..12) {
                // A leader change: this pass is skipped.
                0 => {}
                // Two leaders plan the same moment.
                1 => {
                    propose(&mut sim, t, &mut running);
                    propose(&mut sim, t, &mut running);
                }
                // A leader whose clock is a few minutes behind, or ahead.
                2 => propose(&mut sim, t.saturating_sub(3 * 60_000), &mut running),
                3 => propose(&mut sim, t + 3 * 60_000, &mut running),
                _ => propose(&mut sim, t, &mut running),
            }
            match rng.gen_range(0..10) {
                0..=3 if !running.is_empty() => {
                    let job = running.remove(0);
                    if open(&sim, &job) {
                        sim.finish(&job, t + 1000);
                    }
                }
                4 if !running.is_empty() => {
                    let job = running.remove(0);
                    if open(&sim, &job) {
                        sim.fail(&job, t + 1000);
                    }
                }
                // The agent dies: the job is never reported again.
                5 if !running.is_empty() => {
                    running.remove(0);
                }
                6 => {
                    // The operator purges a backup (the newest, often).
                    let backups = sim.scheduled("shop");
                    if let Some(b) = backups
                        .iter()
                        .rev()
                        .find(|b| b.state() == BackupState::Completed)
                    {
                        let e = sim.apply(
                            t + 2000,
                            Op::PurgeBackup(PurgeBackup {
                                backup_id: b.id.clone(),
                            }),
                        );
                        assert!(e.is_empty(), "seed {seed}: purge: {e}");
                    }
                }
                7 => {
                    // A retention pass.
                    let expired = sim.expired_by_policy("shop", t + 3000);
                    if !expired.is_empty() {
                        let e = sim.apply(
                            t + 3000,
                            Op::ExpireBackups(ExpireBackups {
                                service: "shop".into(),
                                backup_ids: expired,
                            }),
                        );
                        // (Refused after a leader ahead moved the test's agreed time.)
                        assert!(
                            e.is_empty() || e.contains("behind"),
                            "seed {seed}: expire: {e}"
                        );
                    }
                }
                _ => {}
            }
        }
        // The trouble stops: every backup completes a minute after it starts.
        for _ in 0..(3 * 24 * 2) {
            t += 30 * 60_000;
            propose(&mut sim, t, &mut running);
            for job in std::mem::take(&mut running) {
                if open(&sim, &job) {
                    sim.finish(&job, t + 60_000);
                }
            }
        }
        t += 2 * 60_000;
        let snap = sim.catalog.schedule_snapshot().expect("snapshot");
        let svc = snap
            .services
            .iter()
            .find(|s| s.name == "shop")
            .expect("service");
        let st = status(&snap, svc, t);
        assert_eq!(st.state, ServiceState::Ok, "seed {seed}: {st:?}");
        assert!(
            matches!(st.next, Next::At(next) if next > t),
            "seed {seed}: the schedule is stuck: {st:?}"
        );
        let newest = sim
            .scheduled("shop")
            .into_iter()
            .filter(|b| b.state() == BackupState::Completed)
            .count();
        assert!(newest > 0, "seed {seed}: no completed backup");
    }
}

/// Issue 15, fault 4: changing the schedule at 10:00 from `daily 02:00 UTC` (today's backup
/// done) to `daily 04:00 UTC` started a backup at once for today's 04:00 slot. A new schedule
/// starts at its first slot after the change.
#[test]
fn a_changed_schedule_starts_at_its_first_slot_after_the_change() {
    let mut sim = Sim::new();
    sim.daily_two_am_taken(Policy::default());
    // 10:00: the schedule moves to 04:00.
    sim.policy(
        T0 + 10 * HOUR,
        Policy {
            schedule: Some("daily 04:00 UTC".into()),
            ..Default::default()
        },
    );
    let jobs = sim.schedule(T0 + 10 * HOUR + 60_000);
    assert!(jobs.is_empty(), "a backup started at once: {jobs:?}");
    let snap = sim.catalog.schedule_snapshot().expect("snapshot");
    let st = status(&snap, &snap.services[0], T0 + 10 * HOUR + 60_000);
    assert_eq!(st.next, Next::At(T0 + 28 * HOUR), "{st:?}");
    // Tomorrow 04:00 it runs.
    let jobs = sim.schedule(T0 + 28 * HOUR + 1000);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
}

/// A slot whose backup retention expired was served: it is not taken again (a manual backup
/// newer than it, with `max_age`, made the scheduler retake the same slot over and over).
#[test]
fn a_slot_whose_backup_retention_expired_is_not_taken_again() {
    use strongbox_proto::catalog::ExpireBackups;
    let mut sim = Sim::new();
    sim.daily_two_am_taken(Policy {
        max_age_ms: Some(60_000),
        ..Default::default()
    });
    let scheduled = sim.scheduled("shop");
    assert_eq!(scheduled.len(), 1);
    // A manual backup, then retention: the scheduled one is past max_age and not the newest.
    let manual = sim.manual("shop", T0 + 3 * HOUR);
    sim.finish(&manual, T0 + 3 * HOUR + 30_000);
    let e = sim.apply(
        T0 + 4 * HOUR,
        Op::ExpireBackups(ExpireBackups {
            service: "shop".into(),
            backup_ids: vec![scheduled[0].id.clone()],
        }),
    );
    assert!(e.is_empty(), "{e}");
    assert!(
        sim.scheduled("shop").is_empty(),
        "the scheduled backup expired"
    );
    let again = sim.schedule(T0 + 4 * HOUR + 60_000);
    assert!(
        again.is_empty(),
        "the served slot was taken again: {again:?}"
    );
    let snap = sim.catalog.schedule_snapshot().expect("snapshot");
    let st = status(&snap, &snap.services[0], T0 + 4 * HOUR + 60_000);
    assert_eq!(st.next, Next::At(T0 + 26 * HOUR), "{st:?}");
}
