//! `strongbox restore list|show`, and what every command that starts a job shares: waiting for a
//! job (polling `GetJob`), printing a job, and reading a restore's result (the new server's
//! connection details and the verification).
//!
//! Invariants: waiting is a polling loop with a deadline (every 500 ms, progress on stderr);
//! a restore counts as good only if its job completed AND its verification says ok; the result
//! holds a password FILE path, never a password, so printing it is safe.

use crate::grammar::restore::*;
use std::time::{Duration, Instant};

use anyhow::bail;
use strongbox_proto::v1::{
    GetJobRequest, JobInfo, JobKind, JobState, ListJobsRequest, PageRequest, RestoreOutcome,
    StopRestoreRequest,
};

use crate::commands::pages::{print_list, Fetched};
use crate::connect::Api;
use crate::grammar::ConnectArgs;
use crate::output::{self, size, Output};
use crate::progress::{self, Progress};
use crate::views::job::{self as view, JobView};

/// Polls job `id` every 500 ms until it completed or failed, or `timeout` passed. Shows a
/// progress bar on a terminal; without one (table mode) prints each change of state to stderr.
pub async fn wait_job(
    api: &Api,
    id: &str,
    output: Output,
    timeout: Duration,
) -> anyhow::Result<JobInfo> {
    let start = Instant::now();
    let bar = Progress::bytes(output, 0, &format!("job {id}: pending"));
    let draw = progress::enabled(output);
    let mut last_state = String::new();
    loop {
        let job = api
            .call("GetJob", |mut c| {
                let id = id.to_string();
                async move { c.get_job(GetJobRequest { id }).await }
            })
            .await?;
        bar.set_total(job.bytes_total);
        // A finished job's last report carries no bytes: show it whole.
        bar.set(if job.state() == JobState::Completed {
            job.bytes_total.max(job.bytes_done)
        } else {
            job.bytes_done
        });
        // What it is doing, as its agent last said (`loading shop`, `verifying`).
        let doing = if job.phase.is_empty() {
            job.state().to_string()
        } else {
            format!("{}: {}", job.state(), job.phase)
        };
        if doing != last_state {
            bar.message(&format!("job {id}: {doing}"));
            if !draw {
                let done = if job.bytes_done > 0 {
                    format!(", {} done", size(job.bytes_done))
                } else {
                    String::new()
                };
                output.note(&format!("job {id}: {doing}{done}"));
            }
            last_state = doing;
        }
        if job.state().is_final() {
            bar.finish();
            return Ok(job);
        }
        if start.elapsed() > timeout {
            bar.finish();
            let follow = match job.kind() {
                JobKind::Backup => format!("`strongbox backup list {}`", job.service),
                _ => format!("`strongbox restore show {id}`"),
            };
            bail!(
                "job {id} is still {} after {}; it goes on in the region: follow it with {follow}",
                job.state(),
                output::duration(timeout),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints a finished (or running) restore job, and fails (exit 1) if it failed or its
/// verification did not hold.
pub fn report_restore(j: &JobInfo, output: Output) -> anyhow::Result<()> {
    let view = JobView::from(j);
    match output {
        Output::Json => output.json(&view),
        Output::Table => view.print_restore(),
    }
    check_restore(j)
}

/// Ok only for a completed restore whose verification holds.
pub fn check_restore(j: &JobInfo) -> anyhow::Result<()> {
    if RestoreOutcome::of_job(j.state(), j.restore.as_ref())
        == Some(RestoreOutcome::RestoredWithErrors)
    {
        bail!(
            "restore job {} RESTORED WITH ERRORS ({}): the server on {} holds what could be \
             loaded, but objects or rows are missing or the engine's check failed (see \
             \"not restored\", mismatches and engine check above); it is left running for \
             inspection",
            j.id,
            if j.reason.is_empty() {
                "verification did not hold"
            } else {
                &j.reason
            },
            j.host
        );
    }
    match j.state() {
        JobState::Failed => bail!(
            "restore job {} failed: {} (see the target agent's log on {}; the backup itself is untouched: retry with `strongbox backup restore {}`)",
            j.id,
            if j.reason.is_empty() { "no reason given" } else { &j.reason },
            j.host,
            j.backup_id
        ),
        JobState::Completed => match &j.restore {
            Some(r) if r.verification.as_ref().is_some_and(|v| v.ok) => Ok(()),
            Some(r) if r.verification.is_some() => bail!(
                "restore job {} completed but its verification FAILED (see mismatches and engine check above); the restored server is left running for inspection",
                j.id
            ),
            _ => bail!(
                "restore job {} completed without a verification result; check the target agent's log on {}",
                j.id,
                j.host
            ),
        },
        other => bail!("restore job {} is still {other}", j.id),
    }
}

pub async fn run(cmd: Command, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        Command::List {
            service,
            running,
            page,
        } => {
            let service = service.unwrap_or_default();
            if !service.is_empty() {
                crate::commands::service::check_known(&api, &service).await?;
            }
            let list = |p: PageRequest, server_running: bool| {
                let api = &api;
                let service = service.clone();
                async move {
                    let r = api
                        .call("ListJobs", |mut c| {
                            let req = ListJobsRequest {
                                kind: JobKind::Restore.into(),
                                service: service.clone(),
                                page: Some(p.clone()),
                                server_running,
                            };
                            async move { c.list_jobs(req).await }
                        })
                        .await?;
                    Ok(Fetched {
                        items: r.jobs,
                        next: r.next_page_token,
                    })
                }
            };
            let of = if service.is_empty() {
                String::new()
            } else {
                format!(" of {service}")
            };
            let mut shown = std::collections::HashSet::new();
            let walked = print_list(
                output,
                if running {
                    None
                } else {
                    page.wanted(output == Output::Json)
                },
                |p| list(p, running),
                |printer, jobs| {
                    shown.extend(jobs.iter().map(|j| j.id.clone()));
                    let views: Vec<JobView<'_>> = jobs.iter().map(JobView::from).collect();
                    printer.page(&views, |v| view::restore_table(v));
                },
                &if running {
                    format!("No restored server{of} runs now.")
                } else {
                    format!(
                        "No restores{of} yet. Start one with `strongbox backup restore BACKUP_ID --to-host HOST`."
                    )
                },
                "restores, newest first",
            )
            .await?;
            // Servers still running must not hide behind newer stopped restores.
            if !running && walked.more {
                let all_running = list(PageRequest::default(), true).await?.items;
                let hidden = all_running
                    .iter()
                    .filter(|j| !shown.contains(&j.id))
                    .count();
                if hidden > 0 {
                    eprintln!(
                        "{hidden} restored server(s) still run and are not shown: `strongbox restore list --running`"
                    );
                }
            }
        }
        Command::Stop {
            job,
            keep_files,
            no_wait,
        } => {
            let stop = api
                .call("StopRestore", |mut c| {
                    let job_id = job.clone();
                    async move {
                        c.stop_restore(StopRestoreRequest { job_id, keep_files })
                            .await
                    }
                })
                .await?;
            output.note(&format!(
                "job {}: stopping the server of restore {job} on {}",
                stop.id, stop.host
            ));
            let done = if no_wait {
                stop
            } else {
                let done = wait_job(&api, &stop.id, output, Duration::from_secs(300)).await?;
                if done.state() != JobState::Completed {
                    anyhow::bail!(
                        "stopping the server of restore {job} failed: {}",
                        done.reason
                    );
                }
                done
            };
            match output {
                Output::Json => output.json(&JobView::from(&done)),
                Output::Table => {
                    if done.state() == JobState::Completed {
                        println!(
                            "The server of restore {job} on {} is stopped{}.",
                            done.host,
                            if keep_files {
                                "; its files are kept"
                            } else {
                                " and its folder removed"
                            }
                        );
                    } else {
                        println!(
                            "Job {} is {}; `strongbox restore show {job}` follows it.",
                            done.id,
                            done.state()
                        );
                    }
                }
            }
        }
        Command::Show { job } => {
            let j = api
                .call("GetJob", |mut c| {
                    let id = job.clone();
                    async move { c.get_job(GetJobRequest { id }).await }
                })
                .await?;
            if j.kind() != JobKind::Restore {
                bail!(
                    "job {} is a {} job, not a restore: `strongbox backup list {}` shows it",
                    j.id,
                    j.kind(),
                    j.service
                );
            }
            let view = JobView::from(&j);
            match output {
                Output::Json => output.json(&view),
                Output::Table => view.print_restore(),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_proto::v1::{FailedObject, RestoreResult, Verification};

    #[test]
    fn a_restore_counts_only_when_verified() {
        let verified = |ok: bool| {
            Some(RestoreResult {
                verification: Some(Verification {
                    ok,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let mut j = JobInfo {
            id: "j1".into(),
            state: JobState::Completed.into(),
            restore: verified(true),
            ..Default::default()
        };
        assert!(check_restore(&j).is_ok());
        j.restore = verified(false);
        assert!(check_restore(&j).is_err());
        j.restore = None;
        assert!(
            check_restore(&j).is_err(),
            "no verification: not a good restore"
        );
        j.state = JobState::Failed.into();
        j.reason = "disk full".into();
        let e = check_restore(&j).expect_err("failed");
        assert!(e.to_string().contains("disk full"));
        // A server was delivered, but objects are missing: an error that says so.
        j.restore = Some(RestoreResult {
            outcome: RestoreOutcome::RestoredWithErrors.into(),
            verification: Some(Verification {
                ok: false,
                failed_objects: vec![FailedObject {
                    name: "shop: MATERIALIZED VIEW word_stats".into(),
                    reason: "relation does not exist".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = check_restore(&j)
            .expect_err("restored with errors")
            .to_string();
        assert!(err.contains("RESTORED WITH ERRORS"), "{err}");
    }
}
