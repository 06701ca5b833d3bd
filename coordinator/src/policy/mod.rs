//! Fleet policy, as pure functions of catalog records and a clock: the effective policy of a
//! service (`effective.rs`), when its next scheduled backup is due (`schedule.rs`), and which
//! backups retention keeps and why (`retention.rs`), whether a host's agent is there
//! (`presence.rs`). The controllers, the catalog's apply and the
//! API all call these, so what `backup show` explains is what the retention pass does.
//!
//! Invariant: nothing here reads the system clock, the disk or the network; the same records and
//! time give the same answer on every node.

pub mod effective;
pub mod plan;
pub mod presence;
pub mod retention;
pub mod schedule;
pub mod time;
