//! Backups and restores end to end: a real 3-node coordinator, real agents (one beside the
//! database, one spare), real database servers; jobs made through the operator API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strongbox_core::files::Overwrite;
use strongbox_core::keys::{FleetKey, Keyring};
use strongbox_core::pki::Role;
use strongbox_core::tls::{install_crypto_provider, TlsFiles};
use strongbox_integration::agent::AgentProcess;
use strongbox_integration::cluster::{Cluster, ClusterOptions};
use strongbox_integration::sqlite::SqliteDb;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{
    BackupInfo, GetJobRequest, JobInfo, ListHostsRequest, RestoreBackupRequest, ShowBackupRequest,
};
use tonic::transport::Channel;

struct Fleet {
    cluster: Cluster,
    operator: TlsFiles,
    key_file: PathBuf,
    _keys: tempfile::TempDir,
}

async fn fleet() -> Fleet {
    install_crypto_provider();
    let cluster = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let viewer = cluster.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let operator = cluster.pki.issue(Role::Operator, "alice", &[]).unwrap();
    cluster.wait_for_leader(&viewer, 3).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("fleet.key");
    Keyring::new([FleetKey::generate(1).unwrap()])
        .unwrap()
        .save(&key_file, Overwrite::Refuse)
        .unwrap();
    Fleet {
        cluster,
        operator,
        key_file,
        _keys: keys,
    }
}

impl Fleet {
    fn op(&self) -> OperatorServiceClient<Channel> {
        OperatorServiceClient::new(self.cluster.channel(1, &self.operator).unwrap())
    }

    async fn wait_hosts(&self, hosts: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.op().list_hosts(ListHostsRequest {}).await {
                let have = r.into_inner().hosts;
                if hosts.iter().all(|h| {
                    have.iter()
                        .any(|x| x.name == *h && (x.spare || !x.members.is_empty()))
                }) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "hosts {hosts:?} did not register"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls a job until it ends.
    async fn wait_job(&self, id: &str) -> JobInfo {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Ok(j) = self.op().get_job(GetJobRequest { id: id.into() }).await {
                let j = j.into_inner();
                if j.state == "completed" || j.state == "failed" {
                    return j;
                }
            }
            assert!(Instant::now() < deadline, "job {id} did not end");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn backup(&self, service: &str) -> (JobInfo, BackupInfo) {
        let job = self
            .cluster
            .create_backup_job(&self.operator, service)
            .await
            .unwrap();
        let job = self.wait_job(&job.id).await;
        let backup = self
            .op()
            .show_backup(ShowBackupRequest {
                id: job.backup_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        (job, backup)
    }

    async fn restore(&self, backup: &str, host: &str) -> (JobInfo, serde_json::Value) {
        let job = self
            .op()
            .restore_backup(RestoreBackupRequest {
                backup_id: backup.into(),
                to_host: host.into(),
                to_region: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let job = self.wait_job(&job.id).await;
        let result = serde_json::from_str(&job.result).unwrap_or(serde_json::Value::Null);
        (job, result)
    }
}

fn sqlite_service(name: &str, path: &Path) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nengine = \"sqlite\"\npath = \"{}\"\n",
        path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backup_dedups_and_restores_onto_a_spare() {
    let f = fleet().await;
    let db = SqliteDb::create_named("notes.db").unwrap();
    db.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         CREATE TABLE tags (note INTEGER, tag TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO notes SELECT i, printf('note %d %s', i, hex(randomblob(40))) FROM n;
         INSERT INTO tags SELECT id, 'tag' || (id % 7) FROM notes;",
    )
    .unwrap();
    let _db_agent = AgentProcess::start(
        &f.cluster,
        "db-1",
        false,
        &sqlite_service("notes", db.path()),
        &f.key_file,
    )
    .unwrap();
    let spare = AgentProcess::start(&f.cluster, "spare-1", true, "", &f.key_file).unwrap();
    f.wait_hosts(&["db-1", "spare-1"]).await;

    let (job, first) = f.backup("notes").await;
    assert_eq!(job.state, "completed", "{}", job.reason);
    assert_eq!(first.state, "completed");
    assert!(first.plain_bytes > 1_000_000, "{first:?}");
    assert!(first.stored_bytes > 0);

    // Unchanged: the second backup adds almost nothing.
    let (job2, second) = f.backup("notes").await;
    assert_eq!(job2.state, "completed", "{}", job2.reason);
    assert!(
        second.stored_bytes * 20 < first.stored_bytes,
        "second backup stored {} of the first's {} bytes",
        second.stored_bytes,
        first.stored_bytes
    );

    // Restore onto the spare: verified, and the rows are the source's.
    let (rjob, result) = f.restore(&first.id, "spare-1").await;
    assert_eq!(rjob.state, "completed", "{} {}", rjob.reason, rjob.result);
    assert_eq!(rjob.host, "spare-1");
    assert_eq!(result["verification"]["ok"], true, "{result}");
    let file = PathBuf::from(result["connection"]["data_dir"].as_str().unwrap());
    assert!(file.starts_with(spare.data_root()), "{}", file.display());
    let restored = rusqlite::Connection::open(&file).unwrap();
    let count: i64 = restored
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 20000);
    let source_sum: String = db
        .conn()
        .query_row(
            "SELECT group_concat(body, '') FROM (SELECT body FROM notes ORDER BY id LIMIT 50)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let restored_sum: String = restored
        .query_row(
            "SELECT group_concat(body, '') FROM (SELECT body FROM notes ORDER BY id LIMIT 50)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(source_sum, restored_sum);
}
