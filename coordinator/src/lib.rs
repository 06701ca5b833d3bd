//! `strongbox-coordinator`: one node of a region's coordinator cluster. See
//! `docs/ARCHITECTURE.md` for the map.

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
pub mod worker;
