//! What the agent, the coordinator and the CLI share: the formats every other part relies on.
//!
//! Each module does one thing; see `docs/ARCHITECTURE.md` for the map and the invariants.

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod chunk;
pub mod chunking;
pub mod clock;
pub mod connect;
pub mod durations;
pub mod error;
pub mod files;
pub mod ids;
pub mod keys;
pub mod manifest;
pub mod pki;
pub mod private;
pub mod process;
pub mod read;
pub mod tls;

pub use error::{Error, Result};
