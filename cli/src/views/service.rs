//! A service as scripts see it (`service list`, `service show`): its backup status, members
//! and role history; the answer of `service exclude|include|deprovision` (the service after
//! the change and a deprovision's final backup). And what people see, drawn from the same
//! structs: the `service list` table, the lines and tables of `service show`.

use comfy_table::Table;
use serde::Serialize;
use strongbox_proto::v1::{
    Engine, MemberRole, RoleChangeInfo, ServiceInfo, ServiceMember, ServiceState,
    SetServiceStateResponse,
};

use super::backup::BackupView;
use super::job::JobView;
use super::rfc3339;
use crate::output::{self, Fields};

#[derive(Serialize)]
pub struct ServiceView<'a> {
    pub name: &'a str,
    pub engine: Engine,
    pub state: ServiceState,
    pub state_reason: &'a str,
    pub schedule: &'a str,
    pub next_backup_unix_ms: u64,
    pub next_backup: Option<String>,
    pub last_success_unix_ms: u64,
    pub last_success: Option<String>,
    pub last_failure: &'a str,
    /// Schedule slots that passed with no backup.
    pub missed: u64,
    pub primary_host: &'a str,
    pub primary_since_unix_ms: u64,
    pub primary_since: Option<String>,
    /// Completed backups in the catalog.
    pub backups: u64,
    pub last_backup_unix_ms: u64,
    pub last_backup: Option<String>,
    pub members: Vec<MemberView<'a>>,
    pub role_changes: Vec<RoleChangeView<'a>>,
}

#[derive(Serialize)]
pub struct MemberView<'a> {
    pub host: &'a str,
    pub role: MemberRole,
    pub healthy: bool,
    pub engine_version: &'a str,
}

/// One change of a member's role: `from`/`to` are `null` when the member was new / left;
/// `*_down` when its server did not answer.
#[derive(Serialize)]
pub struct RoleChangeView<'a> {
    pub host: &'a str,
    pub from: MemberRole,
    pub from_down: bool,
    pub to: MemberRole,
    pub to_down: bool,
    pub unix_ms: u64,
    pub time: Option<String>,
}

impl<'a> From<&'a ServiceMember> for MemberView<'a> {
    fn from(m: &'a ServiceMember) -> Self {
        MemberView {
            host: &m.host,
            role: m.role(),
            healthy: m.healthy,
            engine_version: &m.engine_version,
        }
    }
}

impl<'a> From<&'a RoleChangeInfo> for RoleChangeView<'a> {
    fn from(c: &'a RoleChangeInfo) -> Self {
        RoleChangeView {
            host: &c.host,
            from: c.from(),
            from_down: c.from_down,
            to: c.to(),
            to_down: c.to_down,
            unix_ms: c.unix_ms,
            time: rfc3339(c.unix_ms),
        }
    }
}

impl<'a> From<&'a ServiceInfo> for ServiceView<'a> {
    fn from(s: &'a ServiceInfo) -> Self {
        ServiceView {
            name: &s.name,
            engine: s.engine(),
            state: s.state(),
            state_reason: &s.state_reason,
            schedule: &s.schedule,
            next_backup_unix_ms: s.next_backup_unix_ms,
            next_backup: rfc3339(s.next_backup_unix_ms),
            last_success_unix_ms: s.last_success_unix_ms,
            last_success: rfc3339(s.last_success_unix_ms),
            last_failure: &s.last_failure,
            missed: s.missed,
            primary_host: &s.primary_host,
            primary_since_unix_ms: s.primary_since_unix_ms,
            primary_since: rfc3339(s.primary_since_unix_ms),
            backups: s.backups,
            last_backup_unix_ms: s.last_backup_unix_ms,
            last_backup: rfc3339(s.last_backup_unix_ms),
            members: s.members.iter().map(MemberView::from).collect(),
            role_changes: s.role_changes.iter().map(RoleChangeView::from).collect(),
        }
    }
}

/// `service exclude|include|deprovision`: the service after the change, and the job of a
/// deprovision's final backup (`null` when none was taken).
#[derive(Serialize)]
pub struct ServiceStateView<'a> {
    pub service: Option<ServiceView<'a>>,
    pub final_backup: Option<JobView<'a>>,
}

impl<'a> From<&'a SetServiceStateResponse> for ServiceStateView<'a> {
    fn from(r: &'a SetServiceStateResponse) -> Self {
        ServiceStateView {
            service: r.service.as_ref().map(ServiceView::from),
            final_backup: r.final_backup.as_ref().map(JobView::from),
        }
    }
}

/// `service deprovision --yes --wait`: the service after the change, its final backup's job
/// once it ended, and the backup it made (`null` when there is none).
#[derive(Serialize)]
pub struct DeprovisionedView<'a> {
    pub service: Option<ServiceView<'a>>,
    pub final_backup: JobView<'a>,
    pub backup: Option<BackupView<'a>>,
}

impl RoleChangeView<'_> {
    /// The change for people: `replica → primary`; a member that appeared reads `(new) → …`,
    /// one that went away `… → (gone)`.
    pub fn label(&self) -> String {
        format!(
            "{} → {}",
            role_side(self.from, self.from_down, "(new)"),
            role_side(self.to, self.to_down, "(gone)")
        )
    }
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

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl ServiceView<'_> {
    /// Its state for people: `failing (the last scheduled try failed: …)`.
    pub fn state_label(&self) -> String {
        if self.state_reason.is_empty() {
            self.state.to_string()
        } else {
            format!("{} ({})", self.state, self.state_reason)
        }
    }

    /// The primary for people: `db-1 since 2026-11-20T02:00:00Z (3 days ago)`, or "none".
    pub fn primary_label(&self, now_ms: u64) -> String {
        if self.primary_host.is_empty() {
            return "none".to_string();
        }
        if self.primary_since_unix_ms == 0 {
            return self.primary_host.to_string();
        }
        format!(
            "{} since {}",
            self.primary_host,
            output::at_from(self.primary_since_unix_ms, now_ms)
        )
    }

    /// The key/value lines of `service show`, times seen from `now_ms`.
    pub fn fields(&self, now_ms: u64) -> Fields {
        let mut f = Fields::default();
        f.push("service", self.name);
        f.push("engine", self.engine.to_string());
        f.push("state", self.state_label());
        f.push(
            "schedule",
            if self.schedule.is_empty() {
                "-"
            } else {
                self.schedule
            },
        );
        f.push(
            "next backup",
            if self.next_backup_unix_ms == 0 {
                "none scheduled".to_string()
            } else {
                output::at_from(self.next_backup_unix_ms, now_ms)
            },
        );
        f.push(
            "last success",
            if self.last_success_unix_ms == 0 {
                "never".to_string()
            } else {
                output::at_from(self.last_success_unix_ms, now_ms)
            },
        );
        f.push_some("last failure", self.last_failure);
        f.push("missed slots", self.missed.to_string());
        f.push("primary", self.primary_label(now_ms));
        f.push(
            "backups",
            if self.backups == 0 {
                "0".to_string()
            } else {
                format!(
                    "{} (newest {})",
                    self.backups,
                    output::relative(self.last_backup_unix_ms, now_ms)
                )
            },
        );
        f
    }

    /// The members table of `service show`.
    pub fn members_table(&self) -> Table {
        let mut t = output::table(["host", "role", "healthy", "version"]);
        for m in &self.members {
            t.add_row([
                m.host.to_string(),
                m.role.to_string(),
                yes_no(m.healthy).to_string(),
                m.engine_version.to_string(),
            ]);
        }
        t
    }

    /// Its row of the `service list` table.
    fn row(&self, now_ms: u64) -> Vec<String> {
        let members: Vec<String> = self
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
        vec![
            self.name.to_string(),
            self.engine.to_string(),
            self.state.to_string(),
            if self.primary_host.is_empty() {
                "-".to_string()
            } else {
                self.primary_host.to_string()
            },
            members.join("\n"),
            self.backups.to_string(),
            output::relative(self.last_backup_unix_ms, now_ms),
            output::relative_either(self.next_backup_unix_ms, now_ms),
        ]
    }
}

/// The role changes table of `service show`, in the order given (oldest first), times seen
/// from `now_ms`.
pub fn role_changes_table(changes: &[RoleChangeView<'_>], now_ms: u64) -> Table {
    let mut t = output::table(["when", "host", "change"]);
    for c in changes {
        t.add_row([
            output::relative(c.unix_ms, now_ms),
            c.host.to_string(),
            c.label(),
        ]);
    }
    t
}

/// The `service list` table, times seen from `now_ms`.
pub fn table(services: &[ServiceView<'_>], now_ms: u64) -> Table {
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
    for s in services {
        t.add_row(s.row(now_ms));
    }
    t
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

    fn label(from: &str, to: &str) -> String {
        RoleChangeView::from(&change(from, to)).label()
    }

    #[test]
    fn role_changes_read_as_arrows() {
        assert_eq!(label("replica", "primary"), "replica → primary");
        assert_eq!(label("", "replica"), "(new) → replica");
        assert_eq!(label("primary", ""), "primary → (gone)");
        assert_eq!(label("primary", "down"), "primary → down");
    }

    fn lines(s: &ServiceInfo, now: u64) -> Vec<String> {
        ServiceView::from(s)
            .fields(now)
            .joined("\n")
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn show_lines() {
        let now = 1_700_000_000_000;
        let s = ServiceInfo {
            name: "orders".into(),
            engine: Engine::Postgres.into(),
            state: ServiceState::Failing.into(),
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
        assert_eq!(
            lines(&s, now),
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
            state: ServiceState::Excluded.into(),
            ..Default::default()
        };
        let lines = lines(&none, now);
        assert!(lines.contains(&"next backup: none scheduled".to_string()));
        assert!(lines.contains(&"last success: never".to_string()));
        assert!(lines.contains(&"primary: none".to_string()));
        assert!(lines.contains(&"state: excluded".to_string()));
        assert!(lines.contains(&"engine: -".to_string()));
        assert!(!lines.iter().any(|l| l.starts_with("last failure")));
    }

    #[test]
    fn a_state_change_without_a_final_backup_is_null() {
        let r = SetServiceStateResponse {
            service: Some(ServiceInfo {
                name: "orders".into(),
                ..Default::default()
            }),
            final_backup: None,
        };
        let v = serde_json::to_value(ServiceStateView::from(&r)).unwrap();
        assert_eq!(v["service"]["name"], "orders");
        assert_eq!(v["final_backup"], serde_json::Value::Null);
        assert_eq!(v.as_object().unwrap().len(), 2);
    }
}
