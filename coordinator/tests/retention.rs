//! Retention over two simulated years, through the catalog's own apply with a clock the test
//! controls (every command carries its time): nightly scheduled backups, some days two, manual,
//! held and final backups, and a lock. After each day's retention pass the set of backups left is
//! compared with an independent computation of the policy written here (its own calendar
//! arithmetic), and nothing held, manual, final or locked is ever lost. Purges inside the lock
//! are refused for an operator too.

use std::collections::{BTreeMap, BTreeSet};

use strongbox_coordinator::policy::effective::resolve;
use strongbox_coordinator::policy::retention::evaluate;
use strongbox_proto::catalog::{
    command::Op, BackupRecord, CommitBackup, CreateJob, ExpireBackups, HoldBackup, JobRecord,
    MemberRecord, Policy, PurgeBackup, RegisterHost, SetPolicy,
};
use strongbox_proto::v1::{BackupKind, CallerRole, Engine, JobKind, MemberRole};

const DAY: u64 = 86_400_000;
const HOUR: u64 = 3_600_000;

mod common;
use common::Sim;

impl Sim {
    fn apply(&mut self, role: CallerRole, at: u64, op: Op) -> String {
        self.apply_as(role, None, at, op)
    }

    /// A backup of kind `kind` taken at `at` through a job and its commit, as agents do.
    fn backup(&mut self, id: &str, kind: BackupKind, at: u64) {
        let job = JobRecord {
            id: format!("job-{id}"),
            kind: JobKind::Backup.into(),
            service: "orders".into(),
            host: "db-1".into(),
            backup_id: id.into(),
            backup_kind: kind.into(),
            slot_unix_ms: if kind == BackupKind::Scheduled { at } else { 0 },
            ..Default::default()
        };
        let e = self.apply(
            CallerRole::Node,
            at,
            Op::CreateJob(CreateJob { job: Some(job) }),
        );
        assert!(e.is_empty(), "create job for {id}: {e}");
        let rec = BackupRecord {
            id: id.into(),
            service: "orders".into(),
            host: "db-1".into(),
            // Each backup has a manifest of its own (a manifest commits once).
            manifest_id: bytes::Bytes::copy_from_slice(blake3::hash(id.as_bytes()).as_bytes()),
            ..Default::default()
        };
        let e = self.apply(
            CallerRole::Agent,
            at + 60_000,
            Op::CommitBackup(CommitBackup {
                backup: Some(rec),
                job_id: format!("job-{id}"),
            }),
        );
        assert!(e.is_empty(), "commit {id}: {e}");
    }

    /// What the retention controller does at `now`.
    fn retention_pass(&mut self, now: u64) {
        let expired = self.expired_by_policy("orders", now);
        if !expired.is_empty() {
            let e = self.apply(
                CallerRole::Node,
                now,
                Op::ExpireBackups(ExpireBackups {
                    service: "orders".into(),
                    backup_ids: expired,
                }),
            );
            assert!(e.is_empty(), "expire: {e}");
        }
    }

    /// A retention pass on a leader whose clock reads `now` while the region's agreed time
    /// stays where it is: what the policy alone would expire, and the catalog's refusal.
    fn try_retention_pass_on_wrong_clock(&mut self, now: u64) -> (Vec<String>, String) {
        let expired = self.expired_by_policy("orders", now);
        if expired.is_empty() {
            return (expired, String::new());
        }
        let e = self.apply_on_wrong_clock(
            CallerRole::Node,
            None,
            now,
            Op::ExpireBackups(ExpireBackups {
                service: "orders".into(),
                backup_ids: expired.clone(),
            }),
        );
        (expired, e)
    }

    /// The agent's heartbeat at `at` (what advances the catalog's clock in a working region).
    fn heartbeat(&mut self, at: u64) {
        let e = self.apply(
            CallerRole::Agent,
            at,
            Op::RegisterHost(RegisterHost {
                host: "db-1".into(),
                region: "r".into(),
                spare: false,
                members: vec![MemberRecord {
                    service: "orders".into(),
                    engine: Engine::Postgres.into(),
                    role: MemberRole::Primary.into(),
                    healthy: true,
                    ..Default::default()
                }],
            }),
        );
        assert!(e.is_empty(), "heartbeat: {e}");
    }

    fn set_policy(&mut self, at: u64, policy: Policy) {
        let e = self.apply(
            CallerRole::Operator,
            at,
            Op::SetPolicy(SetPolicy {
                service: String::new(),
                policy: Some(policy),
                reset: false,
            }),
        );
        assert!(e.is_empty(), "{e}");
    }

    fn ids(&self) -> BTreeSet<String> {
        self.catalog
            .backups()
            .expect("backups")
            .into_iter()
            .map(|b| b.id)
            .collect()
    }
}

/// Days since 1970-01-01 to (year, month): Howard Hinnant's civil_from_days, written here so
/// the expectation does not share the code under test.
fn year_month(ms: u64) -> (i64, i64) {
    let z = (ms / DAY) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

struct Made {
    id: String,
    kind: BackupKind,
    at: u64,
    held: bool,
}

/// The backups the policy keeps at `now`, from everything ever made.
fn expected(made: &[Made], now: u64, rules: [i64; 4], lock: u64) -> BTreeSet<String> {
    let [hourly, daily, monthly, yearly] = rules;
    let (ny, nm) = year_month(now);
    let mut newest: BTreeMap<(u8, i64), (u64, &str)> = BTreeMap::new();
    for m in made
        .iter()
        .filter(|m| m.kind == BackupKind::Scheduled && m.at <= now)
    {
        let (y, mo) = year_month(m.at);
        let day = (m.at / DAY) as i64;
        let hour = (m.at / HOUR) as i64;
        let periods = [
            (3u8, hour, (now / HOUR) as i64 - hour < hourly),
            (0, day, (now / DAY) as i64 - day < daily),
            (1, y * 12 + mo, (ny * 12 + nm) - (y * 12 + mo) < monthly),
            (2, y, ny - y < yearly),
        ];
        for (rule, period, inside) in periods {
            if inside {
                let e = newest.entry((rule, period)).or_insert((m.at, &m.id));
                if (m.at, m.id.as_str()) > *e {
                    *e = (m.at, &m.id);
                }
            }
        }
    }
    let winners: BTreeSet<&str> = newest.values().map(|(_, id)| *id).collect();
    made.iter()
        .filter(|m| m.at <= now)
        .filter(|m| {
            m.kind != BackupKind::Scheduled
                || m.held
                || now < m.at + lock
                || winners.contains(m.id.as_str())
        })
        .map(|m| m.id.clone())
        .collect()
}

#[test]
fn two_years_of_nightly_backups_keep_exactly_what_the_policy_says() {
    let mut sim = Sim::new();
    let start = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let (hourly, daily, monthly, yearly, lock_days) = (12u32, 7u32, 6u32, 2u32, 3u32);
    let e = sim.apply(
        CallerRole::Operator,
        start,
        Op::SetPolicy(SetPolicy {
            service: String::new(),
            policy: Some(Policy {
                hourly: Some(hourly),
                daily: Some(daily),
                monthly: Some(monthly),
                yearly: Some(yearly),
                lock_days: Some(lock_days),
                ..Default::default()
            }),
            reset: false,
        }),
    );
    assert!(e.is_empty(), "{e}");
    sim.heartbeat(start);

    let mut made: Vec<Made> = Vec::new();
    let lock = lock_days as u64 * DAY;
    for day in 0..730u64 {
        let midnight = start + day * DAY;
        let nightly = format!("s{day:03}");
        sim.backup(&nightly, BackupKind::Scheduled, midnight + 2 * HOUR);
        made.push(Made {
            id: nightly.clone(),
            kind: BackupKind::Scheduled,
            at: midnight + 2 * HOUR,
            held: false,
        });
        if day % 9 == 4 {
            // A second scheduled backup that day (a retried slot, or `every 12h`).
            let id = format!("s{day:03}b");
            sim.backup(&id, BackupKind::Scheduled, midnight + 14 * HOUR);
            made.push(Made {
                id,
                kind: BackupKind::Scheduled,
                at: midnight + 14 * HOUR,
                held: false,
            });
        }
        if day % 45 == 10 {
            let id = format!("m{day:03}");
            sim.backup(&id, BackupKind::Manual, midnight + 15 * HOUR);
            made.push(Made {
                id,
                kind: BackupKind::Manual,
                at: midnight + 15 * HOUR,
                held: false,
            });
        }
        if day == 200 || day == 500 {
            let id = format!("f{day:03}");
            sim.backup(&id, BackupKind::Final, midnight + 16 * HOUR);
            made.push(Made {
                id,
                kind: BackupKind::Final,
                at: midnight + 16 * HOUR,
                held: false,
            });
        }
        if day == 33 || day == 301 {
            // Litigation hold on that night's backup, placed the same day.
            let e = sim.apply(
                CallerRole::Operator,
                midnight + 20 * HOUR,
                Op::HoldBackup(HoldBackup {
                    backup_id: nightly.clone(),
                    held: true,
                    reason: "legal".into(),
                }),
            );
            assert!(e.is_empty(), "{e}");
            if let Some(m) = made.iter_mut().find(|m| m.id == nightly) {
                m.held = true;
            }
        }
        if day == 302 {
            // A purge inside the lock is refused, for an operator too; a held one as well.
            let yesterday = "s301";
            let e = sim.apply(
                CallerRole::Operator,
                midnight + HOUR,
                Op::PurgeBackup(PurgeBackup {
                    backup_id: yesterday.into(),
                }),
            );
            assert!(e.contains("hold"), "{e}");
            let e = sim.apply(
                CallerRole::Operator,
                midnight + 3 * HOUR,
                Op::PurgeBackup(PurgeBackup {
                    backup_id: nightly.clone(),
                }),
            );
            assert!(e.contains("locked until"), "{e}");
        }
        let now = midnight + 23 * HOUR;
        sim.retention_pass(now);
        let want = expected(
            &made,
            now,
            [hourly as i64, daily as i64, monthly as i64, yearly as i64],
            lock,
        );
        let have = sim.ids();
        assert_eq!(
            have,
            want,
            "day {day}: kept {:?} expected {:?}",
            have.difference(&want).collect::<Vec<_>>(),
            want.difference(&have).collect::<Vec<_>>()
        );
        for m in made
            .iter()
            .filter(|m| m.kind != BackupKind::Scheduled || m.held || now < m.at + lock)
        {
            assert!(
                have.contains(&m.id),
                "day {day}: {} ({}) was lost",
                m.id,
                m.kind
            );
        }
    }
    // After two years: 7 daily + the monthly and yearly winners, plus everything kept by kind.
    let policy = resolve(None, None);
    assert_eq!(policy.daily, 30, "built-in default");
    let left = sim.ids();
    assert!(left.len() < 40, "{} backups left: {left:?}", left.len());
    // Retention's routine deletions stay out of the audit log (they follow from the audited
    // policy: two years of them would crowd out the operators' changes).
    assert!(!sim
        .catalog
        .audit()
        .expect("audit")
        .iter()
        .any(|a| a.what.starts_with("expire ")));
}

/// 2027-12-31T00:00:00Z.
const DEC31_2027: u64 = 1_830_211_200_000;

/// A policy keeping the newest backup of each of the last `days` days, and no other rule.
fn daily_only(days: u32) -> Policy {
    Policy {
        hourly: Some(0),
        daily: Some(days),
        monthly: Some(0),
        yearly: Some(0),
        ..Default::default()
    }
}

#[test]
fn a_pass_on_a_clock_behind_never_expires_the_newest_backup() {
    // The issue's case: default policy, nightly backups at 00:00:20, a pass 80 s before
    // midnight (a clock stepped back, or a new leader running behind).
    for policy in [Policy::default(), daily_only(7)] {
        let mut sim = Sim::new();
        sim.set_policy(DEC31_2027 - 10 * DAY, policy.clone());
        sim.heartbeat(DEC31_2027 - 10 * DAY);
        sim.backup("old", BackupKind::Scheduled, DEC31_2027 + 20_000);
        sim.backup("new", BackupKind::Scheduled, DEC31_2027 + DAY + 20_000);
        let behind = DEC31_2027 + DAY - 30_000;
        // The policy alone keeps the newer-than-now backup...
        let backups = sim.catalog.service_backups("orders").unwrap();
        let verdicts = evaluate(&resolve(Some(&policy), None), &backups, behind);
        assert_eq!(
            verdicts["new"].explain(),
            "newer than this clock",
            "{policy:?}"
        );
        // ... and the catalog takes no deletion from a clock behind its own.
        let e = sim.apply_on_wrong_clock(
            CallerRole::Node,
            None,
            behind,
            Op::ExpireBackups(ExpireBackups {
                service: "orders".into(),
                backup_ids: vec!["new".into(), "old".into()],
            }),
        );
        assert!(e.contains("behind") && e.contains("NTP"), "{e}");
        assert!(sim.ids().contains("new") && sim.ids().contains("old"));
    }
}

#[test]
fn a_pass_on_a_clock_far_ahead_deletes_nothing_and_says_why() {
    let mut sim = Sim::new();
    let start = DEC31_2027;
    sim.heartbeat(start);
    for day in 0..31u64 {
        sim.backup(
            &format!("n{day:02}"),
            BackupKind::Scheduled,
            start + day * DAY + 2 * HOUR,
        );
    }
    let ahead = start + 400 * DAY;
    let (would, e) = sim.try_retention_pass_on_wrong_clock(ahead);
    assert!(would.len() >= 29, "{would:?}");
    assert!(e.contains("ahead") && e.contains("NTP"), "{e}");
    assert_eq!(sim.ids().len(), 31, "nothing was deleted");
    // Even the policy alone, on that clock, keeps the newest (min_keep), whatever rules keep.
    let backups = sim.catalog.service_backups("orders").unwrap();
    let mut daily_only = resolve(None, None);
    (daily_only.hourly, daily_only.monthly, daily_only.yearly) = (0, 0, 0);
    let verdicts = evaluate(&daily_only, &backups, ahead);
    assert_eq!(verdicts["n30"].explain(), "the newest");
    assert_eq!(verdicts.values().filter(|v| !v.expired()).count(), 1);
    // Jobs are not pruned on that clock either.
    let e = sim.apply_on_wrong_clock(
        CallerRole::Node,
        None,
        ahead,
        Op::PruneHistory(strongbox_proto::catalog::PruneHistory {
            jobs_before_unix_ms: ahead - 91 * DAY,
            ..Default::default()
        }),
    );
    assert!(e.contains("ahead"), "{e}");
}

#[test]
fn failing_backups_never_leave_a_service_without_its_newest_ones() {
    for (policy, keep) in [
        (
            Policy {
                max_age_ms: Some(7 * DAY),
                ..Default::default()
            },
            1usize,
        ),
        (
            Policy {
                min_keep: Some(3),
                ..daily_only(7)
            },
            3,
        ),
        (daily_only(1), 1),
    ] {
        let mut sim = Sim::new();
        sim.set_policy(DEC31_2027, policy.clone());
        for day in 0..5u64 {
            sim.heartbeat(DEC31_2027 + day * DAY);
            sim.backup(
                &format!("n{day}"),
                BackupKind::Scheduled,
                DEC31_2027 + day * DAY + HOUR,
            );
        }
        // Then every backup fails for a month; the agent still reports; retention runs hourly.
        for hour in 0..(30 * 24u64) {
            let now = DEC31_2027 + 5 * DAY + hour * HOUR;
            sim.heartbeat(now);
            let (_, e) = sim.try_retention_pass_on_wrong_clock(now);
            assert!(e.is_empty() || e == "nothing to expire", "{e}");
        }
        let left = sim.ids();
        assert_eq!(left.len(), keep, "{policy:?}: {left:?}");
        assert!(left.contains("n4"), "the newest is kept: {left:?}");
    }
}

#[test]
fn min_keep_zero_is_refused() {
    let mut sim = Sim::new();
    let e = sim.apply(
        CallerRole::Operator,
        DEC31_2027,
        Op::SetPolicy(SetPolicy {
            service: String::new(),
            policy: Some(Policy {
                min_keep: Some(0),
                ..Default::default()
            }),
            reset: false,
        }),
    );
    assert!(e.contains("min_keep must be at least 1"), "{e}");
}
