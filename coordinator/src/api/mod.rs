//! The gRPC services of a node. Every RPC checks the caller's role from its certificate first
//! (`strongbox_core::tls::require_role`), then validates the request, then acts.

pub mod agent;
pub mod cluster;
pub mod convert;
pub mod fleet;
pub mod jobs;
pub mod operator;
pub mod session;
pub mod snapshot;
pub mod validate;
