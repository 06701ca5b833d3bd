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
//! smoke run without `--bench` uses 2); `BENCH_LOG=1` prints the agents' logs after the first
//! backup and the restore. Each side starts after a `sync` and reports the machine's busy CPU time besides its
//! wall time (both sides share the 2 cores with everything else running).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strongbox_benches::{cluster_options, Timed, Timer};
use strongbox_core::files::Overwrite;
use strongbox_core::keys::{FleetKey, Keyring};
use strongbox_core::pki::Role;
use strongbox_core::tls::TlsFiles;
use strongbox_integration::agent::AgentProcess;
use strongbox_integration::cluster::Cluster;
use strongbox_integration::pg::{pg_tool, PgServer};
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{JobInfo, ListHostsRequest, RestoreBackupRequest, ShowBackupRequest};

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

#[tokio::main]
async fn main() {
    strongbox_core::tls::install_crypto_provider();
    let smoke = !std::env::args().any(|a| a == "--bench");
    let scale: u32 = if smoke {
        2
    } else {
        std::env::var("BENCH_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
    };
    let pg = PgServer::start().expect("postgres");
    pg.pgbench_init("postgres", scale).expect("pgbench -i");
    let work = tempfile::tempdir().unwrap();

    // Baseline backup: pg_dump | zstd -3 > file.
    let file = work.path().join("base.dump.zst");
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

    // Baseline restore: a fresh server as an operator would make it (default settings, so
    // `fsync = on` like the servers restores provision; the harness's test servers run with
    // `fsync = off`), zstd -d, pg_restore --jobs 2.
    let t = Timer::start();
    let fresh = PgServer::builder()
        .durable(true)
        .start()
        .expect("fresh postgres");
    let plain = work.path().join("base.dump");
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
    // The baseline server stops (no autovacuum of its fresh tables while ours run) but its
    // files stay until the end: deleting thousands of files here would make the next timed
    // side pay the file system's work on freshly freed inodes.
    let mut fresh = fresh;
    fresh.stop().expect("stopping the baseline server");

    // Ours.
    let cluster = Cluster::start(3, cluster_options()).expect("cluster");
    let operator = cluster.pki.issue(Role::Operator, "bench", &[]).unwrap();
    cluster.wait_for_leader(&operator, 3).await.unwrap();
    let key_file = work.path().join("fleet.key");
    Keyring::new([FleetKey::generate(1).unwrap()])
        .unwrap()
        .save(&key_file, Overwrite::Refuse)
        .unwrap();
    let service = format!(
        "[[service]]\nname = \"bench\"\nengine = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\ndatabases = [\"postgres\"]\n",
        pg.host(),
        pg.port(),
        pg.superuser()
    );
    let _db = AgentProcess::start(&cluster, "db-1", false, &service, &key_file).unwrap();
    let spare = AgentProcess::start(&cluster, "spare-1", true, "", &key_file).unwrap();
    let mut op = OperatorServiceClient::new(cluster.channel(1, &operator).unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while op
        .list_hosts(ListHostsRequest {})
        .await
        .map(|r| r.into_inner().hosts.len())
        .unwrap_or(0)
        < 2
    {
        assert!(Instant::now() < deadline, "agents did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (our_backup, job) = timed_backup(&cluster, &operator).await;
    if std::env::var_os("BENCH_LOG").is_some() {
        eprintln!("{}", _db.log_text());
    }
    let first = op
        .show_backup(ShowBackupRequest {
            id: job.backup_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    let t = Timer::start();
    let rjob = op
        .restore_backup(RestoreBackupRequest {
            backup_id: first.id.clone(),
            to_host: "spare-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rjob = cluster
        .wait_job(&operator, &rjob.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(rjob.state, "completed", "{} {}", rjob.reason, rjob.result);
    let our_restore = t.stop();
    if std::env::var_os("BENCH_LOG").is_some() {
        eprintln!("{}", spare.log_text());
    }

    // The nightly case.
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
    let (_, job2) = timed_backup(&cluster, &operator).await;
    let second = op
        .show_backup(ShowBackupRequest {
            id: job2.backup_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    let r = |ours: &Timed, base: &Timed| ours.wall.as_secs_f64() / base.wall.as_secs_f64();
    println!(
        "pgbench scale {scale}: dump {:.0} MB, pg_dump|zstd file {:.0} MB; stored by strongbox {:.0} MB in {} chunks",
        first.plain_bytes as f64 / 1e6,
        size(&file) as f64 / 1e6,
        first.stored_bytes as f64 / 1e6,
        first.chunk_count
    );
    println!(
        "  backup   pg_dump | zstd -3    {base_backup}   strongbox {our_backup}   ratio {:.2} (target <= 1.15)",
        r(&our_backup, &base_backup)
    );
    println!(
        "  restore  initdb + zstd -d + pg_restore -j2 {base_restore}   strongbox {our_restore}   ratio {:.2} (target <= 1.15)",
        r(&our_restore, &base_restore)
    );
    println!(
        "  nightly  second backup stored {:.1} MB = {:.1}% of the first's (target <= 10%)",
        second.stored_bytes as f64 / 1e6,
        100.0 * second.stored_bytes as f64 / first.stored_bytes.max(1) as f64
    );
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn timed_backup(cluster: &Cluster, operator: &TlsFiles) -> (Timed, JobInfo) {
    let t = Timer::start();
    let job = cluster.create_backup_job(operator, "bench").await.unwrap();
    let job = cluster
        .wait_job(operator, &job.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(job.state, "completed", "{}", job.reason);
    (t.stop(), job)
}
