//! The gRPC contract of strongbox, generated from `proto/*.proto` at build time, and the text
//! form of its enums.
//!
//! Invariants: this crate holds generated code, size limits and the enums' words
//! ([`names`]); no logic. It is the one place that compares a state, kind, role or engine with
//! text: everything else compares enums.

#![allow(clippy::all, clippy::pedantic)]

mod generated {
    pub mod strongbox {
        pub mod v1 {
            tonic::include_proto!("strongbox.v1");
        }
        pub mod catalog {
            pub mod v1 {
                tonic::include_proto!("strongbox.catalog.v1");
            }
        }
    }
}

pub mod names;

/// Version 1 of the wire contract.
pub use generated::strongbox::v1;

/// The coordinator's catalog commands and records (they travel inside Raft entries).
pub use generated::strongbox::catalog::v1 as catalog;

/// The largest gRPC message either side accepts: a sealed 4 MiB chunk plus headroom.
/// Servers and clients set it explicitly so an oversized message is refused before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The largest message between coordinator nodes: Raft batches and catalog snapshots.
pub const MAX_CLUSTER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
