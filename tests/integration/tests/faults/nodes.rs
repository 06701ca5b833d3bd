//! Coordinator nodes cut off (SIGSTOP, as a partition would) or all restarted: backups go on
//! with a majority, and nodes that come back catch up, repair what they lack, and raise no
//! false alarm on the way.

use std::time::Duration;

use nix::sys::signal::Signal;
use strongbox_core::ids::ChunkId;
use strongbox_core::pki::Role;
use strongbox_integration::agent::AgentProcess;
use strongbox_integration::cluster::{Cluster, ClusterOptions};
use strongbox_integration::fleet::Fleet;
use strongbox_integration::sqlite::SqliteDb;
use strongbox_integration::wait;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::ShowBackupRequest;

use crate::chunks::{chunks_of, corrupt, intact};
use strongbox_proto::v1::{BackupState, JobState};

/// A fleet that repairs every 300 ms, with `db-1` beside a SQLite database and a spare.
async fn fleet_with_db() -> (Fleet, SqliteDb, AgentProcess, AgentProcess) {
    crate::fleet_with_till(ClusterOptions {
        maintenance_interval: Duration::from_millis(300),
        ..ClusterOptions::default()
    })
    .await
}

/// Waits until node `node` holds every chunk of the backup (and its manifest) intact.
async fn holds_all(c: &Cluster, node: u64, manifest_id: &[u8]) {
    let mut ids = chunks_of(c, manifest_id);
    ids.push(ChunkId::from_slice(manifest_id).unwrap());
    wait::poll(
        &format!("node {node} to hold every chunk intact"),
        Duration::from_secs(60),
        || {
            let bad = ids.iter().filter(|id| !intact(c, node, id)).count();
            let r = if bad == 0 {
                Ok(())
            } else {
                Err(format!("{bad} chunks missing or bad"))
            };
            async move { r }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_does_not_stop_backups_and_catches_up_when_back() {
    let (f, _db, _agent, _spare) = fleet_with_db().await;
    let viewer = f.cluster.pki.issue(Role::Viewer, "v", &[]).unwrap();
    let leader = f.cluster.wait_for_leader(&viewer, 3).await.unwrap();
    // The leader when it is not node 1 (the tests' operator calls go to node 1), else node 3.
    let victim = if leader != 1 { leader } else { 3 };
    f.cluster.signal(victim, Signal::SIGSTOP).unwrap();

    let (job, backup) = f.backup("till").await;
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);
    f.restore_verified(&backup.id, "spare-1").await;

    // Back: it learns the backup and holds its chunks (copied lazily, or repaired).
    f.cluster.signal(victim, Signal::SIGCONT).unwrap();
    wait::poll(
        &format!("node {victim} to learn the backup"),
        Duration::from_secs(60),
        || {
            let ch = f.cluster.channel(victim, &viewer).unwrap();
            let id = backup.id.clone();
            async move {
                match OperatorServiceClient::new(ch)
                    .show_backup(ShowBackupRequest { id })
                    .await
                {
                    Ok(b) if b.get_ref().state() == BackupState::Completed => Ok(()),
                    Ok(b) => Err(format!("state {}", b.get_ref().state())),
                    Err(s) => Err(s.message().to_string()),
                }
            }
        },
    )
    .await;
    holds_all(&f.cluster, victim, &backup.manifest_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_restarted_keeps_every_backup_and_repairs_without_false_alarms() {
    let (mut f, _db, agent, _spare) = fleet_with_db().await;
    let (job, a) = f.backup("till").await;
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);
    let bad = chunks_of(&f.cluster, &a.manifest_id)[0];
    corrupt(&f.cluster, 3, &bad);

    // Every node stops by itself on SIGTERM, agents connected.
    for n in [1, 2, 3] {
        let status = f.cluster.stop_node(n).unwrap().expect("it was running");
        assert!(status.success(), "node {n} ended {status:?}");
    }
    // Node 3 first, alone: it must not judge its chunks while it cannot ask anyone.
    f.cluster.start_node(3).unwrap();
    wait::poll(
        "node 3 to wait for its region",
        Duration::from_secs(30),
        || {
            let log = f.cluster.node(3).log_text();
            let r = if log.contains("maintenance waits: no leader known") {
                Ok(())
            } else {
                Err("not yet".to_string())
            };
            async move { r }
        },
    )
    .await;
    f.cluster.start_node(1).unwrap();
    f.cluster.start_node(2).unwrap();
    holds_all(&f.cluster, 3, &a.manifest_id).await;
    let log = f.cluster.node(3).log_text();
    assert!(
        !log.contains("holds a good copy") && !log.contains("lost in this region"),
        "node 3 raised a false alarm:\n{log}"
    );
    assert!(log.contains("chunk maintenance pass"), "{log}");
    // A log written to a file carries no colour escapes (issue 15, fault 12).
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    assert!(
        !agent.log_text().contains('\u{1b}'),
        "colour codes in the agent's log"
    );

    // The region works as before: a new backup, and the old one restores.
    let (job, _b) = f.backup("till").await;
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);
    f.restore_verified(&a.id, "spare-1").await;
}
