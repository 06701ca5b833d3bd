//! A service as scripts see it (`service list`, `service show`): its backup status, members
//! and role history.

use serde::Serialize;
use strongbox_proto::v1::{
    Engine, MemberRole, RoleChangeInfo, ServiceInfo, ServiceMember, ServiceState,
};

use super::rfc3339;

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
