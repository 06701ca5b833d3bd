//! strongbox-agent as a library: the binary (`main.rs`) and the integration tests use it.

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod backup;
pub mod config;
pub mod error;
pub mod failure;
pub mod job;
pub mod restore;
pub mod rpc;
pub mod session;
