//! The fleet-policy side of `OperatorService`: services with their schedule status, policies
//! (with the deletions a change would make), holds, and service states. The trait methods in
//! `operator.rs` check the caller's role and call these.
//!
//! Invariants: a policy change that would expire backups is applied only when the caller
//! confirmed (`yes`), and then exactly the backups listed to the caller are expired; the
//! retention shown for a backup is `policy::retention::evaluate` at the time of the read, the
//! same function the retention controller and the catalog apply.

use std::collections::BTreeMap;

use strongbox_core::pki::Identity;
use strongbox_proto::catalog::{command::Op, ExpireBackups, JobRecord, SetPolicy};
use strongbox_proto::v1::*;
use tonic::Status;

use super::convert::{backup_info_with, policy, policy_info, role_change};
use crate::node::NodeContext;
use crate::policy::effective::resolve;
use crate::policy::plan::{status, Snapshot};
use crate::policy::retention::evaluate;
use strongbox_core::clock::now_ms;

/// One service as `service list/show` shows it.
pub fn service_info(snap: &Snapshot, name: &str, now: u64) -> Option<ServiceInfo> {
    let svc = snap.services.iter().find(|s| s.name == name)?;
    let st = status(snap, svc, now);
    let members = snap
        .hosts
        .iter()
        .flat_map(|h| {
            h.members
                .iter()
                .filter(|m| m.service == name)
                .map(move |m| ServiceMember {
                    host: h.name.clone(),
                    role: m.role,
                    healthy: m.healthy,
                    engine_version: m.engine_version.clone(),
                })
        })
        .collect();
    let completed: Vec<&strongbox_proto::catalog::BackupRecord> = snap
        .backups_of(name)
        .filter(|b| b.state() == BackupState::Completed)
        .collect();
    Some(ServiceInfo {
        name: svc.name.clone(),
        engine: svc.engine,
        members,
        last_backup_unix_ms: completed
            .iter()
            .map(|b| b.created_unix_ms)
            .max()
            .unwrap_or(0),
        backups: completed.len() as u64,
        state: st.state.into(),
        state_reason: st.reason.clone(),
        primary_host: svc.primary_host.clone(),
        primary_since_unix_ms: svc.primary_since_unix_ms,
        role_changes: svc.role_changes.iter().cloned().map(role_change).collect(),
        schedule: st.schedule.to_string(),
        next_backup_unix_ms: if matches!(
            st.state,
            ServiceState::Excluded | ServiceState::Deprovisioned
        ) {
            0
        } else {
            st.next_ms()
        },
        last_success_unix_ms: st.last_success_ms,
        last_failure: st.last_failure.clone(),
        missed: st.missed(),
    })
}

/// The services of `snap` as `service list` shows them, in its order (by name).
pub fn services_of(snap: &Snapshot, now: u64) -> Vec<ServiceInfo> {
    snap.services
        .iter()
        .filter_map(|s| service_info(snap, &s.name, now))
        .collect()
}

/// One service as `service show` shows it, read through the catalog's indexes; `NOT_FOUND`
/// saying where to look.
pub fn show_service(node: &NodeContext, name: &str) -> Result<ServiceInfo, Status> {
    let svc = known_service(node, name)?;
    let snap = node.catalog.services_snapshot(vec![svc])?;
    service_info(&snap, name, now_ms()).ok_or_else(|| no_service(name))
}

/// The service record of `name`, or `NOT_FOUND` saying where to look.
pub fn known_service(
    node: &NodeContext,
    name: &str,
) -> Result<strongbox_proto::catalog::ServiceRecord, Status> {
    node.catalog.service(name)?.ok_or_else(|| no_service(name))
}

pub fn no_service(name: &str) -> Status {
    Status::not_found(format!(
        "no service {name:?}; `strongbox service list` shows the services agents reported"
    ))
}

pub fn get_policy(node: &NodeContext, service: &str) -> Result<GetPolicyResponse, Status> {
    if !service.is_empty() {
        known_service(node, service)?;
    }
    let stored = node.catalog.stored_policy(service)?.unwrap_or_default();
    let effective = node.catalog.effective_policy(service)?.to_policy();
    Ok(GetPolicyResponse {
        service: service.to_string(),
        stored: Some(policy_info(stored)),
        effective: Some(policy_info(effective)),
    })
}

/// Sets a policy; see the module invariants for deletions.
pub async fn set_policy(
    node: &NodeContext,
    who: &Identity,
    r: SetPolicyRequest,
) -> Result<SetPolicyResponse, Status> {
    node.read_barrier().await?;
    let change = policy(r.policy.unwrap_or_default());
    crate::policy::effective::validate(&change).map_err(Status::invalid_argument)?;
    if !r.service.is_empty() {
        known_service(node, &r.service)?;
    }
    // What the new policy would expire, evaluated now on the affected services: the one named,
    // or every service for the region default (an operator's rare change, which reads every
    // service's backups, a slice at a time).
    let now = now_ms();
    let stored = if r.reset {
        None
    } else {
        node.catalog.stored_policy(&r.service)?
    };
    let merged = crate::policy::effective::overlay(&stored.unwrap_or_default(), &change);
    let region = node.catalog.stored_policy("")?;
    let mut expiring: Vec<strongbox_proto::catalog::BackupRecord> = Vec::new();
    let mut would_expire: Vec<BackupInfo> = Vec::new();
    let mut judge = |service: &str, backups: Vec<strongbox_proto::catalog::BackupRecord>| {
        let own = node.catalog.stored_policy(service)?;
        let before = evaluate(&resolve(region.as_ref(), own.as_ref()), &backups, now);
        let new = if r.service.is_empty() {
            resolve(Some(&merged), own.as_ref())
        } else {
            resolve(region.as_ref(), Some(&merged))
        };
        let after = evaluate(&new, &backups, now);
        for b in backups {
            let newly = after.get(&b.id).is_some_and(|v| v.expired())
                && before.get(&b.id).is_some_and(|v| !v.expired());
            if newly {
                would_expire.push(backup_info_with(b.clone(), after.get(&b.id)));
                expiring.push(b);
            }
        }
        Ok::<(), Status>(())
    };
    if r.service.is_empty() {
        let mut after: Option<String> = None;
        loop {
            let (slice, next) = node
                .catalog
                .retention_slice(after.as_deref(), crate::controllers::retention::SLICE)?;
            for (service, backups) in slice {
                judge(&service, backups)?;
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    } else {
        judge(&r.service, node.catalog.service_backups(&r.service)?)?;
    }
    if !would_expire.is_empty() && !r.yes {
        return Ok(SetPolicyResponse {
            applied: false,
            would_expire,
            policy: Some(get_policy(node, &r.service)?),
        });
    }
    node.apply(
        who,
        Op::SetPolicy(SetPolicy {
            service: r.service.clone(),
            policy: Some(change),
            reset: r.reset,
        }),
    )
    .await?;
    let mut by_service: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for b in &expiring {
        by_service.entry(&b.service).or_default().push(b.id.clone());
    }
    for (service, backup_ids) in by_service {
        let op = Op::ExpireBackups(ExpireBackups {
            service: service.to_string(),
            backup_ids,
        });
        if let Err(e) = node.apply(who, op).await {
            tracing::warn!(service, error = %e, "expiring backups after a policy change");
        }
    }
    node.read_barrier().await?;
    Ok(SetPolicyResponse {
        applied: true,
        would_expire,
        policy: Some(get_policy(node, &r.service)?),
    })
}

/// A backup with its retention verdict, as of now.
pub fn backup_with_retention(node: &NodeContext, id: &str) -> Result<BackupInfo, Status> {
    let b = node.catalog.backup(id)?.ok_or_else(|| {
        Status::not_found(format!(
            "no backup {id:?}; `strongbox backup list SERVICE` shows the backups"
        ))
    })?;
    let policy = node.catalog.effective_policy(&b.service)?;
    let backups = node.catalog.service_backups(&b.service)?;
    let v = evaluate(&policy, &backups, now_ms());
    Ok(backup_info_with(b.clone(), v.get(&b.id)))
}

/// The final backup job of a service being deprovisioned, if its policy keeps one.
pub fn final_backup_job(node: &NodeContext, service: &str) -> Result<Option<JobRecord>, Status> {
    if !node.catalog.effective_policy(service)?.keep_final {
        return Ok(None);
    }
    let (host, engine) = super::jobs::backup_host(
        &node.catalog.hosts_of_service(service)?,
        service,
        "",
        &node.catalog.presences()?,
        now_ms(),
    )
    .map_err(|e| {
        Status::failed_precondition(format!(
            "the policy keeps a final backup, and it cannot be taken: {}; bring the primary \
                 back, or `strongbox policy set --service {service} --keep-final false` first",
            e.message()
        ))
    })?;
    Ok(Some(JobRecord {
        id: format!("job-{}", uuid::Uuid::now_v7()),
        kind: JobKind::Backup.into(),
        service: service.to_string(),
        host,
        backup_id: format!("bk-{}", uuid::Uuid::now_v7()),
        backup_kind: BackupKind::Final.into(),
        engine: engine.into(),
        ..Default::default()
    }))
}
