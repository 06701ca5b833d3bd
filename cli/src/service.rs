//! `strongbox service list|show|exclude|include|deprovision` and `strongbox host list`: what
//! the coordinators know of the fleet: services with their state, schedule, primary, members,
//! role changes and backups, and hosts; and the operator's say over a service's automatic
//! backups (exclude, include, deprovision).
//!
//! Invariants: `list`, `show` and `host list` are read-only (a viewer certificate is enough);
//! lists are sorted by name so that output is stable from one run to the next; `deprovision`
//! (which cannot be undone) needs `--yes`.

use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};
use strongbox_proto::v1::{
    BindHostRequest, HostInfo, ListHostsRequest, ListServicesRequest, MemberRole, RoleChangeInfo,
    ServiceAction, ServiceInfo, SetServiceStateRequest, SetServiceStateResponse,
    ShowServiceRequest,
};

use crate::backup::{self, backup_json};
use crate::connect::{Api, ConnectArgs};
use crate::output::{self, ago, Output};
use crate::restore::job_json;

/// Role changes `service show` prints (the newest); JSON has them all.
const ROLE_CHANGES_SHOWN: usize = 20;

#[derive(clap::Subcommand)]
pub enum ServiceCommand {
    /// Every service: engine, state, primary, members, last and next backup.
    List,
    /// One service: state, schedule, next and last backups, primary, members, role changes.
    Show {
        /// The service's name.
        name: String,
    },
    /// Stop scheduled backups of a service until `service include` (the policy is kept).
    Exclude {
        /// The service's name.
        name: String,
    },
    /// Resume scheduled backups of an excluded service.
    Include {
        /// The service's name.
        name: String,
    },
    /// Stop automatic backups of a service for good (it is going away); if its policy keeps
    /// final backups, a final backup is taken now and kept until purged.
    Deprovision {
        /// The service's name.
        name: String,
        /// Confirm: automatic backups of the service stop for good.
        #[arg(long)]
        yes: bool,
        /// Wait until the final backup completed or failed, showing progress.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this many seconds (the backup goes on).
        #[arg(long, default_value_t = backup::DEFAULT_WAIT_SECS)]
        timeout: u64,
    },
}

#[derive(clap::Subcommand)]
pub enum HostCommand {
    /// Every host with an agent: region, spare or not, the members it carries, and what it
    /// claims that awaits approval.
    List,
    /// Approve what a host's agent claims: with no option, everything it has pending (members
    /// of services it is not bound to, and the spare role); or bind the named services and/or
    /// the spare role ahead of its agent (an inventory does this).
    Approve {
        /// The host's name (its agent certificate's name).
        host: String,
        /// Bind this service to the host (repeatable).
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// Approve the host as a spare for restores.
        #[arg(long)]
        spare: bool,
    },
    /// Withdraw a binding: the host stops serving the named services (its reports of them
    /// wait for approval again) and/or stops being a spare.
    Revoke {
        /// The host's name.
        host: String,
        /// Unbind this service from the host (repeatable).
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// Withdraw the spare role.
        #[arg(long)]
        spare: bool,
    },
}

/// A service as JSON for scripts (its view, `views::service`).
fn service_json(s: &ServiceInfo) -> Value {
    serde_json::to_value(crate::views::service::ServiceView::from(s)).unwrap_or(Value::Null)
}

fn host_json(h: &HostInfo) -> Value {
    let members = |ms: &[strongbox_proto::v1::Member]| {
        ms.iter()
            .map(|m| {
                json!({
                    "service": m.service, "engine": m.engine(), "role": m.role(),
                    "healthy": m.healthy, "engine_version": m.engine_version,
                })
            })
            .collect::<Vec<_>>()
    };
    json!({
        "name": h.name,
        "region": h.region,
        "spare": h.spare,
        "spare_requested": h.spare_requested,
        "spare_approved": h.spare_approved,
        "registered_unix_ms": h.registered_unix_ms,
        "registered": output::timestamp(h.registered_unix_ms),
        "last_report_unix_ms": h.updated_unix_ms,
        "bound_services": h.bound_services,
        "members": members(&h.members),
        "pending_members": members(&h.pending_members),
    })
}

/// The spare column: `yes`, `awaiting approval` (its agent asks), `approved, not asked`, `no`.
fn spare_label(h: &HostInfo) -> &'static str {
    match (h.spare_requested, h.spare_approved) {
        (true, true) => "yes",
        (true, false) => "awaiting approval",
        (false, true) => "approved (agent not a spare)",
        (false, false) => "no",
    }
}

/// Prints one host after `host approve`/`host revoke`.
fn print_host(h: &HostInfo, output: Output) {
    match output {
        Output::Json => output.json(&host_json(h)),
        Output::Table => {
            println!("host      {}", h.name);
            println!("spare     {}", spare_label(h));
            let bound = if h.bound_services.is_empty() {
                "-".to_string()
            } else {
                h.bound_services.join(", ")
            };
            println!("serves    {bound}");
            let pending: Vec<&str> = h
                .pending_members
                .iter()
                .map(|m| m.service.as_str())
                .collect();
            if !pending.is_empty() {
                println!(
                    "awaiting  {} (`strongbox host approve {}`)",
                    pending.join(", "),
                    h.name
                );
            }
        }
    }
}

/// An error for a service name nobody serves, with the closest known names (at most three,
/// by Jaro-Winkler similarity, as clap suggests subcommands).
pub fn unknown_service(name: &str, known: &[ServiceInfo]) -> anyhow::Error {
    let mut close: Vec<(f64, &str)> = known
        .iter()
        .map(|s| (strsim::jaro_winkler(name, &s.name), s.name.as_str()))
        .filter(|(score, _)| *score > 0.7)
        .collect();
    close.sort_by(|a, b| b.0.total_cmp(&a.0));
    let names: Vec<&str> = close.iter().take(3).map(|(_, n)| *n).collect();
    match names.as_slice() {
        [] if known.is_empty() => anyhow::anyhow!(
            "no service {name:?}: this region has no services yet (agents report them when they start)"
        ),
        [] => anyhow::anyhow!(
            "no service {name:?}; `strongbox service list` shows the {} known",
            known.len()
        ),
        _ => anyhow::anyhow!(
            "no service {name:?}; did you mean {}?",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

pub async fn list_services(api: &Api) -> anyhow::Result<Vec<ServiceInfo>> {
    let mut s = api
        .call("ListServices", |mut c| async move {
            c.list_services(ListServicesRequest {}).await
        })
        .await?
        .services;
    s.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(s)
}

pub async fn list_hosts(api: &Api) -> anyhow::Result<Vec<HostInfo>> {
    let mut h = api
        .call("ListHosts", |mut c| async move {
            c.list_hosts(ListHostsRequest {}).await
        })
        .await?
        .hosts;
    h.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(h)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A service's state for people: `failing (the last scheduled try failed: …)`.
pub fn state_label(s: &ServiceInfo) -> String {
    let state = s.state();
    if s.state_reason.is_empty() {
        state.to_string()
    } else {
        format!("{state} ({})", s.state_reason)
    }
}

/// A role change for people: `replica → primary`; a member that appeared reads `(new) → …`,
/// one that went away `… → (gone)`.
pub fn role_change_label(c: &RoleChangeInfo) -> String {
    format!(
        "{} → {}",
        role_side(c.from(), c.from_down, "(new)"),
        role_side(c.to(), c.to_down, "(gone)")
    )
}

/// One side of a role change: the role, `down` when its server did not answer, or `none`
/// when there was no member.
fn role_side(role: MemberRole, down: bool, none: &str) -> String {
    match (role, down) {
        (_, true) => "down".to_string(),
        (MemberRole::Unspecified, false) => none.to_string(),
        (role, false) => role.to_string(),
    }
}

/// The primary for people: `db-1 since 2026-11-20T02:00:00Z (3 days ago)`, or "none".
pub fn primary_label(s: &ServiceInfo, now_ms: u64) -> String {
    if s.primary_host.is_empty() {
        return "none".to_string();
    }
    if s.primary_since_unix_ms == 0 {
        return s.primary_host.clone();
    }
    format!(
        "{} since {}",
        s.primary_host,
        output::at_from(s.primary_since_unix_ms, now_ms)
    )
}

/// The key/value lines of `service show`.
pub fn service_fields(s: &ServiceInfo, now_ms: u64) -> Vec<(&'static str, Value)> {
    let mut f = vec![
        ("service", json!(s.name)),
        ("engine", json!(s.engine())),
        ("state", json!(state_label(s))),
        (
            "schedule",
            json!(if s.schedule.is_empty() {
                "-"
            } else {
                &s.schedule
            }),
        ),
        (
            "next backup",
            json!(if s.next_backup_unix_ms == 0 {
                "none scheduled".to_string()
            } else {
                output::at_from(s.next_backup_unix_ms, now_ms)
            }),
        ),
        (
            "last success",
            json!(if s.last_success_unix_ms == 0 {
                "never".to_string()
            } else {
                output::at_from(s.last_success_unix_ms, now_ms)
            }),
        ),
    ];
    if !s.last_failure.is_empty() {
        f.push(("last failure", json!(s.last_failure)));
    }
    f.extend([
        ("missed slots", json!(s.missed)),
        ("primary", json!(primary_label(s, now_ms))),
        (
            "backups",
            json!(if s.backups == 0 {
                "0".to_string()
            } else {
                format!(
                    "{} (newest {})",
                    s.backups,
                    output::relative(s.last_backup_unix_ms, now_ms)
                )
            }),
        ),
    ]);
    f
}

/// Prints one service like `service show`: its lines, members and role changes.
fn print_service(s: &ServiceInfo) {
    let now = strongbox_core::clock::now_ms();
    output::print_fields(&service_fields(s, now));
    let mut t = output::table(["host", "role", "healthy", "version"]);
    for m in &s.members {
        t.add_row([
            m.host.clone(),
            m.role().to_string(),
            yes_no(m.healthy).to_string(),
            m.engine_version.clone(),
        ]);
    }
    if s.members.is_empty() {
        println!("\nNo members: no agent reports this service now.");
    } else {
        println!("\nMembers:\n{t}");
    }
    if !s.role_changes.is_empty() {
        let skip = s.role_changes.len().saturating_sub(ROLE_CHANGES_SHOWN);
        let mut t = output::table(["when", "host", "change"]);
        for c in &s.role_changes[skip..] {
            t.add_row([
                output::relative(c.unix_ms, now),
                c.host.clone(),
                role_change_label(c),
            ]);
        }
        println!("\nRole changes (oldest first):\n{t}");
        if skip > 0 {
            println!("({skip} older role changes not shown; `--output json` has them all)");
        }
    }
}

async fn show_service(api: &Api, name: &str) -> anyhow::Result<ServiceInfo> {
    api.call("ShowService", |mut c| {
        let name = name.to_string();
        async move { c.show_service(ShowServiceRequest { name }).await }
    })
    .await
}

async fn set_state(
    api: &Api,
    name: &str,
    action: ServiceAction,
) -> anyhow::Result<SetServiceStateResponse> {
    api.call("SetServiceState", |mut c| {
        let req = SetServiceStateRequest {
            service: name.to_string(),
            action: action.into(),
        };
        async move { c.set_service_state(req).await }
    })
    .await
}

/// Why `deprovision` needs `--yes`, with what it does to this service's final backup
/// (`keep_final`: the effective policy's, None when unknown).
pub fn deprovision_refusal(name: &str, keep_final: Option<bool>) -> String {
    let final_backup = match keep_final {
        Some(true) => "its policy keeps final backups, so a final backup is taken now and kept until purged".to_string(),
        Some(false) => "its policy does not keep final backups (keep-final is false), so no final backup is taken".to_string(),
        None => "if its policy keeps final backups (keep-final), a final backup is taken now and kept until purged".to_string(),
    };
    format!(
        "deprovisioning {name} stops its automatic backups for good (`service include` cannot undo it); {final_backup}. Run `strongbox service deprovision {name} --yes` to confirm"
    )
}

pub async fn run_service(
    cmd: ServiceCommand,
    conn: &ConnectArgs,
    output: Output,
) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::List => {
            let api = Api::new(conn)?;
            let services = list_services(&api).await?;
            match output {
                Output::Json => {
                    output.json(&Value::Array(services.iter().map(service_json).collect()))
                }
                Output::Table => {
                    if services.is_empty() {
                        println!("No services yet: they appear once an agent with [[service]] tables registers.");
                        return Ok(());
                    }
                    let now = strongbox_core::clock::now_ms();
                    let mut t = output::table([
                        "service",
                        "engine",
                        "state",
                        "primary",
                        "members",
                        "backups",
                        "last backup",
                        "next",
                    ]);
                    for s in &services {
                        let members: Vec<String> = s
                            .members
                            .iter()
                            .map(|m| {
                                format!(
                                    "{} ({}{})",
                                    m.host,
                                    m.role(),
                                    if m.healthy { "" } else { ", UNHEALTHY" }
                                )
                            })
                            .collect();
                        t.add_row([
                            s.name.clone(),
                            s.engine().to_string(),
                            s.state().to_string(),
                            if s.primary_host.is_empty() {
                                "-".to_string()
                            } else {
                                s.primary_host.clone()
                            },
                            members.join("\n"),
                            s.backups.to_string(),
                            output::relative(s.last_backup_unix_ms, now),
                            output::relative_either(s.next_backup_unix_ms, now),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
        ServiceCommand::Show { name } => {
            let api = Api::new(conn)?;
            let s = show_service(&api, &name).await?;
            match output {
                Output::Json => output.json(&service_json(&s)),
                Output::Table => {
                    print_service(&s);
                    println!(
                        "\nIts backups: `strongbox backup list {}`; its policy: `strongbox policy show --service {}`",
                        s.name, s.name
                    );
                }
            }
        }
        ServiceCommand::Exclude { name } => {
            let api = Api::new(conn)?;
            let r = set_state(&api, &name, ServiceAction::Exclude).await?;
            print_state_change(&r, output);
            if output == Output::Table {
                println!(
                    "\nExcluded: no scheduled backups of {name} until `strongbox service include {name}`."
                );
            }
        }
        ServiceCommand::Include { name } => {
            let api = Api::new(conn)?;
            let r = set_state(&api, &name, ServiceAction::Include).await?;
            print_state_change(&r, output);
            if output == Output::Table {
                println!("\nIncluded: scheduled backups of {name} resume.");
            }
        }
        ServiceCommand::Deprovision {
            name,
            yes,
            wait,
            timeout,
        } => {
            if !yes {
                // Say what happens to the final backup if the coordinators tell us the policy;
                // the refusal does not depend on it.
                let keep_final = match Api::new(conn) {
                    Ok(api) => tokio::time::timeout(
                        Duration::from_secs(5),
                        crate::policy::keeps_final(&api, &name),
                    )
                    .await
                    .ok()
                    .flatten(),
                    Err(_) => None,
                };
                bail!("{}", deprovision_refusal(&name, keep_final));
            }
            let api = Api::new(conn)?;
            let r = set_state(&api, &name, ServiceAction::Deprovision).await?;
            let Some(job) = r.final_backup.clone().filter(|_| wait) else {
                print_state_change(&r, output);
                if output == Output::Table {
                    match &r.final_backup {
                        Some(j) => println!(
                            "\nDeprovisioned: automatic backups of {name} stopped for good. Final backup {} is under way (job {}): follow it with `strongbox backup show {}` (or pass --wait).",
                            j.backup_id, j.id, j.backup_id
                        ),
                        None => println!(
                            "\nDeprovisioned: automatic backups of {name} stopped for good. No final backup was taken (its policy does not keep one, or it was deprovisioned already)."
                        ),
                    }
                }
                return Ok(());
            };
            if let Some(s) = &r.service {
                if output == Output::Table {
                    print_service(s);
                }
            }
            output.note(&format!(
                "\nDeprovisioned: automatic backups of {name} stopped for good; waiting for the final backup {} (job {}) on {}",
                job.backup_id, job.id, job.host
            ));
            let (done, b) =
                backup::wait_backup_job(&api, &job, output, Duration::from_secs(timeout)).await?;
            match output {
                Output::Json => output.json(&json!({
                    "service": r.service.as_ref().map(service_json),
                    "final_backup": job_json(&done),
                    "backup": b.as_ref().map(backup_json),
                })),
                Output::Table => {
                    println!("\nFinal backup:");
                    backup::print_backup_job_fields(&done, b.as_ref());
                }
            }
            backup::check_backup_job(&done)?;
        }
    }
    Ok(())
}

/// Prints the answer to exclude/include/deprovision: the service as `service show` does, and
/// in JSON the final backup's job too.
fn print_state_change(r: &SetServiceStateResponse, output: Output) {
    match output {
        Output::Json => output.json(&json!({
            "service": r.service.as_ref().map(service_json),
            "final_backup": r.final_backup.as_ref().map(job_json),
        })),
        Output::Table => {
            if let Some(s) = &r.service {
                print_service(s);
            }
        }
    }
}

pub async fn run_host(cmd: HostCommand, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        HostCommand::List => {
            let hosts = list_hosts(&api).await?;
            match output {
                Output::Json => output.json(&Value::Array(hosts.iter().map(host_json).collect())),
                Output::Table => {
                    if hosts.is_empty() {
                        println!("No hosts yet: they appear once an agent registers.");
                        return Ok(());
                    }
                    let mut t = output::table([
                        "host",
                        "region",
                        "spare",
                        "registered",
                        "last report",
                        "services",
                    ]);
                    let mut awaiting = 0;
                    for h in &hosts {
                        let mut members: Vec<String> = h
                            .members
                            .iter()
                            .map(|m| {
                                format!(
                                    "{} ({} {}{})",
                                    m.service,
                                    m.engine(),
                                    m.role(),
                                    if m.healthy { "" } else { ", UNHEALTHY" }
                                )
                            })
                            .collect();
                        members.extend(h.pending_members.iter().map(|m| {
                            format!(
                                "{} ({} {}, AWAITING APPROVAL)",
                                m.service,
                                m.engine(),
                                m.role()
                            )
                        }));
                        members.extend(
                            h.bound_services
                                .iter()
                                .filter(|s| !h.members.iter().any(|m| &m.service == *s))
                                .map(|s| format!("{s} (bound, not reported)")),
                        );
                        if !h.pending_members.is_empty() || (h.spare_requested && !h.spare_approved)
                        {
                            awaiting += 1;
                        }
                        t.add_row([
                            h.name.clone(),
                            h.region.clone(),
                            spare_label(h).to_string(),
                            if h.registered_unix_ms == 0 {
                                "never".to_string()
                            } else {
                                ago(h.registered_unix_ms)
                            },
                            if h.registered_unix_ms == 0 {
                                "-".to_string()
                            } else {
                                ago(h.updated_unix_ms)
                            },
                            if members.is_empty() {
                                "-".to_string()
                            } else {
                                members.join("\n")
                            },
                        ]);
                    }
                    println!("{t}");
                    if awaiting > 0 {
                        println!(
                            "{awaiting} host(s) claim what no operator approved; check each, then \
                             `strongbox host approve HOST`."
                        );
                    }
                }
            }
        }
        HostCommand::Approve {
            host,
            services,
            spare,
        } => {
            let h = bind_host(&api, host, false, services, spare).await?;
            print_host(&h, output);
        }
        HostCommand::Revoke {
            host,
            services,
            spare,
        } => {
            if services.is_empty() && !spare {
                anyhow::bail!("name what to revoke: --service NAME (repeatable) and/or --spare");
            }
            let h = bind_host(&api, host, true, services, spare).await?;
            print_host(&h, output);
        }
    }
    Ok(())
}

async fn bind_host(
    api: &Api,
    host: String,
    revoke: bool,
    services: Vec<String>,
    spare: bool,
) -> anyhow::Result<HostInfo> {
    api.call("BindHost", |mut c| {
        let req = BindHostRequest {
            host: host.clone(),
            revoke,
            services: services.clone(),
            spare,
        };
        async move { c.bind_host(req).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A role change from the word `from` to `to` (`""`: none, `down`: a down member).
    fn change(from: &str, to: &str) -> RoleChangeInfo {
        let side = |w: &str| MemberRole::from_word(w).unwrap_or(MemberRole::Unspecified);
        RoleChangeInfo {
            host: "db-1".into(),
            from: side(from).into(),
            to: side(to).into(),
            unix_ms: 1,
            from_down: from == "down",
            to_down: to == "down",
        }
    }

    #[test]
    fn role_changes_read_as_arrows() {
        assert_eq!(
            role_change_label(&change("replica", "primary")),
            "replica → primary"
        );
        assert_eq!(role_change_label(&change("", "replica")), "(new) → replica");
        assert_eq!(
            role_change_label(&change("primary", "")),
            "primary → (gone)"
        );
        assert_eq!(
            role_change_label(&change("primary", "down")),
            "primary → down"
        );
    }

    #[test]
    fn show_lines() {
        let now = 1_700_000_000_000;
        let s = ServiceInfo {
            name: "orders".into(),
            engine: strongbox_proto::v1::Engine::Postgres.into(),
            state: strongbox_proto::v1::ServiceState::Failing.into(),
            state_reason: "the last scheduled try failed".into(),
            schedule: "every 24h".into(),
            next_backup_unix_ms: now + 3 * 3_600_000,
            last_success_unix_ms: now - 86_400_000,
            last_failure: "pg_dump: connection refused".into(),
            missed: 2,
            primary_host: "db-2".into(),
            primary_since_unix_ms: now - 2 * 86_400_000,
            backups: 5,
            last_backup_unix_ms: now - 86_400_000,
            ..Default::default()
        };
        let lines: Vec<String> = service_fields(&s, now)
            .iter()
            .map(|(k, v)| format!("{k}: {}", output::text(v)))
            .collect();
        assert_eq!(
            lines,
            [
                "service: orders",
                "engine: postgres",
                "state: failing (the last scheduled try failed)",
                "schedule: every 24h",
                "next backup: 2023-11-15T01:13:20Z (in 3 hours)",
                "last success: 2023-11-13T22:13:20Z (1 day ago)",
                "last failure: pg_dump: connection refused",
                "missed slots: 2",
                "primary: db-2 since 2023-11-12T22:13:20Z (2 days ago)",
                "backups: 5 (newest 1 day ago)",
            ]
        );
        let none = ServiceInfo {
            name: "x".into(),
            state: strongbox_proto::v1::ServiceState::Excluded.into(),
            ..Default::default()
        };
        let lines: Vec<String> = service_fields(&none, now)
            .iter()
            .map(|(k, v)| format!("{k}: {}", output::text(v)))
            .collect();
        assert!(lines.contains(&"next backup: none scheduled".to_string()));
        assert!(lines.contains(&"last success: never".to_string()));
        assert!(lines.contains(&"primary: none".to_string()));
        assert!(lines.contains(&"state: excluded".to_string()));
    }

    #[test]
    fn deprovision_refusal_says_what_happens() {
        let yes = deprovision_refusal("orders", Some(true));
        assert!(
            yes.contains("stops its automatic backups for good"),
            "{yes}"
        );
        assert!(yes.contains("a final backup is taken now"), "{yes}");
        assert!(
            yes.contains("strongbox service deprovision orders --yes"),
            "{yes}"
        );
        assert!(deprovision_refusal("orders", Some(false)).contains("no final backup is taken"));
        assert!(deprovision_refusal("orders", None).contains("if its policy keeps final backups"));
    }
}
