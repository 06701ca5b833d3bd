//! What the agent, the coordinator and the CLI share: the formats every other part relies on.
//!
//! Each module does one thing; see `docs/ARCHITECTURE.md` for the map and the invariants.

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
