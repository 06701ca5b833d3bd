//! Agents that die or stop in the middle of a backup: the job never stays `running` for an
//! agent that is gone.

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use strongbox_integration::agent::AgentProcess;
use strongbox_integration::cluster::ClusterOptions;
use strongbox_integration::fleet::{fleet_with, Fleet};
use strongbox_integration::pg::PgServer;
use strongbox_integration::wait;
use strongbox_proto::v1::{BackupState, HostInfo, HostLiveness, JobState, ListHostsRequest};
use strongbox_proto::v1::{GetJobRequest, JobInfo};

/// A fleet whose agents have `grace` to come back, with `db-1` beside a PostgreSQL server.
async fn fleet_and_db(grace: Duration) -> (Fleet, PgServer, AgentProcess) {
    let f = fleet_with(ClusterOptions {
        agent_grace: grace,
        ..ClusterOptions::default()
    })
    .await;
    let (pg, agent) = f.pg_host(
        "db-1",
        "orders",
        "CREATE TABLE ledger (id int PRIMARY KEY, memo text); \
         INSERT INTO ledger SELECT i, md5(i::text) FROM generate_series(1, 1000) i",
    );
    f.wait_hosts(&["db-1"]).await;
    (f, pg, agent)
}

/// Starts a backup that cannot finish: a transaction holds `ledger` exclusively, so the dump
/// waits for its lock. Returns once the job runs and the dump is waiting, with the holder: a
/// `psql` whose input stays open, so its transaction does too ([`release`] commits it).
async fn stalled_backup(f: &Fleet, pg: &PgServer) -> (JobInfo, Child) {
    let mut holder = pg
        .client_command("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    holder
        .stdin
        .as_mut()
        .expect("the holder's input")
        .write_all(b"BEGIN;\nLOCK TABLE ledger IN ACCESS EXCLUSIVE MODE;\n")
        .unwrap();
    let locks = |sql: &'static str| {
        let r = pg.psql("postgres", sql).map_err(|e| e.to_string());
        async move {
            match r {
                Ok(n) if n != "0" => Ok(()),
                Ok(_) => Err("not yet".to_string()),
                Err(e) => Err(e),
            }
        }
    };
    wait::poll("the exclusive lock on ledger", Duration::from_secs(30), || {
        locks("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted AND relation = 'ledger'::regclass")
    })
    .await;
    let job = f
        .cluster
        .create_backup_job(&f.operator, "orders")
        .await
        .unwrap();
    wait::poll(
        "the backup to wait for its lock",
        Duration::from_secs(60),
        || locks("SELECT count(*) FROM pg_locks WHERE NOT granted"),
    )
    .await;
    let running = f
        .op()
        .get_job(GetJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.state(), JobState::Running, "{running:?}");
    (job, holder)
}

/// Commits the lock holder's transaction and lets its `psql` end.
fn release(mut holder: Child) {
    if let Some(mut input) = holder.stdin.take() {
        let _ = input.write_all(b"COMMIT;\n");
    }
    let _ = holder.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_backup_has_its_job_failed_after_the_grace_and_backs_up_again() {
    let (f, pg, mut agent) = fleet_and_db(Duration::from_secs(2)).await;
    let (job, holder) = stalled_backup(&f, &pg).await;

    agent.kill().unwrap();
    // Failed by the grace period (2 s here), not by the 10-minute fallback.
    let failed = f
        .cluster
        .wait_job(&f.operator, &job.id, Duration::from_secs(60))
        .await
        .expect("the job of a killed agent ended");
    assert_eq!(failed.state(), JobState::Failed, "{failed:?}");
    assert!(
        failed.reason.contains("went away")
            && failed.reason.contains("db-1")
            && !failed.reason.contains("  "),
        "{}",
        failed.reason
    );
    release(holder);
    // While it is away, a new backup is refused, naming the host and when its agent went.
    let refused = f
        .cluster
        .create_backup_job(&f.operator, "orders")
        .await
        .expect_err("a backup for a host whose agent went away");
    assert!(
        refused.to_string().contains("went away") && refused.to_string().contains("db-1"),
        "{refused}"
    );

    // The agent comes back: once its new session is recorded, a new backup is taken at once
    // (nothing is left under way).
    agent.restart().unwrap();
    let job = wait::poll(
        "a backup accepted once the agent is back",
        Duration::from_secs(60),
        || async {
            f.cluster
                .create_backup_job(&f.operator, "orders")
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let again = f.wait_job(&job.id).await;
    assert_eq!(again.state(), JobState::Completed, "{}", again.reason);
    let backup = f.show_backup(&again.backup_id).await;
    assert_eq!(backup.state(), BackupState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_coming_back_within_the_grace_keeps_its_job() {
    let (f, pg, mut agent) = fleet_and_db(Duration::from_secs(5)).await;
    let (job, holder) = stalled_backup(&f, &pg).await;

    // Killed and back at once: the job is sent to the new process, which runs it to the end
    // once the lock goes; the old session's end changes nothing.
    agent.restart().unwrap();
    release(holder);
    let done = f
        .cluster
        .wait_job(&f.operator, &job.id, Duration::from_secs(120))
        .await
        .expect("the job ended");
    assert_eq!(done.state(), JobState::Completed, "{}", done.reason);
    // Past the grace period the node sees the newer session, and the job stays completed.
    let log = wait::poll(
        "the node to look at the old session's end",
        Duration::from_secs(60),
        || {
            let logs: String = f
                .cluster
                .running_ids()
                .iter()
                .map(|n| f.cluster.node(*n).log_text())
                .collect();
            let r = if logs.contains("came back within the grace period") {
                Ok(logs)
            } else {
                Err("not yet".to_string())
            };
            async move { r }
        },
    )
    .await;
    assert!(!log.contains("did not come back"), "{log}");
    let after = f.wait_job(&job.id).await;
    assert_eq!(after.state(), JobState::Completed, "{}", after.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_an_agent_mid_backup_reports_its_job_interrupted_and_exits() {
    // A grace period far beyond the test: only the agent's own report can fail the job.
    let (f, pg, mut agent) = fleet_and_db(Duration::from_secs(3600)).await;
    let (job, holder) = stalled_backup(&f, &pg).await;

    let status = agent.stop().unwrap().expect("the agent was running");
    assert!(
        status.success(),
        "the agent did not exit by itself on SIGTERM: {status:?}"
    );
    let failed = f
        .cluster
        .wait_job(&f.operator, &job.id, Duration::from_secs(30))
        .await
        .expect("the interrupted job ended");
    assert_eq!(failed.state(), JobState::Failed, "{failed:?}");
    assert!(failed.reason.contains("interrupted"), "{}", failed.reason);
    // Its pg_dump went with it, though the lock it waits for is still held.
    wait::poll(
        "the agent's pg_dump to end",
        Duration::from_secs(30),
        || {
            let left = dumps_of(&pg);
            let r = if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still running: {left:?}"))
            };
            async move { r }
        },
    )
    .await;
    release(holder);
}

/// The command lines of `pg_dump` processes reaching `pg` (by its port).
fn dumps_of(pg: &PgServer) -> Vec<String> {
    let port = pg.port().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
            if comm.trim() != "pg_dump" {
                return None;
            }
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&port).then_some(cmdline)
        })
        .collect()
}

/// Host `name` as `host list` shows it, once `ready` says it is as wanted.
async fn host_when(
    f: &Fleet,
    name: &str,
    what: &str,
    ready: impl Fn(&HostInfo) -> bool,
) -> HostInfo {
    wait::poll(what, Duration::from_secs(60), || async {
        let hosts = f
            .op()
            .list_hosts(ListHostsRequest::default())
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .hosts;
        match hosts.into_iter().find(|h| h.name == name) {
            Some(h) if ready(&h) => Ok(h),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Issue 17, point 2: a host's presence comes from its session, not from heartbeat writes. A
/// node killed (-9) while serving a session whose agent then died too: once the node is back,
/// it ends the session it had recorded, after the grace period, and the host is away (no job
/// goes to it). (A node that never comes back stops being seen by the leader's clock asks, and
/// its hosts are silent: `policy::presence`'s unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_ends_the_sessions_it_served_whose_agents_did_not_come_back() {
    let (mut f, _pg, mut agent) = fleet_and_db(Duration::from_secs(2)).await;
    let connected = host_when(&f, "db-1", "db-1 connected through a session", |h| {
        h.liveness() == HostLiveness::Connected && h.session_node != 0
    })
    .await;
    let node = connected.session_node;

    // The agent is frozen (it can neither send nor reconnect), its node killed, then the
    // agent killed: nobody will end its session but the node that recorded it.
    agent.signal(Signal::SIGSTOP).unwrap();
    f.cluster.kill(node).unwrap();
    agent.kill().unwrap();
    f.cluster.start_node(node).unwrap();
    let away = host_when(
        &f,
        "db-1",
        "db-1 away once its node ended the session",
        |h| h.liveness() == HostLiveness::Away,
    )
    .await;
    assert_eq!(away.session_node, 0);
    assert!(away.since_unix_ms > 0);
    let log = f.cluster.node(node).log_text();
    assert!(
        log.contains("sessions recorded before this node started"),
        "node {node} said nothing of the sessions it had recorded"
    );
    let refused = f
        .cluster
        .create_backup_job(&f.operator, "orders")
        .await
        .expect_err("no backup for a host whose agent went away");
    assert!(refused.to_string().contains("went away"), "{refused}");
}
