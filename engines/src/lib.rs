//! strongbox's database engines: PostgreSQL, MariaDB/MySQL and SQLite behind one trait
//! ([`Engine`]): find a member's role, dump a consistent backup as a few byte streams
//! (*parts*), provision a fresh server, load parts into it and verify it, or load them into the
//! service's own server (an in-place restore).
//!
//! Used by the agent (backups and restores), and by whatever else needs engine knowledge
//! without the agent: the CLI's download and `dev`, the test harness.
//!
//! Invariants of the crate:
//! - It never talks to coordinators, and knows nothing of jobs, chunks, manifests' sealing or
//!   keys: it turns a service into parts and parts into a server, and nothing more.
//! - Its one error type is [`Error`]; a message never holds a password.
//! - The invariants of the engines themselves (streams, consistent snapshots, names as data)
//!   are stated in [`engine`].

pub mod counting;
pub mod engine;
pub mod error;
pub mod mysql;
pub mod postgres;
pub mod process;
pub mod sqlite;
pub mod tools;

pub use engine::*;
pub use error::{Error, Result};
