//! `strongbox service list|show` and `strongbox host list`: what the coordinators know of the
//! fleet: services with their members (host, role, health, version) and backups, and hosts.
//!
//! Invariant: read-only (a viewer certificate is enough); lists are sorted by name so that
//! output is stable from one run to the next.

use anyhow::bail;
use serde_json::{json, Value};
use strongbox_proto::v1::{HostInfo, ListHostsRequest, ListServicesRequest, ServiceInfo};

use crate::connect::{Api, ConnectArgs};
use crate::output::{self, ago, Output};

#[derive(clap::Subcommand)]
pub enum ServiceCommand {
    /// Every service, its engine, members, and last backup.
    List,
    /// One service: its members (host, role, healthy, version) and backups.
    Show {
        /// The service's name.
        name: String,
    },
}

#[derive(clap::Subcommand)]
pub enum HostCommand {
    /// Every host with an agent: region, spare or not, the members it carries.
    List,
}

fn service_json(s: &ServiceInfo) -> Value {
    json!({
        "name": s.name,
        "engine": s.engine,
        "backups": s.backups,
        "last_backup_unix_ms": s.last_backup_unix_ms,
        "last_backup": output::timestamp(s.last_backup_unix_ms),
        "members": s.members.iter().map(|m| json!({
            "host": m.host, "role": m.role, "healthy": m.healthy, "engine_version": m.engine_version,
        })).collect::<Vec<_>>(),
    })
}

fn host_json(h: &HostInfo) -> Value {
    json!({
        "name": h.name,
        "region": h.region,
        "spare": h.spare,
        "registered_unix_ms": h.registered_unix_ms,
        "registered": output::timestamp(h.registered_unix_ms),
        "members": h.members.iter().map(|m| json!({
            "service": m.service, "engine": m.engine, "role": m.role, "healthy": m.healthy,
            "engine_version": m.engine_version,
        })).collect::<Vec<_>>(),
    })
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

pub async fn run_service(
    cmd: ServiceCommand,
    conn: &ConnectArgs,
    output: Output,
) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    let services = list_services(&api).await?;
    match cmd {
        ServiceCommand::List => match output {
            Output::Json => output.json(&Value::Array(services.iter().map(service_json).collect())),
            Output::Table => {
                if services.is_empty() {
                    println!("No services yet: they appear once an agent with [[service]] tables registers.");
                    return Ok(());
                }
                let mut t =
                    output::table(["service", "engine", "members", "backups", "last backup"]);
                for s in &services {
                    let members: Vec<String> = s
                        .members
                        .iter()
                        .map(|m| {
                            format!(
                                "{} ({}{})",
                                m.host,
                                m.role,
                                if m.healthy { "" } else { ", UNHEALTHY" }
                            )
                        })
                        .collect();
                    t.add_row([
                        s.name.clone(),
                        s.engine.clone(),
                        members.join("\n"),
                        s.backups.to_string(),
                        ago(s.last_backup_unix_ms),
                    ]);
                }
                println!("{t}");
            }
        },
        ServiceCommand::Show { name } => {
            let Some(s) = services.iter().find(|s| s.name == name) else {
                let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "no service named {name:?} (known: {}); `strongbox service list` shows them",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            };
            match output {
                Output::Json => output.json(&service_json(s)),
                Output::Table => {
                    output::print_fields(&[
                        ("service", json!(s.name)),
                        ("engine", json!(s.engine)),
                        ("backups", json!(s.backups)),
                        ("last backup", json!(ago(s.last_backup_unix_ms))),
                    ]);
                    let mut t = output::table(["host", "role", "healthy", "version"]);
                    for m in &s.members {
                        t.add_row([
                            m.host.clone(),
                            m.role.clone(),
                            yes_no(m.healthy).to_string(),
                            m.engine_version.clone(),
                        ]);
                    }
                    println!("\n{t}");
                    println!("\nIts backups: `strongbox backup list {}`", s.name);
                }
            }
        }
    }
    Ok(())
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
                    let mut t =
                        output::table(["host", "region", "spare", "registered", "services"]);
                    for h in &hosts {
                        let members: Vec<String> = h
                            .members
                            .iter()
                            .map(|m| {
                                format!(
                                    "{} ({} {}{})",
                                    m.service,
                                    m.engine,
                                    m.role,
                                    if m.healthy { "" } else { ", UNHEALTHY" }
                                )
                            })
                            .collect();
                        t.add_row([
                            h.name.clone(),
                            h.region.clone(),
                            yes_no(h.spare).to_string(),
                            ago(h.registered_unix_ms),
                            if members.is_empty() {
                                "-".to_string()
                            } else {
                                members.join("\n")
                            },
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
    }
    Ok(())
}
