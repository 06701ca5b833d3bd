//! strongbox-agent as a library: the binary (`main.rs`) and the integration tests use it.

pub mod config;
pub mod engines;
pub mod error;
