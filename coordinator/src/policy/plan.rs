//! The scheduler's decisions as pure functions of one read of the catalog and a time: each
//! service's schedule status (what `service list/show` and the metrics report), and the backup
//! jobs to create now.
//!
//! Invariants: a scheduled backup is only ever assigned to the service's current primary (or
//! standalone) member on a host whose agent is there ([`super::presence`]), never to a replica; a job's id
//! is a function of its service, slot and attempt, so two leaders planning the same slot propose
//! the same job and the catalog keeps one; at most `max_concurrent` backup jobs are under way
//! when the plan adds scheduled ones (manual ones are never held back); a job whose agent went
//! quiet for [`ABANDONED_MS`] neither counts as under way nor blocks its slot.

use std::collections::{BTreeMap, HashMap};

use strongbox_proto::catalog::{
    BackupRecord, HostRecord, JobRecord, MemberRecord, Policy, ServiceRecord,
};
use strongbox_proto::v1::{BackupKind, BackupState, Engine, JobKind, JobState, ServiceState};

use super::effective::{resolve, Effective};
use super::schedule::{jitter_offset, retry_backoff_ms, Next, Schedule};

/// A backup job with no report for this long no longer blocks a new backup of its service
/// (running agents report every few seconds).
pub const ABANDONED_MS: u64 = 10 * 60 * 1000;

use super::presence::Presences;
pub use super::presence::ALIVE_MS;
/// A due slot with no backup under way for this long makes the service `overdue`.
pub const OVERDUE_MS: u64 = 60 * 60 * 1000;

/// One consistent read of what the scheduler needs.
#[derive(Default)]
pub struct Snapshot {
    pub hosts: Vec<HostRecord>,
    pub services: Vec<ServiceRecord>,
    pub backups: Vec<BackupRecord>,
    pub jobs: Vec<JobRecord>,
    pub region_policy: Option<Policy>,
    pub policies: HashMap<String, Policy>,
    /// When each stored schedule last changed, by service (`""`: the region default's).
    pub schedule_changed: HashMap<String, u64>,
    /// When each node was last seen: whether a host's agent is there.
    pub presences: Presences,
    /// Indexes, so a pass over every service reads each backup and job once: positions in
    /// `backups` by service, of backup jobs in `jobs` by service and by backup id.
    backups_of: HashMap<String, Vec<usize>>,
    backup_jobs_of: HashMap<String, Vec<usize>>,
    job_of_backup: HashMap<String, usize>,
    host_named: HashMap<String, usize>,
}

impl Snapshot {
    /// A snapshot of these records, indexed (the catalog reads them: `Catalog::schedule_snapshot`).
    pub fn new(
        hosts: Vec<HostRecord>,
        services: Vec<ServiceRecord>,
        backups: Vec<BackupRecord>,
        jobs: Vec<JobRecord>,
        region_policy: Option<Policy>,
        policies: HashMap<String, Policy>,
        schedule_changed: HashMap<String, u64>,
    ) -> Snapshot {
        let mut snap = Snapshot {
            hosts,
            services,
            backups,
            jobs,
            region_policy,
            policies,
            schedule_changed,
            ..Default::default()
        };
        for (i, h) in snap.hosts.iter().enumerate() {
            snap.host_named.insert(h.name.clone(), i);
        }
        for (i, b) in snap.backups.iter().enumerate() {
            snap.backups_of
                .entry(b.service.clone())
                .or_default()
                .push(i);
        }
        for (i, j) in snap
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.kind() == JobKind::Backup)
        {
            snap.backup_jobs_of
                .entry(j.service.clone())
                .or_default()
                .push(i);
            snap.job_of_backup.insert(j.backup_id.clone(), i);
        }
        snap
    }

    fn host_named(&self, name: &str) -> Option<&HostRecord> {
        self.host_named.get(name).map(|i| &self.hosts[*i])
    }

    /// The backups of `service` in this snapshot.
    pub fn backups_of<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a BackupRecord> + 'a {
        self.backups_of
            .get(service)
            .into_iter()
            .flatten()
            .map(|i| &self.backups[*i])
    }

    fn backup_jobs_of<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a JobRecord> + 'a {
        self.backup_jobs_of
            .get(service)
            .into_iter()
            .flatten()
            .map(|i| &self.jobs[*i])
    }

    fn job_of(&self, backup_id: &str) -> Option<&JobRecord> {
        self.job_of_backup.get(backup_id).map(|i| &self.jobs[*i])
    }

    pub fn policy(&self, service: &str) -> Effective {
        resolve(self.region_policy.as_ref(), self.policies.get(service))
    }

    /// The longest lock (`lock_days`) of any policy: the region default's or a service's own.
    pub fn max_lock_days(&self) -> u32 {
        std::iter::once(self.policy(""))
            .chain(self.policies.keys().map(|s| self.policy(s)))
            .map(|p| p.lock_days)
            .max()
            .unwrap_or(0)
    }

    /// Jobs not finished whose agent still reports.
    fn live(&self, j: &JobRecord, now: u64) -> bool {
        !j.state().is_final() && now.saturating_sub(j.updated_unix_ms) < ABANDONED_MS
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub service: String,
    pub state: ServiceState,
    pub reason: String,
    pub schedule: Schedule,
    pub next: Next,
    /// The host and engine a scheduled backup would go to now.
    pub primary: Option<(String, Engine)>,
    pub under_way: bool,
    /// The due slot's next try: its attempt number and the earliest time for it.
    pub attempt: u32,
    pub not_before: u64,
    pub last_success_ms: u64,
    pub last_failure: String,
}

impl Status {
    /// When the next scheduled backup starts (or should have): 0 for none.
    pub fn next_ms(&self) -> u64 {
        match self.next {
            Next::Never => 0,
            Next::At(t) => t,
            Next::Due { slot, .. } => slot.max(self.not_before),
        }
    }

    pub fn missed(&self) -> u64 {
        match self.next {
            Next::Due { missed, .. } => missed,
            _ => 0,
        }
    }
}

fn is_primary(m: &MemberRecord) -> bool {
    m.healthy && m.role().takes_writes()
}

/// The schedule status of one service.
pub fn status(snap: &Snapshot, svc: &ServiceRecord, now: u64) -> Status {
    let policy = snap.policy(&svc.name);
    // A backup counts unless it failed or its job was abandoned.
    let counts = |b: &BackupRecord| match b.state() {
        BackupState::Completed => true,
        BackupState::Failed => false,
        _ => snap.job_of(&b.id).is_none_or(|j| snap.live(j, now)),
    };
    let mine: Vec<&BackupRecord> = snap.backups_of(&svc.name).collect();
    let daily = matches!(policy.schedule, Schedule::Daily { .. });
    // Slots whose backup completed and was then expired by retention were served: the policy
    // let them go, they are not lost (a purge by an operator is, and is taken again).
    let served_then_expired = snap
        .backup_jobs_of(&svc.name)
        .filter(|j| j.backup_kind() == BackupKind::Scheduled && j.backup_expired_unix_ms != 0)
        .map(|j| j.slot_unix_ms);
    let anchor = mine
        .iter()
        .filter(|b| counts(b))
        .filter_map(|b| match b.kind() {
            BackupKind::Scheduled => Some(if b.slot_unix_ms > 0 {
                b.slot_unix_ms
            } else {
                b.created_unix_ms
            }),
            BackupKind::Manual | BackupKind::PreRestore if !daily => Some(b.created_unix_ms),
            _ => None,
        })
        .chain(served_then_expired)
        .chain(Some(svc.served_expired_slot_unix_ms).filter(|s| *s > 0))
        .max();
    // A schedule's slots count from when it took effect: the service's creation, or the last
    // change of the schedule that applies to it (its own, or the region default's when it has
    // none), so a changed schedule starts at its first slot after the change.
    let own_schedule = snap
        .policies
        .get(&svc.name)
        .is_some_and(|p| p.schedule.is_some());
    let changed = snap
        .schedule_changed
        .get(if own_schedule { svc.name.as_str() } else { "" })
        .copied()
        .unwrap_or(0);
    let next = policy.schedule.next(
        jitter_offset(&svc.name, policy.jitter_ms),
        anchor,
        svc.created_unix_ms.max(changed),
        now,
    );
    let under_way = snap.backup_jobs_of(&svc.name).any(|j| snap.live(j, now));
    let (mut attempt, mut not_before) = (0, 0);
    // Why the due slot is being taken again, when an earlier attempt of it left no backup.
    let mut retaking = String::new();
    if let Next::Due { slot, .. } = next {
        // Earlier attempts of the slot: its jobs (whatever became of their backups: failed,
        // abandoned, or completed and then purged or expired), and failed backups whose jobs
        // were pruned. The next attempt comes after all of them, so no job id is proposed
        // twice and the slot never wedges.
        let jobs: Vec<&JobRecord> = snap
            .backup_jobs_of(&svc.name)
            .filter(|j| j.backup_kind() == BackupKind::Scheduled && j.slot_unix_ms == slot)
            .collect();
        let failed_backups: Vec<u64> = mine
            .iter()
            .filter(|b| b.kind() == BackupKind::Scheduled && b.slot_unix_ms == slot && !counts(b))
            .map(|b| b.created_unix_ms)
            .collect();
        attempt = jobs
            .iter()
            .map(|j| j.attempt + 1)
            .max()
            .unwrap_or(0)
            .max(failed_backups.len() as u32);
        let last_job = jobs.iter().max_by_key(|j| (j.attempt, j.updated_unix_ms));
        let last_failed_backup = failed_backups.iter().copied().max();
        if let Some(last) = last_job
            .map(|j| j.updated_unix_ms)
            .into_iter()
            .chain(last_failed_backup)
            .max()
        {
            not_before = last.saturating_add(retry_backoff_ms(attempt));
        }
        if let Some(j) = last_job.filter(|j| j.state() == JobState::Completed) {
            retaking = format!(
                "the backup {} of this slot (job {}) was purged or expired; taking the slot again",
                j.backup_id, j.id
            );
        }
    }
    let last_success_ms = mine
        .iter()
        .filter(|b| b.state() == BackupState::Completed)
        .map(|b| b.created_unix_ms)
        .max()
        .unwrap_or(0);
    let last_failure = mine
        .iter()
        .filter(|b| !counts(b) && b.created_unix_ms > last_success_ms)
        .max_by_key(|b| b.created_unix_ms)
        .map(|b| {
            if b.reason.is_empty() {
                "abandoned: its agent stopped reporting".to_string()
            } else {
                b.reason.clone()
            }
        })
        .unwrap_or_default();

    let host = snap.host_named(&svc.primary_host);
    let member = host.and_then(|h| h.members.iter().find(|m| m.service == svc.name));
    let alive = host.is_some_and(|h| snap.presences.connected(h, now));
    let primary = match (host, member) {
        (Some(h), Some(m)) if alive && is_primary(m) => Some((h.name.clone(), m.engine())),
        _ => None,
    };
    let (state, reason) = if svc.deprovisioned_unix_ms != 0 {
        (ServiceState::Deprovisioned, String::new())
    } else if svc.excluded {
        (
            ServiceState::Excluded,
            "automatic backups stopped by `service exclude`".to_string(),
        )
    } else if primary.is_none() && !matches!(next, Next::Never) {
        let why = if svc.primary_host.is_empty() {
            "no member reports itself primary (or standalone) and healthy".to_string()
        } else if !alive {
            format!(
                "the agent of primary host {} is not connected (away or silent: `strongbox host list`)",
                svc.primary_host
            )
        } else {
            format!("the server on primary host {} is down", svc.primary_host)
        };
        (
            ServiceState::NoPrimary,
            format!("{why}; no backup is taken from a replica"),
        )
    } else if !retaking.is_empty() && !under_way {
        (ServiceState::Ok, retaking)
    } else if attempt > 0 && !under_way {
        (ServiceState::Failing, last_failure.clone())
    } else if matches!(next, Next::Due { slot, .. } if now.saturating_sub(slot) > OVERDUE_MS)
        && !under_way
    {
        (
            ServiceState::Overdue,
            "due for over an hour and not started (concurrency limit?)".to_string(),
        )
    } else {
        (ServiceState::Ok, String::new())
    };
    Status {
        service: svc.name.clone(),
        state,
        reason,
        schedule: policy.schedule,
        next,
        primary,
        under_way,
        attempt,
        not_before,
        last_success_ms,
        last_failure,
    }
}

/// The id of a scheduled backup's job: the same on every leader.
pub fn scheduled_job_id(service: &str, slot: u64, attempt: u32) -> String {
    format!("job-sched-{service}-{slot}-{attempt}")
}

/// The scheduled backup jobs to create at `now` (backup ids still to fill in).
pub fn plan(snap: &Snapshot, now: u64) -> Vec<JobRecord> {
    let limit = resolve(snap.region_policy.as_ref(), None).max_concurrent as usize;
    let under_way = snap
        .jobs
        .iter()
        .filter(|j| j.kind() == JobKind::Backup && snap.live(j, now))
        .count();
    let mut due: BTreeMap<(u64, String), JobRecord> = BTreeMap::new();
    for svc in &snap.services {
        let st = status(snap, svc, now);
        let (Next::Due { slot, .. }, Some((host, engine))) = (st.next, st.primary) else {
            continue;
        };
        if !matches!(
            st.state,
            ServiceState::Ok | ServiceState::Failing | ServiceState::Overdue
        ) || st.under_way
            || now < st.not_before
        {
            continue;
        }
        due.insert(
            (slot, svc.name.clone()),
            JobRecord {
                id: scheduled_job_id(&svc.name, slot, st.attempt),
                kind: JobKind::Backup.into(),
                service: svc.name.clone(),
                host,
                backup_kind: BackupKind::Scheduled.into(),
                engine: engine.into(),
                slot_unix_ms: slot,
                attempt: st.attempt,
                ..Default::default()
            },
        );
    }
    due.into_values()
        .take(limit.saturating_sub(under_way))
        .collect()
}
