//! The running agent: its configuration, keys, engines and coordinator connections, and the
//! jobs it has taken on.
//!
//! Invariants: a job id starts at most once per process (a job delivered again after a
//! reconnect is ignored while it runs or after it ended); every job ends with a final report
//! (a backup's success is its commit), kept and sent again after each reconnect until it is
//! old, so no outcome is lost with a broken session. At start the data root is made ready
//! for restores, private (`restore::prepare_root`), and restores an earlier version left open
//! to other users are named in a warning.
//!
//! On SIGTERM ([`Agent::stop`]) every running job is aborted (its child processes are
//! `kill_on_drop`, so they die with it) and reported failed as interrupted, so the coordinator
//! can retry it at once instead of waiting for the agent to come back (issue 14, fault 2); the
//! session then delivers those reports before the process ends. A restore interrupted this way
//! may leave the server it was making, or an in-place target part loaded: its report says so.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strongbox_core::connect::Coordinators;
use strongbox_core::keys::Keyring;
use strongbox_proto::v1::{FailureClass, Job, JobKind, JobReport, JobState, Member, MemberRole};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::failure::{self, Failed};
use crate::job::JobCtx;
use strongbox_engines::{self as engines, Engine};

/// How long a final report is sent again after reconnects.
const KEEP_FINAL: Duration = Duration::from_secs(600);

pub struct Agent {
    pub config: Arc<Config>,
    pub keyring: Arc<Keyring>,
    pub engines: HashMap<String, Arc<dyn Engine>>,
    pub coordinators: Arc<Coordinators>,
    reports: mpsc::UnboundedSender<JobReport>,
    started: Mutex<HashSet<String>>,
    finals: Mutex<Vec<(Instant, JobReport)>>,
    /// Jobs running now, to abort on a stop.
    running: Mutex<HashMap<String, (Job, tokio::task::AbortHandle)>>,
    /// Set once the agent stops: the session delivers what is queued and ends.
    stopping: watch::Sender<bool>,
}

/// Makes the data root ready for restores and warns about restores left open to other users.
/// A failure is only logged: backups need no data root, and a restore tries again and fails
/// with the reason.
fn check_data_root(root: &Path) {
    if let Err(e) = crate::restore::prepare_root(root) {
        tracing::warn!(data_root = %root.display(), error = %e, "the data root is not ready for restores");
        return;
    }
    for (dir, mode) in crate::restore::open_restores(root) {
        tracing::warn!(
            folder = %dir.display(),
            mode = %format!("{mode:04o}"),
            "a restore made before restores were kept private is open to other users: \
             `chmod -R go-rwx` it, or remove it once it is no longer needed"
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agent {
    /// Builds the agent; the receiver carries its job reports to the session.
    pub fn new(config: Config) -> Result<(Arc<Agent>, mpsc::UnboundedReceiver<JobReport>)> {
        let keyring = Keyring::load(&config.key_file)?;
        if let Some(root) = &config.data_root {
            check_data_root(root);
        }
        let coordinators =
            Coordinators::new(&config.tls, &config.coordinators, Duration::from_secs(120))?;
        let mut engines = HashMap::new();
        for spec in &config.services {
            engines.insert(spec.name.clone(), Arc::from(engines::open(spec.clone())?));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((
            Arc::new(Agent {
                config: Arc::new(config),
                keyring: Arc::new(keyring),
                engines,
                coordinators: Arc::new(coordinators),
                reports: tx,
                started: Mutex::default(),
                finals: Mutex::default(),
                running: Mutex::default(),
                stopping: watch::Sender::new(false),
            }),
            rx,
        ))
    }

    /// Every configured member with its current role and health.
    pub async fn members(&self) -> Vec<Member> {
        let mut out = Vec::new();
        for (name, engine) in &self.engines {
            let m = match engine.probe().await {
                Ok(p) => Member {
                    service: name.clone(),
                    engine: engine.kind().wire().into(),
                    role: p.role.wire().into(),
                    healthy: p.healthy,
                    engine_version: p.version,
                },
                Err(e) => {
                    tracing::warn!(service = %name, error = %e, "probe failed");
                    Member {
                        service: name.clone(),
                        engine: engine.kind().wire().into(),
                        role: MemberRole::Standalone.into(),
                        healthy: false,
                        engine_version: String::new(),
                    }
                }
            };
            out.push(m);
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }

    /// Sends a progress report (best effort).
    /// What a pipeline running `job` gets from the agent.
    pub fn job_ctx(&self, job: Job) -> JobCtx {
        JobCtx {
            engine: self.engines.get(&job.service).cloned(),
            job,
            keyring: self.keyring.clone(),
            coordinators: self.coordinators.clone(),
            config: self.config.clone(),
            reports: self.reports.clone(),
        }
    }

    pub fn report(&self, report: JobReport) {
        let _ = self.reports.send(report);
    }

    /// Sends a final report, and keeps it to send again after a reconnect.
    pub fn report_final(&self, report: JobReport) {
        lock(&self.finals).push((Instant::now(), report.clone()));
        let _ = self.reports.send(report);
    }

    /// Final reports to send again on a new session.
    pub fn recent_finals(&self) -> Vec<JobReport> {
        let mut finals = lock(&self.finals);
        finals.retain(|(at, _)| at.elapsed() < KEEP_FINAL);
        finals.iter().map(|(_, r)| r.clone()).collect()
    }

    /// Whether the agent is stopping (see [`Agent::stop`]).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Stops the agent: every running job is aborted and reported failed as interrupted (the
    /// reports queued for the session), then the session is told to deliver them and end.
    /// Returns how many jobs were interrupted.
    pub fn stop(&self) -> usize {
        let running: Vec<(Job, tokio::task::AbortHandle)> =
            lock(&self.running).drain().map(|(_, v)| v).collect();
        for (job, task) in &running {
            task.abort();
            tracing::warn!(job = %job.job_id, kind = %job.kind(), service = %job.service, "job interrupted: the agent is stopping");
            let mut reason = format!(
                "interrupted: the agent of host {} stopped while the {} ran; start it again",
                self.config.host,
                job.kind()
            );
            if job.kind() == JobKind::Restore {
                reason.push_str(if job.in_place {
                    " (the target server may be part loaded: restore it again before using it)"
                } else {
                    " (a server it was making may be left under the data root)"
                });
            }
            self.report_final(JobReport {
                job_id: job.job_id.clone(),
                state: JobState::Failed.into(),
                failure: FailureClass::Interrupted.into(),
                reason,
                ..Default::default()
            });
        }
        self.stopping.send_replace(true);
        running.len()
    }

    /// Starts `job` unless this process started it before.
    pub fn start_job(self: &Arc<Self>, job: Job) {
        if *self.stopping.borrow() || !lock(&self.started).insert(job.job_id.clone()) {
            return;
        }
        let agent = self.clone();
        let record = job.clone();
        let span = tracing::info_span!("job", job = %job.job_id, kind = %job.kind(), service = %job.service, backup = %job.backup_id);
        let work = async move {
            tracing::info!("job started");
            let started = Instant::now();
            let other = |e: Error| Failed::new(FailureClass::Other, e);
            let outcome: std::result::Result<JobReport, Failed> = match job.kind() {
                JobKind::Backup => crate::backup::run(&agent.job_ctx(job.clone()))
                    .await
                    .map(|()| JobReport::default())
                    .map_err(|e| Failed::new(failure::of_backup(&e), e)),
                // A restore onto a fresh server goes only to a host its own config makes a
                // spare, whatever a coordinator says: a database host never takes one.
                JobKind::Restore if !job.in_place && !agent.config.spare => Err(Failed::new(
                    FailureClass::Provision,
                    Error::Other(format!(
                        "host {} is not a spare (its agent config has `spare = false`); \
                             restores onto fresh servers go to spares",
                        agent.config.host
                    )),
                )),
                JobKind::Restore => {
                    crate::restore::run(&agent.job_ctx(job.clone())).await.map(
                        |(result, differs)| JobReport {
                            restore: Some(result),
                            // Delivered, but with errors: the job fails (a drill or an alert
                            // counts it), and its result says what was found.
                            failure: if differs.is_some() {
                                FailureClass::Verify.into()
                            } else {
                                FailureClass::Unspecified.into()
                            },
                            reason: differs.unwrap_or_default(),
                            ..Default::default()
                        },
                    )
                }
                JobKind::Stop => crate::restore::stop(&agent.job_ctx(job.clone()))
                    .await
                    .map(|result| JobReport {
                        stop: Some(result),
                        ..Default::default()
                    })
                    .map_err(other),
                JobKind::Unspecified => Err(other(Error::Other(
                    "a job of no kind: this agent is older than its coordinators".into(),
                ))),
            };
            let secs = started.elapsed().as_secs_f64();
            let report = match outcome {
                Ok(_) if job.kind() == JobKind::Backup => {
                    tracing::info!(secs, "job completed");
                    return; // its commit completed it
                }
                Ok(report) if report.failure == 0 => JobReport {
                    state: JobState::Completed.into(),
                    ..report
                },
                Ok(report) => JobReport {
                    state: JobState::Failed.into(),
                    ..report
                },
                Err(f) => JobReport {
                    state: JobState::Failed.into(),
                    failure: f.class.into(),
                    reason: f.error.to_string(),
                    ..Default::default()
                },
            };
            if report.state() == JobState::Failed {
                tracing::error!(secs, reason = %report.reason, class = %report.failure(), "job failed");
            } else {
                tracing::info!(secs, "job completed");
            }
            agent.report_final(JobReport {
                job_id: job.job_id.clone(),
                ..report
            });
        };
        let agent = self.clone();
        let id = record.job_id.clone();
        let work = async move {
            work.await;
            lock(&agent.running).remove(&id);
        };
        // The map is held while the task starts, so the task's own removal comes after this
        // insert.
        let mut running = lock(&self.running);
        let task = tokio::spawn(tracing::Instrument::instrument(work, span));
        running.insert(record.job_id.clone(), (record, task.abort_handle()));
    }
}
