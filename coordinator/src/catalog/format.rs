//! The version of the catalog's record format: what the values under each key are
//! (`strongbox.catalog.v1` messages, with `types.proto`'s enums), so a node never reads records
//! written by a format it does not know as if they were its own.
//!
//! Invariants: a catalog records its format under the key `format` when it is first opened; a
//! node opens only a catalog of its own format, and installs only a snapshot of it, and says
//! what to do otherwise. Raise [`FORMAT`] whenever a record's fields change meaning or type.

use crate::error::{Error, Result};

/// The record format this build reads and writes. 1: states, kinds and roles as strings
/// (before issue 16); 2: as enums, restore results as messages, refusals typed; 3: the
/// indexes of issue 17 (jobs by host, service, state and time; backups by service and time;
/// hosts by service, spare role and session node), bounded history, hosts' sessions with the
/// node serving them and the nodes seen.
pub const FORMAT: u32 = 3;

/// The key of the format in the catalog's tree (4 bytes, big-endian).
pub(super) const KEY_FORMAT: &[u8] = b"format";

/// Records the format in a new catalog; checks it in an existing one.
pub(super) fn open(tree: &crate::store::Tree) -> Result<()> {
    match tree.get(KEY_FORMAT)? {
        Some(v) => check(decode(&v)?, "this node's catalog"),
        None if tree.is_empty()? => {
            tree.insert(KEY_FORMAT, FORMAT.to_be_bytes())?;
            Ok(())
        }
        // Records, but no format: written before formats were recorded.
        None => check(1, "this node's catalog"),
    }
}

/// Whether `found`, the format of `what`, is the one this build reads.
pub(super) fn check(found: u32, what: &str) -> Result<()> {
    if found == FORMAT {
        return Ok(());
    }
    Err(Error::Corrupt {
        what: "catalog format",
        detail: format!(
            "{what} holds records of format {found}, and this build of strongbox reads format \
             {FORMAT}; run the build that wrote it, or start this node with an empty data folder \
             so it copies the catalog from the region"
        ),
    })
}

fn decode(v: &[u8]) -> Result<u32> {
    let bytes: [u8; 4] = v
        .try_into()
        .map_err(|_| Error::corrupt("catalog format", "not 4 bytes"))?;
    Ok(u32::from_be_bytes(bytes))
}
