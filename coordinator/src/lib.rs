//! `strongbox-coordinator`: one node of a region's coordinator cluster. See
//! `docs/ARCHITECTURE.md` for the map.

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod catalog;
pub mod chunks;
pub mod config;
pub mod controllers;
pub mod error;
pub mod http;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod raft;
pub mod server;
pub mod store;
pub mod worker;
