//! Every background loop of a node is a [`Worker`] (in the manner of Garage's
//! `util/background/worker.rs`): the scheduler, retention, the clock, chunk maintenance, and
//! later region copies, drills and alert hooks. [`spawn`] gives each worker its own task, so a
//! slow pass of one never delays another, and records what each did last ([`Statuses`]), which
//! `strongbox cluster status` shows.
//!
//! Invariants: a pass runs only once the node knows a leader and a read barrier passed (so no
//! worker decides on a stale catalog), and a leader-only worker's pass only while this node
//! leads; passes of one worker never overlap; the next pass starts one interval after the last
//! one ended (a slow pass is not made up for), and a node not ready asks again within
//! [`READY_RETRY`]; a worker stops at the node's stop between passes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strongbox_core::clock::now_ms;

use crate::error::Result;
use crate::node::NodeContext;

/// One background loop of a node: a pass every [`Worker::interval`].
#[async_trait::async_trait]
pub trait Worker: Send + 'static {
    /// A short name, unique on the node (`scheduler`, `maintenance`).
    fn name(&self) -> &'static str;
    /// Whether it runs on the leader only (it proposes), or on every node (it cares for this
    /// node's own files).
    fn leader_only(&self) -> bool;
    /// How long from the end of one pass to the start of the next (asked after each pass, so
    /// a worker may slow down once it has little to do).
    fn interval(&self) -> Duration;
    /// One pass; what it did, for the status. An error is recorded and logged, and the next
    /// pass comes at the next interval.
    async fn pass(&mut self, node: &Arc<NodeContext>) -> Result<Done>;
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Done {
    /// Things it acted on (jobs created, backups expired, chunks repaired or swept).
    pub items: u64,
}

impl Done {
    pub fn items(items: u64) -> Done {
        Done { items }
    }
}

/// What a worker did last, as `cluster status` shows it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: &'static str,
    pub leader_only: bool,
    pub interval: Duration,
    /// Passes run since the node started.
    pub passes: u64,
    /// Items done since the node started.
    pub items: u64,
    /// When the last pass ended (ms since the epoch; 0: none yet).
    pub last_pass_unix_ms: u64,
    pub last_pass_took: Duration,
    /// The last pass's error, if it failed.
    pub last_error: Option<String>,
    /// Why the last tick ran no pass (not the leader, no read barrier), if it did not.
    pub waiting: Option<String>,
}

/// The status of every worker of this node.
#[derive(Default)]
pub struct Statuses {
    by_name: Mutex<BTreeMap<&'static str, Status>>,
}

impl Statuses {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Status>> {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, name: &'static str, f: impl FnOnce(&mut Status)) {
        if let Some(s) = self.lock().get_mut(name) {
            f(s);
        }
    }

    /// Every worker's status, by name.
    pub fn all(&self) -> Vec<Status> {
        self.lock().values().cloned().collect()
    }
}

/// Why this node runs no pass of a worker now, if it does not: it knows no leader, it is not
/// the leader of a leader-only worker, or its catalog cannot be brought up to date.
async fn not_ready(node: &NodeContext, leader_only: bool) -> Option<String> {
    let st = node.raft.status();
    if st.leader_id == 0 {
        return Some("no leader known".into());
    }
    if leader_only && st.leader_id != node.id {
        return Some(format!("runs on the leader (node {})", st.leader_id));
    }
    node.read_barrier()
        .await
        .err()
        .map(|e| format!("no read barrier: {e}"))
}

/// Runs `worker` in a task of its own until the node stops.
pub fn spawn(node: Arc<NodeContext>, mut worker: Box<dyn Worker>) -> tokio::task::JoinHandle<()> {
    let name = worker.name();
    node.workers.lock().insert(
        name,
        Status {
            name,
            leader_only: worker.leader_only(),
            interval: worker.interval(),
            ..Default::default()
        },
    );
    let mut stopping = node.stopping.subscribe();
    tokio::spawn(async move {
        loop {
            if *stopping.borrow() {
                return;
            }
            let next = run_once(&node, worker.as_mut()).await;
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    })
}

/// A node not ready for a pass asks again this soon (or at the worker's interval if shorter),
/// so a node that just started does not wait a long interval for its first pass.
const READY_RETRY: Duration = Duration::from_secs(2);

/// One tick of `worker`: a pass if the node is ready for one, and its status. How long to wait
/// for the next tick.
async fn run_once(node: &Arc<NodeContext>, worker: &mut dyn Worker) -> Duration {
    let name = worker.name();
    if let Some(why) = not_ready(node, worker.leader_only()).await {
        node.workers.update(name, |s| {
            // Said once a wait: a node that just started, or lost its region, says why it
            // does nothing (a leader-only worker idling on a follower is the normal case).
            if s.waiting.is_none() && !(s.leader_only && node.raft.status().leader_id != 0) {
                tracing::info!(worker = name, why, "{name} waits: {why}");
            }
            s.waiting = Some(why);
        });
        return worker.interval().min(READY_RETRY);
    }
    let started = Instant::now();
    let result = worker.pass(node).await;
    let took = started.elapsed();
    if let Err(e) = &result {
        tracing::warn!(worker = name, error = %e, "pass failed; the next one comes at the next interval");
    }
    node.workers.update(name, |s| {
        s.waiting = None;
        s.interval = worker.interval();
        s.passes += 1;
        s.last_pass_unix_ms = now_ms();
        s.last_pass_took = took;
        match result {
            Ok(done) => {
                s.items += done.items;
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    });
    worker.interval()
}
