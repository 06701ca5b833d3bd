//! The CLI's views: one typed `Serialize` struct per `--output json` document, the scripting
//! interface (`tests/integration/tests/backups/json_documents.rs` pins their fields). Command
//! code builds a view from the API's message and prints it; it never builds JSON by hand.
//!
//! Invariants: a view's field names are its JSON keys; a time is given twice, as ms since
//! the epoch (`*_unix_ms`, 0 when none) and as RFC 3339 (`null` when none); an unset enum is
//! `null`.

pub mod backup;
pub mod cluster;
pub mod job;
pub mod policy;
pub mod service;

/// RFC 3339 of `unix_ms` (`None` for 0: no such time).
pub fn rfc3339(unix_ms: u64) -> Option<String> {
    crate::output::timestamp(unix_ms)
        .as_str()
        .map(str::to_string)
}
