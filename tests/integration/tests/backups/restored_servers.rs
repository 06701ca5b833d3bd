//! Servers that restores leave on spares (issue 15, fault 2): `restore list` says where each
//! runs, `restore stop` stops one and removes its folder, and a spare runs at most
//! `max_restored_servers` of them, refusing more with a message that says what to stop.

use std::time::Duration;

use strongbox_integration::agent::AgentProcess;
use strongbox_integration::cluster::ClusterOptions;
use strongbox_integration::fleet::{cli, fleet_with};
use strongbox_integration::wait;
use strongbox_proto::v1::JobState;
use strongbox_proto::v1::RestoreBackupRequest;

fn restores(f: &strongbox_integration::fleet::Fleet) -> serde_json::Value {
    restores_with(f, &[])
}

fn restores_with(f: &strongbox_integration::fleet::Fleet, more: &[&str]) -> serde_json::Value {
    let out = cli(
        f,
        &[&["--output", "json", "restore", "list"], more].concat(),
    );
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_servers_are_listed_stopped_and_limited_per_spare() {
    let f = fleet_with(ClusterOptions {
        max_restored_servers: 1,
        ..ClusterOptions::default()
    })
    .await;
    let (_pg, _db) = f.pg_host(
        "db-1",
        "orders",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)",
    );
    let spare = AgentProcess::start(&f.cluster, "spare-1", true, &[], &f.key_file).unwrap();
    f.wait_hosts(&["db-1", "spare-1"]).await;
    let (job, backup) = f.backup("orders").await;
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);

    let (first, result) = f.restore_verified(&backup.id, "spare-1").await;
    let c = &result["connection"];
    let addr = format!("{}:{}", c["host"].as_str().unwrap(), c["port"]);
    let data_dir = std::path::PathBuf::from(c["data_dir"].as_str().expect("data_dir"));
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "the server runs"
    );
    let listed = restores(&f);
    assert_eq!(listed[0]["server"], "running", "{listed}");
    // `--running` lists exactly the restores whose servers run.
    let running = restores_with(&f, &["--running"]);
    assert_eq!(running.as_array().map(Vec::len), Some(1), "{running}");
    assert_eq!(running[0]["id"], first.id.as_str());
    // People read where it runs.
    let shown = cli(&f, &["restore", "show", &first.id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("running on spare-1") && text.contains(&addr),
        "{text}"
    );

    // The spare is full: a second restore onto it is refused, naming what to stop.
    let refused = f
        .op()
        .restore_backup(RestoreBackupRequest {
            backup_id: backup.id.clone(),
            to_host: "spare-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("a restore beyond max_restored_servers");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("max_restored_servers") && refused.message().contains(&first.id),
        "{}",
        refused.message()
    );

    // Stopped: the server is gone, its folder too, and the list says so.
    let out = cli(&f, &["restore", "stop", &first.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is stopped"),
        "{out:?}"
    );
    wait::poll(
        "the restored server to stop listening",
        Duration::from_secs(30),
        || {
            let r = if std::net::TcpStream::connect(&addr).is_err() {
                Ok(())
            } else {
                Err("still listening".to_string())
            };
            async move { r }
        },
    )
    .await;
    assert!(!data_dir.exists(), "{} is still there", data_dir.display());
    let listed = restores(&f);
    let stopped = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == first.id.as_str())
        .expect("the first restore is listed");
    assert_eq!(stopped["server"], "stopped", "{stopped}");
    assert_eq!(restores_with(&f, &["--running"]), serde_json::json!([]));
    assert!(
        stopped["server_stopped_unix_ms"].as_u64().unwrap_or(0) > 0,
        "{stopped}"
    );
    let shown = cli(&f, &["restore", "show", &first.id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("stopped") && !text.contains("Connect with"),
        "{text}"
    );
    let again = cli(&f, &["restore", "stop", &first.id]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("stopped already"),
        "{again:?}"
    );

    // Room for one: of three restores asked at once, the catalog takes exactly one.
    let ask = || {
        let mut op = f.op();
        let id = backup.id.clone();
        async move {
            op.restore_backup(RestoreBackupRequest {
                backup_id: id,
                to_host: "spare-1".into(),
                ..Default::default()
            })
            .await
        }
    };
    let (a, b, c) = tokio::join!(ask(), ask(), ask());
    let taken: Vec<_> = [a, b, c].into_iter().filter_map(|r| r.ok()).collect();
    assert_eq!(
        taken.len(),
        1,
        "{} of 3 concurrent restores were taken",
        taken.len()
    );
    let winner = f.wait_job(&taken[0].get_ref().id).await;
    assert_eq!(winner.state(), JobState::Completed, "{}", winner.reason);
    let out = cli(&f, &["restore", "stop", &winner.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Room again: the next restore goes through, its progress naming what it does (issue
    // 15, fault 11); --keep-files stops it and keeps its data.
    let out = cli(
        &f,
        &[
            "backup",
            "restore",
            &backup.id,
            "--to-host",
            "spare-1",
            "--wait",
        ],
    );
    let notes = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{notes}");
    assert!(
        notes.contains("running: provisioning a fresh server"),
        "{notes}"
    );
    let listed = restores(&f);
    let second = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] != first.id.as_str() && j["id"] != winner.id.as_str())
        .expect("the third restore")
        .clone();
    assert_eq!(second["state"], "completed", "{second}");
    assert_eq!(second["phase"], "", "a finished job has no phase: {second}");
    let second_id = second["id"].as_str().unwrap().to_string();
    let kept =
        std::path::PathBuf::from(second["result"]["connection"]["data_dir"].as_str().unwrap());
    let out = cli(&f, &["restore", "stop", &second_id, "--keep-files"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(kept.exists(), "--keep-files kept {}", kept.display());
    spare.stop_restored_servers();
}
