//! A job as scripts see it (`restore show`, `restore list`, `backup create --wait`, the jobs
//! `dev` ran): its state and, for a restore, what it delivered.

use serde::Serialize;
use strongbox_proto::v1::{
    BackupKind, Connection, DatabaseVerification, Engine, FailureClass, JobInfo, JobKind, JobState,
    RestoreOutcome, RestoreResult, StopResult,
};

use super::rfc3339;
use crate::output::{self, printable, shell_quote, Fields};

#[derive(Serialize)]
pub struct JobView<'a> {
    pub id: &'a str,
    pub kind: JobKind,
    pub service: &'a str,
    pub host: &'a str,
    pub backup_id: &'a str,
    pub state: JobState,
    pub failure: FailureClass,
    pub reason: &'a str,
    pub created_unix_ms: u64,
    pub created: Option<String>,
    pub updated_unix_ms: u64,
    pub updated: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// `role:name` of who asked.
    pub requested_by: &'a str,
    /// A restore's result (connection, verification, phase times) or a stop's; `null` while
    /// there is none.
    pub result: Option<JobResult<'a>>,
    pub backup_kind: BackupKind,
    pub slot_unix_ms: u64,
    pub slot: Option<String>,
    pub attempt: u32,
    pub in_place: bool,
    pub after_job: &'a str,
    /// What it is doing, as its agent last said (`loading shop`); empty once it ended.
    pub phase: &'a str,
    /// A restore: verified, restored_with_errors or failed once it ended; `null` otherwise.
    pub outcome: Option<RestoreOutcome>,
    /// A restore onto a spare: `running` or `stopped` (`null`: in place, failed, or no
    /// server yet); where it runs is `result.connection`, when it stopped
    /// `server_stopped_unix_ms`.
    pub server: Option<ServerState>,
    /// Where it runs, for people (`running on spare-1 127.0.0.1:5433`, `stopped 3 minutes
    /// ago`, `-`).
    #[serde(skip)]
    pub server_label: String,
    pub server_stopped_unix_ms: u64,
    pub target_job: &'a str,
}

/// What a finished job delivered.
#[derive(Serialize)]
#[serde(untagged)]
pub enum JobResult<'a> {
    Restore(&'a RestoreResult),
    Stop(&'a StopResult),
}

impl<'a> From<&'a JobInfo> for JobView<'a> {
    fn from(j: &'a JobInfo) -> Self {
        let restore = j.kind() == JobKind::Restore;
        JobView {
            id: &j.id,
            kind: j.kind(),
            service: &j.service,
            host: &j.host,
            backup_id: &j.backup_id,
            state: j.state(),
            failure: j.failure(),
            reason: &j.reason,
            created_unix_ms: j.created_unix_ms,
            created: rfc3339(j.created_unix_ms),
            updated_unix_ms: j.updated_unix_ms,
            updated: rfc3339(j.updated_unix_ms),
            bytes_done: j.bytes_done,
            bytes_total: j.bytes_total,
            requested_by: &j.requested_by,
            result: match (&j.restore, &j.stop) {
                (Some(r), _) => Some(JobResult::Restore(r)),
                (None, Some(s)) => Some(JobResult::Stop(s)),
                (None, None) => None,
            },
            backup_kind: j.backup_kind(),
            slot_unix_ms: j.slot_unix_ms,
            slot: rfc3339(j.slot_unix_ms),
            attempt: j.attempt,
            in_place: j.in_place,
            after_job: &j.after_job,
            phase: &j.phase,
            outcome: RestoreOutcome::of_job(j.state(), j.restore.as_ref()).filter(|_| restore),
            server: restore.then(|| server_state(j)).flatten(),
            server_label: server_label(j),
            server_stopped_unix_ms: j.server_stopped_unix_ms,
            target_job: &j.target_job,
        }
    }
}

/// Whether a restore's server runs, for scripts.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Running,
    Stopped,
}

/// The state of the server a restore made, if it made one (not in place, not failed).
fn server_state(j: &JobInfo) -> Option<ServerState> {
    if j.kind() != JobKind::Restore || j.in_place || j.state() == JobState::Failed {
        return None;
    }
    if j.server_stopped_unix_ms != 0 {
        return Some(ServerState::Stopped);
    }
    let made = connection(j).is_some() || j.state() == JobState::Completed;
    made.then_some(ServerState::Running)
}

/// Where the server a restore made runs, for `restore list`: `HOST:PORT` (or the SQLite
/// file), "stopped", or "-" (in place, or nothing was made).
pub fn server_label(j: &JobInfo) -> String {
    if j.kind() != JobKind::Restore || j.in_place || j.state() == JobState::Failed {
        return "-".into();
    }
    if j.server_stopped_unix_ms != 0 {
        return format!("stopped {}", output::ago(j.server_stopped_unix_ms));
    }
    match connection(j) {
        // An SQLite "server" is its file.
        Some(c) if c.engine() == Engine::Sqlite => format!("file on {}: {}", j.host, c.data_dir),
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

impl JobView<'_> {
    /// A restore's result, once its agent reported one.
    pub fn restore(&self) -> Option<&RestoreResult> {
        match self.result {
            Some(JobResult::Restore(r)) => Some(r),
            _ => None,
        }
    }

    /// What a restore came to, for people: `verified`, `restored with errors`, `failed`, or
    /// `-` while it runs.
    pub fn outcome_label(&self) -> String {
        self.outcome
            .map_or_else(|| "-".to_string(), |o| o.to_string().replace('_', " "))
    }

    /// The lines of `restore show` (and of a job without a backup) for people: state, what it
    /// does, where its server runs, how to reach it, and what the verification found.
    pub fn fields(&self) -> Fields {
        let mut f = Fields::default();
        f.push("job", self.id);
        f.push("state", self.state.to_string());
        f.push_some("doing", self.phase);
        if self.failure != FailureClass::Unspecified {
            f.push("failed in", self.failure.to_string());
        }
        f.push("service", self.service);
        f.push("backup", self.backup_id);
        f.push("target host", self.host);
        f.push("server", self.server_label.as_str());
        f.push("created", output::ago(self.created_unix_ms));
        f.push("updated", output::ago(self.updated_unix_ms));
        f.push("requested by", self.requested_by);
        if self.bytes_total > 0 || self.bytes_done > 0 {
            f.push(
                "transferred",
                format!(
                    "{} of {}",
                    output::size(self.bytes_done),
                    output::size(self.bytes_total)
                ),
            );
        }
        f.push_some("reason", self.reason);
        let Some(r) = self.restore() else {
            return f;
        };
        if let Some(c) = r
            .connection
            .as_ref()
            .filter(|c| c.engine() == Engine::Sqlite)
        {
            f.push("engine", c.engine().to_string());
            f.push("file", c.data_dir.as_str());
        } else if let Some(c) = &r.connection {
            f.push("engine", c.engine().to_string());
            f.push("host", c.host.as_str());
            if c.port != 0 {
                f.push("port", c.port.to_string());
            }
            f.push_some("user", &c.user);
            f.push(
                "password file",
                if c.password_file.is_empty() {
                    "-"
                } else {
                    &c.password_file
                },
            );
            f.push("data dir", c.data_dir.as_str());
        }
        if let Some(v) = &r.verification {
            f.push("tables checked", v.tables_checked.to_string());
            f.push("rows checked", v.rows_checked.to_string());
            if !v.databases.is_empty() {
                let each: Vec<String> = v.databases.iter().map(database_label).collect();
                f.push("databases", each.join("; "));
            }
            let mismatches: Vec<String> = v
                .mismatches
                .iter()
                .map(|m| {
                    format!(
                        "{}: expected {} rows, found {}",
                        printable(&m.table),
                        m.expected_rows,
                        m.found_rows
                    )
                })
                .collect();
            f.push(
                "mismatches",
                if mismatches.is_empty() {
                    "none".to_string()
                } else {
                    mismatches.join(", ")
                },
            );
            f.push("engine check", v.engine_check.as_str());
            if !v.failed_objects.is_empty() {
                let lost: Vec<String> = v
                    .failed_objects
                    .iter()
                    .map(|o| {
                        // The error's first line; JSON has all of it, statement included.
                        format!(
                            "{}: {}",
                            printable(&o.name),
                            printable(o.reason.lines().next().unwrap_or(""))
                        )
                    })
                    .collect();
                f.push("not restored", lost.join(", "));
            }
            f.push("verified", if v.ok { "ok" } else { "FAILED" });
            f.push("outcome", self.outcome_label());
        }
        if let Some(p) = &r.phases {
            let ms = |m: u64| output::duration(std::time::Duration::from_millis(m));
            f.push(
                "took",
                format!(
                    "manifest {}, provision {}, load {}, verify {}, flush {}",
                    ms(p.fetch_manifest_ms),
                    ms(p.provision_ms),
                    ms(p.load_ms),
                    ms(p.verify_ms),
                    ms(p.flush_ms)
                ),
            );
        }
        f
    }

    /// A restore's lines for people, and how to connect while its server runs.
    pub fn print_restore(&self) {
        self.fields().print();
        let running = self.server_stopped_unix_ms == 0;
        if let Some(c) = self.restore().and_then(|r| r.connection.as_ref()) {
            if let Some(h) = connect_hint(c).filter(|_| running) {
                println!("\nConnect with:\n  {h}");
            }
        }
    }
}

/// One database's verification for people: `shop ok (2 tables, 14 rows)`, `app FAILED (1
/// table differs, 1 object did not come back)`.
fn database_label(d: &DatabaseVerification) -> String {
    if d.ok {
        let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        return format!(
            "{} ok ({}, {})",
            printable(&d.name),
            plural(d.tables_checked, "table"),
            plural(d.rows_checked, "row")
        );
    }
    let mut why = Vec::new();
    if d.mismatched_tables > 0 {
        why.push(match d.mismatched_tables {
            1 => "1 table differs".to_string(),
            n => format!("{n} tables differ"),
        });
    }
    if d.failed_objects > 0 {
        why.push(match d.failed_objects {
            1 => "1 object did not come back".to_string(),
            n => format!("{n} objects did not come back"),
        });
    }
    format!("{} FAILED ({})", printable(&d.name), why.join(", "))
}

/// `restore list` for people, newest first as given.
pub fn restore_table(jobs: &[JobView<'_>]) -> comfy_table::Table {
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
    for j in jobs {
        t.add_row([
            output::ago(j.created_unix_ms),
            j.id.to_string(),
            j.service.to_string(),
            j.backup_id.to_string(),
            j.host.to_string(),
            j.state.to_string(),
            j.outcome_label(),
            j.server_label.clone(),
        ]);
    }
    t
}

/// How a client connects to a restored server, as a command line (no secrets: the password
/// stays in its file).
pub fn connect_hint(c: &Connection) -> Option<String> {
    let q = shell_quote;
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

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_proto::v1::{FailedObject, TableMismatch, Verification};

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
        let json = serde_json::to_value(JobView::from(&j)).expect("json");
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
    fn outcomes_tell_verified_from_restored_with_errors_from_failed() {
        let outcome = |j: &JobInfo| {
            JobView::from(j)
                .outcome
                .map_or_else(|| "-".to_string(), |o| o.to_string())
        };
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
        let fields = JobView::from(&j).fields().joined("\n");
        assert!(
            fields
                .lines()
                .any(|l| l.starts_with("not restored: ") && l.contains("word_stats")),
            "{fields}"
        );
        assert_eq!(
            serde_json::to_value(JobView::from(&j)).expect("json")["outcome"],
            "restored_with_errors"
        );
        assert_eq!(JobView::from(&j).outcome_label(), "restored with errors");
    }
}
