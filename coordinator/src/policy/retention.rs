//! Which backups of a service retention keeps, and why (Aptible's policy, plus holds and locks).
//!
//! Rules, for one service's *completed* backups at time `now` (calendar periods in UTC):
//! - held backups are kept (`hold`); manual and pre-restore backups are kept until deleted
//!   (`manual`, `pre-restore`); `final` backups (taken at deprovisioning) are kept until deleted;
//! - scheduled backups (and region copies): the newest one of each of the last `hourly` hours
//!   (this one included), of each of the last `daily` UTC days (today included), of each of the
//!   last `monthly` months, of each of the last `yearly` years; with `max_age`, none older;
//! - a backup younger than `lock_days` is kept whatever the rules say (`locked until …`);
//! - the `min_keep` newest completed backups are kept whatever the rules say (`newest`), so
//!   failing backups or a clock set forward never leave a service without one;
//! - a backup newer than `now` is kept (`newer than this clock`): a clock set back must not
//!   read it as belonging to no period;
//! - every other completed backup expires;
//! - a failed backup (it holds no data) is kept while it is the newest failure of its service
//!   (`the newest failure`, so a service's last failure stays visible), while held, or for
//!   the `daily` window (at least a day: `failed within N days`); then it expires too, so
//!   failures do not pile up. Pending and running backups are not retention's business.
//!
//! Invariants: the verdict is a pure function of the policy, the backups and `now`; a held,
//! manual, pre-restore, final or locked backup is never expired; the catalog's apply evaluates
//! the same function at the command's time before it removes anything.

use std::collections::BTreeMap;

use strongbox_proto::catalog::BackupRecord;
use strongbox_proto::v1::{BackupKind, BackupState};

use super::effective::Effective;
use super::time::{add_months, rfc3339, utc_date, utc_midnight, DAY_MS, HOUR_MS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Hold,
    Manual,
    PreRestore,
    Final,
    Hourly(String),
    Daily(String),
    Monthly(String),
    Yearly(String),
    Locked(u64),
    /// One of the `min_keep` newest completed backups (its rank, 1 = the newest).
    Newest(u32),
    /// Created after the time of the evaluation.
    AfterNow,
    /// A failed backup, the newest of its service.
    NewestFailure,
    /// A failed backup younger than the policy's daily window (its days).
    RecentFailure(u32),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Hold => write!(f, "hold"),
            Reason::Manual => write!(f, "manual"),
            Reason::PreRestore => write!(f, "pre-restore"),
            Reason::Final => write!(f, "final"),
            Reason::Hourly(h) => write!(f, "hourly {h}"),
            Reason::Daily(d) => write!(f, "daily {d}"),
            Reason::Monthly(m) => write!(f, "monthly {m}"),
            Reason::Yearly(y) => write!(f, "yearly {y}"),
            Reason::Locked(until) => write!(f, "locked until {}", rfc3339(*until)),
            Reason::Newest(1) => write!(f, "the newest"),
            Reason::Newest(n) => write!(f, "newest #{n}"),
            Reason::AfterNow => write!(f, "newer than this clock"),
            Reason::NewestFailure => write!(f, "the newest failure"),
            Reason::RecentFailure(1) => write!(f, "failed within a day"),
            Reason::RecentFailure(n) => write!(f, "failed within {n} days"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Empty: the backup expires now.
    pub keep: Vec<Reason>,
    /// When the rules that keep it stop doing so (0: never, e.g. manual or held).
    pub expires_ms: u64,
    /// No purge by anyone before this (0: not locked).
    pub locked_until_ms: u64,
}

impl Verdict {
    pub fn expired(&self) -> bool {
        self.keep.is_empty()
    }

    /// "daily 2026-11-20, monthly 2026-11", for `backup show`.
    pub fn explain(&self) -> String {
        self.keep
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Kinds the daily/monthly/yearly rules apply to.
fn by_rules(kind: BackupKind) -> bool {
    matches!(
        kind,
        BackupKind::Scheduled | BackupKind::Copy | BackupKind::Unspecified
    )
}

/// The verdict on each completed backup in `backups` (one service's), by backup id.
pub fn evaluate(
    policy: &Effective,
    backups: &[BackupRecord],
    now: u64,
) -> BTreeMap<String, Verdict> {
    let today = now / DAY_MS;
    let this = utc_date(now);
    let this_month = this.year() as i64 * 12 + this.month() as i64 - 1;
    let completed: Vec<&BackupRecord> = backups
        .iter()
        .filter(|b| b.state() == BackupState::Completed)
        .collect();

    // The newest rule-subject backup of each day, month and year in the windows.
    let mut newest: BTreeMap<(u8, i64), &BackupRecord> = BTreeMap::new();
    for b in completed.iter().filter(|b| by_rules(b.kind())) {
        if policy.max_age_ms > 0 && now.saturating_sub(b.created_unix_ms) > policy.max_age_ms {
            continue;
        }
        let date = utc_date(b.created_unix_ms);
        let day = (b.created_unix_ms / DAY_MS) as i64;
        let month = date.year() as i64 * 12 + date.month() as i64 - 1;
        let year = date.year() as i64;
        let hour = (b.created_unix_ms / HOUR_MS) as i64;
        for (rule, period, age, count) in [
            (3u8, hour, (now / HOUR_MS) as i64 - hour, policy.hourly),
            (0, day, today as i64 - day, policy.daily),
            (1, month, this_month - month, policy.monthly),
            (2, year, this.year() as i64 - year, policy.yearly),
        ] {
            if age < 0 || age >= count as i64 {
                continue;
            }
            let slot = newest.entry((rule, period)).or_insert(b);
            if (b.created_unix_ms, &b.id) > (slot.created_unix_ms, &slot.id) {
                *slot = b;
            }
        }
    }

    // The min_keep newest completed backups, by creation time (then id), newest first.
    let mut by_age: Vec<&&BackupRecord> = completed.iter().collect();
    by_age.sort_by(|a, b| (b.created_unix_ms, &b.id).cmp(&(a.created_unix_ms, &a.id)));
    let rank: BTreeMap<&str, u32> = by_age
        .iter()
        .take(policy.min_keep.max(1) as usize)
        .enumerate()
        .map(|(i, b)| (b.id.as_str(), i as u32 + 1))
        .collect();

    let mut out = BTreeMap::new();
    for b in &completed {
        let mut v = Verdict::default();
        if policy.lock_days > 0 {
            v.locked_until_ms = b.created_unix_ms.saturating_add(policy.lock_ms());
        }
        if b.held {
            v.keep.push(Reason::Hold);
        }
        match b.kind() {
            BackupKind::Manual => v.keep.push(Reason::Manual),
            BackupKind::PreRestore => v.keep.push(Reason::PreRestore),
            BackupKind::Final => v.keep.push(Reason::Final),
            _ => {}
        }
        let mut rule_end = 0u64;
        if by_rules(b.kind()) {
            let date = utc_date(b.created_unix_ms);
            for ((rule, _), winner) in newest.iter() {
                if winner.id != b.id {
                    continue;
                }
                let (reason, end) = match rule {
                    3 => (
                        Reason::Hourly(format!(
                            "{}T{:02}",
                            date,
                            (b.created_unix_ms % DAY_MS) / HOUR_MS
                        )),
                        (b.created_unix_ms / HOUR_MS + policy.hourly as u64) * HOUR_MS,
                    ),
                    0 => (
                        Reason::Daily(date.to_string()),
                        (b.created_unix_ms / DAY_MS + policy.daily as u64) * DAY_MS,
                    ),
                    1 => {
                        let first =
                            jiff::civil::Date::new(date.year(), date.month(), 1).unwrap_or(date);
                        (
                            Reason::Monthly(format!("{:04}-{:02}", date.year(), date.month())),
                            utc_midnight(add_months(first, policy.monthly as i64)),
                        )
                    }
                    _ => {
                        let first = jiff::civil::Date::new(date.year(), 1, 1).unwrap_or(date);
                        (
                            Reason::Yearly(format!("{:04}", date.year())),
                            utc_midnight(add_months(first, 12 * policy.yearly as i64)),
                        )
                    }
                };
                v.keep.push(reason);
                rule_end = rule_end.max(end);
            }
            if rule_end > 0 && policy.max_age_ms > 0 {
                rule_end = rule_end.min(b.created_unix_ms.saturating_add(policy.max_age_ms));
            }
        }
        let kept_by_kind = !v.keep.is_empty() && rule_end == 0;
        if v.keep.is_empty() && now < v.locked_until_ms {
            v.keep.push(Reason::Locked(v.locked_until_ms));
        }
        // Kept while they last; they add no end time (a newer backup ends them).
        if v.keep.is_empty() && b.created_unix_ms > now {
            v.keep.push(Reason::AfterNow);
        }
        if let Some(n) = rank.get(b.id.as_str()) {
            if v.keep.is_empty() {
                v.keep.push(Reason::Newest(*n));
            }
        }
        v.expires_ms = if kept_by_kind {
            0
        } else {
            rule_end
                .max(v.locked_until_ms)
                .max(if v.keep.is_empty() { now } else { 0 })
        };
        out.insert(b.id.clone(), v);
    }
    failures(policy, backups, now, &mut out);
    out
}

/// The verdicts on a service's failed backups (see the module's rules), into `out`.
fn failures(
    policy: &Effective,
    backups: &[BackupRecord],
    now: u64,
    out: &mut BTreeMap<String, Verdict>,
) {
    let failed: Vec<&BackupRecord> = backups
        .iter()
        .filter(|b| b.state() == BackupState::Failed)
        .collect();
    let newest = failed
        .iter()
        .max_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)))
        .map(|b| b.id.as_str());
    let days = policy.daily.max(1);
    for b in failed {
        let mut v = Verdict::default();
        if b.held {
            v.keep.push(Reason::Hold);
        }
        if Some(b.id.as_str()) == newest {
            v.keep.push(Reason::NewestFailure);
        }
        let end = b.created_unix_ms.saturating_add(u64::from(days) * DAY_MS);
        if now < end {
            v.keep.push(Reason::RecentFailure(days));
        }
        // Held or the newest: kept until that changes (no time); else until its window ends.
        v.expires_ms = if b.held || Some(b.id.as_str()) == newest {
            0
        } else {
            end.max(if v.keep.is_empty() { now } else { 0 })
        };
        out.insert(b.id.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::effective::resolve;

    fn backup(id: &str, kind: BackupKind, at: u64) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            service: "orders".into(),
            kind: kind.into(),
            state: BackupState::Completed.into(),
            created_unix_ms: at,
            ..Default::default()
        }
    }

    #[test]
    fn failed_backups_expire_but_the_newest_failure_stays() {
        let mut p = resolve(None, None);
        p.daily = 3;
        let t0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
        let failed = |id: &str, at: u64| BackupRecord {
            state: BackupState::Failed.into(),
            ..backup(id, BackupKind::Scheduled, at)
        };
        let mut held = failed("held", t0 - 30 * DAY_MS);
        held.held = true;
        let bs = vec![
            failed("old", t0 - 10 * DAY_MS),
            failed("recent", t0 - DAY_MS),
            failed("older", t0 - 20 * DAY_MS),
            held,
            backup("ok", BackupKind::Scheduled, t0),
        ];
        let v = evaluate(&p, &bs, t0 + 1000);
        assert!(v["old"].expired(), "{:?}", v["old"]);
        assert!(v["older"].expired(), "{:?}", v["older"]);
        assert_eq!(
            v["recent"].explain(),
            "the newest failure, failed within 3 days"
        );
        assert_eq!(v["recent"].expires_ms, 0);
        assert_eq!(v["held"].explain(), "hold");
        // Past its window, the newest failure still stays: a service's last failure is seen.
        let v = evaluate(&p, &bs, t0 + 30 * DAY_MS);
        assert_eq!(v["recent"].explain(), "the newest failure");
        // A failure that is neither the newest nor held ends with its window.
        let v = evaluate(&p, &bs, t0 - DAY_MS / 2);
        assert_eq!(v["old"].expires_ms, t0 - DAY_MS / 2, "expired: now");
        let two = vec![failed("a", t0), failed("b", t0 + 1)];
        let v = evaluate(&p, &two, t0 + 2);
        assert_eq!(v["a"].expires_ms, t0 + 3 * DAY_MS);
        assert!(!v["a"].expired());
        assert!(v["a"].keep.contains(&Reason::RecentFailure(3)));
    }

    #[test]
    fn keeps_the_newest_of_each_day_and_explains_why() {
        let mut p = resolve(None, None);
        p.hourly = 0;
        p.daily = 2;
        p.monthly = 0;
        p.yearly = 0;
        let t0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
        let bs = vec![
            backup("a", BackupKind::Scheduled, t0 - DAY_MS + 1000),
            backup("b", BackupKind::Scheduled, t0 + 1000),
            backup("c", BackupKind::Scheduled, t0 + 2000),
            backup("old", BackupKind::Scheduled, t0 - 5 * DAY_MS),
            backup("m", BackupKind::Manual, t0 - 9 * DAY_MS),
        ];
        let v = evaluate(&p, &bs, t0 + 3000);
        assert!(v["a"].explain().starts_with("daily "), "{:?}", v["a"]);
        assert!(v["b"].expired());
        assert_eq!(v["c"].expires_ms, t0 + 2 * DAY_MS);
        assert!(v["old"].expired());
        assert_eq!(v["m"].explain(), "manual");
        assert_eq!(v["m"].expires_ms, 0);
        // A lock keeps even what the rules drop, until it runs out.
        p.lock_days = 7;
        let v = evaluate(&p, &bs, t0 + 3000);
        assert!(
            v["old"].explain().starts_with("locked until"),
            "{:?}",
            v["old"]
        );
        assert!(v["b"].explain().starts_with("locked until"));
    }
}
