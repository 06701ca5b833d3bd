//! Fleet policy end to end, with real coordinator and agent processes and real databases:
//! scheduled backups follow a PostgreSQL failover, a concurrency limit holds across a leader
//! kill, and retention (holds, locks, lowering the lock with and without `--yes`) deletes exactly
//! what it should, with GC removing the expired chunks from every node.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use strongbox_core::ids::ChunkId;
use strongbox_integration::agent::AgentProcess;
use strongbox_integration::cluster::ClusterOptions;
use strongbox_integration::fleet::{cli, fleet_with, pg_service, sqlite_service, Fleet};
use strongbox_integration::pg::PgServer;
use strongbox_integration::sqlite::SqliteDb;
use strongbox_integration::wait::{poll, until};
use strongbox_proto::v1::{
    BackupInfo, ClusterStatusRequest, JobInfo, ListBackupsRequest, ListJobsRequest, PolicyInfo,
    SetPolicyRequest, ShowServiceRequest,
};
use strongbox_proto::v1::{BackupKind, BackupState, JobState, ServiceState};
use strongbox_proto::v1::{JobKind, MemberRole};

fn scheduling() -> ClusterOptions {
    ClusterOptions {
        schedule_backups: true,
        controller_interval: Duration::from_millis(300),
        ..ClusterOptions::default()
    }
}

async fn set_region_policy(f: &Fleet, policy: PolicyInfo) {
    let r = f
        .op()
        .set_policy(SetPolicyRequest {
            service: String::new(),
            policy: Some(policy),
            reset: false,
            yes: true,
        })
        .await
        .expect("set the region policy")
        .into_inner();
    assert!(r.applied);
}

async fn backups(f: &Fleet, service: &str) -> Vec<BackupInfo> {
    let mut v = f
        .op()
        .list_backups(ListBackupsRequest {
            service: service.into(),
            ..Default::default()
        })
        .await
        .expect("list backups")
        .into_inner()
        .backups;
    v.sort_by_key(|b| b.created_unix_ms);
    v
}

/// Polls the completed scheduled backups of `service` until there are `n`.
async fn wait_scheduled(f: &Fleet, service: &str, n: usize, within: Duration) -> Vec<BackupInfo> {
    poll(
        &format!("{n} scheduled backups of {service}"),
        within,
        || async {
            let done: Vec<BackupInfo> = backups(f, service)
                .await
                .into_iter()
                .filter(|b| {
                    b.kind() == BackupKind::Scheduled && b.state() == BackupState::Completed
                })
                .collect();
            if done.len() >= n {
                Ok(done)
            } else {
                Err(format!("{done:?}"))
            }
        },
    )
    .await
}

/// The backup jobs of `service` (every service for ""); none while no node answers.
async fn backup_jobs(f: &Fleet, service: &str) -> Vec<JobInfo> {
    f.op()
        .list_jobs(ListJobsRequest {
            kind: JobKind::Backup.into(),
            service: service.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().jobs)
        .unwrap_or_default()
}

/// Polls the completed scheduled backup jobs of `service` until there are `n`, by slot.
async fn wait_scheduled_jobs(f: &Fleet, service: &str, n: usize, within: Duration) -> Vec<JobInfo> {
    poll(
        &format!("{n} scheduled backup jobs of {service}"),
        within,
        || async {
            let mut done = backup_jobs(f, service).await;
            done.retain(|j| {
                j.backup_kind() == BackupKind::Scheduled && j.state() == JobState::Completed
            });
            done.sort_by_key(|j| j.slot_unix_ms);
            if done.len() >= n {
                Ok(done)
            } else {
                Err(format!("{done:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_come_from_the_primary_and_follow_a_failover() {
    let f = fleet_with(scheduling()).await;
    let primary = PgServer::start().expect("primary");
    primary
        .psql(
            "postgres",
            "CREATE TABLE accounts (id int PRIMARY KEY, balance int);
             INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 5000) g;",
        )
        .expect("load");
    let standby = PgServer::start_standby(&primary).expect("standby");
    let _a = AgentProcess::start(
        &f.cluster,
        "pg-a",
        false,
        &[pg_service("orders", &primary)],
        &f.key_file,
    )
    .expect("agent a");
    let _b = AgentProcess::start(
        &f.cluster,
        "pg-b",
        false,
        &[pg_service("orders", &standby)],
        &f.key_file,
    )
    .expect("agent b");
    f.wait_hosts(&["pg-a", "pg-b"]).await;

    let period = 45_000u64;
    set_region_policy(
        &f,
        PolicyInfo {
            schedule: Some("every 45s".into()),
            jitter_ms: Some(0),
            ..Default::default()
        },
    )
    .await;
    let first = wait_scheduled_jobs(&f, "orders", 1, Duration::from_secs(60)).await;
    assert_eq!(
        first[0].host, "pg-a",
        "the first comes from the primary: {first:?}"
    );

    // Failover: the old primary stops, the standby is promoted.
    drop(primary);
    standby.promote().expect("promote");
    let svc = poll(
        "the catalog to follow the failover",
        Duration::from_secs(40),
        || async {
            let s = f
                .op()
                .show_service(ShowServiceRequest {
                    name: "orders".into(),
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if s.primary_host == "pg-b" {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    let promoted_at = svc
        .role_changes
        .iter()
        .find(|c| c.host == "pg-b" && c.to() == MemberRole::Primary && !c.to_down)
        .map(|c| c.unix_ms)
        .expect("the promotion is in the role history");
    assert!(
        svc.role_changes
            .iter()
            .any(|c| c.host == "pg-a" && c.from() == MemberRole::Primary && c.to_down),
        "{:?}",
        svc.role_changes
    );

    // Scheduled backups are counted by their jobs: retention keeps only the newest backup of
    // each hour, so the older backups of a 45-second schedule leave the catalog.
    let done = wait_scheduled_jobs(&f, "orders", 3, Duration::from_secs(150)).await;
    let slots: Vec<u64> = done.iter().map(|j| j.slot_unix_ms).collect();
    let unique: BTreeSet<u64> = slots.iter().copied().collect();
    assert_eq!(
        unique.len(),
        slots.len(),
        "a slot backed up twice: {slots:?}"
    );
    for pair in slots.windows(2) {
        assert_eq!(pair[1] - pair[0], period, "a slot was missed: {slots:?}");
    }
    // Before the failover from pg-a, after it from pg-b only: never from a replica.
    for j in &done {
        let want = if j.created_unix_ms >= promoted_at {
            "pg-b"
        } else {
            "pg-a"
        };
        assert_eq!(j.host, want, "{j:?}");
    }
    assert!(
        done.iter().filter(|j| j.host == "pg-b").count() >= 2,
        "{done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_due_services_run_at_most_four_at_once_across_a_leader_kill() {
    let mut f = fleet_with(scheduling()).await;
    let mut dbs = Vec::new();
    let mut agents = Vec::new();
    for h in 0..4 {
        let mut services = Vec::new();
        for i in 0..5 {
            let name = format!("svc{:02}", h * 5 + i);
            let db = SqliteDb::create_named(&format!("{name}.db")).expect("sqlite");
            db.execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                 INSERT INTO t SELECT i, hex(randomblob(64)) FROM n;",
            )
            .expect("fill");
            services.push(sqlite_service(&name, db.path()));
            dbs.push(db);
        }
        agents.push(
            AgentProcess::start(
                &f.cluster,
                &format!("host-{h}"),
                false,
                &services,
                &f.key_file,
            )
            .expect("agent"),
        );
    }
    f.wait_hosts(&["host-0", "host-1", "host-2", "host-3"])
        .await;
    set_region_policy(
        &f,
        PolicyInfo {
            schedule: Some("every 1h".into()),
            jitter_ms: Some(0),
            max_concurrent: Some(4),
            ..Default::default()
        },
    )
    .await;

    // Once the first jobs are out, kill -9 the leader.
    poll(
        "the first scheduled jobs",
        Duration::from_secs(60),
        || async {
            let jobs = backup_jobs(&f, "").await;
            if jobs.len() >= 4 {
                Ok(())
            } else {
                Err(format!("{jobs:?}"))
            }
        },
    )
    .await;
    let leader = f
        .op()
        .cluster_status(ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .leader_id;
    f.cluster.kill(leader).expect("kill the leader");

    let jobs = poll(
        "a backup of all 20 services",
        Duration::from_secs(240),
        || async {
            let jobs = backup_jobs(&f, "").await;
            let done: BTreeSet<&str> = jobs
                .iter()
                .filter(|j| j.state() == JobState::Completed)
                .map(|j| j.service.as_str())
                .collect();
            if done.len() == 20 {
                Ok(jobs)
            } else {
                Err(format!("{} done: {jobs:?}", done.len()))
            }
        },
    )
    .await;
    // One completed scheduled backup per service: no duplicate across the leader change.
    let mut per_service: BTreeMap<&str, usize> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.state() == JobState::Completed) {
        assert_eq!(j.backup_kind(), BackupKind::Scheduled);
        *per_service.entry(&j.service).or_default() += 1;
    }
    assert!(per_service.values().all(|n| *n == 1), "{per_service:?}");
    // At most four under way at any moment (job creation to its end, as the catalog saw it).
    let mut edges: Vec<(u64, i32)> = jobs
        .iter()
        .flat_map(|j| [(j.created_unix_ms, 1), (j.updated_unix_ms, -1)])
        .collect();
    edges.sort_by_key(|(t, d)| (*t, *d));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    assert!(max <= 4, "{max} backups under way at once");
    // The first leader recorded the region in the catalog.
    let status = f
        .op()
        .cluster_status(ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(status.region_created_unix_ms > 0, "{status:?}");
    assert!(status.copies_to.is_empty());
    assert!(max >= 2, "the limit was never approached: {max}");
    // The metrics say when each service last succeeded and when it is due next.
    let node = f.cluster.running_ids()[0];
    let (code, text) =
        strongbox_integration::cluster::http_get(f.cluster.node(node).http_addr, "/metrics")
            .expect("metrics");
    assert_eq!(code, 200);
    for i in 0..20 {
        let line = |metric: &str| {
            text.lines()
                .find(|l| l.starts_with(metric) && l.contains(&format!("service=\"svc{i:02}\"")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {metric} for svc{i:02} in\n{text}"))
        };
        let last = line("strongbox_service_last_success_timestamp_seconds");
        let next = line("strongbox_service_next_backup_timestamp_seconds");
        assert!(
            last > 0 && next >= last + 3500,
            "svc{i:02}: last {last}, next {next}"
        );
    }
    drop(agents);
    drop(dbs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_what_the_policy_says_and_gc_clears_every_node() {
    let f = fleet_with(ClusterOptions {
        maintenance_interval: Duration::from_millis(500),
        gc_grace: Duration::from_secs(3),
        ..scheduling()
    })
    .await;
    let db = SqliteDb::create_named("ledger.db").expect("sqlite");
    db.execute_batch("CREATE TABLE entries (id INTEGER PRIMARY KEY, v TEXT);")
        .expect("schema");
    let _agent = AgentProcess::start(
        &f.cluster,
        "db-1",
        false,
        &[sqlite_service("ledger", db.path())],
        &f.key_file,
    )
    .expect("agent");
    let spare = AgentProcess::start(&f.cluster, "spare-1", true, &[], &f.key_file).expect("spare");
    f.wait_hosts(&["db-1", "spare-1"]).await;

    // Three scheduled backups, the data growing between them so each has chunks of its own.
    let fill = |round: u32| {
        db.execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
             INSERT INTO entries (v) SELECT '{round}-' || hex(randomblob(200)) FROM n;"
        ))
        .expect("fill")
    };
    fill(0);
    set_region_policy(
        &f,
        PolicyInfo {
            schedule: Some("every 10s".into()),
            jitter_ms: Some(0),
            // Locked, every backup stays until the lock is lowered (retention keeps only the
            // newest of each hour otherwise).
            lock_days: Some(1),
            ..Default::default()
        },
    )
    .await;
    for n in 1..=3 {
        wait_scheduled(&f, "ledger", n, Duration::from_secs(60)).await;
        fill(n as u32);
    }
    set_region_policy(
        &f,
        PolicyInfo {
            schedule: Some("none".into()),
            ..Default::default()
        },
    )
    .await;
    // Let a backup that started meanwhile finish.
    poll(
        "backups under way to end",
        Duration::from_secs(60),
        || async {
            let all = backups(&f, "ledger").await;
            if all
                .iter()
                .all(|b| b.state() == BackupState::Completed || b.state() == BackupState::Failed)
            {
                Ok(())
            } else {
                Err(format!("{all:?}"))
            }
        },
    )
    .await;
    let (_, manual) = f.backup("ledger").await;
    let scheduled = wait_scheduled(&f, "ledger", 3, Duration::from_secs(5)).await;
    let (oldest, newest) = (&scheduled[0], &scheduled[scheduled.len() - 1]);
    let expiring = &scheduled[1..scheduled.len() - 1];
    let middle = &expiring[0];
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    ok(&cli(
        &f,
        &["backup", "hold", &oldest.id, "--reason", "audit 2026"],
    ));

    // Inside the lock nobody purges, an operator neither.
    let out = cli(&f, &["backup", "purge", &manual.id, "--yes"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked until"), "{err}");

    // Lowering retention without --yes deletes nothing and says what it would delete.
    let before: BTreeSet<String> = backups(&f, "ledger")
        .await
        .into_iter()
        .map(|b| b.id)
        .collect();
    let lower = ["policy", "set", "--lock-days", "0"];
    let out = cli(&f, &lower);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&middle.id) && text.contains("--yes"),
        "{text}"
    );
    let after: BTreeSet<String> = backups(&f, "ledger")
        .await
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(before, after, "nothing may go without --yes");

    // The manifests and chunks of each backup, read from a node's store.
    let chunks_of = |b: &BackupInfo| -> BTreeSet<ChunkId> {
        let manifest = ChunkId::from_slice(&b.manifest_id).expect("manifest id");
        let sealed = f
            .cluster
            .ids()
            .iter()
            .find_map(|n| f.cluster.stored_chunk(*n, &manifest))
            .expect("a node holds the manifest");
        let envelope = strongbox_core::manifest::parse(&sealed).expect("manifest");
        let mut set: BTreeSet<ChunkId> = envelope.chunk_ids.into_iter().collect();
        set.insert(manifest);
        set
    };
    let kept: BTreeSet<ChunkId> = [oldest, newest]
        .iter()
        .flat_map(|b| chunks_of(b))
        .chain(chunks_of(&manual))
        .collect();
    let only_middle: Vec<ChunkId> = expiring
        .iter()
        .flat_map(&chunks_of)
        .filter(|c| !kept.contains(c))
        .collect();
    assert!(
        !only_middle.is_empty(),
        "the expiring backups have chunks of their own"
    );

    let mut yes = lower.to_vec();
    yes.push("--yes");
    ok(&cli(&f, &yes));
    let left: BTreeSet<String> = backups(&f, "ledger")
        .await
        .into_iter()
        .map(|b| b.id)
        .collect();
    let want: BTreeSet<String> = [&oldest.id, &newest.id, &manual.id]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        left, want,
        "held, newest of the hour and manual stay; the ones between go"
    );
    let shown = f
        .op()
        .show_backup(strongbox_proto::v1::ShowBackupRequest {
            id: oldest.id.clone(),
        })
        .await
        .expect("show")
        .into_inner();
    assert!(shown.kept_because.contains("hold"), "{shown:?}");

    // GC: the middle backup's own chunks leave every node; every kept chunk stays.
    until(
        "GC to remove the expired backups' chunks from every node",
        Duration::from_secs(60),
        || {
            f.cluster.ids().iter().all(|n| {
                only_middle
                    .iter()
                    .all(|c| !f.cluster.chunk_file(*n, c).exists())
            })
        },
    );
    for n in f.cluster.ids() {
        for c in &kept {
            assert!(
                f.cluster.chunk_file(n, c).is_file(),
                "node {n} lost kept chunk {c}"
            );
        }
    }
    // And every kept backup still restores.
    for b in [oldest, newest, &manual] {
        let (job, result) = f.restore(&b.id, "spare-1").await;
        assert_eq!(
            job.state(),
            JobState::Completed,
            "restore of {}: {}",
            b.id,
            job.reason
        );
        assert!(result["verification"].is_object(), "{result}");
    }
    spare.stop_restored_servers();

    // Deprovisioning takes a final backup (the policy keeps one), which retention keeps.
    let out = cli(&f, &["service", "deprovision", "ledger"]);
    assert!(!out.status.success(), "deprovision needs --yes");
    ok(&cli(
        &f,
        &["service", "deprovision", "ledger", "--yes", "--wait"],
    ));
    let finals: Vec<BackupInfo> = backups(&f, "ledger")
        .await
        .into_iter()
        .filter(|b| b.kind() == BackupKind::Final)
        .collect();
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(finals[0].state(), BackupState::Completed);
    assert_eq!(finals[0].kept_because, "final");
    let svc = f
        .op()
        .show_service(ShowServiceRequest {
            name: "ledger".into(),
        })
        .await
        .expect("show")
        .into_inner();
    assert_eq!(svc.state(), ServiceState::Deprovisioned);
    assert_eq!(svc.next_backup_unix_ms, 0);
}
