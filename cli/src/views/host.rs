//! A host as scripts see it (`host list`, `host approve`, `host revoke`): its region, spare
//! role, the members it carries, what it claims that awaits approval; and what people see
//! drawn from the same structs (the `host list` table, the lines after approve/revoke).

use comfy_table::Table;
use serde::Serialize;
use strongbox_proto::v1::{Engine, HostInfo, HostLiveness, Member, MemberRole};

use super::rfc3339;
use crate::output;

#[derive(Serialize)]
pub struct HostView<'a> {
    pub name: &'a str,
    pub region: &'a str,
    /// A spare for restores: its agent asks and an operator approved.
    pub spare: bool,
    pub spare_requested: bool,
    pub spare_approved: bool,
    pub registered_unix_ms: u64,
    pub registered: Option<String>,
    /// Whether its agent is there: `connected` (its session is open on a live node: it gets
    /// backups and restores), `away` (its session ended and it did not come back), `silent`.
    pub agent: HostLiveness,
    /// Connected: the id of the node serving its session (`null` otherwise, or when it
    /// registered but has no session recorded).
    pub session_node: Option<u64>,
    /// Away or silent: since when.
    pub since_unix_ms: Option<u64>,
    pub since: Option<String>,
    /// Its agent's last recorded change: registration, a session opening, new members
    /// (heartbeats that change nothing are not recorded).
    pub changed_unix_ms: u64,
    pub changed: Option<String>,
    pub bound_services: &'a [String],
    /// Members of services bound to this host.
    pub members: Vec<HostMemberView<'a>>,
    /// Members its agent reports that await `strongbox host approve`.
    pub pending_members: Vec<HostMemberView<'a>>,
}

/// One member a host carries (or claims): the service, its engine and role there.
#[derive(Serialize)]
pub struct HostMemberView<'a> {
    pub service: &'a str,
    pub engine: Engine,
    pub role: MemberRole,
    pub healthy: bool,
    pub engine_version: &'a str,
}

impl<'a> From<&'a Member> for HostMemberView<'a> {
    fn from(m: &'a Member) -> Self {
        HostMemberView {
            service: &m.service,
            engine: m.engine(),
            role: m.role(),
            healthy: m.healthy,
            engine_version: &m.engine_version,
        }
    }
}

impl<'a> From<&'a HostInfo> for HostView<'a> {
    fn from(h: &'a HostInfo) -> Self {
        HostView {
            name: &h.name,
            region: &h.region,
            spare: h.spare,
            spare_requested: h.spare_requested,
            spare_approved: h.spare_approved,
            registered_unix_ms: h.registered_unix_ms,
            registered: rfc3339(h.registered_unix_ms),
            agent: h.liveness(),
            session_node: (h.session_node != 0).then_some(h.session_node),
            since_unix_ms: (h.since_unix_ms != 0).then_some(h.since_unix_ms),
            since: rfc3339(h.since_unix_ms),
            changed_unix_ms: h.updated_unix_ms,
            changed: rfc3339(h.updated_unix_ms),
            bound_services: &h.bound_services,
            members: h.members.iter().map(HostMemberView::from).collect(),
            pending_members: h.pending_members.iter().map(HostMemberView::from).collect(),
        }
    }
}

impl HostView<'_> {
    /// The spare column: `yes`, `awaiting approval` (its agent asks), `approved (agent not a
    /// spare)`, `no`.
    pub fn spare_label(&self) -> &'static str {
        match (self.spare_requested, self.spare_approved) {
            (true, true) => "yes",
            (true, false) => "awaiting approval",
            (false, true) => "approved (agent not a spare)",
            (false, false) => "no",
        }
    }

    /// Whether it claims something no operator approved: members, or the spare role.
    pub fn awaits_approval(&self) -> bool {
        !self.pending_members.is_empty() || (self.spare_requested && !self.spare_approved)
    }

    /// The services column of `host list`: its members, the ones awaiting approval, and the
    /// services bound to it that its agent does not report, one a line.
    fn services_cell(&self) -> String {
        let mut lines: Vec<String> = self
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
        lines.extend(
            self.pending_members
                .iter()
                .map(|m| format!("{} ({} {}, AWAITING APPROVAL)", m.service, m.engine, m.role)),
        );
        lines.extend(
            self.bound_services
                .iter()
                .filter(|s| !self.members.iter().any(|m| m.service == s.as_str()))
                .map(|s| format!("{s} (bound, not reported)")),
        );
        if lines.is_empty() {
            "-".to_string()
        } else {
            lines.join("\n")
        }
    }

    /// The agent column: `connected (node 2)`, `away since 5 minutes ago`, `silent since …`,
    /// `-` for a host no agent registered yet.
    fn agent_cell(&self, now_ms: u64) -> String {
        if self.registered_unix_ms == 0 {
            return "-".to_string();
        }
        match (self.agent, self.session_node) {
            (HostLiveness::Connected, Some(node)) => format!("connected (node {node})"),
            (HostLiveness::Connected, None) => "connected".to_string(),
            (state, _) => match self.since_unix_ms {
                Some(t) => format!(
                    "{} since {}",
                    state.word().to_uppercase(),
                    output::relative(t, now_ms)
                ),
                None => state.word().to_uppercase(),
            },
        }
    }

    /// Its row of the `host list` table, times seen from `now_ms`.
    fn row(&self, now_ms: u64) -> Vec<String> {
        vec![
            self.name.to_string(),
            self.region.to_string(),
            self.spare_label().to_string(),
            if self.registered_unix_ms == 0 {
                "never".to_string()
            } else {
                output::relative(self.registered_unix_ms, now_ms)
            },
            self.agent_cell(now_ms),
            self.services_cell(),
        ]
    }

    /// The lines printed after `host approve`/`host revoke`: the host, its spare role, the
    /// services it serves and what still awaits approval (with the command that approves it).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("host      {}", self.name),
            format!("spare     {}", self.spare_label()),
            format!(
                "serves    {}",
                if self.bound_services.is_empty() {
                    "-".to_string()
                } else {
                    self.bound_services.join(", ")
                }
            ),
        ];
        if !self.pending_members.is_empty() {
            let pending: Vec<&str> = self.pending_members.iter().map(|m| m.service).collect();
            lines.push(format!(
                "awaiting  {} (`strongbox host approve {}`)",
                pending.join(", "),
                self.name
            ));
        }
        lines
    }
}

/// The `host list` table, times seen from `now_ms`.
pub fn table(hosts: &[HostView<'_>], now_ms: u64) -> Table {
    let mut t = output::table(["host", "region", "spare", "registered", "agent", "services"]);
    for h in hosts {
        t.add_row(h.row(now_ms));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(service: &str, healthy: bool) -> Member {
        Member {
            service: service.into(),
            engine: Engine::Postgres.into(),
            role: MemberRole::Primary.into(),
            healthy,
            engine_version: "16.2".into(),
        }
    }

    #[test]
    fn services_and_claims_read_for_people() {
        let h = HostInfo {
            name: "db-2".into(),
            region: "eu".into(),
            spare_requested: true,
            registered_unix_ms: 1,
            members: vec![member("orders", false)],
            pending_members: vec![member("notes", true)],
            bound_services: vec!["orders".into(), "ledger".into()],
            ..Default::default()
        };
        let v = HostView::from(&h);
        assert_eq!(v.spare_label(), "awaiting approval");
        assert!(v.awaits_approval());
        assert_eq!(
            v.services_cell(),
            "orders (postgres primary, UNHEALTHY)\nnotes (postgres primary, AWAITING APPROVAL)\nledger (bound, not reported)"
        );
        assert_eq!(
            v.lines(),
            [
                "host      db-2",
                "spare     awaiting approval",
                "serves    orders, ledger",
                "awaiting  notes (`strongbox host approve db-2`)",
            ]
        );
        let bare = HostInfo::default();
        let v = HostView::from(&bare);
        assert_eq!(v.services_cell(), "-");
        assert!(!v.awaits_approval());
        assert_eq!(v.row(5)[3..5], ["never", "-"]);
    }

    #[test]
    fn the_agent_column_says_where_it_is_connected_or_since_when_it_is_not() {
        let now = 1_700_000_000_000;
        let at = |liveness: HostLiveness, session_node: u64, since: u64| HostInfo {
            registered_unix_ms: 1,
            liveness: liveness.into(),
            session_node,
            since_unix_ms: since,
            ..Default::default()
        };
        let cell = |h: &HostInfo| HostView::from(h).agent_cell(now);
        assert_eq!(
            cell(&at(HostLiveness::Connected, 3, 0)),
            "connected (node 3)"
        );
        assert_eq!(cell(&at(HostLiveness::Connected, 0, 0)), "connected");
        assert_eq!(
            cell(&at(HostLiveness::Away, 0, now - 5 * 60_000)),
            "AWAY since 5 minutes ago"
        );
        assert_eq!(cell(&at(HostLiveness::Silent, 0, 0)), "SILENT");
    }

    #[test]
    fn json_keeps_its_fields() {
        let h = HostInfo {
            name: "db-1".into(),
            updated_unix_ms: 7,
            liveness: HostLiveness::Connected.into(),
            session_node: 2,
            members: vec![member("orders", true)],
            ..Default::default()
        };
        let v = serde_json::to_value(HostView::from(&h)).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "agent",
                "bound_services",
                "changed",
                "changed_unix_ms",
                "members",
                "name",
                "pending_members",
                "region",
                "registered",
                "registered_unix_ms",
                "session_node",
                "since",
                "since_unix_ms",
                "spare",
                "spare_approved",
                "spare_requested",
            ]
        );
        assert_eq!(v["changed_unix_ms"], 7);
        assert_eq!(v["agent"], "connected");
        assert_eq!(v["session_node"], 2);
        assert_eq!(v["since"], serde_json::Value::Null);
        assert_eq!(v["registered"], serde_json::Value::Null);
        assert_eq!(
            v["members"][0],
            serde_json::json!({
                "service": "orders", "engine": "postgres", "role": "primary",
                "healthy": true, "engine_version": "16.2",
            })
        );
    }
}
