//! What `strongbox dev` did, as scripts see it (`dev --output json --exit-when-done`): the
//! local region, the demo backup and the verified restore, and how long each step took.

use serde::Serialize;

use super::backup::BackupView;
use super::job::JobView;

#[derive(Serialize)]
pub struct DevSummaryView<'a> {
    /// The backup completed and the restore verified.
    pub ok: bool,
    /// The folder holding the demo region (certificates, data, logs).
    pub dir: String,
    /// The coordinators' addresses, HOST:PORT.
    pub coordinators: &'a [String],
    pub backup_job: JobView<'a>,
    pub backup: Option<BackupView<'a>>,
    pub restore_job: JobView<'a>,
    pub verified: bool,
    pub timings_ms: DevTimingsView,
}

/// Milliseconds each step of `dev` took.
#[derive(Serialize)]
pub struct DevTimingsView {
    pub setup: u64,
    pub cluster: u64,
    pub database: u64,
    pub agents: u64,
    pub backup: u64,
    pub restore: u64,
    pub total: u64,
}
