//! Backup and restore of a pgbench database through a 3-node local cluster and two agents,
//! against what an operator would do by hand, in the same run:
//! - backup vs `pg_dump --format=custom --compress=0 | zstd -3 > file` (target ≤ 1.15x);
//! - restore vs a fresh server with default (durable) settings (initdb + start) + `zstd -d` +
//!   `pg_restore --jobs 2` (≤ 1.15x);
//! - the nightly case: after appending 1% rows to `pgbench_accounts` and updating a contiguous
//!   1% range of it, the second backup's new stored bytes vs the first's (≤ 10%).
//!
//! `cargo build --release --workspace --bins && cargo bench -p strongbox-benches --bench
//! backup_restore`; `BENCH_SCALE` sets the pgbench scale (default 100, about 1.5 GB; the
//! smoke run without `--bench` uses 2 and one round); `BENCH_ROUNDS` the rounds (default 3):
//! each round times the baseline backup, ours (into a new cluster), the baseline restore and
//! ours, and the bench reports each round and the median ratio, as this machine's timings
//! move by tens of percent from run to run. `BENCH_LOG=1` prints the agents' logs after each
//! backup and restore. Each side starts after a `sync` and reports the machine's busy CPU time
//! besides its wall time (both sides share the 2 cores with everything else running).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use strongbox_benches::{cluster_options, Timed, Timer};
use strongbox_core::files::Overwrite;
use strongbox_core::keys::{FleetKey, Keyring};
use strongbox_core::pki::Role;
use strongbox_core::tls::TlsFiles;
use strongbox_integration::agent::AgentProcess;
use strongbox_integration::cluster::Cluster;
use strongbox_integration::pg::{pg_tool, PgServer};
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{BackupInfo, JobState, RestoreBackupRequest, ShowBackupRequest};

fn sh(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// One round's four timings.
struct Round {
    base_backup: Timed,
    our_backup: Timed,
    base_restore: Timed,
    our_restore: Timed,
}

/// A 3-node cluster with a database agent for the source and a spare.
struct Ours {
    cluster: Cluster,
    operator: TlsFiles,
    db: AgentProcess,
    spare: AgentProcess,
}

impl Ours {
    async fn start(pg: &PgServer, key_file: &Path) -> Ours {
        let cluster = Cluster::start(3, cluster_options()).expect("cluster");
        let operator = cluster.pki.issue(Role::Operator, "bench", &[]).unwrap();
        cluster.wait_for_leader(&operator, 3).await.unwrap();
        let service = strongbox_engines::ServiceSpec {
            databases: vec!["postgres".into()],
            ..strongbox_integration::fleet::pg_service("bench", pg)
        };
        let db = AgentProcess::start(&cluster, "db-1", false, &[service], key_file).unwrap();
        let spare = AgentProcess::start(&cluster, "spare-1", true, &[], key_file).unwrap();
        let op = OperatorServiceClient::new(cluster.channel(1, &operator).unwrap());
        strongbox_integration::fleet::wait_approved(op, &["db-1", "spare-1"]).await;
        Ours {
            cluster,
            operator,
            db,
            spare,
        }
    }

    fn operator_client(&self) -> OperatorServiceClient<tonic::transport::Channel> {
        OperatorServiceClient::new(self.cluster.channel(1, &self.operator).unwrap())
    }

    /// Stops this round's agents and nodes (its restored server is stopped already) but keeps
    /// the files until the end: deleting thousands of files would make the next timed side
    /// pay the file system's work on freshly freed inodes.
    fn stop(&mut self) {
        self.db.kill().unwrap();
        self.spare.kill().unwrap();
        for id in self.cluster.ids() {
            self.cluster.stop_node(id).unwrap();
        }
    }
}

#[tokio::main]
async fn main() {
    strongbox_core::tls::install_crypto_provider();
    let smoke = !std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (scale, rounds) = if smoke {
        (2, 1)
    } else {
        (env("BENCH_SCALE", 100), env("BENCH_ROUNDS", 3).max(1))
    };
    let log = std::env::var_os("BENCH_LOG").is_some();
    let pg = PgServer::start().expect("postgres");
    pg.pgbench_init("postgres", scale).expect("pgbench -i");
    let work = tempfile::tempdir().unwrap();
    let key_file = work.path().join("fleet.key");
    Keyring::new([FleetKey::generate(1).unwrap()])
        .unwrap()
        .save(&key_file, Overwrite::Refuse)
        .unwrap();

    let mut results = Vec::new();
    // Everything a round made stays until the end (see `Ours::stop`).
    let mut stopped: Vec<Ours> = Vec::new();
    let mut baseline_servers = Vec::new();
    let mut last = None;
    for round in 1..=rounds {
        // Baseline backup: pg_dump | zstd -3 > file.
        let file = work.path().join(format!("base-{round}.dump.zst"));
        let t = Timer::start();
        let pipeline = format!(
            "{} --format=custom --compress=0 postgres | zstd -q -3 -o {}",
            shell_quote(&pg_tool("pg_dump").unwrap().display().to_string()),
            shell_quote(&file.display().to_string())
        );
        sh(
            "pg_dump | zstd",
            Command::new("sh").arg("-c").arg(&pipeline).envs(pg.env()),
        );
        let base_backup = t.stop();

        // Our backup, into a new cluster each round (a second backup into the same one would
        // upload nothing).
        let ours = Ours::start(&pg, &key_file).await;
        let (our_backup, backup) = timed_backup(&ours).await;
        if log {
            eprintln!("{}", ours.db.log_text());
        }

        // Baseline restore: a fresh server as an operator would make it (default settings, so
        // `fsync = on` like the servers restores provision; the harness's test servers run
        // with `fsync = off`), zstd -d, pg_restore --jobs 2.
        let t = Timer::start();
        let mut fresh = PgServer::builder()
            .durable(true)
            .start()
            .expect("fresh postgres");
        let plain = work.path().join(format!("base-{round}.dump"));
        sh(
            "zstd -d",
            Command::new("zstd")
                .args(["-q", "-d", "-f"])
                .arg(&file)
                .arg("-o")
                .arg(&plain),
        );
        let mut restore = fresh.client_command("pg_restore");
        restore
            .args(["--jobs", "2", "--exit-on-error", "-d", "postgres"])
            .arg(&plain);
        sh("pg_restore", &mut restore);
        let base_restore = t.stop();
        // One file: freeing its inode costs the next side nothing, and it is the round's
        // largest.
        std::fs::remove_file(&plain).unwrap();
        // Stopped, so no autovacuum of its fresh tables runs while ours does.
        fresh.stop().expect("stopping the baseline server");
        baseline_servers.push(fresh);

        // Our restore onto the spare.
        let t = Timer::start();
        let rjob = ours
            .operator_client()
            .restore_backup(RestoreBackupRequest {
                backup_id: backup.id.clone(),
                to_host: "spare-1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let rjob = ours
            .cluster
            .wait_job(&ours.operator, &rjob.id, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(
            rjob.state(),
            JobState::Completed,
            "{} {:?}",
            rjob.reason,
            rjob.restore
        );
        let our_restore = t.stop();
        if log {
            eprintln!("{}", ours.spare.log_text());
        }
        // Stopped right away (every round, the last before the nightly backup too), so no
        // autovacuum of its fresh tables runs while later sides are timed.
        ours.spare.stop_restored_servers();

        let r = Round {
            base_backup,
            our_backup,
            base_restore,
            our_restore,
        };
        println!(
            "round {round}: backup {:.2} ({} vs {}), restore {:.2} ({} vs {})",
            ratio(&r.our_backup, &r.base_backup),
            r.our_backup,
            r.base_backup,
            ratio(&r.our_restore, &r.base_restore),
            r.our_restore,
            r.base_restore
        );
        results.push(r);
        last = Some((backup, size(&file)));
        let mut ours = ours;
        if round < rounds {
            ours.stop();
        }
        stopped.push(ours);
    }

    // The nightly case, on the last round's cluster: a second backup after changes.
    let ours = stopped.last().expect("a round ran");
    let (first, zstd_size) = last.expect("a round ran");
    let rows = 100_000u64 * u64::from(scale);
    let one_percent = rows / 100;
    pg.psql(
        "postgres",
        &format!(
            "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT g, 1, 0, '' FROM generate_series({}, {}) g;
             UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN {} AND {};",
            rows + 1,
            rows + one_percent,
            rows / 2,
            rows / 2 + one_percent - 1
        ),
    )
    .unwrap();
    let (_, second) = timed_backup(ours).await;

    let ratios = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        let all = v
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        (median, all)
    };
    println!(
        "pgbench scale {scale}: dump {:.0} MB, pg_dump|zstd file {:.0} MB; stored by strongbox {:.0} MB in {} chunks",
        first.plain_bytes as f64 / 1e6,
        zstd_size as f64 / 1e6,
        first.stored_bytes as f64 / 1e6,
        first.chunk_count
    );
    let (median, all) = ratios(&|r| ratio(&r.our_backup, &r.base_backup));
    let (cpu_median, _) = ratios(&|r| cpu_ratio(&r.our_backup, &r.base_backup));
    println!(
        "  backup   vs pg_dump | zstd -3: median ratio {median:.2} of {rounds} rounds [{all}] (target <= 1.15); cpu {cpu_median:.2}"
    );
    let (median, all) = ratios(&|r| ratio(&r.our_restore, &r.base_restore));
    let (cpu_median, _) = ratios(&|r| cpu_ratio(&r.our_restore, &r.base_restore));
    println!(
        "  restore  vs initdb + zstd -d + pg_restore -j2: median ratio {median:.2} of {rounds} rounds [{all}] (target <= 1.15); cpu {cpu_median:.2}"
    );
    println!(
        "  nightly  second backup stored {:.1} MB = {:.1}% of the first's (target <= 10%)",
        second.stored_bytes as f64 / 1e6,
        100.0 * second.stored_bytes as f64 / first.stored_bytes.max(1) as f64
    );
    drop(stopped);
    drop(baseline_servers);
}

fn ratio(ours: &Timed, base: &Timed) -> f64 {
    ours.wall.as_secs_f64() / base.wall.as_secs_f64()
}

fn cpu_ratio(ours: &Timed, base: &Timed) -> f64 {
    ours.cpu.as_secs_f64() / base.cpu.as_secs_f64().max(1e-9)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A backup of the service through `ours`, timed until the job completed; the backup's record.
async fn timed_backup(ours: &Ours) -> (Timed, BackupInfo) {
    let (cluster, operator) = (&ours.cluster, &ours.operator);
    let t = Timer::start();
    let job = cluster.create_backup_job(operator, "bench").await.unwrap();
    let job = cluster
        .wait_job(operator, &job.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);
    let timed = t.stop();
    let backup = ours
        .operator_client()
        .show_backup(ShowBackupRequest { id: job.backup_id })
        .await
        .unwrap()
        .into_inner();
    (timed, backup)
}
