//! A region's coordinators as real processes: Raft (elections, kill -9, snapshots, membership),
//! the replicated chunk store, who may call what, fleet policy, and the CLI's cluster commands.

mod chunks;
mod cli;
mod policy;
mod raft;
mod security;
