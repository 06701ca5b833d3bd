//! strongbox's database engines: PostgreSQL ([`postgres`]), MariaDB/MySQL ([`mysql`]) and SQLite
//! ([`sqlite`]) behind one trait, [`Engine`]: find a member's role, dump a consistent backup as
//! a few byte streams (*parts*), provision a fresh server, load parts into it and verify it, or
//! load them into the service's own server (an in-place restore). [`tools`] finds the engines'
//! programs, for the engines and for anyone else who runs them.
//!
//! The agent runs backups and restores with it; the CLI's download and `dev`, and the test
//! harness, use its engine knowledge without the agent.
//!
//! Invariants:
//! - It never talks to coordinators, and knows nothing of jobs, chunks, manifests or keys: it
//!   turns a service into parts and parts into a server, and nothing more.
//! - A dump is a stream: nothing here holds a whole part in memory or writes it to local disk
//!   (SQLite's consistent copy is the one exception: the online backup API needs a file).
//! - The table statistics a backup records describe exactly the data in its dump (PostgreSQL:
//!   counted in the snapshot `pg_dump` uses; MariaDB: counted from the dump stream itself;
//!   SQLite: counted on the consistent copy).
//! - A restore never touches the source: it provisions a fresh server or file under the
//!   agent's data root. The one exception is an in-place restore ([`Engine::in_place`]), which
//!   an operator orders explicitly: it replaces only the databases (or the file) of the backup
//!   in the service's own server, and never drops or changes the role or account the agent
//!   connects as.
//! - Passwords come from a file or an environment variable and are handed to tools through
//!   their environment (`PGPASSWORD`, `MYSQL_PWD`), never on a command line or in an error.
//! - Its one error type is [`Error`], which says where a failure happened (configuration,
//!   tool, database, stream, file) so callers classify it without reading words.

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod counting;
mod engine;
pub mod error;
pub mod mysql;
pub mod postgres;
pub mod process;
mod restored;
mod spec;
pub mod sqlite;
pub mod tools;

pub use engine::*;
pub use error::{Error, Result};
pub use restored::{compare_stats, in_backup, Connection, FailedObject, Verification};
pub use spec::{EngineKind, ServiceSpec};
