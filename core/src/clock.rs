//! The wall clock, read in one place: milliseconds since the Unix epoch, the unit of every
//! time strongbox records (catalog records, job reports, manifests).
//!
//! Invariant: nothing else in strongbox reads `SystemTime::now()` for a recorded time; code
//! that decides by time takes the time as an argument (the policy functions, the catalog's
//! commands), so tests give it theirs.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 on a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
