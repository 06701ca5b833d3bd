//! A job as scripts see it (`restore show`, `restore list`, `backup create --wait`, the jobs
//! `dev` ran): its state and, for a restore, what it delivered.

use serde::Serialize;
use strongbox_proto::v1::{
    BackupKind, FailureClass, JobInfo, JobKind, JobState, RestoreOutcome, RestoreResult, StopResult,
};

use super::rfc3339;

#[derive(Serialize)]
pub struct JobView<'a> {
    pub id: &'a str,
    pub kind: JobKind,
    pub service: &'a str,
    pub host: &'a str,
    pub backup_id: &'a str,
    pub state: JobState,
    pub failure: FailureClass,
    pub reason: &'a str,
    pub created_unix_ms: u64,
    pub created: Option<String>,
    pub updated_unix_ms: u64,
    pub updated: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// `role:name` of who asked.
    pub requested_by: &'a str,
    /// A restore's result (connection, verification, phase times) or a stop's; `null` while
    /// there is none.
    pub result: Option<JobResult<'a>>,
    pub backup_kind: BackupKind,
    pub slot_unix_ms: u64,
    pub slot: Option<String>,
    pub attempt: u32,
    pub in_place: bool,
    pub after_job: &'a str,
    /// What it is doing, as its agent last said (`loading shop`); empty once it ended.
    pub phase: &'a str,
    /// A restore: verified, restored_with_errors or failed once it ended; `null` otherwise.
    pub outcome: Option<RestoreOutcome>,
    /// A restore: where its server runs, for people (`running on spare-1 127.0.0.1:5433`).
    pub server: Option<String>,
    pub server_stopped_unix_ms: u64,
    pub target_job: &'a str,
}

/// What a finished job delivered.
#[derive(Serialize)]
#[serde(untagged)]
pub enum JobResult<'a> {
    Restore(&'a RestoreResult),
    Stop(&'a StopResult),
}

impl<'a> From<&'a JobInfo> for JobView<'a> {
    fn from(j: &'a JobInfo) -> Self {
        let restore = j.kind() == JobKind::Restore;
        JobView {
            id: &j.id,
            kind: j.kind(),
            service: &j.service,
            host: &j.host,
            backup_id: &j.backup_id,
            state: j.state(),
            failure: j.failure(),
            reason: &j.reason,
            created_unix_ms: j.created_unix_ms,
            created: rfc3339(j.created_unix_ms),
            updated_unix_ms: j.updated_unix_ms,
            updated: rfc3339(j.updated_unix_ms),
            bytes_done: j.bytes_done,
            bytes_total: j.bytes_total,
            requested_by: &j.requested_by,
            result: match (&j.restore, &j.stop) {
                (Some(r), _) => Some(JobResult::Restore(r)),
                (None, Some(s)) => Some(JobResult::Stop(s)),
                (None, None) => None,
            },
            backup_kind: j.backup_kind(),
            slot_unix_ms: j.slot_unix_ms,
            slot: rfc3339(j.slot_unix_ms),
            attempt: j.attempt,
            in_place: j.in_place,
            after_job: &j.after_job,
            phase: &j.phase,
            outcome: RestoreOutcome::of_job(j.state(), j.restore.as_ref()).filter(|_| restore),
            server: restore.then(|| crate::restore::server_label(j)),
            server_stopped_unix_ms: j.server_stopped_unix_ms,
            target_job: &j.target_job,
        }
    }
}
