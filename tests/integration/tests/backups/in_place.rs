//! In-place restore end to end: refused without `--yes`; with it, the coordinators take a
//! `pre-restore` backup of the live data first, then restore the chosen backup into the
//! service's own live database, and the pre-restore backup holds the data that was replaced.

use strongbox_integration::agent::AgentProcess;
use strongbox_integration::fleet::{cli, download, files_in, fleet, sqlite_service};
use strongbox_integration::sqlite::SqliteDb;
use strongbox_proto::v1::{BackupKind, JobState};
use strongbox_proto::v1::{BackupState, JobKind};
use strongbox_proto::v1::{ListBackupsRequest, ListJobsRequest};

fn count(db: &std::path::Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_restore_takes_a_pre_restore_backup_then_replaces_the_live_data() {
    let f = fleet().await;
    let db = SqliteDb::create_named("shop.db").expect("sqlite");
    db.execute_batch(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO orders SELECT i, i * 10 FROM n;",
    )
    .expect("fill");
    let _agent = AgentProcess::start(
        &f.cluster,
        "db-1",
        false,
        &[sqlite_service("shop", db.path())],
        &f.key_file,
    )
    .expect("agent");
    f.wait_hosts(&["db-1"]).await;
    let (job, good) = f.backup("shop").await;
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);

    // The accident: rows deleted, a table dropped in, values changed.
    db.execute_batch(
        "DELETE FROM orders WHERE id > 1000;
         UPDATE orders SET total = -1;
         CREATE TABLE junk (x);",
    )
    .expect("accident");
    let live = db.path();
    assert_eq!(count(live, "SELECT count(*) FROM orders;"), "1000");

    // Without --yes: refused, with what it would do, and nothing happens.
    let out = cli(&f, &["backup", "restore", &good.id, "--in-place"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--yes") && err.contains("pre-restore"),
        "{err}"
    );
    assert_eq!(count(live, "SELECT count(*) FROM orders;"), "1000");
    let mut jobs = Vec::new();
    for kind in [JobKind::Backup, JobKind::Restore] {
        jobs.extend(
            f.op()
                .list_jobs(ListJobsRequest {
                    kind: kind.into(),
                    service: "shop".into(),
                    ..Default::default()
                })
                .await
                .expect("jobs")
                .into_inner()
                .jobs,
        );
    }
    assert_eq!(jobs.len(), 1, "only the first backup's job: {jobs:?}");

    // With --yes: pre-restore backup, then the restore into the live file.
    let out = cli(
        &f,
        &[
            "backup",
            "restore",
            &good.id,
            "--in-place",
            "--yes",
            "--wait",
            "--timeout",
            "240",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(
            live,
            "SELECT count(*), sum(total) FROM orders; PRAGMA integrity_check;"
        ),
        format!("5000|{}\nok", (1..=5000u64).map(|i| i * 10).sum::<u64>())
    );
    assert_eq!(
        count(
            live,
            "SELECT count(*) FROM sqlite_master WHERE name = 'junk';"
        ),
        "0"
    );

    // The pre-restore backup holds the replaced data, completed before the restore began.
    let backups = f
        .op()
        .list_backups(ListBackupsRequest {
            service: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("backups")
        .into_inner()
        .backups;
    let pre: Vec<_> = backups
        .iter()
        .filter(|b| b.kind() == BackupKind::PreRestore)
        .collect();
    assert_eq!(pre.len(), 1, "{backups:?}");
    assert_eq!(pre[0].state(), BackupState::Completed);
    assert_eq!(pre[0].kept_because, "pre-restore");
    let jobs = f
        .op()
        .list_jobs(ListJobsRequest {
            kind: JobKind::Restore.into(),
            service: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("jobs")
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].in_place && jobs[0].host == "db-1", "{:?}", jobs[0]);
    let dir = tempfile::tempdir().expect("temp dir");
    let dl = dir.path().join("pre");
    let r = download(&f, &pre[0].id, &f.key_file, &dl);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let names = files_in(&dl);
    assert_eq!(
        count(
            &dl.join(&names[0]),
            "SELECT count(*), min(total) FROM orders; SELECT count(*) FROM junk;"
        ),
        "1000|-1\n0"
    );
}
