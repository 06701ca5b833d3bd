//! The gRPC contract of strongbox, generated from `proto/strongbox.proto` at build time.
//!
//! Invariant: this crate holds generated code and size limits only; no logic.

#![allow(clippy::all, clippy::pedantic)]

/// Version 1 of the wire contract.
pub mod v1 {
    tonic::include_proto!("strongbox.v1");
}

/// The largest gRPC message either side accepts: a sealed 4 MiB chunk plus headroom.
/// Servers and clients set it explicitly so an oversized message is refused before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
