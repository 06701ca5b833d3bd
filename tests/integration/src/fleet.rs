//! A test fleet: a real 3-node coordinator cluster with an operator certificate and a fleet key,
//! and the operator calls tests make against it (jobs, backups, restores, the CLI binary).
//!
//! Invariant: every wait is for a condition with a deadline; a failed call panics with what
//! failed, as the tests' own assertions do.

use std::path::{Path, PathBuf};
use std::time::Duration;
use strongbox_engines::{EngineKind, ServiceSpec};

use strongbox_core::files::Overwrite;
use strongbox_core::keys::{FleetKey, Keyring};
use strongbox_core::pki::Role;
use strongbox_core::tls::{install_crypto_provider, TlsFiles};
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{
    BackupInfo, BindHostRequest, JobInfo, ListHostsRequest, RestoreBackupRequest, ShowBackupRequest,
};
use tonic::transport::Channel;

use crate::cluster::{Cluster, ClusterOptions};

pub struct Fleet {
    pub cluster: Cluster,
    pub operator: TlsFiles,
    pub key_file: PathBuf,
    _keys: tempfile::TempDir,
}

/// A 3-node cluster with default options, an operator certificate and a fleet key.
pub async fn fleet() -> Fleet {
    fleet_with(ClusterOptions::default()).await
}

/// A 3-node cluster started with `options`, its leader elected.
pub async fn fleet_with(options: ClusterOptions) -> Fleet {
    install_crypto_provider();
    let cluster = Cluster::start(3, options).expect("cluster");
    let viewer = cluster
        .pki
        .issue(Role::Viewer, "grafana", &[])
        .expect("fleet set-up");
    let operator = cluster
        .pki
        .issue(Role::Operator, "alice", &[])
        .expect("fleet set-up");
    cluster
        .wait_for_leader(&viewer, 3)
        .await
        .expect("fleet set-up");
    let keys = tempfile::tempdir().expect("fleet set-up");
    let key_file = keys.path().join("fleet.key");
    Keyring::new([FleetKey::generate(1).expect("fleet set-up")])
        .expect("fleet set-up")
        .save(&key_file, Overwrite::Refuse)
        .expect("fleet set-up");
    Fleet {
        cluster,
        operator,
        key_file,
        _keys: keys,
    }
}

impl Fleet {
    /// An operator client on the first running node.
    pub fn op(&self) -> OperatorServiceClient<Channel> {
        let node = self.cluster.running_ids()[0];
        OperatorServiceClient::new(
            self.cluster
                .channel(node, &self.operator)
                .expect("fleet set-up"),
        )
    }

    /// Waits until every host of `hosts` registered, and approves what each claims (its
    /// members, and the spare role if it asks), as the inventory does on a real fleet.
    pub async fn wait_hosts(&self, hosts: &[&str]) {
        wait_approved(self.op(), hosts).await
    }

    /// An SQLite database `file` made by `sql`, served as `service` by an agent on `host`,
    /// registered and approved.
    pub async fn sqlite_host(
        &self,
        host: &str,
        service: &str,
        file: &str,
        sql: &str,
    ) -> (crate::sqlite::SqliteDb, crate::agent::AgentProcess) {
        let db = crate::sqlite::SqliteDb::create_named(file).expect("an SQLite database");
        db.execute_batch(sql).expect("the database's contents");
        let agent = crate::agent::AgentProcess::start(
            &self.cluster,
            host,
            false,
            &[sqlite_service(service, db.path())],
            &self.key_file,
        )
        .expect("the agent");
        self.wait_hosts(&[host]).await;
        (db, agent)
    }

    /// Polls a job until it ends.
    pub async fn wait_job(&self, id: &str) -> JobInfo {
        self.cluster
            .wait_job(&self.operator, id, Duration::from_secs(240))
            .await
            .expect("fleet set-up")
    }

    pub async fn backup(&self, service: &str) -> (JobInfo, BackupInfo) {
        let job = self
            .cluster
            .create_backup_job(&self.operator, service)
            .await
            .expect("fleet set-up");
        let job = self.wait_job(&job.id).await;
        let backup = self.show_backup(&job.backup_id).await;
        (job, backup)
    }

    /// A restore of `backup` onto `host` that must complete verified, and its result.
    pub async fn restore_verified(&self, backup: &str, host: &str) -> (JobInfo, serde_json::Value) {
        let (job, result) = self.restore(backup, host).await;
        assert_eq!(
            job.state(),
            strongbox_proto::v1::JobState::Completed,
            "restore of {backup} onto {host}: {} {:?}",
            job.reason,
            job.restore
        );
        assert_eq!(result["verification"]["ok"], true, "{result}");
        (job, result)
    }

    pub async fn show_backup(&self, id: &str) -> BackupInfo {
        self.op()
            .show_backup(ShowBackupRequest { id: id.into() })
            .await
            .expect("fleet set-up")
            .into_inner()
    }

    pub async fn restore(&self, backup: &str, host: &str) -> (JobInfo, serde_json::Value) {
        let job = self
            .op()
            .restore_backup(RestoreBackupRequest {
                backup_id: backup.into(),
                to_host: host.into(),
                ..Default::default()
            })
            .await
            .expect("fleet set-up")
            .into_inner();
        let job = self.wait_job(&job.id).await;
        // The result as scripts see it (`restore show --output json`).
        let result = serde_json::to_value(&job.restore).unwrap_or(serde_json::Value::Null);
        (job, result)
    }
}

/// Waits until every host of `hosts` registered through `op` (an operator's client), and
/// approves what each claims (its members, and the spare role if it asks), as the inventory
/// does on a real fleet.
pub async fn wait_approved(op: OperatorServiceClient<Channel>, hosts: &[&str]) {
    crate::wait::poll(
        &format!("hosts {hosts:?} to register and be approved"),
        Duration::from_secs(60),
        || {
            let mut op = op.clone();
            async move {
                let have = op
                    .list_hosts(ListHostsRequest::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner()
                    .hosts;
                let mut ready = true;
                for name in hosts {
                    let Some(h) = have.iter().find(|x| x.name == *name) else {
                        ready = false;
                        continue;
                    };
                    if !h.pending_members.is_empty() || (h.spare_requested && !h.spare_approved) {
                        op.bind_host(BindHostRequest {
                            host: h.name.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                        ready = false;
                    } else if !h.spare && h.members.is_empty() {
                        ready = false;
                    }
                }
                if ready {
                    Ok(())
                } else {
                    Err(format!("{have:?}"))
                }
            }
        },
    )
    .await
}

/// Runs the `strongbox` CLI as the operator against the fleet.
pub fn cli(f: &Fleet, args: &[&str]) -> std::process::Output {
    cli_as(f, &f.operator, args)
}

/// Runs the `strongbox` CLI against the fleet with the certificate files `tls`.
pub fn cli_as(f: &Fleet, tls: &TlsFiles, args: &[&str]) -> std::process::Output {
    let addrs: Vec<String> = f
        .cluster
        .ids()
        .iter()
        .map(|id| f.cluster.addr(*id).to_string())
        .collect();
    std::process::Command::new(crate::cluster::workspace_bin("strongbox").expect("fleet set-up"))
        .args(args)
        .env("STRONGBOX_COORDINATORS", addrs.join(","))
        .env("STRONGBOX_TLS_CA", &tls.ca)
        .env("STRONGBOX_TLS_CERT", &tls.cert)
        .env("STRONGBOX_TLS_KEY", &tls.key)
        .env_remove("STRONGBOX_OUTPUT")
        .output()
        .expect("fleet set-up")
}

/// `strongbox backup download BACKUP --key-file KEY -o DIR`.
pub fn download(f: &Fleet, backup: &str, key: &Path, dir: &Path) -> std::process::Output {
    cli(
        f,
        &[
            "backup",
            "download",
            backup,
            "--key-file",
            key.to_str().expect("fleet set-up"),
            "-o",
            dir.to_str().expect("fleet set-up"),
        ],
    )
}

/// The files a download wrote, by name.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl Fleet {
    /// A PostgreSQL server prepared by the SQL `setup`, and the agent of `host` beside it
    /// serving it as `service` (not yet approved: wait for it with [`Fleet::wait_hosts`]).
    pub fn pg_host(
        &self,
        host: &str,
        service: &str,
        setup: &str,
    ) -> (crate::pg::PgServer, crate::agent::AgentProcess) {
        let pg = crate::pg::PgServer::start().expect("fleet set-up");
        pg.psql("postgres", setup).expect("fleet set-up");
        let agent = crate::agent::AgentProcess::start(
            &self.cluster,
            host,
            false,
            &[pg_service(service, &pg)],
            &self.key_file,
        )
        .expect("fleet set-up");
        (pg, agent)
    }
}

/// The agent config of a PostgreSQL service `name` on `pg`, reached as its superuser.
pub fn pg_service(name: &str, pg: &crate::pg::PgServer) -> ServiceSpec {
    ServiceSpec {
        host: Some(pg.host().to_string()),
        port: Some(pg.port()),
        user: Some(pg.superuser().to_string()),
        ..ServiceSpec::new(name, EngineKind::Postgres)
    }
}

/// The agent config of a MariaDB service `name` on `maria`, reached as root.
pub fn mariadb_service(name: &str, maria: &crate::mariadb::MariaDbServer) -> ServiceSpec {
    ServiceSpec {
        host: Some(maria.host().to_string()),
        port: Some(maria.port()),
        user: Some("root".to_string()),
        ..ServiceSpec::new(name, EngineKind::Mysql)
    }
}

/// The agent config of a SQLite service `name`, the database file at `path`.
pub fn sqlite_service(name: &str, path: &Path) -> ServiceSpec {
    ServiceSpec {
        path: Some(path.to_path_buf()),
        ..ServiceSpec::new(name, EngineKind::Sqlite)
    }
}
