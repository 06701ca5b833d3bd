//! The catalog's indexes, and the writers that keep them with their records: a record that
//! has an index is written only through [`put_job`], [`put_backup`] or [`put_host`] (and
//! removed through their `remove_*`), which write its index entries in the same batch.
//!
//! An index entry is a key with an empty value: `<table>/<by>\0<id>` (names never hold a
//! NUL). The tables:
//! - `jobs-open-service/<service>`, `jobs-open-host/<host>`: unfinished jobs;
//! - `jobs-waiting/<after_job>`: jobs waiting for another to end;
//! - `jobs-finished/<finished ms, 20 digits>`: finished jobs, oldest first (pruning by age);
//! - `jobs-finished-service/<service>`: a service's finished jobs, oldest first (by count);
//! - `jobs-created/<kind>`, `jobs-created/<kind>/<service>`: every job by creation time,
//!   oldest first (paged lists, newest first), written once when the job is created
//!   ([`create_job`]);
//! - `backups-service/<service>`: every backup of a service by creation time (retention,
//!   holds, paged lists);
//! - `backups-time/`: every backup by creation time (paged lists);
//! - `hosts-service/<service>`: hosts that claim a member of a service, bound or pending
//!   (primaries, a backup's host);
//! - `hosts-spare/`: hosts that are spares (a restore's host);
//! - `hosts-session-node/<node id>`: hosts whose open session that node serves (the
//!   sessions a restarted node ends).
//!
//! Invariants: an index lists at least every record it should (written in the record's
//! batch); readers check each record they get through an index against what they need (an
//! entry left by two writes of one record in one batch is harmless), so a read through an
//! index costs the records it names, never a whole kind.

use super::batch::Batch;
use prost::Message;
use strongbox_proto::catalog::{BackupRecord, HostRecord, JobRecord};
use strongbox_proto::v1::{JobKind, JobState};

use super::{backup_key, host_key, job_key, manifest_key};

pub const OPEN_BY_SERVICE: &str = "jobs-open-service";
pub const OPEN_BY_HOST: &str = "jobs-open-host";
pub const WAITING_ON: &str = "jobs-waiting";
pub const FINISHED: &str = "jobs-finished";
pub const FINISHED_BY_SERVICE: &str = "jobs-finished-service";
pub const BACKUPS_BY_SERVICE: &str = "backups-service";
pub const BACKUPS_BY_TIME: &str = "backups-time";
pub const JOBS_BY_CREATED: &str = "jobs-created";
pub const HOSTS_BY_SERVICE: &str = "hosts-service";
pub const SPARES: &str = "hosts-spare";
pub const BY_SESSION_NODE: &str = "hosts-session-node";

/// The key of `id` in index `table` under `by`.
pub fn key(table: &str, by: &str, id: &str) -> Vec<u8> {
    [table.as_bytes(), b"/", by.as_bytes(), b"\0", id.as_bytes()].concat()
}

/// The prefix of every key of index `table` under `by`.
pub fn prefix(table: &str, by: &str) -> Vec<u8> {
    [table.as_bytes(), b"/", by.as_bytes(), b"\0"].concat()
}

/// The id an index key ends with: after its last NUL (`<table>/<by>\0<id>`, or
/// `…\0<time>\0<id>` in the entries that sort by time; names never hold a NUL).
pub fn id_of(key: &[u8]) -> String {
    let id = key.rsplit(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(id).into_owned()
}

/// A time as an index's `by`: 20 digits, so that keys sort by time.
pub fn time_key(unix_ms: u64) -> String {
    format!("{unix_ms:020}")
}

fn set(batch: &mut Batch, key: Vec<u8>, keep: bool) {
    if keep {
        batch.insert(key, &[] as &[u8]);
    } else {
        batch.remove(key);
    }
}

thread_local! {
    /// Hosts whose jobs the command being applied on this thread wrote (apply is synchronous
    /// and one command at a time): drained by `Catalog::apply` to wake their sessions.
    static TOUCHED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Services with a job that this command finished: `Catalog::apply` keeps each to its
    /// newest finished jobs ([`super::history::JOBS_KEPT_PER_SERVICE`]).
    static FINISHED_NOW: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Services whose jobs or backups the command being applied wrote.
    static CHANGED_SERVICES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The services whose jobs this command finished, with a repeat per job.
pub fn take_finished_now() -> Vec<String> {
    FINISHED_NOW.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

/// The key of a finished job in its service's `jobs-finished-service/` entries.
pub fn finished_by_service_key(j: &JobRecord) -> Vec<u8> {
    key(
        FINISHED_BY_SERVICE,
        &j.service,
        &format!("{}\0{}", time_key(j.finished_unix_ms), j.id),
    )
}

/// Notes that a job or backup of `service` was written or removed by the command being
/// applied (the scheduler's read re-reads only such services, `passes.rs`).
fn service_changed(service: &str) {
    CHANGED_SERVICES.with(|t| t.borrow_mut().push(service.to_string()));
}

/// The services whose jobs or backups were written since the last call (repeats possible).
pub fn take_changed_services() -> Vec<String> {
    CHANGED_SERVICES.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

fn touched(host: &str) {
    TOUCHED.with(|t| t.borrow_mut().push(host.to_string()));
}

/// The hosts whose jobs were written since the last call, each once.
pub fn take_touched() -> Vec<String> {
    let mut hosts = TOUCHED.with(|t| std::mem::take(&mut *t.borrow_mut()));
    hosts.sort_unstable();
    hosts.dedup();
    hosts
}

/// Writes a job and its index entries: the ones its state calls for, the others removed. A
/// job that just ended gets its `finished_unix_ms` (its `updated_unix_ms`), once.
pub fn put_job(batch: &mut Batch, j: &JobRecord) {
    let finished;
    let j = if j.state().is_final() && j.finished_unix_ms == 0 {
        let mut done = j.clone();
        done.finished_unix_ms = j.updated_unix_ms.max(1);
        finished = done;
        FINISHED_NOW.with(|t| t.borrow_mut().push(j.service.clone()));
        &finished
    } else {
        j
    };
    let open = !j.state().is_final();
    for (table, by, keep) in [
        (OPEN_BY_SERVICE, j.service.as_str(), open),
        (OPEN_BY_HOST, j.host.as_str(), open),
        (
            WAITING_ON,
            j.after_job.as_str(),
            j.state() == JobState::Waiting,
        ),
    ] {
        set(batch, key(table, by, &j.id), keep);
    }
    if j.finished_unix_ms != 0 {
        set(
            batch,
            key(FINISHED, &time_key(j.finished_unix_ms), &j.id),
            true,
        );
        set(batch, finished_by_service_key(j), true);
    }
    batch.insert(job_key(&j.id), j.encode_to_vec());
    touched(&j.host);
    service_changed(&j.service);
}

/// The `by`s of a job in `jobs-created/`: of its kind (`backup`), of its kind and service
/// (`backup/<service>`). Kind words hold no `/`, so the two never overlap. (Two keys a job:
/// at 10,000 hourly services, every key a job carries is 720,000 keys in three days.)
pub fn jobs_created_by(kind: JobKind, service: &str) -> String {
    if service.is_empty() {
        kind.word().to_string()
    } else {
        format!("{}/{service}", kind.word())
    }
}

fn created_keys(j: &JobRecord) -> [Vec<u8>; 2] {
    let id = format!("{}\0{}", time_key(j.created_unix_ms), j.id);
    [
        key(JOBS_BY_CREATED, &jobs_created_by(j.kind(), ""), &id),
        key(JOBS_BY_CREATED, &jobs_created_by(j.kind(), &j.service), &id),
    ]
}

/// Writes a new job: its `jobs-created/` entries (a job's kind, service and creation time
/// never change), then as [`put_job`].
pub fn create_job(batch: &mut Batch, j: &JobRecord) {
    for k in created_keys(j) {
        set(batch, k, true);
    }
    put_job(batch, j);
}

/// Removes a job and its index entries.
pub fn remove_job(batch: &mut Batch, j: &JobRecord) {
    for k in created_keys(j) {
        batch.remove(k);
    }
    for (table, by) in [
        (OPEN_BY_SERVICE, j.service.as_str()),
        (OPEN_BY_HOST, j.host.as_str()),
        (WAITING_ON, j.after_job.as_str()),
    ] {
        batch.remove(key(table, by, &j.id));
    }
    if j.finished_unix_ms != 0 {
        batch.remove(key(FINISHED, &time_key(j.finished_unix_ms), &j.id));
        batch.remove(finished_by_service_key(j));
    }
    batch.remove(job_key(&j.id));
    service_changed(&j.service);
}

/// A backup's entries in `backups-service/` and `backups-time/`.
fn backup_keys(b: &BackupRecord) -> [Vec<u8>; 2] {
    let id = format!("{}\0{}", time_key(b.created_unix_ms), b.id);
    [
        key(BACKUPS_BY_SERVICE, &b.service, &id),
        key(BACKUPS_BY_TIME, "", &id),
    ]
}

/// Writes a backup and its entries in `backups-service/` and `backups-time/`. A backup's
/// service never changes; its creation time changes only when its commit names another
/// (`previous`: the record it replaces, when one was read).
pub fn put_backup(batch: &mut Batch, previous: Option<&BackupRecord>, b: &BackupRecord) {
    if let Some(p) = previous.filter(|p| p.created_unix_ms != b.created_unix_ms) {
        for k in backup_keys(p) {
            batch.remove(k);
        }
    }
    for k in backup_keys(b) {
        set(batch, k, true);
    }
    batch.insert(backup_key(&b.id), b.encode_to_vec());
    service_changed(&b.service);
}

/// Removes a backup, its manifest's index entry and its entries in `backups-service/` and
/// `backups-time/`.
pub fn remove_backup(batch: &mut Batch, b: &BackupRecord) {
    for k in backup_keys(b) {
        batch.remove(k);
    }
    batch.remove(backup_key(&b.id));
    if !b.manifest_id.is_empty() {
        batch.remove(manifest_key(&b.manifest_id));
    }
    service_changed(&b.service);
}

/// The services a host claims (bound or pending), for `hosts-service/`.
fn claimed(h: &HostRecord) -> impl Iterator<Item = &str> {
    h.members
        .iter()
        .chain(&h.pending_members)
        .map(|m| m.service.as_str())
}

/// Writes a host and its index entries. `previous` is the record it replaces, read before
/// this batch (`None` when it is new, or when no indexed field changed: then nothing is
/// removed).
pub fn put_host(batch: &mut Batch, previous: Option<&HostRecord>, h: &HostRecord) {
    if let Some(p) = previous {
        for service in claimed(p) {
            batch.remove(key(HOSTS_BY_SERVICE, service, &p.name));
        }
        batch.remove(key(SPARES, "", &p.name));
        if p.session_node != 0 {
            batch.remove(key(BY_SESSION_NODE, &p.session_node.to_string(), &p.name));
        }
    }
    for service in claimed(h) {
        set(batch, key(HOSTS_BY_SERVICE, service, &h.name), true);
    }
    if h.spare {
        set(batch, key(SPARES, "", &h.name), true);
    }
    if h.session_node != 0 {
        set(
            batch,
            key(BY_SESSION_NODE, &h.session_node.to_string(), &h.name),
            true,
        );
    }
    batch.insert(host_key(&h.name), h.encode_to_vec());
}

/// Removes a host and its index entries.
pub fn remove_host(batch: &mut Batch, h: &HostRecord) {
    for service in claimed(h) {
        batch.remove(key(HOSTS_BY_SERVICE, service, &h.name));
    }
    batch.remove(key(SPARES, "", &h.name));
    if h.session_node != 0 {
        batch.remove(key(BY_SESSION_NODE, &h.session_node.to_string(), &h.name));
    }
    batch.remove(host_key(&h.name));
}
