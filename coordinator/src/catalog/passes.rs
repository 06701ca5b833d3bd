//! What the leader's passes read (issue 17, point 5): the scheduler's snapshot of every
//! service with only the records its decisions use (each service's newest backups and the jobs
//! since, not its history), and retention's slice of services with all their backups.
//!
//! Invariants: the scheduler's snapshot reads, per service whose jobs or backups changed
//! since the last pass ([`PassCache`]), the backups created since its newest
//! completed scheduled backup's slot (and that one), its open jobs, and its finished jobs that
//! ended since that slot (a page of services reads every backup, and the same jobs);
//! `policy::plan::status` needs no other (a due slot lies after the
//! anchor, so its jobs and backups are newer; the anchor's bound from expired backups is on the
//! service record). A retention slice reads its services' backups and nothing else.

use crate::store;
use std::collections::{BTreeMap, HashMap, HashSet};

use strongbox_proto::catalog::{BackupRecord, HostRecord, JobRecord, ServiceRecord};
use strongbox_proto::v1::{BackupKind, BackupState};

use super::{index, Catalog};
use crate::error::Result;
use crate::policy::plan::Snapshot;

/// What the scheduler's read takes of one service ([`Catalog::service_pass_read`]).
#[derive(Debug)]
pub(super) struct ServicePassRead {
    backups: Vec<BackupRecord>,
    finished: Vec<JobRecord>,
}

/// The scheduler's read of each service, kept between passes, and the services whose jobs or
/// backups changed since (noted by every apply step, after its write): a pass re-reads only
/// those, so it costs what changed plus one read of the service and host records.
///
/// Invariant: a service's kept read is dropped before a pass that follows a change to its jobs
/// or backups (the changes are taken at the pass's start, and a change noted during a pass is
/// taken by the next one); a snapshot install or a bootstrap drops every read.
#[derive(Default)]
pub(super) struct PassCache {
    changed: std::sync::Mutex<(HashSet<String>, bool)>,
    kept: std::sync::Mutex<HashMap<String, std::sync::Arc<ServicePassRead>>>,
}

impl PassCache {
    /// Notes services whose jobs or backups an apply step wrote (after its write).
    pub(super) fn changed(&self, services: Vec<String>) {
        if services.is_empty() {
            return;
        }
        let mut c = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        c.0.extend(services);
    }

    /// Notes that the whole catalog changed (a snapshot installed, a bootstrap).
    pub(super) fn all_changed(&self) {
        let mut c = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        c.0.clear();
        c.1 = true;
    }

    fn take_changed(&self) -> (HashSet<String>, bool) {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn lock_kept(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, std::sync::Arc<ServicePassRead>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A service's name and every backup it has.
pub type ServiceBackups = (String, Vec<BackupRecord>);

impl Catalog {
    /// One read of what the scheduler's decisions (and the service states `/metrics`
    /// reports) need, for every service: see the module's invariants.
    pub fn schedule_snapshot(&self) -> Result<Snapshot> {
        let (changed, all) = self.pass_cache.take_changed();
        let mut kept = self.pass_cache.lock_kept();
        if all {
            kept.clear();
        }
        for s in &changed {
            kept.remove(s);
        }
        let services = self.services()?;
        let tree = self.tree();
        let mut backups = Vec::new();
        let mut jobs: Vec<JobRecord> = Vec::new();
        let mut next = HashMap::with_capacity(services.len());
        for s in &services {
            let read = match kept.remove(&s.name) {
                Some(k) => k,
                None => std::sync::Arc::new(self.service_pass_read(&tree, &s.name)?),
            };
            backups.extend(read.backups.iter().cloned());
            jobs.extend(read.finished.iter().cloned());
            next.insert(s.name.clone(), read);
        }
        *kept = next;
        drop(kept);
        // Every open job, once (backups under way count against the region's limit).
        for kv in tree.scan_prefix(format!("{}/", index::OPEN_BY_SERVICE)) {
            let (k, _) = kv?;
            if let Some(j) = self.job(&index::id_of(&k))? {
                jobs.push(j);
            }
        }
        self.snapshot_with(services, self.hosts()?, backups, jobs)
    }

    /// What the scheduler's read takes of one service: its backups newest first, down to
    /// its newest completed scheduled backup and whatever was made after that one's slot,
    /// and its jobs finished since that slot.
    fn service_pass_read(&self, tree: &store::Tree, service: &str) -> Result<ServicePassRead> {
        let prefix = index::prefix(index::BACKUPS_BY_SERVICE, service);
        let mut bound: Option<u64> = None;
        let mut backups = Vec::new();
        for kv in tree.scan_prefix(&prefix).rev() {
            let (k, _) = kv?;
            let Some(b) = self.backup(&index::id_of(&k))? else {
                continue;
            };
            if bound.is_some_and(|slot| b.created_unix_ms < slot) {
                break;
            }
            bound = bound.or_else(|| anchor_of(&b));
            backups.push(b);
        }
        let finished = self.jobs_finished_since(tree, service, bound)?;
        Ok(ServicePassRead { backups, finished })
    }

    /// The finished jobs of `service` that ended at or after `since` (all of them for `None`),
    /// newest first, through `jobs-finished-service/` (the key holds the time).
    fn jobs_finished_since(
        &self,
        tree: &store::Tree,
        service: &str,
        since: Option<u64>,
    ) -> Result<Vec<JobRecord>> {
        let since = since.unwrap_or(0);
        let prefix = index::prefix(index::FINISHED_BY_SERVICE, service);
        let mut out = Vec::new();
        for kv in tree.scan_prefix(&prefix).rev() {
            let (k, _) = kv?;
            if finished_ms(&k[prefix.len()..]).is_some_and(|t| t < since) {
                break;
            }
            if let Some(j) = self.job(&index::id_of(&k))? {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// What the scheduler's decisions would read without the pass's own read: every host,
    /// service, backup and job. The reference [`Catalog::schedule_snapshot`] is checked
    /// against (`tests/scheduler.rs`, the `fleet_scale` bench); it reads whole kinds, so no
    /// handler or pass calls it.
    pub fn full_schedule_snapshot(&self) -> Result<Snapshot> {
        self.snapshot_with(
            self.services()?,
            self.hosts()?,
            self.backups()?,
            self.jobs()?,
        )
    }

    /// What the decisions on `services` alone need (a page of `service list`, one service
    /// shown), read through the indexes: their hosts, every backup (`service list` counts
    /// them), their open jobs and the finished ones the scheduler's read takes too.
    /// Region-wide figures (backups under way in the region) are not in it.
    pub fn services_snapshot(&self, services: Vec<ServiceRecord>) -> Result<Snapshot> {
        let tree = self.tree();
        let mut hosts = BTreeMap::new();
        let mut backups = Vec::new();
        let mut jobs = Vec::new();
        for s in &services {
            for h in self.hosts_of_service(&s.name)? {
                hosts.entry(h.name.clone()).or_insert(h);
            }
            let mut mine = self.service_backups(&s.name)?;
            mine.sort_by_key(|b| std::cmp::Reverse(b.created_unix_ms));
            jobs.extend(self.jobs_by(index::OPEN_BY_SERVICE, &s.name)?);
            let bound = mine.iter().find_map(anchor_of);
            jobs.extend(self.jobs_finished_since(&tree, &s.name, bound)?);
            backups.extend(mine);
        }
        self.snapshot_with(services, hosts.into_values().collect(), backups, jobs)
    }

    /// Up to `limit` services after `after` (by name; from the first when `None`), each with
    /// every backup it has: one pass of retention over a slice of the fleet. The last
    /// service's name, to go on from (`None` once the list ended).
    pub fn retention_slice(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ServiceBackups>, Option<String>)> {
        let after_key = after.map(super::fleet::service_key);
        let page = self.services_page(after_key.as_deref(), limit)?;
        let mut out = Vec::with_capacity(page.items.len());
        for s in page.items {
            let backups = self.service_backups(&s.name)?;
            out.push((s.name, backups));
        }
        let next = page.next.as_ref().and(out.last().map(|(n, _)| n.clone()));
        Ok((out, next))
    }

    /// A snapshot of these records, with the policies, schedule changes and presences they
    /// are judged with.
    fn snapshot_with(
        &self,
        services: Vec<ServiceRecord>,
        hosts: Vec<HostRecord>,
        backups: Vec<BackupRecord>,
        jobs: Vec<JobRecord>,
    ) -> Result<Snapshot> {
        // The stored policies in one read (few services have their own).
        let mut policies = HashMap::new();
        let mut schedule_changed = HashMap::new();
        let mut region = None;
        schedule_changed.insert(String::new(), 0);
        for r in self.policy_records()? {
            if r.service.is_empty() {
                schedule_changed.insert(String::new(), r.schedule_changed_unix_ms);
                region = r.policy;
            } else if let Some(p) = r.policy {
                schedule_changed.insert(r.service.clone(), r.schedule_changed_unix_ms);
                policies.insert(r.service, p);
            }
        }
        let mut snap = Snapshot::new(
            hosts,
            services,
            backups,
            jobs,
            region,
            policies,
            schedule_changed,
        );
        snap.presences = crate::policy::presence::Presences {
            nodes_seen: self.nodes_seen()?,
            slack_ms: 0,
        };
        Ok(snap)
    }
}

/// The slot of `b` if it is a completed scheduled backup: for a service's newest such one,
/// the bound the jobs and backups the scheduler's decisions need are no older than.
fn anchor_of(b: &BackupRecord) -> Option<u64> {
    (b.kind() == BackupKind::Scheduled && b.state() == BackupState::Completed)
        .then(|| b.slot_unix_ms.min(b.created_unix_ms))
}

/// The finish time in a `jobs-finished-service/` key's tail (`<20 digits>\0<id>`).
fn finished_ms(tail: &[u8]) -> Option<u64> {
    let digits = tail.split(|b| *b == 0).next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_finished_key_tail_gives_its_time() {
        assert_eq!(super::finished_ms(b"00000000000000000042\0job-1"), Some(42));
        assert_eq!(super::finished_ms(b"x\0job-1"), None);
    }
}
