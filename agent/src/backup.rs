//! The backup pipeline: dump → content-defined chunks → ids → dedup against the region →
//! seal → upload, then the manifest and the commit.
//!
//! Invariants: nothing holds more than `upload_concurrency` + 2 batches (each at most
//! [`BATCH_CHUNKS`] chunks, closed once it reaches [`BATCH_BYTES`] plain bytes) plus the
//! chunker's buffer in memory, and nothing is written to local disk; hashing and sealing run
//! on the blocking pool; a chunk the region holds already is not sealed or sent again (so a
//! retried or repeated backup sends only what is new); a backup is committed only after every
//! part's dump tool exited successfully and every chunk was acknowledged by a majority; the
//! dump tool's error is the job's reason when the tool fails.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use strongbox_core::chunk::Sealer;
use strongbox_core::chunking::Chunker;
use strongbox_core::ids::ChunkId;
use strongbox_core::keys::ServiceKeys;
use strongbox_core::manifest::{ChunkRef, Manifest, Part};
use strongbox_proto::v1::{
    BackupKind, CommitBackupRequest, HaveChunksRequest, JobReport, JobState, SealedChunk,
    UploadChunksRequest,
};
use strongbox_proto::MAX_MESSAGE_BYTES;
use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::job::JobCtx;
use strongbox_engines::counting::Tap;

thread_local! {
    static SEALER: RefCell<Option<(i32, Sealer)>> = const { RefCell::new(None) };
}

use crate::rpc::client;
use crate::rpc::rpc;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("a worker thread failed: {e}")))?
}

/// Bytes read from the dump so far, reported every few seconds.
struct Progress {
    done: AtomicU64,
}

/// Holds uploads to `rate` bytes per second on average.
struct RateLimit {
    rate: u64,
    next: Mutex<Instant>,
}

impl RateLimit {
    async fn take(&self, bytes: usize) {
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
            start - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

struct Pipe {
    ctx: JobCtx,
    job_id: String,
    keys: Arc<ServiceKeys>,
    level: i32,
    progress: Arc<Progress>,
    limit: Option<RateLimit>,
}

pub async fn run(ctx: &JobCtx) -> Result<()> {
    let job = &ctx.job;
    let engine = ctx.engine()?;
    let keys = Arc::new(ctx.keyring.current_service_keys(&job.service)?);
    let version = engine.probe().await.map(|p| p.version).unwrap_or_default();
    let started_ms = strongbox_core::clock::now_ms();
    let progress = Arc::new(Progress {
        done: AtomicU64::new(0),
    });
    let pipe = Arc::new(Pipe {
        ctx: ctx.clone(),
        job_id: job.job_id.clone(),
        keys: keys.clone(),
        level: ctx.config.zstd_level,
        progress: progress.clone(),
        limit: ctx.config.upload_rate.map(|rate| RateLimit {
            rate,
            next: Mutex::new(Instant::now()),
        }),
    });
    ctx.report(JobReport {
        job_id: job.job_id.clone(),
        state: JobState::Running.into(),
        ..Default::default()
    });
    // Progress every 2 s while the dump runs; the loop ends with this job, even when the job
    // is aborted (the agent stopping).
    let reporter = {
        let (ctx, job_id, progress) = (ctx.clone(), job.job_id.clone(), progress.clone());
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                ctx.report(JobReport {
                    job_id: job_id.clone(),
                    state: JobState::Running.into(),
                    bytes_done: progress.done.load(Ordering::Relaxed),
                    ..Default::default()
                });
            }
        }))
    };
    let result = dump_and_upload(&pipe, engine).await;
    drop(reporter);
    let (parts, left_out) = result?;

    let mut manifest = Manifest {
        backup_id: job.backup_id.clone(),
        service: job.service.clone(),
        created_unix_ms: started_ms as i64,
        engine: engine.kind().as_str().into(),
        engine_version: version,
        parts,
        totals: None,
        left_out,
    };
    let totals = manifest.compute_totals();
    manifest.totals = Some(totals);
    let sealed = blocking(move || Ok(manifest.seal(&keys)?)).await?;
    let manifest_id = Bytes::copy_from_slice(blake3::hash(&sealed).as_bytes());
    let sealed = Bytes::from(sealed);
    let req = CommitBackupRequest {
        job_id: job.job_id.clone(),
        backup_id: job.backup_id.clone(),
        manifest_id,
        manifest: sealed,
        service: job.service.clone(),
        kind: match job.backup_kind() {
            BackupKind::Unspecified => BackupKind::Manual.into(),
            kind => kind.into(),
        },
        plain_bytes: totals.plain_size,
        stored_bytes: totals.stored_size,
        created_unix_ms: started_ms,
        table_count: totals.table_count,
    };
    let committed = ctx
        .coordinators
        .call("CommitBackup", |ch| {
            let req = req.clone();
            async move { client(ch).commit_backup(req).await }
        })
        .await;
    match committed {
        Ok(_) => {}
        // A retried commit whose first attempt won (its answer was lost with a node).
        Err(s)
            if s.code() == tonic::Code::FailedPrecondition
                && s.message().contains("completed already") => {}
        Err(s) => return Err(rpc("committing the backup", s)),
    }
    tracing::info!(
        plain = totals.plain_size,
        new = totals.stored_size,
        chunks = totals.chunk_count,
        tables = totals.table_count,
        "backup committed"
    );
    Ok(())
}

async fn dump_and_upload(
    pipe: &Arc<Pipe>,
    engine: &dyn strongbox_engines::Engine,
) -> Result<(Vec<Part>, Vec<strongbox_core::manifest::LeftOut>)> {
    let mut run = engine.begin_backup().await?;
    let left_out = run.left_out();
    let mut parts = Vec::new();
    for plan in run.parts().to_vec() {
        let dump = run.dump(&plan).await?;
        let chunks = upload_stream(pipe.clone(), dump.reader, dump.tap).await;
        // The tool's own error says more than a broken stream; a failed upload stops the dump.
        let chunks = match chunks {
            Ok(c) => c,
            Err(e) => {
                drop(dump.finish);
                let _ = run.close().await;
                return Err(e);
            }
        };
        let tables = match dump.finish.await {
            Ok(t) => t,
            Err(e) => {
                let _ = run.close().await;
                return Err(e.into());
            }
        };
        tracing::info!(part = %plan.name, chunks = chunks.len(), tables = tables.len(), "part uploaded");
        parts.push(Part {
            name: plan.name.clone(),
            kind: plan.kind as i32,
            chunks,
            tables,
        });
    }
    run.close().await?;
    Ok((parts, left_out))
}

/// Chunks in one batch: a batch is asked about (`HaveChunks`), sealed and uploaded together.
const BATCH_CHUNKS: usize = 16;
/// Plain bytes in one batch (a batch closes once it reaches this).
const BATCH_BYTES: usize = 16 << 20;
/// Sealed bytes in one upload call, under the message limit with room for framing.
const CALL_BYTES: usize = MAX_MESSAGE_BYTES - (1 << 20);

/// Chunks a stream and makes sure the region holds every chunk; the chunk list in order.
/// The chunker runs ahead by one batch while up to `upload_concurrency` batches are checked,
/// sealed and uploaded.
fn upload_stream(
    pipe: Arc<Pipe>,
    reader: Box<dyn AsyncRead + Send + Unpin>,
    tap: Option<Tap>,
) -> futures::future::BoxFuture<'static, Result<Vec<ChunkRef>>> {
    let concurrency = pipe.ctx.config.upload_concurrency;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(1);
    let batches = async move {
        let mut chunker = Chunker::new(reader);
        let (mut batch, mut bytes) = (Vec::new(), 0);
        while let Some(chunk) = chunker.next_chunk().await? {
            if let Some(tap) = &tap {
                tap.send(chunk.clone()).await;
            }
            bytes += chunk.len();
            batch.push(chunk);
            if batch.len() >= BATCH_CHUNKS || bytes >= BATCH_BYTES {
                bytes = 0;
                if tx.send(std::mem::take(&mut batch)).await.is_err() {
                    return Ok(()); // the uploads failed; their error is the answer
                }
            }
        }
        if let Some(tap) = tap {
            tap.end().await;
        }
        if !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        Ok::<_, Error>(())
    };
    let stored = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(move |batch| store_batch(pipe.clone(), batch).boxed())
        .buffered(concurrency)
        .try_fold(Vec::new(), |mut refs, batch| async move {
            refs.extend(batch);
            Ok(refs)
        });
    async move {
        let ((), refs) = futures::try_join!(batches, stored)?;
        Ok(refs)
    }
    .boxed()
}

/// Makes sure the region holds every chunk of a batch: ids, one question for the lot, then the
/// missing ones sealed and uploaded in as few calls as the message limit allows.
async fn store_batch(pipe: Arc<Pipe>, plain: Vec<Bytes>) -> Result<Vec<ChunkRef>> {
    let keys = pipe.keys.clone();
    let (ids, plain) = blocking(move || {
        let ids: Vec<ChunkId> = plain.iter().map(|p| keys.chunk_id(p)).collect();
        Ok((ids, plain))
    })
    .await?;
    let have = HaveChunksRequest {
        job_id: pipe.job_id.clone(),
        ids: ids
            .iter()
            .map(|id| Bytes::copy_from_slice(id.as_bytes()))
            .collect(),
    };
    let missing: std::collections::HashSet<Bytes> = pipe
        .ctx
        .coordinators
        .call("HaveChunks", |ch| {
            let req = have.clone();
            async move { client(ch).have_chunks(req).await }
        })
        .await
        .map_err(|s| rpc("asking which chunks the region lacks", s))?
        .into_inner()
        .missing
        .into_iter()
        .collect();
    let mut refs: Vec<ChunkRef> = ids
        .iter()
        .zip(&plain)
        .map(|(id, p)| ChunkRef {
            id: id.as_bytes().to_vec(),
            plain_size: p.len() as u64,
            stored_size: 0,
        })
        .collect();
    let todo: Vec<(usize, ChunkId, Bytes)> = ids
        .iter()
        .zip(plain)
        .enumerate()
        .filter(|(_, (id, _))| missing.contains(id.as_bytes().as_slice()))
        .map(|(i, (id, p))| (i, *id, p))
        .collect();
    let plain_bytes: u64 = refs.iter().map(|r| r.plain_size).sum();
    if !todo.is_empty() {
        let sealed = seal(&pipe, todo).await?;
        let mut call: Vec<(ChunkId, Bytes)> = Vec::new();
        let mut call_bytes = 0;
        for (i, id, bytes) in sealed {
            refs[i].stored_size = bytes.len() as u64;
            if !call.is_empty() && call_bytes + bytes.len() > CALL_BYTES {
                upload(&pipe, std::mem::take(&mut call), call_bytes).await?;
                call_bytes = 0;
            }
            call_bytes += bytes.len();
            call.push((id, bytes));
        }
        upload(&pipe, call, call_bytes).await?;
    }
    pipe.progress.done.fetch_add(plain_bytes, Ordering::Relaxed);
    Ok(refs)
}

/// One `UploadChunks` call (held to the upload rate limit, when one is set).
async fn upload(pipe: &Arc<Pipe>, chunks: Vec<(ChunkId, Bytes)>, bytes: usize) -> Result<()> {
    if let Some(limit) = &pipe.limit {
        limit.take(bytes).await;
    }
    let what = match chunks.as_slice() {
        [(id, _)] => format!("uploading chunk {id}"),
        many => format!("uploading {} chunks", many.len()),
    };
    let req = UploadChunksRequest {
        job_id: pipe.job_id.clone(),
        chunks: chunks
            .into_iter()
            .map(|(id, sealed)| SealedChunk {
                id: Bytes::copy_from_slice(id.as_bytes()),
                sealed,
            })
            .collect(),
    };
    pipe.ctx
        .coordinators
        .call("UploadChunks", |ch| {
            let req = req.clone();
            async move { client(ch).upload_chunks(req).await }
        })
        .await
        .map_err(|s| rpc(&what, s))?;
    Ok(())
}

/// Seals chunks (index, id, plain) on the blocking pool, with this thread's reusable sealer.
async fn seal(
    pipe: &Arc<Pipe>,
    chunks: Vec<(usize, ChunkId, Bytes)>,
) -> Result<Vec<(usize, ChunkId, Bytes)>> {
    let (keys, level) = (pipe.keys.clone(), pipe.level);
    blocking(move || {
        SEALER.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                *slot = Some((level, Sealer::new(Some(level))?));
            }
            let (_, sealer) = slot
                .as_mut()
                .ok_or_else(|| Error::Other("no sealer".into()))?;
            chunks
                .into_iter()
                .map(|(i, id, plain)| {
                    Ok((i, id, Bytes::from(sealer.seal_with_id(&keys, &id, &plain)?)))
                })
                .collect()
        })
    })
    .await
}
