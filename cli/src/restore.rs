//! `strongbox restore list|show`, and what every command that starts a job shares: waiting for a
//! job (polling `GetJob`), printing a job, and reading a restore's result (the new server's
//! connection details and the verification).
//!
//! Invariants: waiting is a polling loop with a deadline (every 500 ms, progress on stderr);
//! a restore counts as good only if its job completed AND its verification says ok; the result
//! holds a password FILE path, never a password, so printing it is safe.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};
use strongbox_proto::v1::{
    Connection, Engine, FailureClass, GetJobRequest, JobInfo, JobKind, JobState, ListJobsRequest,
    RestoreOutcome, StopRestoreRequest,
};

use crate::connect::{Api, ConnectArgs};
use crate::output::{self, ago, size, Output};
use crate::progress::{self, Progress};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Restore jobs, newest first.
    List {
        /// Only restores of this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// One restore job: state, target host, connection details, verification, reason.
    Show {
        /// The job id (from `backup restore` or `restore list`).
        job: String,
    },
    /// Stop the server a restore made on a spare, and remove its folder.
    Stop {
        /// The restore job id (from `restore list`).
        job: String,
        /// Keep the server's folder (its data files) after stopping it.
        #[arg(long)]
        keep_files: bool,
        /// Return at once instead of waiting until the server is stopped.
        #[arg(long)]
        no_wait: bool,
    },
}

/// Where the server a restore made runs, for `restore list`: `HOST:PORT` (or the SQLite
/// file), "stopped", or "-" (in place, or nothing was made).
pub fn server_label(j: &JobInfo) -> String {
    if j.kind() != JobKind::Restore || j.in_place || j.state() == JobState::Failed {
        return "-".into();
    }
    if j.server_stopped_unix_ms != 0 {
        return format!("stopped {}", ago(j.server_stopped_unix_ms));
    }
    match connection(j) {
        Some(c) if !c.host.is_empty() => format!("running on {} {}:{}", j.host, c.host, c.port),
        Some(c) if !c.data_dir.is_empty() => format!("file on {}: {}", j.host, c.data_dir),
        _ if j.state() == JobState::Completed => format!("running on {}", j.host),
        _ => "-".into(),
    }
}

/// How to reach the server a restore job made, once its agent reported it.
pub fn connection(j: &JobInfo) -> Option<&Connection> {
    j.restore.as_ref().and_then(|r| r.connection.as_ref())
}

/// What a restore job came to: `verified`, `restored_with_errors` (a server was delivered, but
/// objects or rows are missing or the engine's check failed), `failed` (no server was
/// delivered), or `-` while it runs.
pub fn outcome(j: &JobInfo) -> String {
    RestoreOutcome::of_job(j.state(), j.restore.as_ref())
        .map_or_else(|| "-".to_string(), |o| o.to_string())
}

/// A job as JSON for scripts (its view, `views::job`).
pub fn job_json(j: &JobInfo) -> Value {
    serde_json::to_value(crate::views::job::JobView::from(j)).unwrap_or(Value::Null)
}

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

/// The key/value lines of a restore job, for people.
pub fn restore_fields(j: &JobInfo) -> Vec<(&'static str, Value)> {
    let mut f = vec![("job", json!(j.id)), ("state", json!(j.state()))];
    if !j.phase.is_empty() {
        f.push(("doing", json!(j.phase)));
    }
    if j.failure() != FailureClass::Unspecified {
        f.push(("failed in", json!(j.failure())));
    }
    f.extend([
        ("service", json!(j.service)),
        ("backup", json!(j.backup_id)),
        ("target host", json!(j.host)),
        ("server", json!(server_label(j))),
        ("created", json!(ago(j.created_unix_ms))),
        ("updated", json!(ago(j.updated_unix_ms))),
        ("requested by", json!(j.requested_by)),
    ]);
    if j.bytes_total > 0 || j.bytes_done > 0 {
        f.push((
            "transferred",
            json!(format!("{} of {}", size(j.bytes_done), size(j.bytes_total))),
        ));
    }
    if !j.reason.is_empty() {
        f.push(("reason", json!(j.reason)));
    }
    if let Some(r) = &j.restore {
        if let Some(c) = &r.connection {
            f.push(("engine", json!(c.engine())));
            f.push(("host", json!(c.host)));
            if c.port != 0 {
                f.push(("port", json!(c.port)));
            }
            if !c.user.is_empty() {
                f.push(("user", json!(c.user)));
            }
            f.push((
                "password file",
                json!((!c.password_file.is_empty()).then_some(&c.password_file)),
            ));
            f.push(("data dir", json!(c.data_dir)));
        }
        if let Some(v) = &r.verification {
            f.push(("tables checked", json!(v.tables_checked)));
            f.push(("rows checked", json!(v.rows_checked)));
            let mism: Vec<String> = v
                .mismatches
                .iter()
                .map(|m| {
                    format!(
                        "{}: expected {} rows, found {}",
                        crate::backup::printable(&m.table),
                        m.expected_rows,
                        m.found_rows
                    )
                })
                .collect();
            f.push((
                "mismatches",
                if mism.is_empty() {
                    json!("none")
                } else {
                    json!(mism)
                },
            ));
            f.push(("engine check", json!(v.engine_check)));
            if !v.failed_objects.is_empty() {
                let lost: Vec<String> = v
                    .failed_objects
                    .iter()
                    .map(|o| {
                        // The error's first line; JSON has all of it, statement included.
                        format!(
                            "{}: {}",
                            crate::backup::printable(&o.name),
                            crate::backup::printable(o.reason.lines().next().unwrap_or(""))
                        )
                    })
                    .collect();
                f.push(("not restored", json!(lost)));
            }
            f.push(("verified", json!(if v.ok { "ok" } else { "FAILED" })));
            f.push(("outcome", json!(outcome(j).replace('_', " "))));
        }
        if let Some(p) = &r.phases {
            let ms = |m: u64| output::duration(Duration::from_millis(m));
            f.push((
                "took",
                json!(format!(
                    "manifest {}, provision {}, load {}, verify {}, flush {}",
                    ms(p.fetch_manifest_ms),
                    ms(p.provision_ms),
                    ms(p.load_ms),
                    ms(p.verify_ms),
                    ms(p.flush_ms)
                )),
            ));
        }
    }
    f
}

/// How a client connects to a restored server, as a command line (no secrets: the password
/// stays in its file).
pub fn connect_hint(c: &Connection) -> Option<String> {
    use crate::backup::shell_quote as q;
    // A fresh server's password is in a file the restore wrote; an in-place restore's server
    // keeps the credentials its users have (no placeholder to fill in).
    let env = |var: &str| {
        if c.password_file.is_empty() {
            String::new()
        } else {
            format!("{var}=\"$(cat {})\" ", q(&c.password_file))
        }
    };
    let user = |default: &str| q(if c.user.is_empty() { default } else { &c.user });
    match c.engine() {
        Engine::Postgres => Some(format!(
            "{}psql -h {} -p {} -U {} -d postgres",
            env("PGPASSWORD"),
            q(&c.host),
            c.port,
            user("postgres")
        )),
        Engine::Mysql => Some(format!(
            "{}mariadb -h {} -P {} -u {}",
            env("MYSQL_PWD"),
            q(&c.host),
            c.port,
            user("root")
        )),
        Engine::Sqlite => Some(format!("sqlite3 {}", q(&c.data_dir))),
        Engine::Unspecified => None,
    }
}

/// Prints a finished (or running) restore job, and fails (exit 1) if it failed or its
/// verification did not hold.
pub fn report_restore(j: &JobInfo, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => output.json(&job_json(j)),
        Output::Table => print_restore(j),
    }
    check_restore(j)
}

/// A restore job's fields for people, and how to connect while its server runs.
fn print_restore(j: &JobInfo) {
    output::print_fields(&restore_fields(j));
    if let Some(c) = connection(j).filter(|_| j.server_stopped_unix_ms == 0) {
        if let Some(h) = connect_hint(c) {
            println!("\nConnect with:\n  {h}");
        }
    }
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
        Command::List { service } => {
            let mut jobs = api
                .call("ListJobs", |mut c| {
                    let service = service.clone().unwrap_or_default();
                    async move {
                        c.list_jobs(ListJobsRequest {
                            kind: JobKind::Restore.into(),
                            service,
                        })
                        .await
                    }
                })
                .await?
                .jobs;
            jobs.sort_by_key(|j| std::cmp::Reverse(j.created_unix_ms));
            match output {
                Output::Json => output.json(&Value::Array(jobs.iter().map(job_json).collect())),
                Output::Table => {
                    if jobs.is_empty() {
                        println!("No restores yet. Start one with `strongbox backup restore BACKUP_ID --to-host HOST`.");
                        return Ok(());
                    }
                    let mut t = output::table([
                        "created",
                        "id",
                        "service",
                        "backup",
                        "target host",
                        "state",
                        "outcome",
                        "server",
                    ]);
                    for j in &jobs {
                        let verified = outcome(j).replace('_', " ");
                        t.add_row([
                            ago(j.created_unix_ms),
                            j.id.clone(),
                            j.service.clone(),
                            j.backup_id.clone(),
                            j.host.clone(),
                            j.state().to_string(),
                            verified.to_string(),
                            server_label(j),
                        ]);
                    }
                    println!("{t}");
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
                Output::Json => output.json(&job_json(&done)),
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
            match output {
                Output::Json => output.json(&job_json(&j)),
                Output::Table => print_restore(&j),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_proto::v1::{FailedObject, RestoreResult, TableMismatch, Verification};

    #[test]
    fn a_restore_result_reads_as_json_and_a_connect_hint() {
        let c = Connection {
            engine: Engine::Postgres.into(),
            host: "127.0.0.1".into(),
            port: 5433,
            user: "postgres".into(),
            password_file: "/x/superuser.password".into(),
            data_dir: "/x/data".into(),
        };
        let j = JobInfo {
            kind: JobKind::Restore.into(),
            state: JobState::Failed.into(),
            restore: Some(RestoreResult {
                connection: Some(c.clone()),
                verification: Some(Verification {
                    mismatches: vec![TableMismatch {
                        table: "t".into(),
                        expected_rows: 10,
                        found_rows: 9,
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = job_json(&j);
        assert_eq!(json["result"]["connection"]["engine"], "postgres");
        assert_eq!(json["result"]["connection"]["port"], 5433);
        assert_eq!(
            json["result"]["connection"]["password_file"],
            "/x/superuser.password"
        );
        assert_eq!(
            json["result"]["verification"]["mismatches"][0]["found_rows"],
            9
        );
        assert_eq!(json["state"], "failed");
        assert_eq!(json["kind"], "restore");
        assert!(connect_hint(&c).is_some_and(|h| h.contains("cat /x/superuser.password")));
        // In place: the server keeps its users' credentials; no placeholder to fill in.
        let in_place = Connection {
            password_file: String::new(),
            ..c
        };
        let hint = connect_hint(&in_place).expect("a hint");
        assert!(
            !hint.contains("PASSWORD") && hint.starts_with("psql -h"),
            "{hint}"
        );
    }

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
    }

    #[test]
    fn outcomes_tell_verified_from_restored_with_errors_from_failed() {
        let job = |state: JobState, result: Option<RestoreResult>| JobInfo {
            id: "j1".into(),
            kind: JobKind::Restore.into(),
            state: state.into(),
            restore: result,
            ..Default::default()
        };
        let lost = RestoreResult {
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
        };
        let good = RestoreResult {
            verification: Some(Verification {
                ok: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(outcome(&job(JobState::Completed, Some(good))), "verified");
        assert_eq!(
            outcome(&job(JobState::Failed, Some(lost.clone()))),
            "restored_with_errors"
        );
        assert_eq!(outcome(&job(JobState::Failed, None)), "failed");
        assert_eq!(outcome(&job(JobState::Running, None)), "-");
        let j = job(JobState::Failed, Some(lost));
        let err = check_restore(&j).unwrap_err().to_string();
        assert!(err.contains("RESTORED WITH ERRORS"), "{err}");
        let fields = restore_fields(&j);
        let not_restored = fields
            .iter()
            .find(|(k, _)| *k == "not restored")
            .expect("listed");
        assert!(
            not_restored.1.to_string().contains("word_stats"),
            "{fields:?}"
        );
        assert_eq!(job_json(&j)["outcome"], "restored_with_errors");
    }
}
