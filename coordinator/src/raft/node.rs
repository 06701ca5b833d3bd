//! The Raft loop: one thread owns the `RawNode` and handles, in order, proposals, messages from
//! peers, read barriers and ticks; after each event it processes the `Ready` exactly in the
//! order of DESIGN.md ("Raft loop, in order").
//!
//! It also runs the membership controller: on the leader, it makes the conf state follow the
//! `node/` table of the catalog (add as learner, promote once caught up, remove what the table
//! no longer names), one change at a time.
//!
//! Invariants: entries and hard state are durable (flushed) before any message that depends on
//! them is sent and before they are applied; committed entries are applied in order, once, each
//! with the new applied index in the same batch; a proposal's caller is answered with the
//! outcome of *its* entry (matched by request id), or an error after a deadline; a read barrier
//! is answered only once this node has applied the index the leader confirmed.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use strongbox_core::clock::now_ms;
use strongbox_proto::catalog::{command::Op, Actor, Command, NodeRecord, Outcome, SetNode};
use strongbox_proto::v1::{CallerRole, NodeRole};
use tokio::sync::{oneshot, watch};

use super::inbox::Outbox;
pub use super::inbox::Request;
use super::storage::RaftStore;
use super::transport::Transport;
use crate::catalog::Catalog;
use crate::error::{Error, Result};

/// How long a proposal or a read may wait before its caller gets an error.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Tunables of the loop.
#[derive(Debug, Clone)]
pub struct RaftOptions {
    pub id: u64,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Compact the log (fold it into a snapshot point) once it holds this many applied entries.
    pub compact_after: u64,
}

impl RaftOptions {
    pub fn new(id: u64) -> Self {
        RaftOptions {
            id,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            compact_after: 10_000,
        }
    }
}

/// One peer as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: u64,
    pub voter: bool,
    pub matched: u64,
}

/// The node's Raft state, published after every loop turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub role: NodeRole,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Filled on the leader only.
    pub progress: Vec<PeerProgress>,
}

/// A handle to the loop, cheap to clone.
#[derive(Clone)]
pub struct RaftHandle {
    tx: Sender<Request>,
    status: watch::Receiver<RaftStatus>,
}

impl RaftHandle {
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    pub fn step(&self, m: Message) -> Result<()> {
        self.tx
            .send(Request::Step(Box::new(m)))
            .map_err(|_| Error::ShuttingDown)
    }

    pub(crate) fn send(&self, r: Request) -> Result<()> {
        self.tx.send(r).map_err(|_| Error::ShuttingDown)
    }

    /// Proposes a command on this node (it must be the leader) and waits until it is applied.
    pub async fn propose(&self, command: Command) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Propose {
            command: Box::new(command),
            reply,
        })?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Waits for a linearizable read point: returns once this node has applied everything
    /// committed when the call was made.
    pub async fn read_barrier(&self) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::ReadIndex { reply })?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }
}

struct Pending<T> {
    reply: oneshot::Sender<Result<T>>,
    deadline: Instant,
}

struct Loop {
    opts: RaftOptions,
    raw: RawNode<RaftStore>,
    catalog: Catalog,
    outbox: Arc<dyn Outbox>,
    rx: Receiver<Request>,
    status: watch::Sender<RaftStatus>,
    proposals: HashMap<String, Pending<Outcome>>,
    reads: HashMap<Vec<u8>, Pending<u64>>,
    /// Read points confirmed by the leader, waiting for this node to apply them.
    ready_reads: Vec<(u64, oneshot::Sender<Result<u64>>)>,
    read_seq: u64,
    /// Nodes the configuration names, which the leader records in the catalog.
    initial_peers: Vec<NodeRecord>,
}

/// Starts the loop on its own thread.
pub fn start(
    opts: RaftOptions,
    store: RaftStore,
    catalog: Catalog,
    transport: Arc<Transport>,
    initial_peers: Vec<NodeRecord>,
) -> Result<(RaftHandle, std::thread::JoinHandle<Result<()>>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    transport.set_loop(tx.clone());
    let (mut lp, status_rx) = Loop::new(opts, store, catalog, transport, rx, initial_peers)?;
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            let r = lp.run();
            if let Err(e) = &r {
                tracing::error!(error = %e, "the Raft loop stopped");
            }
            r
        })
        .map_err(|e| Error::Io {
            path: "raft thread".into(),
            source: e,
        })?;
    Ok((
        RaftHandle {
            tx,
            status: status_rx,
        },
        thread,
    ))
}

impl Loop {
    /// A loop over `store` and `catalog`, taking requests from `rx` and sending through
    /// `outbox`; its status is published on the returned receiver.
    fn new(
        opts: RaftOptions,
        store: RaftStore,
        catalog: Catalog,
        outbox: Arc<dyn Outbox>,
        rx: Receiver<Request>,
        initial_peers: Vec<NodeRecord>,
    ) -> Result<(Loop, watch::Receiver<RaftStatus>)> {
        let applied = catalog.applied_index()?;
        // Entries applied to the catalog were committed; if the commit index did not reach the
        // disk before a crash, raise it so raft-rs sees a consistent state.
        let mut hs = store.hard_state();
        if applied > hs.commit && applied <= store.last_index_now() {
            hs.commit = applied;
            store.append(&[], Some(&hs))?;
            store.flush()?;
        }
        let config = raft::Config {
            id: opts.id,
            election_tick: opts.election_ticks,
            heartbeat_tick: opts.heartbeat_ticks,
            applied,
            max_size_per_msg: 4 * 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, store, &super::logger::logger())?;
        let (status_tx, status_rx) = watch::channel(RaftStatus::default());
        let lp = Loop {
            opts,
            raw,
            catalog,
            outbox,
            rx,
            status: status_tx,
            proposals: HashMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            read_seq: 0,
            initial_peers,
        };
        Ok((lp, status_rx))
    }

    fn run(&mut self) -> Result<()> {
        let mut next_tick = Instant::now() + self.opts.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(req) => {
                    self.handle(req)?;
                    // Take what else is queued, so one Ready (one fsync) serves many requests.
                    for _ in 0..4096 {
                        match self.rx.try_recv() {
                            Ok(req) => self.handle(req)?,
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick += self.opts.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.opts.tick;
                }
                self.expire();
                self.control_membership()?;
            }
            self.on_ready()?;
            self.publish();
        }
    }

    fn handle(&mut self, req: Request) -> Result<()> {
        match req {
            Request::Propose { command, reply } => self.propose(*command, Some(reply)),
            Request::Step(m) => {
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "dropped a Raft message");
                }
            }
            Request::ReadIndex { reply } => {
                if self.raw.raft.leader_id == 0 {
                    let _ = reply.send(Err(Error::NoLeader));
                } else {
                    self.read_seq += 1;
                    let ctx = [self.opts.id.to_be_bytes(), self.read_seq.to_be_bytes()].concat();
                    self.raw.read_index(ctx.clone());
                    self.reads.insert(
                        ctx,
                        Pending {
                            reply,
                            deadline: Instant::now() + REQUEST_DEADLINE,
                        },
                    );
                }
            }
            Request::Unreachable(id) => self.raw.report_unreachable(id),
            Request::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
        }
        Ok(())
    }

    fn propose(&mut self, command: Command, reply: Option<oneshot::Sender<Result<Outcome>>>) {
        if self.raw.raft.state != StateRole::Leader {
            if let Some(r) = reply {
                let _ = r.send(Err(Error::NoLeader));
            }
            return;
        }
        let id = command.request_id.clone();
        let result = self
            .raw
            .propose(id.clone().into_bytes(), command.encode_to_vec());
        self.answer_proposal(id, result, reply);
    }

    fn answer_proposal(
        &mut self,
        id: String,
        result: raft::Result<()>,
        reply: Option<oneshot::Sender<Result<Outcome>>>,
    ) {
        match (result, reply) {
            (Ok(()), Some(reply)) => {
                self.proposals.insert(
                    id,
                    Pending {
                        reply,
                        deadline: Instant::now() + REQUEST_DEADLINE,
                    },
                );
            }
            (Err(e), Some(reply)) => {
                let _ = reply.send(Err(Error::Raft(e)));
            }
            (_, None) => {}
        }
    }

    /// Answers requests past their deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<String> = self
            .proposals
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in late {
            if let Some(p) = self.proposals.remove(&k) {
                let _ = p.reply.send(Err(Error::Timeout("the proposal to commit")));
            }
        }
        let late: Vec<Vec<u8>> = self
            .reads
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in late {
            if let Some(p) = self.reads.remove(&k) {
                let _ = p.reply.send(Err(Error::Timeout("a read barrier")));
            }
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();

        // 1. Messages a leader may send before persisting.
        self.outbox.send(ready.take_messages());

        // 2. A snapshot from the leader, its catalog prepared before its message was stepped
        //    (`snapshots.rs`): the catalog's swap and the log's new start, in one transaction.
        if !ready.snapshot().is_empty() {
            let snap: Snapshot = ready.snapshot().clone();
            let meta = snap.get_metadata();
            tracing::info!(
                index = meta.index,
                term = meta.term,
                "installing a snapshot from the leader"
            );
            self.raw.mut_store().install_snapshot(&snap)?;
            self.outbox.refresh_addresses(&self.catalog);
        }

        // 3. Read states: the leader confirmed these read points.
        for rs in ready.take_read_states() {
            if let Some(p) = self.reads.remove(&rs.request_ctx) {
                self.ready_reads.push((rs.index, p.reply));
            }
        }

        // 4. Entries and hard state, atomically and durably.
        let store = self.raw.store();
        if !ready.entries().is_empty() || ready.hs().is_some() || !ready.snapshot().is_empty() {
            store.append(ready.entries(), ready.hs())?;
            store.flush()?;
        }

        // 5. Messages that needed the above on disk.
        self.outbox.send(ready.take_persisted_messages());

        // 6. Apply what is committed.
        let committed = ready.take_committed_entries();
        self.apply(committed)?;

        // 7. Advance.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.store().set_commit(commit)?;
        }
        self.outbox.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();

        // 8. Reads whose index is applied; compaction.
        self.answer_reads();
        self.maybe_compact()?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        let mut nodes_changed = false;
        for e in entries {
            let index = e.index;
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => self.catalog.apply_empty(index)?,
                EntryType::EntryNormal => {
                    let outcome = self.catalog.apply(index, &e.data)?;
                    if e.data.len() < 4096 && is_node_command(&e.data) {
                        nodes_changed = true;
                    }
                    let id = String::from_utf8_lossy(&e.context).into_owned();
                    if let Some(p) = self.proposals.remove(&id) {
                        let _ = p.reply.send(Ok(outcome));
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let result = if e.get_entry_type() == EntryType::EntryConfChange {
                        ConfChange::parse_from_bytes(&e.data)
                            .map_err(raft::Error::CodecError)
                            .and_then(|cc| self.raw.apply_conf_change(&cc))
                    } else {
                        ConfChangeV2::parse_from_bytes(&e.data)
                            .map_err(raft::Error::CodecError)
                            .and_then(|cc| self.raw.apply_conf_change(&cc))
                    };
                    match result {
                        Ok(cs) => {
                            tracing::info!(index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                            self.raw.store().set_conf_state(&cs)?;
                        }
                        Err(err) => {
                            tracing::warn!(index, error = %err, "a conf change was not applied")
                        }
                    }
                    self.catalog.apply_empty(index)?;
                    nodes_changed = true;
                }
            }
        }
        if nodes_changed {
            self.outbox.refresh_addresses(&self.catalog);
        }
        Ok(())
    }

    fn answer_reads(&mut self) {
        let applied = self.raw.raft.raft_log.applied;
        let mut waiting = Vec::new();
        for (index, reply) in self.ready_reads.drain(..) {
            if index <= applied {
                let _ = reply.send(Ok(index));
            } else {
                waiting.push((index, reply));
            }
        }
        self.ready_reads = waiting;
    }

    fn maybe_compact(&mut self) -> Result<()> {
        let applied = self.raw.raft.raft_log.applied;
        let store = self.raw.store();
        let first = store.first_index_now();
        if applied >= first + self.opts.compact_after {
            // Keep a little log, so a follower that is just behind gets entries, not a snapshot.
            let keep = (self.opts.compact_after / 10).min(1000);
            let upto = applied.saturating_sub(keep);
            if upto >= first {
                store.compact(upto)?;
                tracing::info!(upto, applied, "compacted the Raft log");
            }
        }
        Ok(())
    }

    /// On the leader: record configured peers in the catalog, then move the conf state one step
    /// towards the catalog's node table.
    fn control_membership(&mut self) -> Result<()> {
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.has_pending_conf() {
            return Ok(());
        }
        let wanted: HashMap<u64, NodeRecord> = self
            .catalog
            .nodes()?
            .into_iter()
            .map(|n| (n.id, n))
            .collect();
        let missing: Vec<NodeRecord> = self
            .initial_peers
            .iter()
            .filter(|p| !wanted.contains_key(&p.id))
            .cloned()
            .collect();
        for p in missing {
            let cmd = Command {
                request_id: format!("initial-node-{}-{}", p.id, p.address),
                actor: Some(Actor {
                    role: CallerRole::Node.into(),
                    name: format!("node-{}", self.opts.id),
                }),
                unix_ms: now_ms(),
                op: Some(Op::SetNode(SetNode {
                    id: p.id,
                    address: p.address.clone(),
                    name: p.name.clone(),
                })),
            };
            if !self.proposals.contains_key(&cmd.request_id) {
                self.propose(cmd, None);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let cs = self.raw.store().conf_state();
        let voters: HashSet<u64> = cs.voters.iter().copied().collect();
        let learners: HashSet<u64> = cs.learners.iter().copied().collect();
        let last = self.raw.raft.raft_log.last_index();
        let change = if let Some(id) = wanted
            .keys()
            .copied()
            .find(|id| !voters.contains(id) && !learners.contains(id))
        {
            Some((ConfChangeType::AddLearnerNode, id))
        } else if let Some(id) = learners.iter().copied().find(|id| {
            wanted.contains_key(id)
                && self
                    .raw
                    .raft
                    .prs()
                    .get(*id)
                    // Caught up: it has acknowledged entries, up to 10 behind. A learner that
                    // acknowledged nothing is never "caught up" with a short log: promoting it
                    // would make a voter of a node that may not be there.
                    .is_some_and(|p| p.matched > 0 && p.matched + 10 >= last)
        }) {
            Some((ConfChangeType::AddNode, id))
        } else {
            voters
                .iter()
                .chain(learners.iter())
                .copied()
                .find(|id| !wanted.contains_key(id))
                .filter(|_| voters.len() > 1 || !learners.is_empty())
                .map(|id| (ConfChangeType::RemoveNode, id))
        };
        if let Some((kind, id)) = change {
            tracing::info!(?kind, node = id, "proposing a membership change");
            let mut cc = ConfChange::default();
            cc.set_change_type(kind);
            cc.node_id = id;
            if let Err(e) = self.raw.propose_conf_change(vec![], cc) {
                tracing::warn!(error = %e, "membership change not proposed");
            }
        }
        Ok(())
    }

    fn publish(&mut self) {
        let r = &self.raw.raft;
        let store = self.raw.store();
        let cs = store.conf_state();
        let progress = if r.state == StateRole::Leader {
            let mut p: Vec<PeerProgress> = r
                .prs()
                .iter()
                .map(|(id, pr)| PeerProgress {
                    id: *id,
                    voter: cs.voters.contains(id),
                    matched: pr.matched,
                })
                .collect();
            p.sort_by_key(|p| p.id);
            p
        } else {
            Vec::new()
        };
        let status = RaftStatus {
            id: self.opts.id,
            leader_id: r.leader_id,
            term: r.term,
            role: role_name(r.state, &cs, self.opts.id),
            commit: r.raft_log.committed,
            applied: r.raft_log.applied,
            first_index: store.first_index_now(),
            last_index: store.last_index_now(),
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            progress,
        };
        self.status.send_if_modified(|old| {
            if *old != status {
                *old = status;
                true
            } else {
                false
            }
        });
    }
}

fn role_name(state: StateRole, cs: &raft::eraftpb::ConfState, id: u64) -> NodeRole {
    if cs.learners.contains(&id) {
        return NodeRole::Learner;
    }
    match state {
        StateRole::Leader => NodeRole::Leader,
        StateRole::Follower => NodeRole::Follower,
        StateRole::Candidate | StateRole::PreCandidate => NodeRole::Candidate,
    }
}

fn is_node_command(data: &[u8]) -> bool {
    Command::decode(data)
        .is_ok_and(|c| matches!(c.op, Some(Op::SetNode(_)) | Some(Op::RemoveNode(_))))
}

/// The loop's decisions in memory: a single node over a temporary store, its messages kept
/// by an outbox instead of sent (openraft's engine tests, in spirit).
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use strongbox_proto::catalog::RegisterHost;

    /// An outbox that keeps what the loop sent.
    #[derive(Default)]
    struct Kept {
        sent: Mutex<Vec<Message>>,
    }

    impl Outbox for Kept {
        fn send(&self, messages: Vec<Message>) {
            self.sent.lock().unwrap().extend(messages);
        }
        fn refresh_addresses(&self, _: &Catalog) {}
    }

    struct Node {
        lp: Loop,
        tx: Sender<Request>,
        outbox: Arc<Kept>,
        _status: watch::Receiver<RaftStatus>,
        _dir: tempfile::TempDir,
    }

    /// Node 1, the only voter of a new region.
    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Store::open(dir.path(), 8 << 20).unwrap();
        let catalog = Catalog::open(&db).unwrap();
        let snapshots =
            crate::raft::snapshots::Snapshots::open(dir.path().join("snapshots"), 1, 0).unwrap();
        let store = RaftStore::open(db, catalog.clone(), snapshots).unwrap();
        store.bootstrap(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let outbox = Arc::new(Kept::default());
        let (lp, status) = Loop::new(
            RaftOptions::new(1),
            store,
            catalog,
            outbox.clone(),
            rx,
            vec![],
        )
        .unwrap();
        Node {
            lp,
            tx,
            outbox,
            _status: status,
            _dir: dir,
        }
    }

    impl Node {
        /// Handles what is queued, then one `Ready`: one turn of `Loop::run` without its clock.
        fn turn(&mut self) {
            while let Ok(r) = self.lp.rx.try_recv() {
                self.lp.handle(r).unwrap();
            }
            self.lp.on_ready().unwrap();
            self.lp.publish();
        }

        /// Ticks until this node leads.
        fn elect(&mut self) {
            for _ in 0..100 {
                self.lp.raw.tick();
                self.turn();
                if self.lp.raw.raft.state == StateRole::Leader {
                    self.turn();
                    return;
                }
            }
            panic!("a single voter did not elect itself");
        }

        fn propose(&self, command: Command) -> oneshot::Receiver<Result<Outcome>> {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Request::Propose {
                    command: Box::new(command),
                    reply,
                })
                .unwrap();
            rx
        }
    }

    fn command(id: &str, op: Op) -> Command {
        Command {
            request_id: id.into(),
            actor: Some(Actor {
                role: CallerRole::Node.into(),
                name: "test".into(),
            }),
            unix_ms: 1_800_000_000_000,
            op: Some(op),
        }
    }

    fn register(host: &str) -> Op {
        Op::RegisterHost(RegisterHost {
            host: host.into(),
            region: "test-1".into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_proposal_is_answered_with_the_outcome_of_its_own_entry_once_applied() {
        let mut n = node();
        n.elect();
        let mut first = n.propose(command("r1", register("db-1")));
        let mut other = n.propose(command("r2", register("db-2")));
        n.turn();
        let first = first.try_recv().expect("answered").expect("applied");
        let other = other.try_recv().expect("answered").expect("applied");
        assert!(first.error.is_empty() && other.error.is_empty());
        assert_eq!(
            other.index,
            first.index + 1,
            "each caller gets its own entry"
        );
        assert!(n.lp.catalog.host("db-1").unwrap().is_some());
        // The same request again applies once and answers the first outcome.
        let mut again = n.propose(command("r1", register("db-1")));
        n.turn();
        assert_eq!(
            again.try_recv().expect("answered").expect("applied").index,
            first.index
        );
    }

    #[test]
    fn a_proposal_or_a_read_without_a_leader_is_answered_at_once() {
        let mut n = node();
        let mut proposal = n.propose(command("r1", register("db-1")));
        let (reply, mut read) = oneshot::channel();
        n.tx.send(Request::ReadIndex { reply }).unwrap();
        n.turn();
        assert!(matches!(proposal.try_recv(), Ok(Err(Error::NoLeader))));
        assert!(matches!(read.try_recv(), Ok(Err(Error::NoLeader))));
        assert!(n.lp.proposals.is_empty() && n.lp.reads.is_empty());
    }

    #[test]
    fn a_read_barrier_is_answered_once_its_read_point_is_applied() {
        let mut n = node();
        n.elect();
        let mut write = n.propose(command("r1", register("db-1")));
        n.turn();
        let written = write.try_recv().expect("answered").expect("applied").index;
        // A read asked after the write was answered covers it.
        let (reply, mut read) = oneshot::channel();
        n.tx.send(Request::ReadIndex { reply }).unwrap();
        n.turn();
        let point = read.try_recv().expect("answered").expect("a read point");
        assert!(
            point >= written,
            "the read point {point} covers the write at {written}"
        );
        assert!(n.lp.raw.raft.raft_log.applied >= point);
    }

    #[test]
    fn requests_past_their_deadline_are_answered_with_a_timeout() {
        let mut n = node();
        n.elect();
        let (reply, mut proposal) = oneshot::channel();
        let past = Instant::now() - Duration::from_millis(1);
        n.lp.proposals.insert(
            "lost".into(),
            Pending {
                reply,
                deadline: past,
            },
        );
        let (reply, mut read) = oneshot::channel();
        n.lp.reads.insert(
            b"lost".to_vec(),
            Pending {
                reply,
                deadline: past,
            },
        );
        n.lp.expire();
        assert!(matches!(proposal.try_recv(), Ok(Err(Error::Timeout(_)))));
        assert!(matches!(read.try_recv(), Ok(Err(Error::Timeout(_)))));
        assert!(n.lp.proposals.is_empty() && n.lp.reads.is_empty());
    }

    #[test]
    fn the_leader_adds_a_node_the_catalog_names_as_a_learner_and_sends_it_the_log() {
        let mut n = node();
        n.elect();
        let set = Op::SetNode(SetNode {
            id: 2,
            address: "127.0.0.12:7443".into(),
            name: "node-2".into(),
        });
        let mut added = n.propose(command("add-2", set));
        n.turn();
        assert!(added.try_recv().expect("answered").is_ok());
        // One membership step: node 2 joins as a learner, not a voter.
        n.lp.control_membership().unwrap();
        n.turn();
        n.turn();
        let cs = n.lp.raw.store().conf_state();
        assert_eq!((cs.voters.clone(), cs.learners.clone()), (vec![1], vec![2]));
        assert!(
            n.outbox.sent.lock().unwrap().iter().any(|m| m.to == 2),
            "the leader sends the new learner its log"
        );
        // It is promoted only once caught up: it has acknowledged nothing yet.
        n.lp.control_membership().unwrap();
        n.turn();
        assert_eq!(n.lp.raw.store().conf_state().voters, vec![1]);
        // Once it acknowledges the log, the next step makes it a voter.
        let last = n.lp.raw.raft.raft_log.last_index();
        let term = n.lp.raw.raft.term;
        let mut ack = Message::default();
        ack.set_msg_type(raft::eraftpb::MessageType::MsgAppendResponse);
        ack.from = 2;
        ack.to = 1;
        ack.term = term;
        ack.index = last;
        n.tx.send(Request::Step(Box::new(ack))).unwrap();
        n.turn();
        n.lp.control_membership().unwrap();
        n.turn();
        n.turn();
        assert_eq!(n.lp.raw.store().conf_state().voters, vec![1, 2]);
    }
}
