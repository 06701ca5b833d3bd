//! Hosts: what their agents claim, and what operators bind them to (issue 12, kind 2:
//! "agents grant themselves authority").
//!
//! An agent's registration and heartbeats are claims: the members it reports and whether it
//! asks to be a spare. Authority comes from bindings, which only operators set (`BindHost`,
//! from `strongbox host approve|revoke` or the inventory), with one exception: the first host
//! to report a service that the catalog has never seen is bound to it (trust on first use, so
//! a new fleet needs no approval step per database).
//!
//! Invariants: a reported member counts (`HostRecord.members`: primaries, scheduling,
//! commits, in-place restores) only if its service is bound to the host; a member of a known
//! service reported by a host it is not bound to waits in `pending_members`, and nothing uses
//! it; a host is a spare (`HostRecord.spare`) only while its agent asks to be one and an
//! operator approved it; an agent's claim never changes a binding, and a binding never
//! changes what the agent reports. Apply costs time in proportion to the command (maps, not
//! searches per member).

use super::batch::Batch;
use std::collections::BTreeSet;

use strongbox_proto::catalog::{BindHost, HostRecord, HostSession, MemberRecord, RegisterHost};

use strongbox_proto::v1::{FailureClass, JobKind, JobState};

use super::index::{put_host, put_job, remove_host, OPEN_BY_HOST};
use super::refusal::{Applied, Refusal};
use super::Catalog;

impl Catalog {
    /// An agent's registration or heartbeat: its claims, split by the host's bindings.
    pub(super) fn register_host(
        &self,
        r: &RegisterHost,
        unix_ms: u64,
        batch: &mut Batch,
    ) -> Applied {
        if r.host.is_empty() {
            return Err(Refusal::invalid("a host needs a name"));
        }
        let previous = self.host(&r.host)?;
        let mut bound: BTreeSet<String> = previous
            .as_ref()
            .map(|p| p.bound_services.iter().cloned().collect())
            .unwrap_or_default();
        let mut members = Vec::new();
        let mut pending = Vec::new();
        let mut seen = BTreeSet::new();
        let mut first_use = Vec::new();
        for m in &r.members {
            if m.service.is_empty() || !seen.insert(m.service.as_str()) {
                return Err(Refusal::Invalid(format!(
                    "host {} reports service {:?} twice or without a name",
                    r.host, m.service
                )));
            }
            if bound.contains(&m.service) {
                members.push(m.clone());
            } else if self.service(&m.service)?.is_none() {
                // Nobody serves this service yet: its first host is bound to it.
                bound.insert(m.service.clone());
                first_use.push(m.service.as_str());
                members.push(m.clone());
            } else {
                pending.push(m.clone());
            }
        }
        let spare_approved = previous.as_ref().is_some_and(|p| p.spare_approved);
        let rec = HostRecord {
            name: r.host.clone(),
            region: r.region.clone(),
            spare: r.spare && spare_approved,
            registered_unix_ms: previous
                .as_ref()
                .map(|p| p.registered_unix_ms)
                .filter(|t| *t != 0)
                .unwrap_or(unix_ms),
            updated_unix_ms: unix_ms,
            members,
            spare_requested: r.spare,
            spare_approved,
            bound_services: bound.into_iter().collect(),
            pending_members: pending,
            session_id: previous
                .as_ref()
                .map(|p| p.session_id.clone())
                .unwrap_or_default(),
            // An agent that registers or sends a heartbeat is back.
            away_since_unix_ms: 0,
            session_node: previous.as_ref().map_or(0, |p| p.session_node),
            restored_servers: previous
                .as_ref()
                .map(|p| p.restored_servers.clone())
                .unwrap_or_default(),
        };
        self.track_roles(previous.as_ref(), &rec, unix_ms, batch)?;
        if previous.as_ref().is_some_and(|p| p.spare) && !rec.spare {
            self.fail_restores_on(
                &rec.name,
                "its agent no longer asks to be a spare",
                unix_ms,
                batch,
            )?;
        }
        put_host(batch, previous.as_ref(), &rec);
        let mut what = format!("register host {}", r.host);
        if !first_use.is_empty() {
            what.push_str(&format!(" (bound on first use: {})", first_use.join(", ")));
        }
        if !rec.pending_members.is_empty() {
            let names: Vec<&str> = rec
                .pending_members
                .iter()
                .map(|m| m.service.as_str())
                .collect();
            what.push_str(&format!(" (awaiting approval: {})", names.join(", ")));
        }
        Ok(what)
    }

    /// An agent's session opened (the host's newest session is now this one), or ended without
    /// the agent coming back within the grace period: then, unless a newer session opened
    /// since, every open job of the host fails as abandoned (issue 14, fault 3), so a backup
    /// whose agent was killed is retried at once rather than after [`super::ABANDONED_MS`],
    /// and the host is marked away (no new backup goes to it until its agent is back).
    pub(super) fn host_session(&self, s: &HostSession, unix_ms: u64, batch: &mut Batch) -> Applied {
        let previous = self.host(&s.host)?.ok_or_else(|| Refusal::NotFound {
            what: "host",
            id: s.host.clone(),
        })?;
        let mut rec = previous.clone();
        if s.session_id.is_empty() {
            return Err(Refusal::invalid("a session needs an id"));
        }
        if s.open {
            rec.session_id = s.session_id.clone();
            rec.session_node = s.node_id;
            rec.away_since_unix_ms = 0;
            rec.updated_unix_ms = unix_ms;
            put_host(batch, Some(&previous), &rec);
            return Ok(format!(
                "session {} of host {} opened on {}",
                s.session_id, s.host, s.node
            ));
        }
        if rec.session_id != s.session_id {
            return Err(Refusal::Conflict(format!(
                "host {} came back: its agent opened a newer session",
                s.host
            )));
        }
        if s.grace_begins {
            rec.away_since_unix_ms = unix_ms.max(1);
            put_host(batch, Some(&previous), &rec);
            return Ok(format!(
                "session {} of host {} ended on {}; its agent has {} s to come back",
                s.session_id,
                s.host,
                s.node,
                s.grace_ms / 1000
            ));
        }
        let reason = format!(
            "abandoned: the agent of host {} went away (its session on {} ended) and did not come back \
             within {} s",
            s.host,
            s.node,
            s.grace_ms / 1000
        );
        let mut failed = 0;
        for job in self.jobs_by(OPEN_BY_HOST, &s.host)? {
            if job.host != s.host || job.state().is_final() || job.state() == JobState::Waiting {
                continue;
            }
            // (This record is written last in the batch: it carries the release too.)
            rec.restored_servers.retain(|id| *id != job.id);
            self.fail_job(job, &reason, FailureClass::Abandoned, unix_ms, batch)?;
            failed += 1;
        }
        rec.session_id.clear();
        rec.session_node = 0;
        if rec.away_since_unix_ms == 0 {
            rec.away_since_unix_ms = unix_ms.saturating_sub(s.grace_ms).max(1);
        }
        put_host(batch, Some(&previous), &rec);
        Ok(format!(
            "session {} of host {} ended; {failed} open job(s) failed: {reason}",
            s.session_id, s.host
        ))
    }

    /// An operator's binding: services granted or revoked, the spare role approved or
    /// withdrawn. A host not registered yet gets a record holding only its bindings.
    pub(super) fn bind_host(&self, b: &BindHost, unix_ms: u64, batch: &mut Batch) -> Applied {
        if b.host.is_empty() {
            return Err(Refusal::invalid("a binding needs a host"));
        }
        if b.grant.is_empty() && b.revoke.is_empty() && b.spare.is_none() {
            return Err(Refusal::Invalid(format!(
                "nothing to change for host {}",
                b.host
            )));
        }
        let previous = self.host(&b.host)?;
        let mut rec = previous.clone().unwrap_or_else(|| HostRecord {
            name: b.host.clone(),
            ..Default::default()
        });
        let mut bound: BTreeSet<String> = rec.bound_services.iter().cloned().collect();
        for s in &b.grant {
            bound.insert(s.clone());
        }
        for s in &b.revoke {
            if !bound.remove(s) {
                return Err(Refusal::Conflict(format!(
                    "host {} is not bound to service {s}; `strongbox host list` shows its bindings",
                    b.host
                )));
            }
        }
        // Re-split the host's claims under the new bindings.
        let claims: Vec<MemberRecord> = rec
            .members
            .drain(..)
            .chain(rec.pending_members.drain(..))
            .collect();
        let (members, pending): (Vec<_>, Vec<_>) =
            claims.into_iter().partition(|m| bound.contains(&m.service));
        rec.members = members;
        rec.pending_members = pending;
        rec.members.sort_by(|a, b| a.service.cmp(&b.service));
        rec.pending_members
            .sort_by(|a, b| a.service.cmp(&b.service));
        rec.bound_services = bound.into_iter().collect();
        if let Some(spare) = b.spare {
            rec.spare_approved = spare;
        }
        rec.spare = rec.spare_requested && rec.spare_approved;
        self.track_roles(previous.as_ref(), &rec, unix_ms, batch)?;
        if previous.as_ref().is_some_and(|p| p.spare) && !rec.spare {
            self.fail_restores_on(
                &rec.name,
                "an operator withdrew its spare role",
                unix_ms,
                batch,
            )?;
        }
        let never_registered = rec.registered_unix_ms == 0;
        if never_registered && rec.bound_services.is_empty() && !rec.spare_approved {
            // Only bindings made it, and none is left.
            remove_host(batch, &rec);
        } else {
            put_host(batch, previous.as_ref(), &rec);
        }
        let mut parts = Vec::new();
        if !b.grant.is_empty() {
            parts.push(format!("grant {}", b.grant.join(", ")));
        }
        if !b.revoke.is_empty() {
            parts.push(format!("revoke {}", b.revoke.join(", ")));
        }
        match b.spare {
            Some(true) => parts.push("approve spare".into()),
            Some(false) => parts.push("withdraw spare".into()),
            None => {}
        }
        Ok(format!("bind host {}: {}", b.host, parts.join("; ")))
    }
}

impl Catalog {
    /// Fails the unfinished restores onto `host` other than in-place ones: a host that stopped
    /// being a spare takes no restore it was given as one.
    fn fail_restores_on(
        &self,
        host: &str,
        why: &str,
        unix_ms: u64,
        batch: &mut Batch,
    ) -> Result<(), Refusal> {
        for mut j in self.open_jobs_of_host(host)? {
            if j.host != host || j.kind() != JobKind::Restore || j.in_place || j.state().is_final()
            {
                continue;
            }
            j.set_state(JobState::Failed);
            j.set_failure(FailureClass::Refused);
            j.reason =
                format!("host {host} is no longer a spare: {why}; nothing was restored there");
            j.updated_unix_ms = unix_ms;
            put_job(batch, &j);
        }
        Ok(())
    }
}

/// A host's claims as its agent last reported them (bound and pending members), in one
/// list sorted by service: what a heartbeat compares with.
pub fn claimed_members(h: &HostRecord) -> Vec<MemberRecord> {
    let mut all: Vec<MemberRecord> = h
        .members
        .iter()
        .chain(h.pending_members.iter())
        .cloned()
        .collect();
    all.sort_by(|a, b| a.service.cmp(&b.service));
    all
}
