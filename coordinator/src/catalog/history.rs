//! Bounded history (issue 17, point 2): what the catalog remembers of the past, and for how
//! long. Each kind of history has an index by time, so forgetting it reads what it forgets
//! (and one record more), never the whole kind:
//! - finished jobs: [`JOB_KEEP_MS`] after they ended (`jobs-finished/`), and at most the
//!   newest [`JOBS_KEPT_PER_SERVICE`] of each service (`jobs-finished-service/`), whichever
//!   keeps less; a restore whose server still runs is kept either way (`restore stop` needs
//!   it);
//! - request ids, the outcomes that make a retried command apply once: [`REQUEST_KEEP_MS`]
//!   after they were recorded (`req-time/`), far longer than any retry (a client gives up on
//!   a call after seconds, an agent re-sends a report for minutes);
//! - the audit log: [`AUDIT_KEEP_MS`] (a year), never less than the region's `lock_days`
//!   (`audit/` is in log order, which is time order but for clock skew between leaders).
//!
//! Invariants: a prune is a command like any other (`PruneHistory`), deleting by time, so it
//! is refused on an implausible clock and inside each minimum window; what it removes was
//! older than its bounds when it applied, the oldest first and at most [`MAX_PRUNED`] of each
//! kind (the next pass takes the rest).

use super::batch::Batch;
use crate::store;
use strongbox_proto::catalog::{AuditRecord, JobRecord, PruneHistory};
use strongbox_proto::v1::{JobKind, JobState};

use super::index::{self, remove_job};
use super::refusal::{Applied, Refusal};
use super::{audit_key_prefix, req_key, Catalog};

/// Finished jobs stay this long after they ended.
pub const JOB_KEEP_MS: u64 = 90 * 24 * 60 * 60 * 1000;
/// The finished jobs kept per service: the newest ones (with hourly backups, four days').
pub const JOBS_KEPT_PER_SERVICE: usize = 100;

/// Request ids stay this long after their command applied: a day, far beyond any retry, and
/// short enough that a fleet's commands of a day (two an hourly backup) are all it holds.
pub const REQUEST_KEEP_MS: u64 = 24 * 60 * 60 * 1000;
/// The audit log keeps a year, and at least the region's lock (`lock_days`).
pub const AUDIT_KEEP_MS: u64 = 365 * 24 * 60 * 60 * 1000;

/// The most records of one kind a prune removes: a region pruning for the first time in a
/// long while removes its backlog over several passes, each command costing a bounded time.
pub const MAX_PRUNED: usize = 10_000;

/// The index of request ids by the time they were recorded.
pub const REQUESTS_BY_TIME: &str = "req-time";

/// The index entry of request `id` recorded at `unix_ms`.
pub fn request_time_key(unix_ms: u64, id: &str) -> Vec<u8> {
    index::key(REQUESTS_BY_TIME, &index::time_key(unix_ms), id)
}

/// Whether finished job `j` must stay whatever its age or rank: a restore whose server still
/// runs on a spare (stopping it needs the job).
fn server_runs(j: &JobRecord) -> bool {
    j.kind() == JobKind::Restore
        && !j.in_place
        && j.state() == JobState::Completed
        && j.server_stopped_unix_ms == 0
}

impl Catalog {
    /// Keeps each of `services` (with a repeat per job this command finished) to its newest
    /// [`JOBS_KEPT_PER_SERVICE`] finished jobs: reads the service's finished-job keys and the
    /// jobs it forgets, no more.
    pub(super) fn trim_finished(
        &self,
        services: Vec<String>,
        batch: &mut Batch,
    ) -> super::Result<()> {
        let mut new: std::collections::BTreeMap<String, usize> = Default::default();
        for s in services {
            *new.entry(s).or_default() += 1;
        }
        for (service, added) in new {
            let keys: Vec<store::Bytes> = self
                .tree()
                .scan_prefix(index::prefix(index::FINISHED_BY_SERVICE, &service))
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<std::result::Result<_, _>>()?;
            let over = (keys.len() + added).saturating_sub(JOBS_KEPT_PER_SERVICE);
            let mut forgotten = 0;
            for k in &keys {
                if forgotten == over {
                    break;
                }
                match self.job(&index::id_of(k))? {
                    Some(j) if server_runs(&j) => {}
                    Some(j) => {
                        remove_job(batch, &j);
                        forgotten += 1;
                    }
                    None => batch.remove(k.clone()),
                }
            }
        }
        Ok(())
    }

    /// The keys of a time index `table` before `before`, oldest first.
    fn older_than(&self, table: &str, before: u64) -> super::Result<Vec<store::Bytes>> {
        let start = index::prefix(table, "");
        let end = index::prefix(table, &index::time_key(before));
        self.tree()
            .range(start..end)
            .take(MAX_PRUNED)
            .map(|kv| Ok(kv?.0))
            .collect()
    }

    /// The oldest time in time index `table` (None: empty): one key read.
    fn oldest(&self, table: &str) -> super::Result<Option<u64>> {
        let start = format!("{table}/");
        let first = self
            .tree()
            .scan_prefix(start.as_bytes())
            .next()
            .transpose()?;
        Ok(first.and_then(|(k, _)| {
            let rest = &k[start.len()..];
            let end = rest.iter().position(|b| *b == 0)?;
            std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
        }))
    }

    /// What a prune at `now` would remove something of, as the bounds of a `PruneHistory`
    /// (None: nothing is due). Reads three index keys and the oldest audit entry.
    pub fn history_due(&self, now: u64, lock_days: u32) -> super::Result<Option<PruneHistory>> {
        let jobs = now.saturating_sub(JOB_KEEP_MS);
        let requests = now.saturating_sub(REQUEST_KEEP_MS);
        let audit = now.saturating_sub(audit_keep_ms(lock_days));
        let due = |oldest: Option<u64>, before: u64| oldest.is_some_and(|t| t < before);
        let oldest_audit = self
            .tree()
            .scan_prefix(audit_key_prefix())
            .next()
            .transpose()?
            .map(|(_, v)| self.decode::<AuditRecord>("audit record", &v))
            .transpose()?
            .map(|a| a.unix_ms);
        let p = PruneHistory {
            jobs_before_unix_ms: if due(self.oldest(index::FINISHED)?, jobs) {
                jobs
            } else {
                0
            },
            requests_before_unix_ms: if due(self.oldest(REQUESTS_BY_TIME)?, requests) {
                requests
            } else {
                0
            },
            audit_before_unix_ms: if due(oldest_audit, audit) { audit } else { 0 },
        };
        let any = p.jobs_before_unix_ms + p.requests_before_unix_ms + p.audit_before_unix_ms > 0;
        Ok(any.then_some(p))
    }

    /// Applies a `PruneHistory` stamped `unix_ms`.
    pub(super) fn prune_history(
        &self,
        p: &PruneHistory,
        unix_ms: u64,
        batch: &mut Batch,
    ) -> Applied {
        if let Some(why) = self.implausible_time(unix_ms)? {
            return Err(Refusal::Time(format!("pruning history refused: {why}")));
        }
        let lock_days = self.effective_policy("")?.lock_days;
        for (before, keep, what) in [
            (
                p.jobs_before_unix_ms,
                JOB_KEEP_MS,
                "finished jobs are kept 90 days",
            ),
            (
                p.requests_before_unix_ms,
                REQUEST_KEEP_MS,
                "request ids are kept a day",
            ),
            (
                p.audit_before_unix_ms,
                audit_keep_ms(lock_days),
                "the audit log is kept a year, and at least the region's lock_days",
            ),
        ] {
            if before != 0 && before.saturating_add(keep) > unix_ms {
                return Err(Refusal::invalid(what));
            }
        }
        let mut jobs = 0;
        if p.jobs_before_unix_ms != 0 {
            for k in self.older_than(index::FINISHED, p.jobs_before_unix_ms)? {
                match self.job(&index::id_of(&k))? {
                    Some(j) if server_runs(&j) => {}
                    Some(j) => {
                        remove_job(batch, &j);
                        jobs += 1;
                    }
                    None => batch.remove(k),
                }
            }
        }
        let mut requests = 0;
        if p.requests_before_unix_ms != 0 {
            for k in self.older_than(REQUESTS_BY_TIME, p.requests_before_unix_ms)? {
                batch.remove(req_key(&index::id_of(&k)));
                batch.remove(k);
                requests += 1;
            }
        }
        let mut audit = 0;
        if p.audit_before_unix_ms != 0 {
            for kv in self.tree().scan_prefix(audit_key_prefix()).take(MAX_PRUNED) {
                let (k, v) = kv?;
                let a: AuditRecord = self.decode("audit record", &v)?;
                if a.unix_ms >= p.audit_before_unix_ms {
                    break;
                }
                batch.remove(k);
                audit += 1;
            }
        }
        Ok(format!(
            "prune history: {jobs} finished job(s), {requests} request id(s), {audit} audit \
             entr{}",
            if audit == 1 { "y" } else { "ies" }
        ))
    }
}

/// How long the audit log is kept under a lock of `lock_days`.
pub fn audit_keep_ms(lock_days: u32) -> u64 {
    AUDIT_KEEP_MS.max(u64::from(lock_days) * 24 * 60 * 60 * 1000)
}
