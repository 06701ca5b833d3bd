//! A backup as scripts see it (`backup list`, `backup show`, the backups a policy change
//! would expire).

use serde::Serialize;
use strongbox_proto::v1::{BackupInfo, BackupKind, BackupState, FailureClass};

use super::rfc3339;

#[derive(Serialize)]
pub struct BackupView<'a> {
    pub id: &'a str,
    pub service: &'a str,
    pub host: &'a str,
    pub kind: BackupKind,
    pub state: BackupState,
    pub reason: &'a str,
    pub failure: FailureClass,
    pub created_unix_ms: u64,
    pub created: Option<String>,
    pub completed_unix_ms: u64,
    pub completed: Option<String>,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
    pub chunk_count: u64,
    pub table_count: u64,
    /// The sealed manifest's name in the chunk store, 64 hex digits.
    pub manifest_id: String,
    pub held: bool,
    pub hold_reason: &'a str,
    /// Why retention keeps it now (`daily 2026-11-20`, `manual`, `hold`); empty: expiring.
    pub kept_because: &'a str,
    pub expires_unix_ms: u64,
    pub expires: Option<String>,
    pub locked_until_unix_ms: u64,
    pub locked_until: Option<String>,
}

impl<'a> From<&'a BackupInfo> for BackupView<'a> {
    fn from(b: &'a BackupInfo) -> Self {
        BackupView {
            id: &b.id,
            service: &b.service,
            host: &b.host,
            kind: b.kind(),
            state: b.state(),
            reason: &b.reason,
            failure: b.failure(),
            created_unix_ms: b.created_unix_ms,
            created: rfc3339(b.created_unix_ms),
            completed_unix_ms: b.completed_unix_ms,
            completed: rfc3339(b.completed_unix_ms),
            plain_bytes: b.plain_bytes,
            stored_bytes: b.stored_bytes,
            chunk_count: b.chunk_count,
            table_count: b.table_count,
            manifest_id: hex::encode(&b.manifest_id),
            held: b.held,
            hold_reason: &b.hold_reason,
            kept_because: &b.kept_because,
            expires_unix_ms: b.expires_unix_ms,
            expires: rfc3339(b.expires_unix_ms),
            locked_until_unix_ms: b.locked_until_unix_ms,
            locked_until: rfc3339(b.locked_until_unix_ms),
        }
    }
}
