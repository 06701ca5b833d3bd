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
use crate::policy::presence::{Presence, Presences};

/// Why `h`'s agent cannot take a job now (`what` names the host, e.g. "host db-1 carries
/// \"orders\""; `instead` says what to do), or `None` when it is connected.
fn not_there(
    h: &HostRecord,
    presences: &Presences,
    now_ms: u64,
    what: &str,
    instead: &str,
) -> Option<Status> {
    match presences.of(h, now_ms) {
        Presence::Connected { .. } => None,
        Presence::Away { since_unix_ms } => Some(Status::failed_precondition(format!(
            "{what} but its agent went away at {} and has not come back (its session ended): \
             start the agent, or {instead}",
            crate::policy::time::rfc3339(since_unix_ms)
        ))),
        Presence::Silent { since_unix_ms } => Some(Status::failed_precondition(format!(
            "{what} but its agent has not been connected to a live node of this region since {} \
             ({} s): it is down or cut off; start it, or {instead}",
            crate::policy::time::rfc3339(since_unix_ms),
            now_ms.saturating_sub(since_unix_ms) / 1000
        ))),
    }
}

/// The host that backs up `service`: `host` when given (it must carry the service), else the
/// healthy primary (or standalone) member; either way a host whose agent is connected
/// ([`crate::policy::presence`]): a job given to an absent host would wait for nobody. Returns
/// the host and the service's engine.
pub fn backup_host(
    hosts: &[HostRecord],
    service: &str,
    host: &str,
    presences: &Presences,
    now_ms: u64,
) -> Result<(String, strongbox_proto::v1::Engine), Status> {
    let silent = |h: &HostRecord| {
        not_there(
            h,
            presences,
            now_ms,
            &format!("host {} carries {service:?}", h.name),
            "name another member with --host",
        )
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
    presences: &Presences,
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
        if h.spare {
            let what = format!("spare {to_host:?} is approved");
            let instead = "name another spare (`strongbox host list`)";
            if let Some(refusal) = not_there(h, presences, now_ms, &what, instead) {
                return Err(refusal);
            }
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
        .filter(|h| presences.connected(h, now_ms))
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

    /// Issue 14, fault 4: a backup goes only to a member whose agent is there; otherwise the
    /// refusal names the absent host and since when.
    #[test]
    fn backups_go_only_to_hosts_whose_agent_is_there() {
        let now = 10 * ALIVE_MS;
        let presences = Presences {
            nodes_seen: [(1, now - 30_000), (2, now - 2 * ALIVE_MS)].into(),
            slack_ms: crate::catalog::MAX_BEHIND_MS,
        };
        let on = |mut h: HostRecord, node: u64| {
            h.session_id = "s".into();
            h.session_node = node;
            h
        };
        let hosts = [
            // Last written long ago, but its session is open on a node seen lately.
            on(host("db-1", MemberRole::Primary, 1), 1),
            on(host("db-2", MemberRole::Replica, 1), 2),
        ];
        assert_eq!(
            backup_host(&hosts, "orders", "", &presences, now)
                .unwrap()
                .0,
            "db-1"
        );
        let s = backup_host(&hosts, "orders", "db-2", &presences, now).unwrap_err();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(
            s.message().contains("db-2")
                && s.message().contains("since")
                && s.message().contains("(360 s)"),
            "{}",
            s.message()
        );
        // No session: only a recent change counts, with the skew allowed.
        let silent = [host(
            "db-1",
            MemberRole::Primary,
            now - ALIVE_MS - crate::catalog::MAX_BEHIND_MS,
        )];
        let s = backup_host(&silent, "orders", "", &presences, now).unwrap_err();
        assert!(
            s.message().contains("db-1") && s.message().contains("since"),
            "{}",
            s.message()
        );
        // Its session is on a live node, but its agent's session ended and it did not come back.
        let mut away = on(host("db-1", MemberRole::Primary, now - 1000), 1);
        away.away_since_unix_ms = now - 500;
        let s = backup_host(&[away], "orders", "", &presences, now).unwrap_err();
        assert!(s.message().contains("went away"), "{}", s.message());
    }
}
