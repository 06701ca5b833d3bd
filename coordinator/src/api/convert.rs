//! Conversions between the catalog's records (`strongbox.catalog.v1`) and the messages of the
//! public API (`strongbox.v1`), in one place so every RPC shows a record the same way.

use strongbox_proto::catalog::{BackupRecord, JobRecord, MemberRecord};
use strongbox_proto::v1::{BackupInfo, JobInfo, Member};

pub fn member_record(m: Member) -> MemberRecord {
    MemberRecord {
        service: m.service,
        engine: m.engine,
        role: m.role,
        healthy: m.healthy,
        engine_version: m.engine_version,
    }
}

pub fn member(m: MemberRecord) -> Member {
    Member {
        service: m.service,
        engine: m.engine,
        role: m.role,
        healthy: m.healthy,
        engine_version: m.engine_version,
    }
}

pub fn backup_info(b: BackupRecord) -> BackupInfo {
    BackupInfo {
        id: b.id,
        service: b.service,
        host: b.host,
        kind: b.kind,
        state: b.state,
        reason: b.reason,
        created_unix_ms: b.created_unix_ms,
        completed_unix_ms: b.completed_unix_ms,
        plain_bytes: b.plain_bytes,
        stored_bytes: b.stored_bytes,
        chunk_count: b.chunk_count,
        manifest_id: b.manifest_id,
    }
}

pub fn job_info(j: JobRecord) -> JobInfo {
    JobInfo {
        id: j.id,
        kind: j.kind,
        service: j.service,
        host: j.host,
        backup_id: j.backup_id,
        state: j.state,
        reason: j.reason,
        created_unix_ms: j.created_unix_ms,
        updated_unix_ms: j.updated_unix_ms,
        bytes_done: j.bytes_done,
        bytes_total: j.bytes_total,
        requested_by: j
            .requested_by
            .map(|a| format!("{}:{}", a.role, a.name))
            .unwrap_or_default(),
        result: j.result,
    }
}
