//! The restore pipeline: fetch and check the manifest, provision a fresh server (or, for an
//! in-place restore, take the service's own live server), stream each part's chunks (fetched in
//! parallel, opened on the blocking pool) into the engine's loader, then verify.
//!
//! Invariants: the target is always a new folder under the data root (`r/<12 hex of the job
//! id's hash>`: short, because PostgreSQL's socket path must fit in 107 bytes), so
//! a restore never touches the source or another restore — except an in-place restore, which
//! the coordinator sends only after a `pre-restore` backup of that source completed (its folder
//! then holds spools only and is removed after); a chunk reaches the loader only after
//! its AEAD tag and its id are checked; a fetch or decryption failure reaches the loader as a
//! stream *error*, never as a clean end of input, so no part is loaded half; the job fails
//! when verification finds a difference, and its result still says what was found.
//!
//! Privacy (issue 12): a restore holds a copy of the source's data, so nothing of it is ever
//! readable by other users. The target folder `r/<hex>` is created 0700 by `mkdir` itself
//! (the engine then gives it to the server's system user, still 0700), and everything below
//! it is born private under the agent's umask 0o077 (see `strongbox_core::private`). `r/`
//! and, when the agent makes it, the data root are 0711 when the agent runs as root — the
//! servers then run as `postgres`/`mysql` and must pass through them to their own folder —
//! and 0700 otherwise; never listable by others.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use strongbox_core::connect::Coordinators;
use strongbox_core::ids::ChunkId;
use strongbox_core::manifest::{self, PartKind};
use strongbox_core::private;
use strongbox_core::read::{part_chunks, ServiceKeySet};
use strongbox_proto::v1::{
    FailureClass, FetchChunkRequest, JobReport, JobState, PhaseTimes, RestoreOutcome,
    RestoreResult, StopResult,
};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::failure::{self, Failed};
use crate::job::JobCtx;
use crate::rpc::{client, rpc};
use strongbox_engines::{self as engines, EngineKind, PartPlan, TableStat};

/// Chunks fetched at once per part.
const FETCH_AHEAD: usize = 8;

/// Runs a restore job: (result JSON, why it failed if verification found a difference).
pub async fn run(ctx: &JobCtx) -> std::result::Result<(RestoreResult, Option<String>), Failed> {
    let stage = AtomicI32::new(FailureClass::Fetch.into());
    restore(ctx, &stage).await.map_err(|e| {
        let at =
            FailureClass::try_from(stage.load(Ordering::Relaxed)).unwrap_or(FailureClass::Other);
        Failed::new(failure::of_restore(at, &e), e)
    })
}

/// Runs the restore, keeping `stage` at what it is doing (for the failure class).
async fn restore(ctx: &JobCtx, stage: &AtomicI32) -> Result<(RestoreResult, Option<String>)> {
    let job = &ctx.job;
    let at = |s: FailureClass| stage.store(s.into(), Ordering::Relaxed);
    let started = Instant::now();
    let root = ctx.config.data_root.as_ref().ok_or_else(|| {
        Error::Other(format!(
            "host {} has no data_root for restores; set `data_root` in its agent config",
            ctx.config.host
        ))
    })?;
    let manifest_id = ChunkId::from_slice(&job.manifest_id)?;
    let sealed = fetch(&ctx.coordinators, &job.job_id, manifest_id).await?;
    let (agent2, service) = (ctx.clone(), job.service.clone());
    let manifest =
        tokio::task::spawn_blocking(move || manifest::open(&agent2.keyring, &service, &sealed))
            .await
            .map_err(|e| Error::Other(format!("a worker thread failed: {e}")))??;
    // The manifest must be the one made for this backup of this service: a coordinator (or
    // an agent that fooled one) cannot pass an older backup's manifest off as this one.
    if manifest.backup_id != job.backup_id || manifest.service != job.service {
        return Err(Error::Other(format!(
            "the manifest fetched for backup {} of {} was made for backup {} of {}: refusing to \
             restore it; report this, the region's catalog may have been tampered with",
            job.backup_id, job.service, manifest.backup_id, manifest.service
        )));
    }
    let kind = EngineKind::parse(&manifest.engine)
        .ok_or_else(|| Error::Other(format!("backup of unknown engine {:?}", manifest.engine)))?;
    let mut phases = PhaseTimes {
        fetch_manifest_ms: ms(started.elapsed()),
        ..Default::default()
    };
    at(FailureClass::Provision);
    let provisioning = Instant::now();
    // Keys for every key id of the keyring: chunks name the key they were sealed with.
    let keys = Arc::new(ServiceKeySet::new(&ctx.keyring, &job.service)?);

    let dir = restore_dir(root, &job.job_id);
    if dir.exists() {
        // A restore this agent began before it restarted: start over.
        let _ = engines::teardown(kind, &dir).await;
        remove_dir(&dir, "removing an earlier attempt").await?;
    }
    prepare_root(root)?;
    create_target_dir(&dir)?;
    let total: u64 = manifest.parts.iter().map(|p| p.plain_size()).sum();
    // What the job is doing, and the bytes fed to the loader so far: reported every 2 s while
    // the job runs (and at each change of phase), so a waiting operator sees it move.
    let progress = Arc::new(Progress {
        fed: AtomicU64::new(0),
        phase: Mutex::new(if job.in_place {
            "preparing the live server".to_string()
        } else {
            "provisioning a fresh server".to_string()
        }),
    });
    let report = {
        let (ctx, job_id, progress) = (ctx.clone(), job.job_id.clone(), progress.clone());
        move || {
            ctx.report(JobReport {
                job_id: job_id.clone(),
                state: JobState::Running.into(),
                bytes_done: progress.fed.load(Ordering::Relaxed).min(total),
                bytes_total: total,
                phase: progress.phase(),
                ..Default::default()
            })
        }
    };
    report();
    let _reporter = {
        let report = report.clone();
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                report();
            }
        }))
    };
    let mut target = if job.in_place {
        let engine = ctx.engine()?;
        if engine.kind() != kind {
            return Err(Error::Other(format!(
                "backup of {} is a {} backup, but the service on this host is {}",
                job.service,
                kind.as_str(),
                engine.kind().as_str()
            )));
        }
        tracing::warn!(service = %job.service, backup = %job.backup_id, "restoring in place: the live data is replaced");
        engine.in_place(&dir).await?
    } else {
        let t =
            engines::provision(kind, &dir, &ctx.config.restore_listen, None, &job.service).await?;
        tracing::info!(dir = %dir.display(), "fresh server provisioned");
        t
    };

    phases.provision_ms = ms(provisioning.elapsed());
    at(FailureClass::Load);
    let loading = Instant::now();
    let mut expected: Vec<TableStat> = Vec::new();
    for part in &manifest.parts {
        progress.set_phase(format!("loading {}", part.name));
        report();
        let plan = PartPlan {
            name: part.name.clone(),
            kind: PartKind::try_from(part.kind).unwrap_or(PartKind::Unspecified),
        };
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(2);
        let reader =
            tokio_util::io::StreamReader::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let feed = {
            let (ctx, job_id) = (ctx.clone(), Arc::<str>::from(job.job_id.as_str()));
            let fetch = move |id: ChunkId| {
                let (ctx, job_id) = (ctx.clone(), job_id.clone());
                async move { fetch(&ctx.coordinators, &job_id, id).await }
            };
            let mut opened = Box::pin(part_chunks(
                part.chunks.clone(),
                keys.clone(),
                FETCH_AHEAD,
                fetch,
            ));
            let progress = progress.clone();
            async move {
                while let Some(r) = opened.next().await {
                    let r = r.map_err(Error::Core);
                    match r {
                        Ok(plain) => {
                            progress
                                .fed
                                .fetch_add(plain.len() as u64, Ordering::Relaxed);
                            if tx.send(Ok(plain)).await.is_err() {
                                return Ok(()); // the loader stopped; its error tells why
                            }
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            let _ = tx.send(Err(std::io::Error::other(msg))).await;
                            return Err(e);
                        }
                    }
                }
                Ok::<(), Error>(())
            }
        };
        let load = target.load(&plan, Box::new(reader));
        let (fed, loaded) = tokio::join!(feed, load);
        fed?;
        loaded?;
        expected.extend(part.tables.iter().cloned());
        tracing::info!(part = %part.name, bytes = part.plain_size(), "part loaded");
    }
    progress.set_phase("verifying".into());
    report();
    target.finish_load().await?;
    phases.load_ms = ms(loading.elapsed());
    at(FailureClass::Verify);
    let verifying = Instant::now();
    let verification = target.verify(&expected).await;
    phases.verify_ms = ms(verifying.elapsed());
    progress.set_phase("flushing to disk".into());
    report();
    at(FailureClass::Load);
    let flushing = Instant::now();
    target.wait_durable().await?;
    phases.flush_ms = ms(flushing.elapsed());
    let verification = verification?;
    // The server is delivered either way: it is `verified`, or `restored_with_errors` (objects
    // that did not come back, rows that differ, or the engine's check failing), which the job
    // reports as failed so that a drill or an alert counts it as one.
    let outcome = if verification.ok {
        RestoreOutcome::Verified
    } else {
        RestoreOutcome::RestoredWithErrors
    };
    let parts: Vec<(&str, &[TableStat])> = manifest
        .parts
        .iter()
        .map(|p| (p.name.as_str(), p.tables.as_slice()))
        .collect();
    let result = RestoreResult {
        outcome: outcome.into(),
        connection: Some(target.connection().wire()),
        verification: Some(strongbox_proto::v1::Verification {
            databases: verification.by_database(&parts),
            ..verification.wire()
        }),
        backup_created_unix_ms: u64::try_from(manifest.created_unix_ms).unwrap_or(0),
        in_place: job.in_place,
        phases: Some(phases),
    };
    if job.in_place {
        // Only spools were there; the restored data is in the live server.
        drop(target);
        let _ = remove_dir(&dir, "removing the spools").await;
    }
    let failure = (!verification.ok).then(|| {
        format!(
            "restored with errors: {} object(s) did not come back, {} table(s) differ; engine \
             check: {}",
            verification.failed_objects.len(),
            verification.mismatches.len(),
            verification.engine_check
        )
    });
    Ok((result, failure))
}

/// Stops the server that restore job `job.target_job` made on this spare, and removes its
/// folder unless `job.keep_files` (issue 15, fault 2). A server that is not running any more
/// is fine; the result says what was done.
pub async fn stop(ctx: &JobCtx) -> Result<StopResult> {
    let job = &ctx.job;
    let root = ctx.config.data_root.as_ref().ok_or_else(|| {
        Error::Other(format!(
            "host {} has no data_root, so no restore ran here",
            ctx.config.host
        ))
    })?;
    let dir = restore_dir(root, &job.target_job);
    // The restore's engine when the coordinator knew it; else whichever server is there (each
    // teardown is a no-op without its own pid file).
    let kinds = match EngineKind::from_wire(job.engine()) {
        Some(kind) => vec![kind],
        None => vec![EngineKind::Postgres, EngineKind::Mysql],
    };
    if dir.exists() {
        for kind in kinds {
            engines::teardown(kind, &dir).await?;
        }
        if !job.keep_files {
            remove_dir(&dir, "removing the restored server's folder").await?;
        }
    }
    tracing::info!(restore = %job.target_job, folder = %dir.display(), files_kept = job.keep_files, "restored server stopped");
    Ok(StopResult {
        folder: dir.display().to_string(),
        files_kept: job.keep_files && dir.exists(),
    })
}

/// Removes a folder and everything in it on the blocking pool (a restored server's folder
/// holds a whole database).
async fn remove_dir(dir: &Path, what: &'static str) -> Result<()> {
    let remove = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&remove))
        .await
        .map_err(|e| Error::Other(format!("removal task: {e}")))?
        .map_err(|source| Error::Io {
            what,
            path: dir.to_path_buf(),
            source,
        })
}

/// Whole milliseconds of a duration.
fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A restore's progress: bytes fed to the loader, and what it is doing.
struct Progress {
    fed: AtomicU64,
    phase: Mutex<String>,
}

impl Progress {
    fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_phase(&self, phase: String) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }
}

/// The folder of a restore job's server under the data root.
pub fn restore_dir(root: &Path, job_id: &str) -> PathBuf {
    let hash = blake3::hash(job_id.as_bytes()).to_hex();
    root.join("r").join(&hash[..12])
}

/// The mode of the data root (when the agent makes it) and of its `r/`: 0711 when the agent
/// runs as root, since restored servers then run as `postgres` or `mysql` and must pass
/// through to their own 0700 folder (they need no listing); 0700 otherwise, since the servers
/// then run as the agent's own user.
pub fn root_mode() -> u32 {
    if nix::unistd::geteuid().is_root() {
        private::TRAVERSE_DIR
    } else {
        private::PRIVATE_DIR
    }
}

/// Makes the data root (if missing) and its `r/` with [`root_mode`]; returns `r/`. An `r/`
/// this agent owns with another mode (made by an earlier version, 0755) is set to it. An
/// existing data root is the operator's and is left as it is.
pub fn prepare_root(root: &Path) -> Result<PathBuf> {
    let mode = root_mode();
    if !root.exists() {
        private::ensure_dir(root, mode).map_err(io_error("creating the data root"))?;
    }
    let r = root.join("r");
    private::ensure_dir(&r, mode).map_err(io_error("creating the restores folder"))?;
    Ok(r)
}

/// Creates a restore's own folder, 0700 from the start (the engine may then give it to the
/// server's system user).
pub fn create_target_dir(dir: &Path) -> Result<()> {
    private::create_dir(dir, private::PRIVATE_DIR).map_err(io_error("creating the restore folder"))
}

/// Restores under `root` that other users can enter or read (made before restores were kept
/// private), with their modes.
pub fn open_restores(root: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(root.join("r")) else {
        return Vec::new();
    };
    let mut open: Vec<(PathBuf, u32)> = entries
        .flatten()
        .filter_map(|e| {
            let mode = e.metadata().ok()?.permissions().mode() & 0o7777;
            (mode & 0o077 != 0).then(|| (e.path(), mode))
        })
        .collect();
    open.sort();
    open
}

/// Maps a core I/O error to the agent's, saying what was being done.
fn io_error(what: &'static str) -> impl Fn(strongbox_core::Error) -> Error {
    move |e| match e {
        strongbox_core::Error::Io { path, cause } => Error::Io {
            what,
            path,
            source: cause,
        },
        other => Error::Core(other),
    }
}

/// A sealed chunk or manifest, from any coordinator node.
async fn fetch(coordinators: &Coordinators, job_id: &str, id: ChunkId) -> Result<Vec<u8>> {
    let req = FetchChunkRequest {
        job_id: job_id.to_string(),
        id: Bytes::copy_from_slice(id.as_bytes()),
    };
    let r = coordinators
        .call("FetchChunk", |ch| {
            let req = req.clone();
            async move { client(ch).fetch_chunk(req).await }
        })
        .await
        .map_err(|s| rpc(&format!("fetching chunk {id}"), s))?;
    Ok(r.into_inner().sealed.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn restore_folders_are_private_under_the_common_umask_022() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        // SAFETY: umask(2) only sets this process's creation mask; 022 is the usual default,
        // so other tests running meanwhile see nothing unusual.
        let old = unsafe { libc::umask(0o022) };
        let made = prepare_root(&root).and_then(|r| {
            let dir = restore_dir(&root, "job-1");
            create_target_dir(&dir).map(|()| (r, dir))
        });
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let (r, dir) = made.unwrap();
        let traverse = if nix::unistd::geteuid().is_root() {
            0o711
        } else {
            0o700
        };
        assert_eq!(mode(&root), traverse);
        assert_eq!(mode(&r), traverse);
        assert_eq!(mode(&dir), 0o700);
        assert!(open_restores(&root).is_empty());
        // A second attempt at the same folder is refused, never reused.
        assert!(create_target_dir(&dir).is_err());
    }

    #[test]
    fn an_existing_data_root_is_kept_and_an_open_r_is_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
        let r = root.join("r");
        std::fs::create_dir(&r).unwrap();
        std::fs::set_permissions(&r, std::fs::Permissions::from_mode(0o755)).unwrap();
        let old = r.join("0123456789ab");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_root(&root).unwrap();
        assert_eq!(mode(&root), 0o750);
        assert_eq!(mode(&r), root_mode());
        assert_eq!(open_restores(&root), vec![(old, 0o755)]);
    }
}
