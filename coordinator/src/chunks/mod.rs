//! Chunk storage on a node: the local content-addressed store, and replication to a majority.

pub mod maintain;
pub mod replicate;
pub mod scopes;
pub mod store;
