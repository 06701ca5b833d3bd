//! strongbox-agent as a library: the binary (`main.rs`) and the integration tests use it.

pub mod agent;
pub mod backup;
pub mod config;
pub mod error;
pub mod failure;
pub mod restore;
pub mod session;
