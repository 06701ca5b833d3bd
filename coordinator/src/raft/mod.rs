//! Raft for the coordinator cluster (raft-rs `RawNode`): the persistent log, the loop that
//! drives it, the transport between nodes, snapshots as files fetched in pieces, and the slog-to-tracing bridge raft-rs needs.

pub mod inbox;
pub mod logger;
pub mod node;
pub mod snapshots;
pub mod storage;
pub mod transport;
