//! The options of strongbox's programs, declared once. Each binary has one struct
//! ([`CoordinatorOptions`], [`AgentOptions`]) whose every field is at once a flag (clap, with its
//! `STRONGBOX_COORDINATOR_*` / `STRONGBOX_AGENT_*` environment variable) and a key of the TOML
//! config file (serde). [`load`] merges flags over environment over file; each program then
//! validates the merged options into the config it uses (`coordinator/src/config.rs`,
//! `agent/src/config.rs`), where the defaults live. `strongbox dev`, the test harness and the
//! benches write config files from these same types ([`to_toml`]), so a file they write is one
//! the programs read.
//!
//! Invariants: every option is optional here (a missing one is the validation's to refuse,
//! naming its flag and key); unknown keys in a file are refused; an option set as a flag or in
//! the environment replaces the file's, lists included (never appended).

// No unwrap or expect on what comes from the network, a file or a user: an error with a
// message instead (clippy.toml allows them in unit tests).
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod coordinator;
mod merge;

pub use agent::AgentOptions;
pub use coordinator::CoordinatorOptions;
pub use merge::{load, to_toml, Error};
