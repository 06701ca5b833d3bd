//! The catalog: the replicated state machine of a region. Every committed Raft entry is applied
//! here, in log order, on every node.
//!
//! One tree of the node's [`crate::store`] (`catalog`, or `catalog-<index>-<ns>` after a
//! snapshot install, [`snapshot`]), keys by table: `applied` (the last applied log index), `format`
//! (the record format, [`format`]), `clock` (the agreed time), `region/<name>`,
//! `host/<name>`, `node/<id>`, `backup/<id>`, `manifest/<id>` (committed manifests → their
//! backup), `job/<id>`, `service/<name>`, `policy/<service>` (`policy/` alone: the region
//! default), `req/<request id>` (the outcome of each command, for idempotency),
//! `audit/<index>`; and the indexes of jobs, backups and hosts ([`index`]: open jobs by
//! service and host, waiting jobs, finished jobs by time, backups by service, hosts by
//! service, spares), written with their records. Values are protobuf records
//! (`strongbox.catalog.v1`, with the vocabulary's enums); a refused command is a
//! [`refusal::Refusal`].
//!
//! Invariants: applying is deterministic (all it reads is the command and the catalog); the
//! changes of an entry and the new applied index are written in one atomic batch, so after a
//! crash the catalog is exactly the state at its applied index; a request id applied twice has
//! the effect of once and answers the first outcome; a malformed command is recorded as refused,
//! never a crash; a job's state only moves forward (waiting → pending → running → completed |
//! failed; a job waits for the job named in `after_job`, and fails if that one fails) and
//! only its own host reports on it; a backup is `completed` only by a `CommitBackup`, and a
//! committed backup never changes again but by purge. No apply step reads a whole record
//! kind: it reads the records its command names and what the indexes list for them
//! (`tests/reads.rs` counts the records each command reads on a large catalog).

use prost::Message;
use strongbox_proto::catalog::{
    command::Op, AuditRecord, BackupRecord, Command, HostRecord, JobRecord, NodeRecord, Outcome,
};
use strongbox_proto::v1::{
    BackupKind, BackupState, CallerRole, FailureClass, JobKind, JobState, RefusalCode,
};

use crate::error::{Error, Result};
use crate::store::{self, Store};

mod batch;
mod fleet;
pub mod format;
mod history;
mod hosts;
mod index;
mod pages;
mod passes;
pub mod snapshot;
pub use history::{AUDIT_KEEP_MS, JOBS_KEPT_PER_SERVICE, JOB_KEEP_MS, MAX_PRUNED, REQUEST_KEEP_MS};
pub use pages::Page;
pub mod refusal;
use batch::Batch;
pub use fleet::ROLE_HISTORY;
pub use hosts::claimed_members;
use index::{put_backup, put_host, put_job, remove_backup, OPEN_BY_HOST};
use refusal::{Applied, Refusal};

const KEY_APPLIED: &[u8] = b"applied";
/// The catalog's agreed time (ms since the epoch, big-endian): the median of the voters' clocks
/// at the last `Tick`, never moved back.
const KEY_CLOCK: &[u8] = b"clock";
/// How far behind the agreed time a deletion by time may be stamped (skew between nodes, a
/// command proposed just before a tick): beyond it, the proposer's clock is wrong.
pub const MAX_BEHIND_MS: u64 = 60_000;
/// How far ahead of the agreed time a deletion by time may be stamped. The leader ticks every
/// minute ([`TICK_EVERY_MS`]); further ahead, the proposer's clock is wrong (or the region has
/// had no majority to agree on a time since).
pub const MAX_AHEAD_MS: u64 = 15 * 60 * 1000;
/// How often the leader records the voters' clocks, and which nodes answered (a node that
/// stops answering makes its agents' hosts silent within [`crate::policy::presence::NODE_SEEN_MS`]).
pub const TICK_EVERY_MS: u64 = 15_000;

#[derive(Clone)]
pub struct Catalog {
    store: Store,
    /// The active tree (`catalog`, or the tree the last snapshot installed was loaded into,
    /// `snapshot.rs`).
    tree: std::sync::Arc<std::sync::RwLock<store::Tree>>,
    /// The snapshot prepared (its index, and the tree it was loaded into), if one is; held
    /// while one is being loaded.
    prepared: std::sync::Arc<std::sync::Mutex<Option<(u64, store::Tree)>>>,
    /// Records decoded so far (every read of a record, through `get` or a scan): what the
    /// test of "no apply step or handler reads a whole kind" counts.
    reads: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// What the scheduler's read kept of each service since its last pass (`passes.rs`).
    pass_cache: std::sync::Arc<passes::PassCache>,
    /// Called with each host whose jobs an applied command wrote (set once by the node: it
    /// wakes the host's sessions).
    on_jobs_changed: std::sync::Arc<std::sync::OnceLock<JobsChanged>>,
}

/// The hook [`Catalog::on_jobs_changed`] sets.
type JobsChanged = Box<dyn Fn(&str) + Send + Sync>;

fn host_key(name: &str) -> Vec<u8> {
    [b"host/".as_slice(), name.as_bytes()].concat()
}

fn node_key(id: u64) -> Vec<u8> {
    [b"node/".as_slice(), &id.to_be_bytes()].concat()
}

/// When node `id` last answered the leader's clock ask: `node-seen/<id, big-endian>` → ms
/// since the epoch, big-endian (one record a node: [`Catalog::nodes_seen`]).
fn node_seen_key(id: u64) -> Vec<u8> {
    [b"node-seen/".as_slice(), &id.to_be_bytes()].concat()
}

fn req_key(id: &str) -> Vec<u8> {
    [b"req/".as_slice(), id.as_bytes()].concat()
}

fn backup_key(id: &str) -> Vec<u8> {
    [b"backup/".as_slice(), id.as_bytes()].concat()
}

/// The index of committed manifests: `manifest/<32-byte id>` → the backup that committed it.
fn manifest_key(id: &[u8]) -> Vec<u8> {
    [b"manifest/".as_slice(), id].concat()
}

fn job_key(id: &str) -> Vec<u8> {
    [b"job/".as_slice(), id.as_bytes()].concat()
}

pub use crate::policy::plan::ABANDONED_MS;

/// The prefix of every audit entry's key (in log order).
fn audit_key_prefix() -> &'static [u8] {
    b"audit/"
}

fn audit_key(index: u64) -> Vec<u8> {
    [b"audit/".as_slice(), &index.to_be_bytes()].concat()
}

/// The applied index from its value under [`KEY_APPLIED`] (none: 0).
fn applied_value(v: Option<store::Bytes>) -> Result<u64> {
    Ok(match v {
        Some(b) => u64::from_be_bytes(
            b.as_ref()
                .try_into()
                .map_err(|_| Error::corrupt("applied index", "wrong length"))?,
        ),
        None => 0,
    })
}

fn decode<M: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::corrupt(what, e))
}

impl Catalog {
    /// Opens the node's catalog, refusing one of another record format ([`format`]); a spare
    /// tree left by an install that did not finish is emptied.
    pub fn open(store: &Store) -> Result<Self> {
        let tree = snapshot::open_active(store)?;
        format::open(&tree)?;
        Ok(Catalog {
            store: store.clone(),
            tree: std::sync::Arc::new(std::sync::RwLock::new(tree)),
            prepared: Default::default(),
            reads: Default::default(),
            pass_cache: Default::default(),
            on_jobs_changed: Default::default(),
        })
    }

    /// The active tree.
    fn tree(&self) -> store::Tree {
        self.tree.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes one batch to the active tree, atomically.
    fn write(&self, batch: Batch) -> Result<()> {
        batch.into_store(&self.store, &self.tree()).commit()?;
        Ok(())
    }

    pub fn applied_index(&self) -> Result<u64> {
        applied_value(self.tree().get(KEY_APPLIED)?)
    }

    /// Marks an entry that changes nothing in the catalog (empty entries, elections) applied.
    pub fn apply_empty(&self, index: u64) -> Result<()> {
        let mut batch = Batch::default();
        batch.insert(KEY_APPLIED, index.to_be_bytes());
        self.write(batch)
    }

    /// Records a node's address, applied with the conf change that adds it.
    pub fn apply_node_change(
        &self,
        index: u64,
        node: Option<NodeRecord>,
        removed: Option<u64>,
    ) -> Result<()> {
        let mut batch = Batch::default();
        if let Some(n) = node {
            batch.insert(node_key(n.id), n.encode_to_vec());
        }
        if let Some(id) = removed {
            batch.remove(node_key(id));
        }
        batch.insert(KEY_APPLIED, index.to_be_bytes());
        self.write(batch)?;
        Ok(())
    }

    /// Sets what is called, after a command applied, with each host whose jobs it wrote
    /// (once; a second call is ignored).
    pub fn on_jobs_changed(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_jobs_changed.set(Box::new(hook));
    }

    /// Applies one committed command, then tells the hook which hosts' jobs it wrote.
    pub fn apply(&self, index: u64, data: &[u8]) -> Result<Outcome> {
        index::take_touched();
        index::take_changed_services();
        let applied = self.apply_command(index, data);
        // Written (or refused, or failed): either way the scheduler's read looks again.
        self.pass_cache.changed(index::take_changed_services());
        let outcome = applied?;
        let hosts = index::take_touched();
        if outcome.error.is_empty() {
            if let Some(hook) = self.on_jobs_changed.get() {
                for host in &hosts {
                    hook(host);
                }
            }
        }
        Ok(outcome)
    }

    fn apply_command(&self, index: u64, data: &[u8]) -> Result<Outcome> {
        let cmd = match Command::decode(data) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(index, error = %e, "committed entry is not a catalog command; skipped");
                self.apply_empty(index)?;
                return Ok(Outcome {
                    index,
                    error: format!("malformed command: {e}"),
                    refusal: RefusalCode::Invalid.into(),
                });
            }
        };
        if !cmd.request_id.is_empty() {
            if let Some(prev) = self.tree().get(req_key(&cmd.request_id))? {
                self.apply_empty(index)?;
                return decode("outcome", &prev);
            }
        }
        let mut batch = Batch::default();
        let mut outcome = Outcome {
            index,
            ..Default::default()
        };
        index::take_finished_now();
        let executed = self.execute(&cmd, &mut batch).and_then(|what| {
            self.trim_finished(index::take_finished_now(), &mut batch)?;
            Ok(what)
        });
        let what = match executed {
            Ok(what) => what,
            Err(refusal) => {
                batch = Batch::default();
                outcome.error = refusal.to_string();
                outcome.set_refusal(refusal.code());
                format!("refused: {refusal}")
            }
        };
        if is_audited(&cmd) {
            let audit = AuditRecord {
                index,
                unix_ms: cmd.unix_ms,
                actor: cmd.actor.clone(),
                request_id: cmd.request_id.clone(),
                what,
            };
            batch.insert(audit_key(index), audit.encode_to_vec());
        }
        if !cmd.request_id.is_empty() {
            batch.insert(req_key(&cmd.request_id), outcome.encode_to_vec());
            batch.insert(
                history::request_time_key(cmd.unix_ms, &cmd.request_id),
                &[] as &[u8],
            );
        }
        batch.insert(KEY_APPLIED, index.to_be_bytes());
        self.write(batch)?;
        Ok(outcome)
    }

    /// The catalog's agreed time: the voters' median clock at the last tick (0 before any).
    pub fn clock_ms(&self) -> Result<u64> {
        Ok(match self.tree().get(KEY_CLOCK)? {
            Some(v) if v.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                u64::from_be_bytes(b)
            }
            _ => 0,
        })
    }

    /// Why a decision that deletes by time must not run at `unix_ms`: no agreed time yet, or a
    /// time further behind it than [`MAX_BEHIND_MS`] or further ahead than [`MAX_AHEAD_MS`] (a
    /// stepped clock, or a new leader's wrong one). `None`: the time is plausible.
    pub fn implausible_time(&self, unix_ms: u64) -> Result<Option<String>> {
        let clock = self.clock_ms()?;
        if clock == 0 {
            return Ok(Some(
                "the region has no agreed time yet (the leader records a majority of the \
                 nodes' clocks every minute)"
                    .into(),
            ));
        }
        let secs = |ms: u64| crate::policy::time::rfc3339(ms);
        Ok(if unix_ms.saturating_add(MAX_BEHIND_MS) < clock {
            Some(format!(
                "this clock ({}) is {} s behind the newest time the catalog applied ({}); \
                 nothing is deleted by time until the clocks agree (check NTP on the leader)",
                secs(unix_ms),
                (clock - unix_ms) / 1000,
                secs(clock)
            ))
        } else if unix_ms > clock.saturating_add(MAX_AHEAD_MS) {
            Some(format!(
                "this clock ({}) is {} h ahead of the newest time the catalog applied ({}); \
                 nothing is deleted by time until the clocks agree (check NTP on the leader)",
                secs(unix_ms),
                (unix_ms - clock) / 3_600_000,
                secs(clock)
            ))
        } else {
            None
        })
    }

    /// Runs a command into `batch`; `Err` is a refusal (nothing is written but the outcome).
    fn execute(&self, cmd: &Command, batch: &mut Batch) -> Applied {
        match &cmd.op {
            Some(Op::RegisterHost(r)) => self.register_host(r, cmd.unix_ms, batch),
            Some(Op::BindHost(b)) => self.bind_host(b, cmd.unix_ms, batch),
            Some(Op::HostSession(h)) => self.host_session(h, cmd.unix_ms, batch),
            Some(Op::Tick(t)) => self.tick(t, batch),
            Some(Op::SetNode(n)) => {
                batch.insert(
                    node_key(n.id),
                    NodeRecord {
                        id: n.id,
                        address: n.address.clone(),
                        name: n.name.clone(),
                    }
                    .encode_to_vec(),
                );
                Ok(format!("set node {} at {}", n.id, n.address))
            }
            Some(Op::RemoveNode(n)) => {
                batch.remove(node_key(n.id));
                batch.remove(node_seen_key(n.id));
                Ok(format!("remove node {}", n.id))
            }
            Some(Op::CommitBackup(c)) => {
                let b = c
                    .backup
                    .as_ref()
                    .ok_or_else(|| Refusal::invalid("a commit needs its backup"))?;
                if b.id.is_empty() || b.service.is_empty() {
                    return Err(Refusal::invalid("a backup needs an id and a service"));
                }
                let job = if c.job_id.is_empty() {
                    None
                } else {
                    let job = self
                        .get::<JobRecord>(&job_key(&c.job_id), "job record")?
                        .ok_or_else(|| not_found("job", &c.job_id))?;
                    if job.kind() != JobKind::Backup
                        || job.backup_id != b.id
                        || job.service != b.service
                    {
                        return Err(Refusal::Invalid(format!(
                            "job {} is not the backup job of {} for {}",
                            c.job_id, b.id, b.service
                        )));
                    }
                    Some(job)
                };
                let existing = self.get::<BackupRecord>(&backup_key(&b.id), "backup record")?;
                match existing {
                    Some(e) if e.state() == BackupState::Completed => {
                        if e.manifest_id == b.manifest_id {
                            // A retried commit: the first one won.
                            return Ok(format!("commit backup {} (again)", b.id));
                        }
                        return Err(Refusal::Exists {
                            what: "committed backup",
                            id: b.id.clone(),
                        });
                    }
                    Some(e) if e.state() == BackupState::Failed => {
                        return Err(Refusal::Conflict(format!(
                            "backup {} has failed: {}",
                            b.id, e.reason
                        )));
                    }
                    Some(_) if job.is_none() => {
                        return Err(Refusal::Conflict(format!(
                            "backup {} belongs to a job",
                            b.id
                        )));
                    }
                    None if job.is_some() => {
                        return Err(Refusal::Conflict(format!(
                            "backup {} was never started",
                            b.id
                        )));
                    }
                    _ => {}
                }
                // A manifest commits once: an old one cannot pass for a new backup.
                if let Some(other) = self.tree().get(manifest_key(&b.manifest_id))? {
                    return Err(Refusal::Conflict(format!(
                        "manifest of {} was committed already by backup {}; a backup needs a manifest made for it",
                        b.id,
                        String::from_utf8_lossy(&other)
                    )));
                }
                batch.insert(manifest_key(&b.manifest_id), b.id.as_bytes());
                let mut rec = b.clone();
                rec.set_state(BackupState::Completed);
                rec.reason.clear();
                rec.completed_unix_ms = cmd.unix_ms;
                rec.held = false;
                rec.hold_reason.clear();
                if let Some(e) = &existing {
                    rec.held = e.held;
                    rec.hold_reason = e.hold_reason.clone();
                }
                if let Some(mut job) = job {
                    rec.kind = job.backup_kind;
                    rec.created_unix_ms = job.created_unix_ms;
                    rec.slot_unix_ms = job.slot_unix_ms;
                    rec.attempt = job.attempt;
                    job.set_state(JobState::Completed);
                    job.updated_unix_ms = cmd.unix_ms;
                    self.release_waiters(&job.id, Ok(()), cmd.unix_ms, batch)?;
                    put_job(batch, &job);
                }
                put_backup(batch, existing.as_ref(), &rec);
                Ok(format!("commit backup {} of {}", b.id, b.service))
            }
            Some(Op::CreateJob(c)) => {
                let j = c
                    .job
                    .as_ref()
                    .ok_or_else(|| Refusal::invalid("a job record is needed"))?;
                if j.id.is_empty() || j.host.is_empty() || j.service.is_empty() {
                    return Err(Refusal::invalid("a job needs an id, a host and a service"));
                }
                if self.tree().contains_key(job_key(&j.id))? {
                    return Err(Refusal::Exists {
                        what: "job",
                        id: j.id.clone(),
                    });
                }
                let mut rec = j.clone();
                rec.set_state(JobState::Pending);
                rec.reason.clear();
                rec.set_failure(FailureClass::Unspecified);
                rec.created_unix_ms = cmd.unix_ms;
                rec.updated_unix_ms = cmd.unix_ms;
                if !j.after_job.is_empty() {
                    let first = self
                        .get::<JobRecord>(&job_key(&j.after_job), "job record")?
                        .ok_or_else(|| not_found("job to wait for", &j.after_job))?;
                    match first.state() {
                        JobState::Failed => {
                            return Err(Refusal::Conflict(format!(
                                "job {} it would wait for has failed: {}",
                                first.id, first.reason
                            )))
                        }
                        JobState::Completed => {}
                        _ => rec.set_state(JobState::Waiting),
                    }
                }
                match j.kind() {
                    JobKind::Backup => {
                        if let Some(svc) = self.service(&j.service)? {
                            if svc.deprovisioned_unix_ms != 0
                                && j.backup_kind() != BackupKind::Final
                            {
                                return Err(Refusal::Conflict(format!(
                                    "service {} is deprovisioned",
                                    j.service
                                )));
                            }
                            if svc.excluded && j.backup_kind() == BackupKind::Scheduled {
                                return Err(Refusal::Conflict(format!(
                                    "service {} is excluded from automatic backups",
                                    j.service
                                )));
                            }
                        }
                        for other in self.jobs_by(index::OPEN_BY_SERVICE, &j.service)? {
                            if other.kind() != JobKind::Backup
                                || other.service != j.service
                                || other.state().is_final()
                            {
                                continue;
                            }
                            if cmd.unix_ms.saturating_sub(other.updated_unix_ms) < ABANDONED_MS {
                                return Err(Refusal::Conflict(format!(
                                    "a backup of {} is already under way (job {}, {}); wait for it",
                                    j.service,
                                    other.id,
                                    other.state()
                                )));
                            }
                            // Its agent went quiet long ago: give up on it.
                            let reason = format!(
                                "abandoned: no report from host {} for {} minutes",
                                other.host,
                                ABANDONED_MS / 60_000
                            );
                            self.fail_job(
                                other,
                                &reason,
                                FailureClass::Abandoned,
                                cmd.unix_ms,
                                batch,
                            )?;
                        }
                        if j.backup_id.is_empty()
                            || self.tree().contains_key(backup_key(&j.backup_id))?
                        {
                            return Err(Refusal::invalid("a backup job needs a new backup id"));
                        }
                        let backup = BackupRecord {
                            id: j.backup_id.clone(),
                            service: j.service.clone(),
                            host: j.host.clone(),
                            kind: j.backup_kind,
                            state: BackupState::Pending.into(),
                            created_unix_ms: cmd.unix_ms,
                            slot_unix_ms: j.slot_unix_ms,
                            attempt: j.attempt,
                            ..Default::default()
                        };
                        put_backup(batch, None, &backup);
                    }
                    JobKind::Restore => {
                        if !j.in_place {
                            let Some(mut host) = self.host(&j.host)?.filter(|h| h.spare) else {
                                return Err(Refusal::Conflict(format!(
                                    "host {} is not an approved spare; `strongbox host approve {}` first",
                                    j.host, j.host
                                )));
                            };
                            // The limit holds against concurrent requests: counted here, in
                            // the order the log applies them.
                            let max = j.max_restored_servers as usize;
                            if max > 0 && host.restored_servers.len() >= max {
                                return Err(Refusal::Limit(format!(
                                    "spare {} runs {} restored servers already \
                                     (max_restored_servers is {max}): stop one with `strongbox \
                                     restore stop JOB` (restores {})",
                                    j.host,
                                    host.restored_servers.len(),
                                    host.restored_servers.join(", ")
                                )));
                            }
                            host.restored_servers.push(j.id.clone());
                            put_host(batch, None, &host);
                        }
                        if j.in_place {
                            let carries = self
                                .host(&j.host)?
                                .is_some_and(|h| h.members.iter().any(|m| m.service == j.service));
                            if !carries {
                                return Err(Refusal::Conflict(format!(
                                    "an in-place restore of {} must run on a host of that service, not {}",
                                    j.service, j.host
                                )));
                            }
                        }
                        let b = self
                            .get::<BackupRecord>(&backup_key(&j.backup_id), "backup record")?
                            .ok_or_else(|| not_found("backup", &j.backup_id))?;
                        if b.state() != BackupState::Completed {
                            return Err(Refusal::Conflict(format!(
                                "backup {} is {}, only a completed backup restores",
                                b.id,
                                b.state()
                            )));
                        }
                    }
                    JobKind::Stop => {
                        let target = self
                            .get::<JobRecord>(&job_key(&j.target_job), "job record")?
                            .ok_or_else(|| not_found("restore job", &j.target_job))?;
                        if target.kind() != JobKind::Restore || target.in_place {
                            return Err(Refusal::Conflict(format!(
                                "job {} is not a restore onto a spare: only those leave a server to stop",
                                target.id
                            )));
                        }
                        if !target.state().is_final() {
                            return Err(Refusal::Conflict(format!(
                                "restore {} is still {}; stop its server once it ends",
                                target.id,
                                target.state()
                            )));
                        }
                        if target.server_stopped_unix_ms != 0 {
                            return Err(Refusal::Conflict(format!(
                                "the server of restore {} was stopped already",
                                target.id
                            )));
                        }
                        let runs = self
                            .host(&target.host)?
                            .is_some_and(|h| h.restored_servers.contains(&target.id));
                        if !runs {
                            return Err(Refusal::Conflict(format!(
                                "restore {} left no server on {} (it {}): nothing to stop",
                                target.id,
                                target.host,
                                target.state()
                            )));
                        }
                        if target.host != j.host {
                            return Err(Refusal::Invalid(format!(
                                "restore {} ran on {}, not {}",
                                target.id, target.host, j.host
                            )));
                        }
                        if let Some(other) = self
                            .jobs_by(OPEN_BY_HOST, &j.host)?
                            .into_iter()
                            .find(|o| o.kind() == JobKind::Stop && o.target_job == j.target_job)
                        {
                            return Err(Refusal::Conflict(format!(
                                "job {} is stopping that server already",
                                other.id
                            )));
                        }
                    }
                    JobKind::Unspecified => {
                        return Err(Refusal::invalid("a job needs a kind"));
                    }
                }
                index::create_job(batch, &rec);
                Ok(format!(
                    "create {} job {} of {} on {}",
                    j.kind(),
                    j.id,
                    j.service,
                    j.host
                ))
            }
            Some(Op::UpdateJob(u)) => {
                let mut job = self
                    .get::<JobRecord>(&job_key(&u.job_id), "job record")?
                    .ok_or_else(|| not_found("job", &u.job_id))?;
                if job.host != u.host {
                    return Err(Refusal::NotYours {
                        job: job.id,
                        owner: job.host,
                    });
                }
                if job.state().is_final() {
                    return Err(Refusal::Conflict(format!(
                        "job {} is {} already",
                        job.id,
                        job.state()
                    )));
                }
                if job.state() == JobState::Waiting {
                    return Err(Refusal::Conflict(format!(
                        "job {} is waiting for job {}",
                        job.id, job.after_job
                    )));
                }
                match u.state() {
                    JobState::Running | JobState::Failed => {}
                    JobState::Completed if job.kind() != JobKind::Backup => {}
                    JobState::Completed => {
                        return Err(Refusal::invalid("a backup job completes by its commit"));
                    }
                    other => {
                        return Err(Refusal::Invalid(format!(
                            "an agent reports a job running, completed or failed, not `{other}`"
                        )))
                    }
                }
                job.state = u.state;
                job.reason = u.reason.clone();
                job.bytes_done = u.bytes_done;
                job.bytes_total = u.bytes_total;
                job.restore = u.restore.clone();
                job.stop = u.stop.clone();
                job.failure = if u.state() == JobState::Failed {
                    match u.failure() {
                        FailureClass::Unspecified => FailureClass::Other.into(),
                        class => class.into(),
                    }
                } else {
                    FailureClass::Unspecified.into()
                };
                job.phase = if u.state().is_final() {
                    String::new()
                } else {
                    u.phase.clone()
                };
                job.updated_unix_ms = cmd.unix_ms;
                if job.kind() == JobKind::Backup {
                    if let Some(mut b) =
                        self.get::<BackupRecord>(&backup_key(&job.backup_id), "backup record")?
                    {
                        if !b.state().is_final() {
                            b.set_state(match u.state() {
                                JobState::Failed => BackupState::Failed,
                                _ => BackupState::Running,
                            });
                            b.failure = job.failure;
                            b.reason = u.reason.clone();
                            put_backup(batch, None, &b);
                        }
                    }
                }
                match job.state() {
                    JobState::Failed => {
                        self.release_waiters(&job.id, Err(&job.reason), cmd.unix_ms, batch)?
                    }
                    JobState::Completed => {
                        self.release_waiters(&job.id, Ok(()), cmd.unix_ms, batch)?
                    }
                    _ => {}
                }
                // A stop that completed: the restore's server is gone.
                if job.kind() == JobKind::Stop && job.state() == JobState::Completed {
                    if let Some(mut target) =
                        self.get::<JobRecord>(&job_key(&job.target_job), "job record")?
                    {
                        target.server_stopped_unix_ms = cmd.unix_ms;
                        put_job(batch, &target);
                    }
                    self.release_server(&job.host, &job.target_job, batch)?;
                }
                // A restore that failed delivers no server.
                if job.kind() == JobKind::Restore && job.state() == JobState::Failed {
                    self.release_server(&job.host, &job.id, batch)?;
                }
                put_job(batch, &job);
                Ok(format!("job {} {}", job.id, job.state()))
            }
            Some(Op::PurgeBackup(p)) => {
                let b = self
                    .backup(&p.backup_id)?
                    .ok_or_else(|| not_found("backup", &p.backup_id))?;
                if let Some(why) = self.purge_refusal(&b, cmd.unix_ms)? {
                    return Err(why);
                }
                remove_backup(batch, &b);
                Ok(format!("purge backup {} of {}", p.backup_id, b.service))
            }
            Some(Op::SetPolicy(p)) => self.set_policy(p, cmd.unix_ms, batch),
            Some(Op::HoldBackup(h)) => self.hold_backup(h, batch),
            Some(Op::SetServiceState(s)) => self.set_service_state(s, cmd.unix_ms, batch),
            Some(Op::ExpireBackups(e)) => self.expire_backups(e, cmd.unix_ms, batch),
            Some(Op::SetRegion(r)) => self.set_region(r, cmd.unix_ms, batch),
            Some(Op::PruneHistory(p)) => self.prune_history(p, cmd.unix_ms, batch),
            None => Err(Refusal::invalid("empty command")),
        }
    }

    /// Takes restore `job` off the servers host `host` runs (its server stopped, or never made).
    fn release_server(
        &self,
        host: &str,
        job: &str,
        batch: &mut Batch,
    ) -> std::result::Result<(), Refusal> {
        if let Some(mut h) = self.host(host)? {
            if h.restored_servers.iter().any(|j| j == job) {
                h.restored_servers.retain(|j| j != job);
                put_host(batch, None, &h);
            }
        }
        Ok(())
    }

    /// Fails an open job for `reason`, with its backup (a backup job's) and the jobs waiting for
    /// it.
    fn fail_job(
        &self,
        mut job: JobRecord,
        reason: &str,
        class: FailureClass,
        unix_ms: u64,
        batch: &mut Batch,
    ) -> std::result::Result<(), Refusal> {
        job.set_state(JobState::Failed);
        job.set_failure(class);
        job.reason = reason.to_string();
        job.updated_unix_ms = unix_ms;
        if job.kind() == JobKind::Backup {
            if let Some(mut b) =
                self.get::<BackupRecord>(&backup_key(&job.backup_id), "backup record")?
            {
                if !b.state().is_final() {
                    b.set_state(BackupState::Failed);
                    b.set_failure(class);
                    b.reason = job.reason.clone();
                    put_backup(batch, None, &b);
                }
            }
        }
        if job.kind() == JobKind::Restore {
            self.release_server(&job.host, &job.id, batch)?;
        }
        self.release_waiters(&job.id, Err(&job.reason), unix_ms, batch)?;
        put_job(batch, &job);
        Ok(())
    }

    /// A tick: the median of the voters' clocks becomes the agreed time when a majority answered
    /// and it is later than the agreed time now.
    fn tick(&self, t: &strongbox_proto::catalog::Tick, batch: &mut Batch) -> Applied {
        let need = t.voters as usize / 2 + 1;
        if t.voters == 0 || t.clocks.len() < need {
            return Err(Refusal::Invalid(format!(
                "{} of {} voters' clocks; a majority ({need}) is needed to agree on a time",
                t.clocks.len(),
                t.voters
            )));
        }
        let mut clocks = t.clocks.clone();
        clocks.sort_unstable();
        // The lower median: with a majority of correct clocks, it lies between correct ones.
        let median = clocks[(clocks.len() - 1) / 2];
        let now = self.clock_ms()?;
        if median > now {
            batch.insert(KEY_CLOCK, median.to_be_bytes());
        }
        // The nodes that answered are alive at the agreed time: their agents' sessions count.
        // Only nodes of the region are recorded, so there is one record a node.
        let seen = median.max(now);
        for id in &t.answered {
            if self.tree().contains_key(node_key(*id))? {
                batch.insert(node_seen_key(*id), seen.to_be_bytes());
            }
        }
        Ok(format!(
            "agreed time {}",
            crate::policy::time::rfc3339(median.max(now))
        ))
    }

    /// Jobs waiting for `first`: `pending` when it completed, `failed` when it failed (the
    /// in-place restore behind a failed pre-restore backup never touches the live server).
    fn release_waiters(
        &self,
        first: &str,
        outcome: std::result::Result<(), &str>,
        unix_ms: u64,
        batch: &mut Batch,
    ) -> std::result::Result<(), Refusal> {
        for mut w in self.jobs_by(index::WAITING_ON, first)? {
            if w.after_job != first || w.state() != JobState::Waiting {
                continue;
            }
            match outcome {
                Ok(()) => w.set_state(JobState::Pending),
                Err(why) => {
                    w.set_state(JobState::Failed);
                    w.set_failure(FailureClass::Refused);
                    w.reason =
                        format!("job {first} it waited for failed ({why}); nothing was changed");
                }
            }
            w.updated_unix_ms = unix_ms;
            put_job(batch, &w);
        }
        Ok(())
    }

    /// Records (keys) and their bytes (keys and values) by kind, the key's prefix up to its
    /// first `/` (`job/`, `jobs-open-host/`; `applied` for a bare key): what the catalog holds,
    /// for diagnostics and the fleet tool. Reads every key, one at a time.
    pub fn kinds(&self) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        let mut out = std::collections::BTreeMap::new();
        for kv in self.tree().iter() {
            let (k, v) = kv?;
            let kind = match k.iter().position(|b| *b == b'/') {
                Some(i) => String::from_utf8_lossy(&k[..=i]).into_owned(),
                None => String::from_utf8_lossy(&k).into_owned(),
            };
            let e: &mut (u64, u64) = out.entry(kind).or_default();
            e.0 += 1;
            e.1 += (k.len() + v.len()) as u64;
        }
        Ok(out)
    }

    /// Every key and value, in key order: for tests and diagnostics (it reads the whole
    /// catalog into memory).
    pub fn entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree()
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Empties the catalog of a node that starts a new region (its first entry is `index`).
    pub fn bootstrap(&self, index: u64) -> Result<()> {
        let mut batch = Batch::default();
        for kv in self.tree().iter() {
            batch.remove(kv?.0);
        }
        batch.insert(format::KEY_FORMAT, format::FORMAT.to_be_bytes());
        batch.insert(KEY_APPLIED, index.to_be_bytes());
        self.write(batch)?;
        self.pass_cache.all_changed();
        Ok(())
    }

    fn scan<M: Message + Default>(&self, prefix: &[u8], what: &'static str) -> Result<Vec<M>> {
        self.tree()
            .scan_prefix(prefix)
            .map(|kv| self.decode(what, &kv?.1))
            .collect()
    }

    /// Decodes one record, counting it ([`Catalog::records_read`]).
    fn decode<M: Message + Default>(&self, what: &'static str, bytes: &[u8]) -> Result<M> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        decode(what, bytes)
    }

    /// How many records this catalog (and its clones) decoded since it was opened: a test
    /// measures what one command or one question reads.
    pub fn records_read(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn hosts(&self) -> Result<Vec<HostRecord>> {
        self.scan(b"host/", "host record")
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.scan(b"node/", "node record")
    }

    /// When each node last answered the leader's clock ask, by node id (ms since the epoch):
    /// what a host's presence is judged with ([`crate::policy::presence`]). One record a node.
    pub fn nodes_seen(&self) -> Result<std::collections::HashMap<u64, u64>> {
        let mut out = std::collections::HashMap::new();
        for kv in self.tree().scan_prefix(b"node-seen/") {
            let (k, v) = kv?;
            let id = k[b"node-seen/".len()..].try_into().map(u64::from_be_bytes);
            let at = v.as_ref().try_into().map(u64::from_be_bytes);
            if let (Ok(id), Ok(at)) = (id, at) {
                out.insert(id, at);
            }
        }
        Ok(out)
    }

    /// [`Self::nodes_seen`] as presences judged on this node, whose clock may run ahead of
    /// the leader's by [`MAX_BEHIND_MS`].
    pub fn presences(&self) -> Result<crate::policy::presence::Presences> {
        Ok(crate::policy::presence::Presences {
            nodes_seen: self.nodes_seen()?,
            slack_ms: MAX_BEHIND_MS,
        })
    }

    /// The hosts whose recorded session node `node` serves (read through
    /// `hosts-session-node/`): the sessions a restarted node ends.
    pub fn hosts_of_session_node(&self, node: u64) -> Result<Vec<HostRecord>> {
        let mut out = Vec::new();
        for name in self.index_ids(index::BY_SESSION_NODE, &node.to_string())? {
            if let Some(h) = self.host(&name)?.filter(|h| h.session_node == node) {
                out.push(h);
            }
        }
        Ok(out)
    }

    pub fn backups(&self) -> Result<Vec<BackupRecord>> {
        self.scan(b"backup/", "backup record")
    }

    fn get<M: Message + Default>(&self, key: &[u8], what: &'static str) -> Result<Option<M>> {
        self.tree()
            .get(key)?
            .map(|b| self.decode(what, &b))
            .transpose()
    }

    pub fn backup(&self, id: &str) -> Result<Option<BackupRecord>> {
        self.get(&backup_key(id), "backup record")
    }

    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.scan(b"job/", "job record")
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.get(&job_key(id), "job record")
    }

    /// The unfinished jobs of `host`, read through its index (not every job).
    pub fn open_jobs_of_host(&self, host: &str) -> Result<Vec<JobRecord>> {
        self.jobs_by(OPEN_BY_HOST, host)
    }

    /// The jobs an index lists under `by` (a job the index names but that is gone is skipped).
    fn jobs_by(&self, table: &str, by: &str) -> Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        for id in self.index_ids(table, by)? {
            if let Some(j) = self.job(&id)? {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// The ids an index lists under `by`, in key order.
    fn index_ids(&self, table: &str, by: &str) -> Result<Vec<String>> {
        self.tree()
            .scan_prefix(index::prefix(table, by))
            .map(|kv| Ok(index::id_of(&kv?.0)))
            .collect()
    }

    /// The hosts that claim a member of `service`, bound or pending (read through
    /// `hosts-service/`, not every host).
    pub fn hosts_of_service(&self, service: &str) -> Result<Vec<HostRecord>> {
        let mut out = Vec::new();
        for name in self.index_ids(index::HOSTS_BY_SERVICE, service)? {
            if let Some(h) = self.host(&name)? {
                let claims = h
                    .members
                    .iter()
                    .chain(&h.pending_members)
                    .any(|m| m.service == service);
                if claims {
                    out.push(h);
                }
            }
        }
        Ok(out)
    }

    /// The hosts that are spares (read through `hosts-spare/`).
    pub fn spares(&self) -> Result<Vec<HostRecord>> {
        let mut out = Vec::new();
        for name in self.index_ids(index::SPARES, "")? {
            if let Some(h) = self.host(&name)?.filter(|h| h.spare) {
                out.push(h);
            }
        }
        Ok(out)
    }

    pub fn host(&self, name: &str) -> Result<Option<HostRecord>> {
        self.get(&host_key(name), "host record")
    }

    pub fn audit(&self) -> Result<Vec<AuditRecord>> {
        self.scan(b"audit/", "audit record")
    }
}

/// The role of a certificate, as the catalog records who asked.
pub fn caller_role(role: strongbox_core::pki::Role) -> CallerRole {
    use strongbox_core::pki::Role;
    match role {
        Role::Node => CallerRole::Node,
        Role::Agent => CallerRole::Agent,
        Role::Operator => CallerRole::Operator,
        Role::Viewer => CallerRole::Viewer,
        Role::Region => CallerRole::Region,
    }
}

/// Who asked, as the catalog records it.
pub fn actor(who: &strongbox_core::pki::Identity) -> strongbox_proto::catalog::Actor {
    strongbox_proto::catalog::Actor {
        role: caller_role(who.role).into(),
        name: who.name.clone(),
    }
}

/// A refusal naming a record that does not exist.
fn not_found(what: &'static str, id: &str) -> Refusal {
    Refusal::NotFound {
        what,
        id: id.to_string(),
    }
}

/// Operator changes and retention's deletions go to the audit log; agents' own registrations
/// and node bookkeeping do not.
/// Operators' commands are audited (and so the expiries an operator's policy change makes).
/// Retention's routine expiries are not: they follow from the audited policy and the time, and
/// at ten thousand hourly services they would be a quarter of a million entries a day, which a
/// year-long audit log cannot hold (ARCHITECTURE.md, "Bounds of the catalog").
fn is_audited(cmd: &Command) -> bool {
    cmd.actor
        .as_ref()
        .is_some_and(|a| a.role() == CallerRole::Operator)
}

#[cfg(test)]
mod tests {
    use super::index::{OPEN_BY_SERVICE, WAITING_ON};
    use super::*;
    use strongbox_proto::catalog::{Actor, CreateJob, UpdateJob};
    use strongbox_proto::v1::{Engine, MemberRole};

    fn cmd(id: &str, unix_ms: u64, op: Op) -> Vec<u8> {
        Command {
            request_id: id.into(),
            actor: Some(Actor {
                role: CallerRole::Operator.into(),
                name: "alice".into(),
            }),
            unix_ms,
            op: Some(op),
        }
        .encode_to_vec()
    }

    /// A fresh catalog (and the folder it lives in).
    /// A tick of one voter reading `at`.
    fn tick(at: u64) -> Op {
        Op::Tick(strongbox_proto::catalog::Tick {
            clocks: vec![at],
            voters: 1,
            ..Default::default()
        })
    }

    #[test]
    fn the_agreed_time_is_a_majoritys_median_and_never_moves_back() {
        let (_dir, c) = catalog();
        let t = 1_800_000_000_000;
        let three = |clocks: Vec<u64>| {
            Op::Tick(strongbox_proto::catalog::Tick {
                clocks,
                voters: 3,
                ..Default::default()
            })
        };
        // One clock of three is no majority.
        let o = c.apply(1, &cmd("t1", t, three(vec![t]))).unwrap();
        assert!(o.error.contains("majority"), "{}", o.error);
        assert_eq!(c.clock_ms().unwrap(), 0);
        // A leader a year ahead is outvoted by the two right clocks.
        applied(
            &c,
            2,
            &cmd("t2", t, three(vec![t + 365 * 86_400_000, t, t + 500])),
        );
        assert_eq!(c.clock_ms().unwrap(), t + 500);
        // A leader behind cannot move the time back.
        applied(&c, 3, &cmd("t3", t, three(vec![t - 80_000, t - 80_000])));
        assert_eq!(c.clock_ms().unwrap(), t + 500);
        // Deletions by time: judged against it.
        assert!(c.implausible_time(t).unwrap().is_none());
        assert!(c
            .implausible_time(t - 80_000)
            .unwrap()
            .unwrap()
            .contains("behind"));
        assert!(c
            .implausible_time(t + 365 * 86_400_000)
            .unwrap()
            .unwrap()
            .contains("ahead"));
    }

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(dir.path(), 8 << 20).unwrap();
        (dir, Catalog::open(&db).unwrap())
    }

    /// Applies a command that must not be refused.
    fn applied(c: &Catalog, index: u64, command: &[u8]) {
        let o = c.apply(index, command).unwrap();
        assert!(o.error.is_empty(), "entry {index} refused: {}", o.error);
    }

    fn backup_job(id: &str, backup: &str) -> Op {
        Op::CreateJob(CreateJob {
            job: Some(JobRecord {
                id: id.into(),
                kind: JobKind::Backup.into(),
                service: "orders".into(),
                host: "db-1".into(),
                backup_id: backup.into(),
                backup_kind: BackupKind::Manual.into(),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn jobs_move_forward_only_and_abandoned_ones_stop_blocking() {
        let (_dir, c) = catalog();
        let t0 = 1_000_000;
        applied(&c, 1, &cmd("r1", t0, backup_job("j1", "b1")));
        assert_eq!(
            c.backup("b1").unwrap().unwrap().state(),
            BackupState::Pending
        );
        // One backup of a service at a time.
        let o = c
            .apply(2, &cmd("r2", t0 + 1000, backup_job("j2", "b2")))
            .unwrap();
        assert!(o.error.contains("under way"), "{}", o.error);
        // Only the job's host reports; states move forward only.
        let report = |host: &str, state: JobState| {
            Op::UpdateJob(UpdateJob {
                job_id: "j1".into(),
                host: host.into(),
                state: state.into(),
                ..Default::default()
            })
        };
        let o = c
            .apply(3, &cmd("r3", t0 + 2000, report("db-2", JobState::Running)))
            .unwrap();
        assert!(o.error.contains("belongs to host"), "{}", o.error);
        applied(
            &c,
            4,
            &cmd("r4", t0 + 3000, report("db-1", JobState::Running)),
        );
        assert_eq!(
            c.backup("b1").unwrap().unwrap().state(),
            BackupState::Running
        );
        let o = c
            .apply(
                5,
                &cmd("r5", t0 + 4000, report("db-1", JobState::Completed)),
            )
            .unwrap();
        assert!(o.error.contains("commit"), "{}", o.error);
        // The same request id applies once.
        let again = c
            .apply(6, &cmd("r4", t0 + 5000, report("db-1", JobState::Failed)))
            .unwrap();
        assert_eq!(again.index, 4);
        assert_eq!(c.job("j1").unwrap().unwrap().state(), JobState::Running);
        // Quiet for longer than ABANDONED_MS: a new backup goes ahead, the old one failed.
        let later = t0 + 3000 + ABANDONED_MS + 1;
        applied(&c, 7, &cmd("r7", later, backup_job("j3", "b3")));
        let j1 = c.job("j1").unwrap().unwrap();
        assert_eq!(j1.state(), JobState::Failed);
        assert!(j1.reason.contains("abandoned"), "{}", j1.reason);
        assert_eq!(
            c.backup("b1").unwrap().unwrap().state(),
            BackupState::Failed
        );
        let o = c
            .apply(8, &cmd("r8", later + 1, report("db-1", JobState::Running)))
            .unwrap();
        assert!(o.error.contains("failed already"), "{}", o.error);
    }

    #[test]
    fn an_in_place_restore_waits_for_its_pre_restore_backup() {
        let (_dir, c) = catalog();
        let t0 = 1_000_000;
        let register = Op::RegisterHost(strongbox_proto::catalog::RegisterHost {
            host: "db-1".into(),
            region: "r".into(),
            spare: false,
            members: vec![strongbox_proto::catalog::MemberRecord {
                service: "orders".into(),
                engine: Engine::Sqlite.into(),
                role: MemberRole::Standalone.into(),
                healthy: true,
                ..Default::default()
            }],
        });
        applied(&c, 1, &cmd("r1", t0, register));
        // A completed backup to restore.
        applied(&c, 2, &cmd("r2", t0, backup_job("j1", "b1")));
        let commit = |job: &str, backup: &str| commit(job, backup, backup);
        applied(&c, 3, &cmd("r3", t0, commit("j1", "b1")));
        let restore = |id: &str, after: &str| {
            Op::CreateJob(CreateJob {
                job: Some(JobRecord {
                    id: id.into(),
                    kind: JobKind::Restore.into(),
                    service: "orders".into(),
                    host: "db-1".into(),
                    backup_id: "b1".into(),
                    in_place: true,
                    after_job: after.into(),
                    ..Default::default()
                }),
            })
        };
        // Pre-restore backup j2, the restore waits for it, and is released by its commit.
        applied(&c, 4, &cmd("r4", t0, backup_job("j2", "b2")));
        applied(&c, 5, &cmd("r5", t0, restore("j3", "j2")));
        assert_eq!(c.job("j3").unwrap().unwrap().state(), JobState::Waiting);
        let report = Op::UpdateJob(UpdateJob {
            job_id: "j3".into(),
            host: "db-1".into(),
            state: JobState::Running.into(),
            ..Default::default()
        });
        let o = c.apply(6, &cmd("r6", t0, report)).unwrap();
        assert!(o.error.contains("waiting for job j2"), "{}", o.error);
        applied(&c, 7, &cmd("r7", t0, commit("j2", "b2")));
        assert_eq!(c.job("j3").unwrap().unwrap().state(), JobState::Pending);
        // A failed pre-restore backup fails the restore behind it: nothing is touched.
        applied(&c, 8, &cmd("r8", t0, backup_job("j4", "b4")));
        applied(&c, 9, &cmd("r9", t0, restore("j5", "j4")));
        let failed = Op::UpdateJob(UpdateJob {
            job_id: "j4".into(),
            host: "db-1".into(),
            state: JobState::Failed.into(),
            reason: "disk full".into(),
            ..Default::default()
        });
        applied(&c, 10, &cmd("r10", t0, failed));
        let j5 = c.job("j5").unwrap().unwrap();
        assert_eq!(j5.state(), JobState::Failed);
        assert!(
            j5.reason.contains("disk full") && j5.reason.contains("nothing was changed"),
            "{}",
            j5.reason
        );
        // In place only on a host of the service.
        let mut elsewhere = restore("j6", "");
        if let Op::CreateJob(CreateJob { job: Some(j) }) = &mut elsewhere {
            j.host = "spare-1".into();
        }
        let o = c.apply(11, &cmd("r11", t0, elsewhere)).unwrap();
        assert!(o.error.contains("host of that service"), "{}", o.error);
    }

    #[test]
    fn finished_jobs_are_forgotten_after_ninety_days_and_unfinished_ones_never() {
        let (_dir, c) = catalog();
        let t0 = 1_000_000;
        applied(&c, 1, &cmd("r1", t0, backup_job("j1", "b1")));
        let failed = Op::UpdateJob(UpdateJob {
            job_id: "j1".into(),
            host: "db-1".into(),
            state: JobState::Failed.into(),
            reason: "pg_dump: connection refused".into(),
            ..Default::default()
        });
        applied(&c, 2, &cmd("r2", t0, failed));
        let mut other = backup_job("j2", "b2");
        if let Op::CreateJob(CreateJob { job: Some(j) }) = &mut other {
            j.service = "ledger".into();
        }
        applied(&c, 3, &cmd("r3", t0, other));
        let prune = |before: u64| {
            Op::PruneHistory(strongbox_proto::catalog::PruneHistory {
                jobs_before_unix_ms: before,
                ..Default::default()
            })
        };
        let o = c.apply(4, &cmd("r4", t0 + 1000, prune(t0 + 1))).unwrap();
        assert!(o.error.contains("no agreed time"), "{}", o.error);
        applied(&c, 40, &cmd("r40", t0 + 1000, tick(t0 + 1000)));
        let o = c.apply(41, &cmd("r41", t0 + 1000, prune(t0 + 1))).unwrap();
        assert!(o.error.contains("90 days"), "{}", o.error);
        let later = t0 + 1 + JOB_KEEP_MS;
        // A clock 90 days ahead of everything the catalog applied deletes nothing...
        let o = c.apply(5, &cmd("r5", later, prune(t0 + 1))).unwrap();
        assert!(o.error.contains("ahead"), "{}", o.error);
        assert!(c.job("j1").unwrap().is_some());
        // ... once the voters agreed that time has come, it prunes.
        applied(&c, 6, &cmd("r6", later, tick(later)));
        applied(&c, 7, &cmd("r7", later, prune(t0 + 1)));
        assert!(
            c.job("j1").unwrap().is_none(),
            "the failed job is forgotten"
        );
        assert!(c.job("j2").unwrap().is_some(), "an unfinished job stays");
        assert_eq!(
            c.backup("b1").unwrap().unwrap().state(),
            BackupState::Failed,
            "its backup record stays"
        );
    }

    /// A distinct 32-byte manifest id per backup.
    fn manifest_of(backup: &str) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(blake3::hash(backup.as_bytes()).as_bytes())
    }

    /// The commit of `job`'s backup `backup` of orders on db-1, with the manifest made for
    /// backup `manifest`.
    fn commit(job: &str, backup: &str, manifest: &str) -> Op {
        Op::CommitBackup(strongbox_proto::catalog::CommitBackup {
            backup: Some(BackupRecord {
                id: backup.into(),
                service: "orders".into(),
                host: "db-1".into(),
                manifest_id: manifest_of(manifest),
                ..Default::default()
            }),
            job_id: job.into(),
        })
    }

    fn member(service: &str, role: MemberRole) -> strongbox_proto::catalog::MemberRecord {
        strongbox_proto::catalog::MemberRecord {
            service: service.into(),
            engine: Engine::Postgres.into(),
            role: role.into(),
            healthy: true,
            ..Default::default()
        }
    }

    fn register(
        host: &str,
        spare: bool,
        members: Vec<strongbox_proto::catalog::MemberRecord>,
    ) -> Op {
        Op::RegisterHost(strongbox_proto::catalog::RegisterHost {
            host: host.into(),
            region: "r".into(),
            spare,
            members,
        })
    }

    fn bind(host: &str, grant: &[&str], revoke: &[&str], spare: Option<bool>) -> Op {
        Op::BindHost(strongbox_proto::catalog::BindHost {
            host: host.into(),
            grant: grant.iter().map(|s| s.to_string()).collect(),
            revoke: revoke.iter().map(|s| s.to_string()).collect(),
            spare,
        })
    }

    /// db-1 registers as the primary of orders (bound on first use) at entry `index`.
    fn db1_serves_orders(c: &Catalog, index: u64, at: u64) {
        let op = register("db-1", false, vec![member("orders", MemberRole::Primary)]);
        applied(c, index, &cmd(&format!("r{index}"), at, op));
    }

    #[test]
    fn a_host_serves_only_what_it_is_bound_to() {
        let (_dir, c) = catalog();
        let t0 = 1_000_000;
        // The first host of a new service is bound to it.
        db1_serves_orders(&c, 1, t0);
        let db1 = c.host("db-1").unwrap().unwrap();
        assert_eq!(db1.bound_services, vec!["orders".to_string()]);
        assert_eq!(c.service("orders").unwrap().unwrap().primary_host, "db-1");
        // Another host claiming to be its primary waits: nothing uses its claim.
        applied(
            &c,
            2,
            &cmd(
                "r2",
                t0 + 1,
                register("rogue", false, vec![member("orders", MemberRole::Primary)]),
            ),
        );
        let rogue = c.host("rogue").unwrap().unwrap();
        assert!(rogue.members.is_empty(), "{rogue:?}");
        assert_eq!(rogue.pending_members.len(), 1);
        assert_eq!(c.service("orders").unwrap().unwrap().primary_host, "db-1");
        // db-1 fails over to nothing; the rogue still does not become primary.
        applied(
            &c,
            3,
            &cmd(
                "r3",
                t0 + 2,
                register("db-1", false, vec![member("orders", MemberRole::Replica)]),
            ),
        );
        assert_eq!(c.service("orders").unwrap().unwrap().primary_host, "");
        // An operator approves: now it counts.
        applied(
            &c,
            4,
            &cmd("r4", t0 + 3, bind("rogue", &["orders"], &[], None)),
        );
        let rogue = c.host("rogue").unwrap().unwrap();
        assert_eq!(rogue.members.len(), 1);
        assert!(rogue.pending_members.is_empty());
        assert_eq!(c.service("orders").unwrap().unwrap().primary_host, "rogue");
        // Its next heartbeat keeps it bound; a revoke sends its claim back to waiting.
        applied(
            &c,
            5,
            &cmd(
                "r5",
                t0 + 4,
                register("rogue", false, vec![member("orders", MemberRole::Primary)]),
            ),
        );
        assert_eq!(c.host("rogue").unwrap().unwrap().members.len(), 1);
        applied(
            &c,
            6,
            &cmd("r6", t0 + 5, bind("rogue", &[], &["orders"], None)),
        );
        let rogue = c.host("rogue").unwrap().unwrap();
        assert!(rogue.members.is_empty() && rogue.pending_members.len() == 1);
        assert_eq!(c.service("orders").unwrap().unwrap().primary_host, "");
        // An in-place restore needs a bound member on its host.
        db1_serves_orders(&c, 7, t0 + 6);
        applied(&c, 8, &cmd("r8", t0 + 7, backup_job("j1", "b1")));
        let commit = commit("j1", "b1", "b1");
        applied(&c, 9, &cmd("r9", t0 + 8, commit));
        let in_place = Op::CreateJob(CreateJob {
            job: Some(JobRecord {
                id: "j2".into(),
                kind: JobKind::Restore.into(),
                service: "orders".into(),
                host: "rogue".into(),
                backup_id: "b1".into(),
                in_place: true,
                ..Default::default()
            }),
        });
        let o = c.apply(10, &cmd("r10", t0 + 9, in_place)).unwrap();
        assert!(o.error.contains("host of that service"), "{}", o.error);
    }

    #[test]
    fn a_host_is_a_spare_only_when_it_asks_and_an_operator_approved() {
        let (_dir, c) = catalog();
        let t0 = 1_000_000;
        db1_serves_orders(&c, 1, t0);
        applied(&c, 2, &cmd("r2", t0, backup_job("j1", "b1")));
        let commit = commit("j1", "b1", "b1");
        applied(&c, 3, &cmd("r3", t0, commit));
        let restore = |id: &str| {
            Op::CreateJob(CreateJob {
                job: Some(JobRecord {
                    id: id.into(),
                    kind: JobKind::Restore.into(),
                    service: "orders".into(),
                    host: "spare-1".into(),
                    backup_id: "b1".into(),
                    ..Default::default()
                }),
            })
        };
        applied(&c, 4, &cmd("r4", t0, register("spare-1", true, vec![])));
        let h = c.host("spare-1").unwrap().unwrap();
        assert!(h.spare_requested && !h.spare_approved && !h.spare, "{h:?}");
        let o = c.apply(5, &cmd("r5", t0, restore("j2"))).unwrap();
        assert!(o.error.contains("not an approved spare"), "{}", o.error);
        applied(&c, 6, &cmd("r6", t0, bind("spare-1", &[], &[], Some(true))));
        assert!(c.host("spare-1").unwrap().unwrap().spare);
        applied(&c, 7, &cmd("r7", t0, restore("j3")));
        // The approval outlives re-registration; an agent that stops asking is no spare.
        applied(
            &c,
            8,
            &cmd("r8", t0 + 1, register("spare-1", false, vec![])),
        );
        let h = c.host("spare-1").unwrap().unwrap();
        assert!(h.spare_approved && !h.spare, "{h:?}");
        applied(&c, 9, &cmd("r9", t0 + 2, register("spare-1", true, vec![])));
        assert!(c.host("spare-1").unwrap().unwrap().spare);
        // A spare whose role is withdrawn takes none of the restores it was given.
        applied(
            &c,
            12,
            &cmd("r12", t0 + 5, bind("spare-1", &[], &[], Some(false))),
        );
        let j3 = c.job("j3").unwrap().unwrap();
        assert_eq!(j3.state(), JobState::Failed);
        assert!(j3.reason.contains("no longer a spare"), "{}", j3.reason);
        // Revoking what is not bound is a mistake, said so.
        let o = c
            .apply(
                13,
                &cmd("r13", t0 + 5, bind("spare-1", &[], &["nosuch"], None)),
            )
            .unwrap();
        assert!(
            o.error.contains("not bound to service nosuch"),
            "{}",
            o.error
        );
        // A binding made for a host that never registered, taken back: no record is left.
        applied(
            &c,
            14,
            &cmd("r14", t0 + 6, bind("typo-host", &["orders"], &[], None)),
        );
        assert!(c.host("typo-host").unwrap().is_some());
        applied(
            &c,
            15,
            &cmd("r15", t0 + 7, bind("typo-host", &[], &["orders"], None)),
        );
        assert!(c.host("typo-host").unwrap().is_none());
        // An operator may bind a host ahead of its agent.
        applied(
            &c,
            10,
            &cmd("r10", t0 + 3, bind("spare-2", &[], &[], Some(true))),
        );
        let h = c.host("spare-2").unwrap().unwrap();
        assert!(
            h.spare_approved && !h.spare && h.registered_unix_ms == 0,
            "{h:?}"
        );
        applied(
            &c,
            11,
            &cmd("r11", t0 + 4, register("spare-2", true, vec![])),
        );
        let h = c.host("spare-2").unwrap().unwrap();
        assert!(h.spare && h.registered_unix_ms == t0 + 4, "{h:?}");
    }

    #[test]
    fn a_manifest_commits_once() {
        let (_dir, c) = catalog();
        let t0 = 1_000_000;
        db1_serves_orders(&c, 1, t0);
        applied(&c, 2, &cmd("r2", t0, backup_job("j1", "b1")));
        applied(&c, 3, &cmd("r3", t0, commit("j1", "b1", "b1")));
        // A retry of the same commit is fine; the old manifest for a new backup is not.
        applied(&c, 4, &cmd("r4", t0, commit("j1", "b1", "b1")));
        applied(&c, 5, &cmd("r5", t0, backup_job("j2", "b2")));
        let o = c
            .apply(6, &cmd("r6", t0, commit("j2", "b2", "b1")))
            .unwrap();
        assert!(
            o.error.contains("committed already by backup b1"),
            "{}",
            o.error
        );
        assert_ne!(
            c.backup("b2").unwrap().unwrap().state(),
            BackupState::Completed
        );
        applied(&c, 7, &cmd("r7", t0, commit("j2", "b2", "b2")));
    }

    /// One registration of many services applies in time linear in its size (the role
    /// tracking once compared every member with every other: 16,000 services took 9 s).
    #[test]
    fn a_large_registration_applies_in_linear_time() {
        let (_dir, c) = catalog();
        let n = 40_000;
        let members: Vec<_> = (0..n)
            .map(|i| member(&format!("svc-{i}"), MemberRole::Primary))
            .collect();
        let started = std::time::Instant::now();
        applied(
            &c,
            1,
            &cmd("r1", 1_000, register("db-1", false, members.clone())),
        );
        applied(&c, 2, &cmd("r2", 2_000, register("db-1", false, members)));
        let took = started.elapsed();
        eprintln!("two registrations of {n} services applied in {took:?}");
        assert_eq!(c.host("db-1").unwrap().unwrap().members.len(), n);
        // Linear is about a second here; the quadratic apply took minutes.
        assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    }

    /// Index entries under `table`, as `by/id`.
    fn index_entries(c: &Catalog, table: &str) -> Vec<String> {
        c.tree()
            .scan_prefix(format!("{table}/"))
            .map(|kv| {
                let k = kv.unwrap().0;
                String::from_utf8_lossy(&k[table.len() + 1..]).replace('\0', "/")
            })
            .collect()
    }

    /// The hook hears of the hosts whose jobs a command wrote (so their sessions wake), and
    /// of nothing for a refused command or one that writes no job.
    #[test]
    fn the_hook_hears_of_hosts_whose_jobs_changed() {
        let (_dir, c) = catalog();
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        {
            let heard = heard.clone();
            c.on_jobs_changed(move |h| heard.lock().unwrap().push(h.to_string()));
        }
        let t0 = 1_000_000;
        db1_serves_orders(&c, 1, t0);
        assert!(
            heard.lock().unwrap().is_empty(),
            "a registration writes no job"
        );
        applied(&c, 2, &cmd("r2", t0, backup_job("j1", "b1")));
        assert_eq!(*heard.lock().unwrap(), vec!["db-1".to_string()]);
        // A second backup of the service while one runs is refused: nothing is heard.
        let o = c.apply(3, &cmd("r3", t0, backup_job("j2", "b2"))).unwrap();
        assert!(!o.error.is_empty());
        assert_eq!(heard.lock().unwrap().len(), 1);
    }

    /// The job indexes follow every state change: apply steps read the jobs they name, not
    /// every job, and an index never keeps a finished or pruned job.
    #[test]
    fn job_indexes_follow_every_state_change() {
        let (_dir, c) = catalog();
        let t0 = 1_000_000;
        db1_serves_orders(&c, 1, t0);
        // Many finished jobs of other services: none is in an index.
        for i in 0..50u64 {
            let mut job = backup_job(&format!("old-{i}"), &format!("bo-{i}"));
            if let Op::CreateJob(CreateJob { job: Some(j) }) = &mut job {
                j.service = format!("other-{i}");
            }
            applied(&c, 2 + 2 * i, &cmd(&format!("c{i}"), t0, job));
            let failed = Op::UpdateJob(UpdateJob {
                job_id: format!("old-{i}"),
                host: "db-1".into(),
                state: JobState::Failed.into(),
                ..Default::default()
            });
            applied(&c, 3 + 2 * i, &cmd(&format!("f{i}"), t0, failed));
        }
        assert!(index_entries(&c, OPEN_BY_SERVICE).is_empty());
        assert!(index_entries(&c, OPEN_BY_HOST).is_empty());
        applied(&c, 200, &cmd("r200", t0, backup_job("j1", "b1")));
        assert_eq!(index_entries(&c, OPEN_BY_SERVICE), vec!["orders/j1"]);
        assert_eq!(index_entries(&c, OPEN_BY_HOST), vec!["db-1/j1"]);
        applied(&c, 201, &cmd("r201", t0, commit("j1", "b1", "b1")));
        // An in-place restore waiting for its pre-restore backup.
        applied(&c, 202, &cmd("r202", t0, backup_job("j2", "b2")));
        let restore = Op::CreateJob(CreateJob {
            job: Some(JobRecord {
                id: "j3".into(),
                kind: JobKind::Restore.into(),
                service: "orders".into(),
                host: "db-1".into(),
                backup_id: "b1".into(),
                in_place: true,
                after_job: "j2".into(),
                ..Default::default()
            }),
        });
        applied(&c, 203, &cmd("r203", t0, restore));
        assert_eq!(index_entries(&c, WAITING_ON), vec!["j2/j3"]);
        applied(&c, 204, &cmd("r204", t0, commit("j2", "b2", "b2")));
        assert!(index_entries(&c, WAITING_ON).is_empty());
        assert_eq!(c.job("j3").unwrap().unwrap().state(), JobState::Pending);
        assert_eq!(index_entries(&c, OPEN_BY_HOST), vec!["db-1/j3"]);
        assert_eq!(c.open_jobs_of_host("db-1").unwrap().len(), 1);
        let done = Op::UpdateJob(UpdateJob {
            job_id: "j3".into(),
            host: "db-1".into(),
            state: JobState::Completed.into(),
            ..Default::default()
        });
        applied(&c, 205, &cmd("r205", t0, done));
        assert!(index_entries(&c, OPEN_BY_HOST).is_empty());
        assert!(index_entries(&c, OPEN_BY_SERVICE).is_empty());
        // Pruned jobs leave nothing behind.
        let prune = Op::PruneHistory(strongbox_proto::catalog::PruneHistory {
            jobs_before_unix_ms: t0 + 1,
            ..Default::default()
        });
        // (The voters first agree that the prune's time has come.)
        applied(
            &c,
            206,
            &cmd("r206b", t0 + 1 + JOB_KEEP_MS, tick(t0 + 1 + JOB_KEEP_MS)),
        );
        applied(&c, 207, &cmd("r206", t0 + 1 + JOB_KEEP_MS, prune));
        assert!(c.jobs().unwrap().is_empty());
        assert!(index_entries(&c, WAITING_ON).is_empty());
    }
}
