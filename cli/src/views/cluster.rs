//! `cluster status` as scripts see it, and the tables people see drawn from the same structs:
//! the region, its leader, each node's Raft figures as that node reports them, and each node's
//! background workers. Also the answers of `cluster add-node` and `cluster remove-node`.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;
use strongbox_proto::v1::{NodeRole, NodeStatus, WorkerStatus};

use super::rfc3339;
use crate::output;

#[derive(Serialize)]
pub struct ClusterView {
    pub region: String,
    pub leader_id: u64,
    pub nodes: Vec<NodeView>,
}

/// One node: its own figures (`null` when it could not be asked) and its workers.
#[derive(Serialize)]
pub struct NodeView {
    pub id: u64,
    pub name: String,
    pub address: String,
    pub role: NodeRole,
    pub voter: bool,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// As the leader sees it: the last index known replicated on this node.
    pub matched: u64,
    /// Entries the leader committed that this node has not applied.
    pub lag: Option<u64>,
    pub workers: Vec<WorkerView>,
}

/// One background worker of a node (coordinator/src/worker.rs).
#[derive(Serialize, Clone)]
pub struct WorkerView {
    pub name: String,
    pub leader_only: bool,
    pub interval_ms: u64,
    pub passes: u64,
    pub items: u64,
    pub last_pass_unix_ms: u64,
    pub last_pass: Option<String>,
    pub last_pass_took_ms: u64,
    pub last_error: String,
    pub waiting: String,
}

impl From<&WorkerStatus> for WorkerView {
    fn from(w: &WorkerStatus) -> Self {
        WorkerView {
            name: w.name.clone(),
            leader_only: w.leader_only,
            interval_ms: w.interval_ms,
            passes: w.passes,
            items: w.items,
            last_pass_unix_ms: w.last_pass_unix_ms,
            last_pass: rfc3339(w.last_pass_unix_ms),
            last_pass_took_ms: w.last_pass_took_ms,
            last_error: w.last_error.clone(),
            waiting: w.waiting.clone(),
        }
    }
}

/// `cluster add-node`: the node added (its id), where it listens, and what happens next.
#[derive(Serialize)]
pub struct NodeAddedView<'a> {
    pub added: u64,
    pub address: &'a str,
    pub next: &'static str,
}

impl<'a> NodeAddedView<'a> {
    pub fn new(id: u64, address: &'a str) -> Self {
        NodeAddedView {
            added: id,
            address,
            next: "it joins as a learner and becomes a voter once caught up: watch `strongbox cluster status`",
        }
    }
}

/// `cluster remove-node`: the id of the node removed.
#[derive(Serialize)]
pub struct NodeRemovedView {
    pub removed: u64,
}

/// A table with `cluster status`'s look (no wrapping to the terminal's width).
fn plain_table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}

impl ClusterView {
    /// The leader for people: `coord-1 (id 1)`, or `none`.
    pub fn leader_label(&self) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == self.leader_id)
            .map_or_else(
                || "none".to_string(),
                |n| format!("{} (id {})", n.name, n.id),
            )
    }

    /// The line above the tables: `region eu   leader coord-1 (id 1)`.
    pub fn heading(&self) -> String {
        format!("region {}   leader {}", self.region, self.leader_label())
    }

    /// The nodes table: one row per node.
    pub fn nodes_table(&self) -> Table {
        let mut t = plain_table([
            "id", "name", "address", "role", "voter", "term", "commit", "applied", "lag",
        ]);
        for n in &self.nodes {
            t.add_row(n.row());
        }
        t
    }

    /// The workers table: each node's workers that run there; `None` when there are none.
    pub fn workers_table(&self) -> Option<Table> {
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .flat_map(|n| n.worker_rows(self.leader_id))
            .collect();
        if rows.is_empty() {
            return None;
        }
        let mut t = plain_table([
            "node",
            "worker",
            "runs on",
            "every",
            "last pass",
            "took",
            "items",
            "state",
        ]);
        for row in rows {
            t.add_row(row);
        }
        Some(t)
    }
}

impl NodeView {
    /// A node as the leader lists it (`n`), with its own answer (`own`: its entry in the
    /// status it gave, `None` when it could not be asked) and its workers. An unreachable
    /// node's own figures are unknown: `null`, not 0; its lag is counted from the leader's
    /// commit index.
    pub fn new(
        n: &NodeStatus,
        own: Option<&NodeStatus>,
        workers: &[WorkerStatus],
        leader_commit: u64,
    ) -> Self {
        NodeView {
            id: n.id,
            name: n.name.clone(),
            address: n.address.clone(),
            role: if own.is_some() {
                n.role()
            } else {
                NodeRole::Unreachable
            },
            voter: n.voter,
            term: own.map(|o| o.term),
            commit_index: own.map(|o| o.commit_index),
            applied_index: own.map(|o| o.applied_index),
            matched: n.matched,
            lag: own.map(|o| leader_commit.saturating_sub(o.applied_index)),
            workers: workers.iter().map(WorkerView::from).collect(),
        }
    }

    /// The node's row of the nodes table.
    pub fn row(&self) -> Vec<String> {
        let known = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        vec![
            self.id.to_string(),
            self.name.clone(),
            self.address.clone(),
            self.role.to_string(),
            if self.voter { "yes" } else { "no" }.to_string(),
            known(self.term),
            known(self.commit_index),
            known(self.applied_index),
            known(self.lag),
        ]
    }

    /// Its rows of the workers table: the ones that run here (a leader-only worker idles on
    /// the other nodes), or one row saying it could not be asked.
    pub fn worker_rows(&self, leader_id: u64) -> Vec<Vec<String>> {
        if self.term.is_none() {
            let mut row = vec![self.name.clone(), "-".to_string()];
            row.extend(["-"; 5].map(String::from));
            row.push("unreachable: its workers cannot be asked".to_string());
            return vec![row];
        }
        self.workers
            .iter()
            .filter(|w| !w.leader_only || self.id == leader_id)
            .map(|w| w.row(&self.name))
            .collect()
    }
}

impl WorkerView {
    /// What it is doing, for people: ok, an error, why it waits, or late (no pass for three
    /// intervals, and at least 30 s, with no reason given: stuck in one).
    pub fn state(&self, now_ms: u64) -> String {
        let late = self.last_pass_unix_ms != 0
            && now_ms.saturating_sub(self.last_pass_unix_ms) > (3 * self.interval_ms).max(30_000);
        if !self.last_error.is_empty() {
            format!("error: {}", self.last_error)
        } else if !self.waiting.is_empty() {
            format!("waiting: {}", self.waiting)
        } else if late {
            "late: no pass for over three intervals".to_string()
        } else {
            "ok".to_string()
        }
    }

    fn row(&self, node: &str) -> Vec<String> {
        vec![
            node.to_string(),
            self.name.clone(),
            if self.leader_only {
                "leader"
            } else {
                "every node"
            }
            .to_string(),
            output::duration(std::time::Duration::from_millis(self.interval_ms)),
            if self.last_pass_unix_ms == 0 {
                "never".to_string()
            } else {
                output::ago(self.last_pass_unix_ms)
            },
            format!("{} ms", self.last_pass_took_ms),
            self.items.to_string(),
            self.state(strongbox_core::clock::now_ms()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_late_after_three_silent_intervals_and_says_why_it_waits() {
        let w = WorkerView {
            name: "scheduler".into(),
            leader_only: true,
            interval_ms: 20_000,
            passes: 3,
            items: 1,
            last_pass_unix_ms: 1_000_000,
            last_pass: None,
            last_pass_took_ms: 5,
            last_error: String::new(),
            waiting: String::new(),
        };
        assert_eq!(w.state(1_000_000 + 59_000), "ok");
        assert!(w.state(1_000_000 + 61_000).starts_with("late"));
        let waiting = WorkerView {
            waiting: "no leader known".into(),
            ..w.clone()
        };
        assert_eq!(waiting.state(0), "waiting: no leader known");
        let failed = WorkerView {
            last_error: "no majority".into(),
            ..w
        };
        assert_eq!(failed.state(0), "error: no majority");
    }

    #[test]
    fn an_unreachable_node_has_no_figures_and_says_so() {
        let n = NodeStatus {
            id: 2,
            name: "coord-2".into(),
            address: "10.0.0.2:7000".into(),
            role: NodeRole::Follower.into(),
            voter: true,
            matched: 40,
            term: 3,
            commit_index: 40,
            applied_index: 40,
        };
        let gone = NodeView::new(&n, None, &[], 50);
        assert_eq!(gone.role, NodeRole::Unreachable);
        assert_eq!((gone.term, gone.lag), (None, None));
        let view = ClusterView {
            region: "eu".into(),
            leader_id: 1,
            nodes: vec![gone],
        };
        assert_eq!(view.heading(), "region eu   leader none");
        let workers = view
            .workers_table()
            .map(|t| t.to_string())
            .unwrap_or_default();
        assert!(workers.contains("unreachable"), "{workers}");

        let own = NodeStatus {
            applied_index: 45,
            ..n.clone()
        };
        let here = NodeView::new(&n, Some(&own), &[], 50);
        assert_eq!((here.term, here.lag), (Some(3), Some(5)));
        assert_eq!(here.role, NodeRole::Follower);
    }

    #[test]
    fn add_and_remove_answer_flat_records() {
        let added = serde_json::to_value(NodeAddedView::new(4, "10.0.0.4:7000")).unwrap();
        assert_eq!(added["added"], 4);
        assert_eq!(added["address"], "10.0.0.4:7000");
        assert!(added["next"].as_str().unwrap().contains("learner"));
        let removed = serde_json::to_value(NodeRemovedView { removed: 4 }).unwrap();
        assert_eq!(removed, serde_json::json!({"removed": 4}));
    }
}
