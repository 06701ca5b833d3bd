//! `strongbox-coordinator`: one node of a region's coordinator cluster. See
//! `docs/ARCHITECTURE.md` for the map.

pub mod api;
pub mod catalog;
pub mod chunks;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod raft;
pub mod server;
