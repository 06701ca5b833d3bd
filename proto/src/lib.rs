//! The gRPC contract of strongbox, generated from `proto/strongbox.proto` at build time.
//!
//! Invariant: this crate holds generated code and size limits only; no logic.

#![allow(clippy::all, clippy::pedantic)]

/// Version 1 of the wire contract.
pub mod v1 {
    tonic::include_proto!("strongbox.v1");
}

/// The coordinator's catalog commands and records (they travel inside Raft entries).
pub mod catalog {
    tonic::include_proto!("strongbox.catalog.v1");
}

/// The largest gRPC message either side accepts: a sealed 4 MiB chunk plus headroom.
/// Servers and clients set it explicitly so an oversized message is refused before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The largest message between coordinator nodes: Raft batches and catalog snapshots.
pub const MAX_CLUSTER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
