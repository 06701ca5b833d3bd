//! `strongbox service list|show|exclude|include|deprovision` and `strongbox host
//! list|approve|revoke`: what the coordinators know of the fleet: services with their state,
//! schedule, primary, members, role changes and backups, and hosts; and the operator's say
//! over a service's automatic backups (exclude, include, deprovision) and over what a host
//! serves (approve, revoke). What they print is `views::service` and `views::host`.
//!
//! Invariants: `list`, `show` and `host list` are read-only (a viewer certificate is enough);
//! lists come by name (the coordinators page them that way), so output is stable from one
//! run to the next; `deprovision`
//! (which cannot be undone) needs `--yes`.

use crate::grammar::service::*;
use std::time::Duration;

use anyhow::bail;
use strongbox_proto::v1::{
    BindHostRequest, HostInfo, ListHostsRequest, ListServicesRequest, PageRequest, ServiceAction,
    ServiceInfo, SetServiceStateRequest, SetServiceStateResponse, ShowServiceRequest,
};

use crate::commands::backup;
use crate::commands::pages::{print_list, walk, Fetched};
use crate::connect::Api;
use crate::grammar::ConnectArgs;
use crate::output::Output;
use crate::views::backup::BackupView;
use crate::views::host::{self as host_view, HostView};
use crate::views::job::JobView;
use crate::views::service::{
    self as service_view, DeprovisionedView, ServiceStateView, ServiceView,
};

/// Role changes `service show` prints (the newest); JSON has them all.
const ROLE_CHANGES_SHOWN: usize = 20;

/// Prints one host after `host approve`/`host revoke`.
fn print_host(h: &HostInfo, output: Output) {
    let view = HostView::from(h);
    match output {
        Output::Json => output.json(&view),
        Output::Table => {
            for line in view.lines() {
                println!("{line}");
            }
        }
    }
}

/// `Ok` when the region knows service `name`; else the error of [`unknown_service`], with the
/// closest names (read page by page only then).
pub async fn check_known(api: &Api, name: &str) -> anyhow::Result<()> {
    let found = api
        .call_status("ShowService", |mut c| {
            let name = name.to_string();
            async move { c.show_service(ShowServiceRequest { name }).await }
        })
        .await;
    match found {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => {
            let mut known = Vec::new();
            walk(
                None,
                |page| services_page(api, page),
                |services| {
                    known.extend(services.into_iter().map(|s| s.name));
                    Ok(())
                },
            )
            .await?;
            Err(unknown_service(name, &known))
        }
        Err(s) => {
            Err(crate::connect::status_error(s).context(crate::connect::doing("ShowService")))
        }
    }
}

/// An error for a service name nobody serves, with the closest known names (at most three,
/// by Jaro-Winkler similarity, as clap suggests subcommands).
pub fn unknown_service(name: &str, known: &[String]) -> anyhow::Error {
    let mut close: Vec<(f64, &str)> = known
        .iter()
        .map(|s| (strsim::jaro_winkler(name, s), s.as_str()))
        .filter(|(score, _)| *score > 0.7)
        .collect();
    close.sort_by(|a, b| b.0.total_cmp(&a.0));
    let names: Vec<&str> = close.iter().take(3).map(|(_, n)| *n).collect();
    match names.as_slice() {
        [] if known.is_empty() => anyhow::anyhow!(
            "no service {name:?}: this region has no services yet (agents report them when they start)"
        ),
        [] => anyhow::anyhow!(
            "no service {name:?}; `strongbox service list --all` shows the {} known",
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

/// One page of services, by name.
pub async fn services_page(api: &Api, page: PageRequest) -> anyhow::Result<Fetched<ServiceInfo>> {
    let r = api
        .call("ListServices", |mut c| {
            let page = Some(page.clone());
            async move { c.list_services(ListServicesRequest { page }).await }
        })
        .await?;
    Ok(Fetched {
        items: r.services,
        next: r.next_page_token,
    })
}

/// One page of hosts, by name.
pub async fn hosts_page(api: &Api, page: PageRequest) -> anyhow::Result<Fetched<HostInfo>> {
    let r = api
        .call("ListHosts", |mut c| {
            let page = Some(page.clone());
            async move { c.list_hosts(ListHostsRequest { page }).await }
        })
        .await?;
    Ok(Fetched {
        items: r.hosts,
        next: r.next_page_token,
    })
}

/// Prints one service like `service show`: its lines, members and role changes (the newest
/// [`ROLE_CHANGES_SHOWN`]).
fn print_service(s: &ServiceView<'_>) {
    let now = strongbox_core::clock::now_ms();
    s.fields(now).print();
    if s.members.is_empty() {
        println!("\nNo members: no agent reports this service now.");
    } else {
        println!("\nMembers:\n{}", s.members_table());
    }
    if !s.role_changes.is_empty() {
        let skip = s.role_changes.len().saturating_sub(ROLE_CHANGES_SHOWN);
        println!(
            "\nRole changes (oldest first):\n{}",
            service_view::role_changes_table(&s.role_changes[skip..], now)
        );
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
        ServiceCommand::List { page } => {
            let api = Api::new(conn)?;
            let now = strongbox_core::clock::now_ms();
            print_list(
                output,
                page.wanted(output == Output::Json),
                |p| services_page(&api, p),
                |printer, services| {
                    let views: Vec<ServiceView<'_>> =
                        services.iter().map(ServiceView::from).collect();
                    printer.page(&views, |v| service_view::table(v, now));
                },
                "No services yet: they appear once an agent with [[service]] tables registers.",
                "services by name",
            )
            .await?;
        }
        ServiceCommand::Show { name } => {
            let api = Api::new(conn)?;
            let s = show_service(&api, &name).await?;
            let view = ServiceView::from(&s);
            match output {
                Output::Json => output.json(&view),
                Output::Table => {
                    print_service(&view);
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
                        crate::commands::policy::keeps_final(&api, &name),
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
                    print_service(&ServiceView::from(s));
                }
            }
            output.note(&format!(
                "\nDeprovisioned: automatic backups of {name} stopped for good; waiting for the final backup {} (job {}) on {}",
                job.backup_id, job.id, job.host
            ));
            let (done, b) =
                backup::wait_backup_job(&api, &job, output, Duration::from_secs(timeout)).await?;
            match output {
                Output::Json => output.json(&DeprovisionedView {
                    service: r.service.as_ref().map(ServiceView::from),
                    final_backup: JobView::from(&done),
                    backup: b.as_ref().map(BackupView::from),
                }),
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
    let view = ServiceStateView::from(r);
    match output {
        Output::Json => output.json(&view),
        Output::Table => {
            if let Some(s) = &view.service {
                print_service(s);
            }
        }
    }
}

pub async fn run_host(cmd: HostCommand, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        HostCommand::List { page } => {
            let now = strongbox_core::clock::now_ms();
            let mut awaiting = 0;
            print_list(
                output,
                page.wanted(output == Output::Json),
                |p| hosts_page(&api, p),
                |printer, hosts| {
                    let views: Vec<HostView<'_>> = hosts.iter().map(HostView::from).collect();
                    awaiting += views.iter().filter(|h| h.awaits_approval()).count();
                    printer.page(&views, |v| host_view::table(v, now));
                },
                "No hosts yet: they appear once an agent registers.",
                "hosts by name",
            )
            .await?;
            if output == Output::Table && awaiting > 0 {
                println!(
                    "{awaiting} host(s) shown claim what no operator approved; check each, then \
                     `strongbox host approve HOST`."
                );
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
