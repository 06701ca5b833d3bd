//! Conversions between the catalog's records (`strongbox.catalog.v1`) and the messages of the
//! public API (`strongbox.v1`), in one place so every RPC shows a record the same way.

use strongbox_proto::catalog::{BackupRecord, JobRecord, MemberRecord, Policy, RoleChange};
use strongbox_proto::v1::{BackupInfo, JobInfo, Member, PolicyInfo, RoleChangeInfo};

use crate::policy::retention::Verdict;

pub use crate::catalog::{actor, caller_role};

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
        table_count: b.table_count,
        manifest_id: b.manifest_id,
        held: b.held,
        hold_reason: b.hold_reason,
        failure: b.failure,
        ..Default::default()
    }
}

/// A backup with retention's verdict on it (why it is kept, when it expires, the lock).
pub fn backup_info_with(b: BackupRecord, verdict: Option<&Verdict>) -> BackupInfo {
    let mut info = backup_info(b);
    if let Some(v) = verdict {
        info.kept_because = v.explain();
        info.expires_unix_ms = v.expires_ms;
        info.locked_until_unix_ms = v.locked_until_ms;
    }
    info
}

pub fn role_change(c: RoleChange) -> RoleChangeInfo {
    RoleChangeInfo {
        host: c.host,
        from: c.from,
        to: c.to,
        unix_ms: c.unix_ms,
        from_down: c.from_down,
        to_down: c.to_down,
    }
}

pub fn policy_info(p: Policy) -> PolicyInfo {
    PolicyInfo {
        schedule: p.schedule,
        daily: p.daily,
        monthly: p.monthly,
        yearly: p.yearly,
        max_age_ms: p.max_age_ms,
        lock_days: p.lock_days,
        keep_final: p.keep_final,
        jitter_ms: p.jitter_ms,
        max_concurrent: p.max_concurrent,
        hourly: p.hourly,
        min_keep: p.min_keep,
    }
}

pub fn policy(p: PolicyInfo) -> Policy {
    Policy {
        schedule: p.schedule,
        daily: p.daily,
        monthly: p.monthly,
        yearly: p.yearly,
        max_age_ms: p.max_age_ms,
        lock_days: p.lock_days,
        keep_final: p.keep_final,
        jitter_ms: p.jitter_ms,
        max_concurrent: p.max_concurrent,
        hourly: p.hourly,
        min_keep: p.min_keep,
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
            .map(|a| format!("{}:{}", a.role(), a.name))
            .unwrap_or_default(),
        restore: j.restore,
        stop: j.stop,
        failure: j.failure,
        engine: j.engine,
        backup_kind: j.backup_kind,
        slot_unix_ms: j.slot_unix_ms,
        attempt: j.attempt,
        in_place: j.in_place,
        after_job: j.after_job,
        target_job: j.target_job,
        server_stopped_unix_ms: j.server_stopped_unix_ms,
        phase: j.phase,
    }
}

pub fn worker_status(s: crate::worker::Status) -> strongbox_proto::v1::WorkerStatus {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    strongbox_proto::v1::WorkerStatus {
        name: s.name.to_string(),
        leader_only: s.leader_only,
        interval_ms: ms(s.interval),
        passes: s.passes,
        items: s.items,
        last_pass_unix_ms: s.last_pass_unix_ms,
        last_pass_took_ms: ms(s.last_pass_took),
        last_error: s.last_error.unwrap_or_default(),
        waiting: s.waiting.unwrap_or_default(),
    }
}
