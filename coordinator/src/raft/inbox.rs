//! What the loop is told and what it tells: its inbox ([`Request`], from the node's services and
//! the transport) and its outbox ([`Outbox`], to the peers). The loop sees the network only
//! through these two, so its decisions run in memory in tests (`node.rs`'s unit tests).
//!
//! Invariant: neither side waits on the other: requests are queued, and an outbox takes
//! messages without blocking (a peer's full queue drops them, which Raft tolerates).

use raft::eraftpb::Message;
use strongbox_proto::catalog::{Command, Outcome};
use tokio::sync::oneshot;

use crate::catalog::Catalog;
use crate::error::Result;

/// What the rest of the node asks of the loop.
pub enum Request {
    Propose {
        command: Box<Command>,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    Step(Box<Message>),
    ReadIndex {
        reply: oneshot::Sender<Result<u64>>,
    },
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
}

/// Where the loop's messages go.
pub trait Outbox: Send + Sync {
    /// Hands `messages` to their peers, without waiting.
    fn send(&self, messages: Vec<Message>);
    /// The catalog's node table changed: peers' addresses may have.
    fn refresh_addresses(&self, catalog: &Catalog);
}
