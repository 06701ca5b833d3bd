//! The fleet part of the catalog: services (their primary and role history), policies, holds,
//! service states, and retention's expiry. Called from `Catalog::execute`; each function checks
//! the command and writes into the entry's batch, or refuses with a reason.
//!
//! Invariants: a service's primary is a healthy member reporting `primary` (or `standalone`),
//! or unknown; every role change a host reports is recorded with its time (the last
//! [`ROLE_HISTORY`]); nothing purges or expires a held backup or one inside the policy's lock;
//! expiry removes only what retention, evaluated at the command's own time, expires.

use super::batch::Batch;
use std::collections::{BTreeSet, HashMap, HashSet};

use prost::Message;
use strongbox_proto::catalog::{
    BackupRecord, ExpireBackups, HoldBackup, HostRecord, MemberRecord, Policy, PolicyRecord,
    RegionRecord, RoleChange, ServiceRecord, SetPolicy, SetRegion, SetServiceState,
};

use strongbox_proto::v1::{BackupKind, BackupState, MemberRole, ServiceAction};

use super::refusal::{Applied, Refusal};
use super::{put_backup, remove_backup, Catalog};
use crate::policy::effective::{describe, overlay, resolve, validate, Effective};
use crate::policy::retention::evaluate;
use crate::policy::time::rfc3339;

/// Role changes kept per service.
pub const ROLE_HISTORY: usize = 50;

pub(super) fn service_key(name: &str) -> Vec<u8> {
    [b"service/".as_slice(), name.as_bytes()].concat()
}

/// The region default is stored under the empty service name.
pub(super) fn policy_key(service: &str) -> Vec<u8> {
    [b"policy/".as_slice(), service.as_bytes()].concat()
}

/// A member as the role history records it: its role, and whether its server was down
/// (`Unspecified`, not down: no member).
fn role_side(m: Option<&MemberRecord>) -> (MemberRole, bool) {
    m.map_or((MemberRole::Unspecified, false), |m| (m.role(), !m.healthy))
}

fn is_primary(m: &MemberRecord) -> bool {
    m.healthy && m.role().takes_writes()
}

pub(super) fn region_key(name: &str) -> Vec<u8> {
    [b"region/".as_slice(), name.as_bytes()].concat()
}

impl Catalog {
    pub fn regions(&self) -> crate::error::Result<Vec<RegionRecord>> {
        self.scan(b"region/", "region record")
    }

    pub fn region(&self, name: &str) -> crate::error::Result<Option<RegionRecord>> {
        self.get(&region_key(name), "region record")
    }

    pub(super) fn set_region(&self, r: &SetRegion, unix_ms: u64, batch: &mut Batch) -> Applied {
        if r.name.is_empty() || r.copies_to.iter().any(|c| c.is_empty() || *c == r.name) {
            return Err(Refusal::invalid(
                "a region needs a name, and copies go to other regions",
            ));
        }
        let created = self.region(&r.name)?.map_or(unix_ms, |p| p.created_unix_ms);
        let rec = RegionRecord {
            name: r.name.clone(),
            copies_to: r.copies_to.clone(),
            created_unix_ms: created,
            updated_unix_ms: unix_ms,
        };
        batch.insert(region_key(&r.name), rec.encode_to_vec());
        Ok(format!(
            "set region {} (copies to: {:?})",
            r.name, r.copies_to
        ))
    }

    pub fn services(&self) -> crate::error::Result<Vec<ServiceRecord>> {
        self.scan(b"service/", "service record")
    }

    pub fn service(&self, name: &str) -> crate::error::Result<Option<ServiceRecord>> {
        self.get(&service_key(name), "service record")
    }

    /// The stored policy of a service, or the region default for `""`.
    /// When the stored schedule of `service` (the region default's for `""`) last changed (0:
    /// never set): slots before it are not due under the new schedule.
    pub fn schedule_changed(&self, service: &str) -> crate::error::Result<u64> {
        Ok(self
            .get::<PolicyRecord>(&policy_key(service), "policy record")?
            .map_or(0, |r| r.schedule_changed_unix_ms))
    }

    pub fn stored_policy(&self, service: &str) -> crate::error::Result<Option<Policy>> {
        Ok(self
            .get::<PolicyRecord>(&policy_key(service), "policy record")?
            .and_then(|r| r.policy))
    }

    /// Every stored policy record: the region default's (service `""`) and the services' own
    /// (one read of the policies, not of the services).
    pub fn policy_records(&self) -> crate::error::Result<Vec<PolicyRecord>> {
        self.scan(b"policy/", "policy record")
    }

    /// The longest lock (`lock_days`) of any policy in force: the region default's or a
    /// service's own.
    pub fn max_lock_days(&self) -> crate::error::Result<u32> {
        let region = self.stored_policy("")?;
        let mut max = resolve(region.as_ref(), None).lock_days;
        for own in self.policy_records()? {
            if let Some(p) = own.policy {
                max = max.max(resolve(region.as_ref(), Some(&p)).lock_days);
            }
        }
        Ok(max)
    }

    /// The effective policy of `service` (the region default's for `""`).
    pub fn effective_policy(&self, service: &str) -> crate::error::Result<Effective> {
        let region = self.stored_policy("")?;
        let own = if service.is_empty() {
            None
        } else {
            self.stored_policy(service)?
        };
        Ok(resolve(region.as_ref(), own.as_ref()))
    }

    /// Records the role changes between a host's previous and new members, and follows each
    /// touched service's primary.
    pub(super) fn track_roles(
        &self,
        previous: Option<&HostRecord>,
        host: &HostRecord,
        unix_ms: u64,
        batch: &mut Batch,
    ) -> Result<(), Refusal> {
        // Maps, not searches: one registration may carry many services, and apply must cost
        // time in proportion to the command (issue 12, kind 4), not its square.
        fn by_service(ms: &[MemberRecord]) -> HashMap<&str, &MemberRecord> {
            ms.iter().map(|m| (m.service.as_str(), m)).collect()
        }
        let old_members = previous.map_or_else(HashMap::new, |p| by_service(&p.members));
        let new_members = by_service(&host.members);
        let mut touched: Vec<&str> = new_members.keys().copied().collect();
        touched.extend(old_members.keys().copied());
        touched.sort_unstable();
        touched.dedup();
        let touched_set: HashSet<&str> = touched.iter().copied().collect();
        // The members of the touched services' hosts (through `hosts-service/`, never every
        // host), with this host's new report.
        // Each other host is read once, however many touched services it claims.
        let mut names: BTreeSet<String> = BTreeSet::new();
        for service in &touched {
            names.extend(
                self.index_ids(super::index::HOSTS_BY_SERVICE, service)?
                    .into_iter()
                    .filter(|n| *n != host.name),
            );
        }
        let mut hosts: Vec<HostRecord> = Vec::new();
        for name in &names {
            hosts.extend(self.host(name)?);
        }
        let mut members_of: HashMap<&str, Vec<(&str, &MemberRecord)>> = HashMap::new();
        for h in hosts.iter().chain(std::iter::once(host)) {
            for m in &h.members {
                if touched_set.contains(m.service.as_str()) {
                    members_of
                        .entry(m.service.as_str())
                        .or_default()
                        .push((h.name.as_str(), m));
                }
            }
        }
        for service in touched {
            let old = old_members.get(service).copied();
            let new = new_members.get(service).copied();
            let mut rec = self.service(service)?.unwrap_or_else(|| ServiceRecord {
                name: service.to_string(),
                created_unix_ms: unix_ms,
                ..Default::default()
            });
            let before_rec = rec.clone();
            if let Some(m) = new {
                rec.engine = m.engine;
            }
            let (from, to) = (role_side(old), role_side(new));
            if from != to {
                rec.role_changes.push(RoleChange {
                    host: host.name.clone(),
                    from: from.0.into(),
                    to: to.0.into(),
                    unix_ms,
                    from_down: from.1,
                    to_down: to.1,
                });
                let excess = rec.role_changes.len().saturating_sub(ROLE_HISTORY);
                rec.role_changes.drain(..excess);
            }
            let members = members_of.get(service).map_or(&[][..], Vec::as_slice);
            let still = members
                .iter()
                .any(|(h, m)| *h == rec.primary_host && is_primary(m));
            if !still {
                // The candidate that became primary most recently (a promoted standby), then by name.
                let became = |h: &str| {
                    rec.role_changes
                        .iter()
                        .rev()
                        .find(|c| c.host == h && c.to().takes_writes())
                        .map_or(0, |c| c.unix_ms)
                };
                let next = members
                    .iter()
                    .filter(|(_, m)| is_primary(m))
                    .map(|(h, _)| *h)
                    .max_by(|a, b| became(a).cmp(&became(b)).then(b.cmp(a)));
                let next = next.unwrap_or("").to_string();
                if next != rec.primary_host {
                    rec.primary_host = next;
                    rec.primary_since_unix_ms = unix_ms;
                }
            }
            if rec != before_rec {
                batch.insert(service_key(service), rec.encode_to_vec());
            }
        }
        Ok(())
    }

    pub(super) fn set_policy(&self, p: &SetPolicy, unix_ms: u64, batch: &mut Batch) -> Applied {
        let change = p.policy.clone().unwrap_or_default();
        validate(&change).map_err(Refusal::Invalid)?;
        if !p.service.is_empty() && change.max_concurrent.is_some() {
            return Err(Refusal::invalid(
                "max_concurrent is a region setting; set it without --service",
            ));
        }
        let before = self.get::<PolicyRecord>(&policy_key(&p.service), "policy record")?;
        let stored = if p.reset {
            None
        } else {
            before.as_ref().and_then(|r| r.policy.clone())
        };
        let merged = overlay(&stored.unwrap_or_default(), &change);
        let old_schedule = before
            .as_ref()
            .and_then(|r| r.policy.as_ref())
            .and_then(|p| p.schedule.clone());
        // A new schedule starts at its first slot after the change (issue 15, fault 4).
        let schedule_changed_unix_ms = if merged.schedule != old_schedule {
            unix_ms
        } else {
            before.as_ref().map_or(0, |r| r.schedule_changed_unix_ms)
        };
        batch.insert(
            policy_key(&p.service),
            PolicyRecord {
                service: p.service.clone(),
                policy: Some(merged),
                updated_unix_ms: unix_ms,
                schedule_changed_unix_ms,
            }
            .encode_to_vec(),
        );
        let level = if p.service.is_empty() {
            "the region default".to_string()
        } else {
            format!("service {}", p.service)
        };
        Ok(format!(
            "set policy of {level}{}: {}",
            if p.reset { " (reset)" } else { "" },
            describe(&change)
        ))
    }

    pub(super) fn hold_backup(&self, h: &HoldBackup, batch: &mut Batch) -> Applied {
        let mut b = self
            .backup(&h.backup_id)?
            .ok_or_else(|| Refusal::NotFound {
                what: "backup",
                id: h.backup_id.clone(),
            })?;
        b.held = h.held;
        b.hold_reason = if h.held {
            h.reason.clone()
        } else {
            String::new()
        };
        put_backup(batch, None, &b);
        Ok(if h.held {
            format!("hold backup {} of {} ({})", b.id, b.service, h.reason)
        } else {
            format!("unhold backup {} of {}", b.id, b.service)
        })
    }

    pub(super) fn set_service_state(
        &self,
        s: &SetServiceState,
        unix_ms: u64,
        batch: &mut Batch,
    ) -> Applied {
        let mut rec = self.service(&s.service)?.ok_or_else(|| Refusal::NotFound {
            what: "service",
            id: s.service.clone(),
        })?;
        match s.action() {
            ServiceAction::Exclude => rec.excluded = true,
            ServiceAction::Include => {
                if rec.deprovisioned_unix_ms != 0 {
                    return Err(Refusal::Conflict(format!(
                        "service {} is deprovisioned",
                        s.service
                    )));
                }
                rec.excluded = false;
            }
            ServiceAction::Deprovision => {
                if rec.deprovisioned_unix_ms == 0 {
                    rec.deprovisioned_unix_ms = unix_ms;
                }
            }
            ServiceAction::Unspecified => {
                return Err(Refusal::invalid("a service state change needs an action"))
            }
        }
        batch.insert(service_key(&s.service), rec.encode_to_vec());
        Ok(format!("{} service {}", s.action(), s.service))
    }

    /// Why `b` may not be purged now, if it may not.
    pub(super) fn purge_refusal(
        &self,
        b: &BackupRecord,
        unix_ms: u64,
    ) -> Result<Option<Refusal>, Refusal> {
        if b.held {
            return Ok(Some(Refusal::Conflict(format!(
                "backup {} is on hold ({}); `strongbox backup unhold {}` first",
                b.id,
                if b.hold_reason.is_empty() {
                    "no reason given"
                } else {
                    &b.hold_reason
                },
                b.id
            ))));
        }
        let policy = self.effective_policy(&b.service)?;
        let until = b.created_unix_ms.saturating_add(policy.lock_ms());
        // A lock is never judged by a clock far from the catalog's: one set forward must not
        // lift it early.
        if policy.lock_days > 0 {
            if let Some(why) = self.implausible_time(unix_ms)? {
                return Ok(Some(Refusal::Time(format!(
                    "backup {} is under a lock: {why}",
                    b.id
                ))));
            }
        }
        if policy.lock_days > 0 && unix_ms < until {
            return Ok(Some(Refusal::Conflict(format!(
                "backup {} is locked until {} (the policy's lock_days is {}); nobody can purge it before",
                b.id,
                rfc3339(until),
                policy.lock_days
            ))));
        }
        Ok(None)
    }

    /// The backups of `service`, for retention.
    pub fn service_backups(&self, service: &str) -> crate::error::Result<Vec<BackupRecord>> {
        // Through `backups-service/`, not every backup.
        let mut out = Vec::new();
        for id in self.index_ids(super::index::BACKUPS_BY_SERVICE, service)? {
            if let Some(b) = self.backup(&id)? {
                out.push(b);
            }
        }
        Ok(out)
    }

    pub(super) fn expire_backups(
        &self,
        e: &ExpireBackups,
        unix_ms: u64,
        batch: &mut Batch,
    ) -> Applied {
        if let Some(why) = self.implausible_time(unix_ms)? {
            return Err(Refusal::Time(format!(
                "retention of {} refused: {why}",
                e.service
            )));
        }
        let policy = self.effective_policy(&e.service)?;
        let backups = self.service_backups(&e.service)?;
        let verdicts = evaluate(&policy, &backups, unix_ms);
        let mut gone = Vec::new();
        let mut served_expired = 0;
        for b in &backups {
            if e.backup_ids.contains(&b.id) && verdicts.get(&b.id).is_some_and(|v| v.expired()) {
                remove_backup(batch, b);
                // A scheduled backup's job remembers that its slot was served and its backup
                // expired by the policy (not lost): the scheduler does not take it again.
                // (Not a failed one: its slot was not served.)
                if b.kind() == BackupKind::Scheduled
                    && b.state() == BackupState::Completed
                    && b.slot_unix_ms > 0
                {
                    served_expired = served_expired.max(b.slot_unix_ms);
                    let id = crate::policy::plan::scheduled_job_id(
                        &b.service,
                        b.slot_unix_ms,
                        b.attempt,
                    );
                    if let Some(mut job) = self.job(&id)? {
                        if job.backup_id == b.id {
                            job.backup_expired_unix_ms = unix_ms;
                            super::put_job(batch, &job);
                        }
                    }
                }
                gone.push(b.id.as_str());
            }
        }
        if gone.is_empty() {
            return Err(Refusal::conflict("nothing to expire"));
        }
        // The service remembers it too, after the job is forgotten (catalog/history.rs).
        if let Some(mut svc) = self.service(&e.service)? {
            if served_expired > svc.served_expired_slot_unix_ms {
                svc.served_expired_slot_unix_ms = served_expired;
                batch.insert(service_key(&svc.name), svc.encode_to_vec());
            }
        }
        Ok(format!(
            "expire {} backup(s) of {} by retention: {}",
            gone.len(),
            e.service,
            gone.join(", ")
        ))
    }
}
