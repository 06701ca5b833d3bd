//! The CLI's views: one typed `Serialize` struct per `--output json` document, the scripting
//! interface, and what people see drawn from the same struct (its `fields()` lines, its
//! `table()`). Command code builds a view from the API's message and prints it; it never
//! builds JSON by hand. Every document's fields are pinned by a test that runs the real CLI
//! (`tests/integration/tests/backups/json_documents.rs`; `dev`'s in `cli/tests/dev.rs`).
//!
//! Invariants: a view's field names are its JSON keys, in the struct's order; a time is
//! given twice, as ms since the epoch (`*_unix_ms`, 0 when none) and as RFC 3339 (`null`
//! when none); an unset enum is `null`; names from a manifest or a database are escaped for
//! the terminal in tables (`output::printable`), never in JSON.

pub mod audit;
pub mod backup;
pub mod cluster;
pub mod dev;
pub mod download;
pub mod host;
pub mod job;
pub mod keys;
pub mod manifest;
pub mod policy;
pub mod service;

/// RFC 3339 of `unix_ms` (`None` for 0: no such time).
pub use crate::output::timestamp as rfc3339;
