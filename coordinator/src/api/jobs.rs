//! Jobs as the API sees them: choosing the host that runs a new job, and checking that an agent
//! acts only within a job assigned to it.
//!
//! Invariants: an agent's chunk calls name a job of its own host that is not finished, of the
//! right kind; a restore's chunk reads are limited to that backup's manifest and the chunks the
//! manifest names; the catalog is read after a read barrier when a job is not known locally
//! yet, so a job created a moment ago through another node is found.

use std::collections::HashSet;

use strongbox_core::pki::Identity;
use strongbox_proto::catalog::{HostRecord, JobRecord};
use strongbox_proto::v1::JobKind;
use tonic::Status;

use crate::node::NodeContext;

pub use crate::policy::plan::ALIVE_MS;

/// Whether `h` reported within [`ALIVE_MS`] of `now_ms` on this node's clock. Reports are
/// stamped by the leader's clock, which may differ from this node's: the skew the catalog
/// allows ([`crate::catalog::MAX_BEHIND_MS`]) is allowed here too before calling a host silent.
fn reported_lately(h: &HostRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(h.updated_unix_ms) < ALIVE_MS + crate::catalog::MAX_BEHIND_MS
}

/// The host that backs up `service`: `host` when given (it must carry the service), else the
/// healthy primary (or standalone) member; either way a host that reported within
/// [`ALIVE_MS`] of `now_ms` and whose agent is not marked away (`HostRecord.away_since_unix_ms`):
/// a job given to a silent host would wait for nobody. Returns the
/// host and the service's engine.
pub fn backup_host(
    hosts: &[HostRecord],
    service: &str,
    host: &str,
    now_ms: u64,
) -> Result<(String, strongbox_proto::v1::Engine), Status> {
    let silent = |h: &HostRecord| {
        if h.away_since_unix_ms != 0 {
            return Some(Status::failed_precondition(format!(
                "host {} carries {service:?} but its agent went away at {} and has not come back \
                 (its session ended): start the agent, or name another member with --host",
                h.name,
                crate::policy::time::rfc3339(h.away_since_unix_ms)
            )));
        }
        let quiet = now_ms.saturating_sub(h.updated_unix_ms);
        (!reported_lately(h, now_ms)).then(|| {
            Status::failed_precondition(format!(
                "host {} carries {service:?} but has not reported for {} s (since {}): its agent \
                 is down or cut off from this region; start it, or name another member with --host",
                h.name,
                quiet / 1000,
                crate::policy::time::rfc3339(h.updated_unix_ms)
            ))
        })
    };
    let members: Vec<(&HostRecord, &strongbox_proto::catalog::MemberRecord)> = hosts
        .iter()
        .flat_map(|h| h.members.iter().map(move |m| (h, m)))
        .filter(|(_, m)| m.service == service)
        .collect();
    if members.is_empty() {
        let waiting: Vec<&str> = hosts
            .iter()
            .filter(|h| h.pending_members.iter().any(|m| m.service == service))
            .map(|h| h.name.as_str())
            .collect();
        if let Some(first) = waiting.first() {
            return Err(Status::failed_precondition(format!(
                "no host is bound to serve {service:?}; {} report it and await approval: \
                 `strongbox host approve {first} --service {service}`",
                waiting.join(", ")
            )));
        }
        return Err(Status::not_found(format!(
            "no host carries a service {service:?}; `strongbox service list` shows the services agents reported"
        )));
    }
    if !host.is_empty() {
        let (h, m) = members
            .iter()
            .find(|(h, _)| h.name == host)
            .ok_or_else(|| {
                Status::not_found(format!("host {host:?} carries no member of {service:?}"))
            })?;
        return match silent(h) {
            Some(refusal) => Err(refusal),
            None => Ok((h.name.clone(), m.engine())),
        };
    }
    let primaries: Vec<&(&HostRecord, &strongbox_proto::catalog::MemberRecord)> = members
        .iter()
        .filter(|(_, m)| m.healthy && m.role().takes_writes())
        .collect();
    let newest = primaries.iter().max_by_key(|(h, _)| h.updated_unix_ms);
    match newest {
        Some((h, m)) => match silent(h) {
            Some(refusal) => Err(refusal),
            None => Ok((h.name.clone(), m.engine())),
        },
        None => Err(Status::failed_precondition(format!(
            "{service:?} has no healthy primary right now; name a member with --host"
        ))),
    }
}

/// The spare a restore goes to: `to_host` (it must be an approved spare), or the most recently
/// seen approved spare of the region that carries no service and has no restore under way (a
/// restore goes to a host that serves other databases only when an operator names it).
/// `hosts` are the candidates (the named host, or the region's spares); `restoring` the ones
/// with an unfinished restore job.
pub fn restore_host(
    hosts: &[HostRecord],
    restoring: &HashSet<String>,
    to_host: &str,
    now_ms: u64,
    max_servers: usize,
) -> Result<String, Status> {
    // Servers that restores left running (or are making) on each spare; the catalog checks the
    // limit again when it applies the job, in log order.
    let servers: std::collections::HashMap<&str, &[String]> = hosts
        .iter()
        .map(|h| (h.name.as_str(), h.restored_servers.as_slice()))
        .collect();
    let full = |h: &str| servers.get(h).map_or(0, |s| s.len()) >= max_servers;
    if !to_host.is_empty() {
        let h = hosts
            .iter()
            .find(|h| h.name == to_host)
            .ok_or_else(|| Status::not_found(format!("no host {to_host:?}")))?;
        if h.registered_unix_ms == 0 {
            return Err(Status::failed_precondition(format!(
                "host {to_host:?} is bound by an operator but no agent has registered it yet; \
                 start its agent, or name another spare"
            )));
        }
        if h.spare && !reported_lately(h, now_ms) {
            return Err(Status::failed_precondition(format!(
                "spare {to_host:?} has not reported for {} s (its agent is down or cut off); \
                 start it, or name another spare (`strongbox host list`)",
                now_ms.saturating_sub(h.updated_unix_ms) / 1000
            )));
        }
        if !h.spare {
            let why = if h.spare_requested && !h.bound_services.is_empty() {
                format!(
                    "its agent asks to be one, but it serves {}: check that agent before \
                     approving it (`strongbox host approve {to_host} --spare`), as restores \
                     would then run beside those databases",
                    h.bound_services.join(", ")
                )
            } else if h.spare_requested {
                format!("its agent asks to be one, but no operator approved it: `strongbox host approve {to_host}`")
            } else {
                "restores go to spares so they never touch a live server".to_string()
            };
            return Err(Status::failed_precondition(format!(
                "host {to_host:?} is not a spare; {why}"
            )));
        }
        if full(&h.name) {
            let running = servers[h.name.as_str()];
            return Err(Status::resource_exhausted(format!(
                "spare {to_host:?} runs {} restored servers already (max_restored_servers is \
                 {max_servers}): stop one with `strongbox restore stop JOB` (restores {})",
                running.len(),
                running.join(", ")
            )));
        }
        return Ok(h.name.clone());
    }
    hosts
        .iter()
        .filter(|h| {
            h.spare
                && h.bound_services.is_empty()
                && h.members.is_empty()
                && h.pending_members.is_empty()
        })
        .filter(|h| reported_lately(h, now_ms) && h.away_since_unix_ms == 0)
        .filter(|h| !restoring.contains(&h.name) && !full(&h.name))
        .max_by_key(|h| h.updated_unix_ms)
        .map(|h| h.name.clone())
        .ok_or_else(|| {
            Status::failed_precondition(
                "no healthy idle spare in this region: start an agent with `spare = true` on a host \
                 that carries no database and approve it with `strongbox host approve HOST`, stop \
                 restored servers a spare no longer needs (`strongbox restore list`, `strongbox \
                 restore stop JOB`), or name a spare with --to-host (`strongbox host list`)",
            )
        })
}

/// The job `job_id` of kind `kind`, if it is assigned to `who`'s host and not finished.
pub async fn agent_job(
    node: &NodeContext,
    who: &Identity,
    job_id: &str,
    kind: JobKind,
) -> Result<JobRecord, Status> {
    if job_id.is_empty() {
        return Err(Status::permission_denied(format!(
            "{who}: chunk calls need the id of a job assigned to this host"
        )));
    }
    let job = match node.catalog.job(job_id)? {
        Some(j) => Some(j),
        None => {
            node.read_barrier().await?;
            node.catalog.job(job_id)?
        }
    };
    let job = job.ok_or_else(|| Status::not_found(format!("no job {job_id}")))?;
    if job.host != who.name || job.kind() != kind {
        return Err(Status::permission_denied(format!(
            "job {job_id} is not a {kind} job assigned to {who}"
        )));
    }
    if job.state().is_final() {
        return Err(Status::failed_precondition(format!(
            "job {job_id} is {} already",
            job.state()
        )));
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_proto::catalog::MemberRecord;
    use strongbox_proto::v1::{Engine, MemberRole};

    fn host(name: &str, role: MemberRole, updated_unix_ms: u64) -> HostRecord {
        HostRecord {
            name: name.into(),
            updated_unix_ms,
            members: vec![MemberRecord {
                service: "orders".into(),
                engine: Engine::Postgres.into(),
                role: role.into(),
                healthy: true,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Issue 14, fault 4: a backup goes only to a member whose host reports; otherwise the
    /// refusal names the silent host and since when.
    #[test]
    fn backups_go_only_to_hosts_that_report() {
        let now = 10 * ALIVE_MS;
        let hosts = [
            host("db-1", MemberRole::Primary, now - 1_000),
            host("db-2", MemberRole::Replica, now - 2 * ALIVE_MS),
        ];
        assert_eq!(backup_host(&hosts, "orders", "", now).unwrap().0, "db-1");
        let s = backup_host(&hosts, "orders", "db-2", now).unwrap_err();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(
            s.message().contains("db-2") && s.message().contains("has not reported for 360 s"),
            "{}",
            s.message()
        );
        let silent = [host(
            "db-1",
            MemberRole::Primary,
            now - ALIVE_MS - crate::catalog::MAX_BEHIND_MS,
        )];
        let s = backup_host(&silent, "orders", "", now).unwrap_err();
        assert!(
            s.message().contains("db-1") && s.message().contains("since"),
            "{}",
            s.message()
        );
        // Reported a moment ago, but its agent's session ended and it did not come back.
        let mut away = host("db-1", MemberRole::Primary, now - 1000);
        away.away_since_unix_ms = now - 500;
        let s = backup_host(&[away], "orders", "", now).unwrap_err();
        assert!(s.message().contains("went away"), "{}", s.message());
    }
}
