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

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use strongbox_core::chunk::{Header, Opener};
use strongbox_core::ids::ChunkId;
use strongbox_core::keys::ServiceKeys;
use strongbox_core::manifest::{self, PartKind};
use strongbox_proto::v1::{FetchChunkRequest, Job, JobReport};
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::backup::client;
use crate::engines::{self, EngineKind, PartPlan, TableStat};
use crate::error::{Error, Result};

/// Chunks fetched at once per part.
const FETCH_AHEAD: usize = 8;

thread_local! {
    static OPENER: RefCell<Option<Opener>> = const { RefCell::new(None) };
}

/// Runs a restore job: (result JSON, why it failed if verification found a difference).
pub async fn run(agent: &Arc<Agent>, job: &Job) -> Result<(String, Option<String>)> {
    let root = agent.config.data_root.as_ref().ok_or_else(|| {
        Error::Other(format!(
            "host {} has no data_root for restores; set `data_root` in its agent config",
            agent.config.host
        ))
    })?;
    let manifest_id = ChunkId::from_slice(&job.manifest_id)?;
    let sealed = fetch(agent, &job.job_id, manifest_id).await?;
    let (agent2, service) = (agent.clone(), job.service.clone());
    let manifest =
        tokio::task::spawn_blocking(move || manifest::open(&agent2.keyring, &service, &sealed))
            .await
            .map_err(|e| Error::Other(format!("a worker thread failed: {e}")))??;
    let kind = EngineKind::parse(&manifest.engine)
        .ok_or_else(|| Error::Other(format!("backup of unknown engine {:?}", manifest.engine)))?;
    // Keys for every key id of the keyring: chunks name the key they were sealed with.
    let mut keys: HashMap<u32, Arc<ServiceKeys>> = HashMap::new();
    for id in agent.keyring.ids() {
        keys.insert(id, Arc::new(agent.keyring.service_keys(id, &job.service)?));
    }
    let keys = Arc::new(keys);

    let dir = restore_dir(root, &job.job_id);
    if dir.exists() {
        // A restore this agent began before it restarted: start over.
        let _ = engines::teardown(kind, &dir).await;
        std::fs::remove_dir_all(&dir).map_err(|source| Error::Io {
            what: "removing an earlier attempt",
            path: dir.clone(),
            source,
        })?;
    }
    std::fs::create_dir_all(root.join("r")).map_err(|source| Error::Io {
        what: "creating",
        path: root.join("r"),
        source,
    })?;
    let total: u64 = manifest.parts.iter().map(|p| p.plain_size()).sum();
    agent.report(JobReport {
        job_id: job.job_id.clone(),
        state: "running".into(),
        bytes_total: total,
        ..Default::default()
    });
    let mut target = if job.in_place {
        let engine = agent.engine(&job.service)?;
        if engine.kind() != kind {
            return Err(Error::Other(format!(
                "backup of {} is a {} backup, but the service on this host is {}",
                job.service,
                kind.as_str(),
                engine.kind().as_str()
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
        tracing::warn!(service = %job.service, backup = %job.backup_id, "restoring in place: the live data is replaced");
        engine.in_place(&dir).await?
    } else {
        let t = engines::provision(kind, &dir, &agent.config.restore_listen, None, &job.service)
            .await?;
        tracing::info!(dir = %dir.display(), "fresh server provisioned");
        t
    };

    let mut done = 0u64;
    let mut expected: Vec<TableStat> = Vec::new();
    for part in &manifest.parts {
        let plan = PartPlan {
            name: part.name.clone(),
            kind: PartKind::try_from(part.kind).unwrap_or(PartKind::Unspecified),
        };
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(2);
        let reader =
            tokio_util::io::StreamReader::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let ids: Vec<ChunkId> = part
            .chunks
            .iter()
            .map(|c| ChunkId::from_slice(&c.id))
            .collect::<std::result::Result<_, _>>()?;
        let feed = {
            let (agent, job_id, keys) = (agent.clone(), job.job_id.clone(), keys.clone());
            async move {
                let mut opened = futures::stream::iter(ids)
                    .map(|id| {
                        let (agent, job_id, keys) = (agent.clone(), job_id.clone(), keys.clone());
                        async move { fetch_open(&agent, &job_id, &keys, id).await }.boxed()
                    })
                    .buffered(FETCH_AHEAD);
                while let Some(r) = opened.next().await {
                    match r {
                        Ok(plain) => {
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
        done += part.plain_size();
        expected.extend(part.tables.iter().cloned());
        agent.report(JobReport {
            job_id: job.job_id.clone(),
            state: "running".into(),
            bytes_done: done,
            bytes_total: total,
            ..Default::default()
        });
        tracing::info!(part = %part.name, bytes = part.plain_size(), "part loaded");
    }
    target.finish_load().await?;
    let verification = target.verify(&expected).await;
    target.wait_durable().await?;
    let verification = verification?;
    let result = serde_json::json!({
        "connection": target.connection(),
        "verification": verification,
        "backup_created_unix_ms": manifest.created_unix_ms,
        "in_place": job.in_place,
    })
    .to_string();
    if job.in_place {
        // Only spools were there; the restored data is in the live server.
        drop(target);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let failure = (!verification.ok).then(|| {
        format!(
            "verification found differences: {} table(s) differ; engine check: {}",
            verification.mismatches.len(),
            verification.engine_check
        )
    });
    Ok((result, failure))
}

/// The folder of a restore job's server under the data root.
pub fn restore_dir(root: &std::path::Path, job_id: &str) -> std::path::PathBuf {
    let hash = blake3::hash(job_id.as_bytes()).to_hex();
    root.join("r").join(&hash[..12])
}

/// A sealed chunk or manifest, from any coordinator node.
async fn fetch(agent: &Agent, job_id: &str, id: ChunkId) -> Result<Vec<u8>> {
    let req = FetchChunkRequest {
        job_id: job_id.to_string(),
        id: Bytes::copy_from_slice(id.as_bytes()),
    };
    let r = agent
        .coordinators
        .call("FetchChunk", |ch| {
            let req = req.clone();
            async move { client(ch).fetch_chunk(req).await }
        })
        .await
        .map_err(|s| {
            Error::Other(format!(
                "fetching chunk {id}: {} ({:?})",
                s.message(),
                s.code()
            ))
        })?;
    Ok(r.into_inner().sealed.to_vec())
}

async fn fetch_open(
    agent: &Agent,
    job_id: &str,
    keys: &Arc<HashMap<u32, Arc<ServiceKeys>>>,
    id: ChunkId,
) -> Result<Bytes> {
    let sealed = fetch(agent, job_id, id).await?;
    let keys = keys.clone();
    tokio::task::spawn_blocking(move || {
        let header = Header::parse(&sealed)?;
        let k = keys.get(&header.key_id).ok_or_else(|| {
            Error::Core(strongbox_core::Error::UnknownKeyId {
                id: header.key_id,
                have: keys
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        })?;
        OPENER.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Opener::new()?);
            }
            let opener = slot
                .as_mut()
                .ok_or_else(|| Error::Other("no opener".into()))?;
            Ok(Bytes::from(opener.open(k, &id, &sealed)?))
        })
    })
    .await
    .map_err(|e| Error::Other(format!("a worker thread failed: {e}")))?
}
