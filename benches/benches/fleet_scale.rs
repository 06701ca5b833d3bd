//! Fleet scale (issue 17): a synthetic region of 10,002 services on 3,334 hosts, hourly backups
//! under the default retention, driven through the real apply path for 90 simulated days
//! (`strongbox_benches::fleet`). Reports, from one run:
//! - the catalog's records by kind and its disk size every 10 days (does it stop growing?);
//! - the scheduler's pass (its own read and plan) against a read of every record, as a ratio;
//!   retention's pass over one slice against one over the whole fleet;
//! - job creation and commit rates through `Catalog::apply` (one node, no network);
//! - a snapshot: export time and size while applies go on, install (prepare + swap) time, and
//!   the process's peak memory;
//! - the first page of each list, as the handlers read it;
//! - first, on a real 3-node region: each node's CPU while idle, without agent sessions and with
//!   `SESSIONS` (default 3334) simulated agents holding sessions (`strongbox_benches::sessions`).
//!
//! `cargo bench -p strongbox-benches --bench fleet_scale`; `HOSTS` (default 3334) and `DAYS`
//! (default 90) set the size; `SESSIONS=0` skips the sessions, `DAYS=0` the catalog. Without
//! `--bench` (a smoke run): 30 sessions, 30 hosts for 3 days.

use std::time::{Duration, Instant};

use strongbox_benches::fleet::{FleetSim, Shape, DAY};
use strongbox_coordinator::catalog::Catalog;
use strongbox_coordinator::policy::plan::plan;
use strongbox_coordinator::policy::retention::evaluate;
use strongbox_proto::v1::JobKind;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's resident memory now and at its peak, in MiB (`/proc/self/status`).
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The best of `n` timings of `f`.
fn best<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = None;
    let mut best = Duration::MAX;
    for _ in 0..n {
        let t = Instant::now();
        let v = f();
        let took = t.elapsed();
        if took < best {
            best = took;
        }
        out = Some(v);
    }
    (best, out.expect("at least one run"))
}

/// Each node's share of a core while idle, without sessions and with `n` (printed).
async fn idle_sessions(n: usize, window: Duration) {
    use strongbox_benches::sessions::{idle_share, open_sessions};
    strongbox_core::tls::install_crypto_provider();
    let c = strongbox_integration::cluster::Cluster::start(3, strongbox_benches::cluster_options())
        .expect("cluster");
    let viewer = c
        .pki
        .issue(strongbox_core::pki::Role::Viewer, "bench", &[])
        .unwrap();
    c.wait_for_leader(&viewer, 3).await.expect("cluster");
    let ids = [1, 2, 3];
    // Idle means after the start: every worker of every node has passed once (the first
    // passes and clock asks are not idle time).
    strongbox_integration::wait::poll(
        "every worker's first pass",
        Duration::from_secs(60),
        || async {
            for id in ids {
                let mut op =
                    strongbox_proto::v1::operator_service_client::OperatorServiceClient::new(
                        c.channel(id, &viewer).map_err(|e| e.to_string())?,
                    );
                let st = op
                    .cluster_status(strongbox_proto::v1::ClusterStatusRequest {})
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                let ran = |w: &strongbox_proto::v1::WorkerStatus| w.passes > 0 || w.leader_only;
                if !st.workers.iter().all(ran) || st.workers.is_empty() {
                    return Err(format!("node {id}: {:?}", st.workers));
                }
            }
            Ok(())
        },
    )
    .await;
    let without = idle_share(&c, &ids, window).await;
    let t = Instant::now();
    open_sessions(&c, &ids, n).await;
    println!(
        "  {n} agent sessions opened in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Every session recorded (the host connected through it), then measured.
    strongbox_integration::wait::poll(
        "every session recorded",
        Duration::from_secs(300),
        || async {
            let connected = strongbox_benches::sessions::connected(&c, 1, &viewer).await;
            if connected >= n {
                Ok(())
            } else {
                Err(format!("{connected} of {n} connected"))
            }
        },
    )
    .await;
    let with = idle_share(&c, &ids, window).await;
    for ((id, a), (_, b)) in without.iter().zip(&with) {
        println!(
            "  idle node {id}: {:.2}% of a core without sessions, {:.2}% with {n} ({:.2}% a 1,000 sessions)",
            a * 100.0,
            b * 100.0,
            (b - a).max(0.0) * 100.0 * 1000.0 / n.max(1) as f64
        );
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let sessions = if smoke {
        30
    } else {
        env_num("SESSIONS", 3_334)
    } as usize;
    if sessions > 0 {
        let window = Duration::from_secs(if smoke { 5 } else { 60 });
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(idle_sessions(sessions, window));
    }
    let hosts = if smoke { 30 } else { env_num("HOSTS", 3_334) } as usize;
    let days = if smoke { 3 } else { env_num("DAYS", 90) };
    if days == 0 {
        return;
    }
    let shape = Shape {
        hosts,
        ..Shape::fleet_scale()
    };
    let services = shape.services();
    let dir = tempfile::tempdir().expect("temp dir");
    let db_dir = dir.path().join("catalog");
    println!("fleet_scale: {services} services on {hosts} hosts, hourly backups, {days} days");
    let started = Instant::now();
    let mut sim = FleetSim::new(&db_dir, shape);
    println!(
        "  fleet registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!(
        "  {:>4}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>8}",
        "day", "records", "backups", "jobs", "requests", "audit", "disk MiB", "wall s"
    );
    for day in 1..=days {
        for _ in 0..24 {
            sim.hour();
        }
        if day % 10 == 0 || day == days || smoke {
            let counts = sim.counts();
            let n = |k: &str| counts.get(k).map_or(0, |c| c.0);
            let total: u64 = counts.values().map(|c| c.0).sum();
            println!(
                "  {:>4}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9.1}  {:>8.0}",
                day,
                total,
                n("backup/"),
                n("job/"),
                n("req/"),
                n("audit/"),
                sim.disk_bytes(&db_dir) as f64 / (1 << 20) as f64,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let counts = sim.counts();
    println!("  records by kind at the end (records, MiB):");
    for (kind, (n, bytes)) in &counts {
        println!(
            "    {kind:<24} {n:>10}  {:>8.1}",
            *bytes as f64 / (1 << 20) as f64
        );
    }

    let s = sim.spent.clone();
    println!(
        "  applies: {} jobs created at {:.0}/s, {} commits at {:.0}/s, {} backups expired",
        s.jobs_created,
        s.jobs_created as f64 / s.create.as_secs_f64().max(1e-9),
        s.commits,
        s.commits as f64 / s.commit.as_secs_f64().max(1e-9),
        s.expired
    );

    // The scheduler's pass: its own read against a read of every record.
    let now = sim.now;
    let (pass, jobs) = best(3, || {
        let snap = sim.catalog.schedule_snapshot().expect("snapshot");
        plan(&snap, now).len()
    });
    let (full, full_jobs) = best(1, || {
        plan(
            &sim.catalog.full_schedule_snapshot().expect("full read"),
            now,
        )
        .len()
    });
    assert_eq!(jobs, full_jobs, "the pass decides as a full read would");
    println!(
        "  scheduler pass: {:.1} ms (max over the run {:.1} ms); a read of every record: {:.1} ms; ratio {:.1}x",
        ms(pass),
        ms(s.scheduler_max),
        ms(full),
        full.as_secs_f64() / pass.as_secs_f64()
    );

    // Retention: one slice against the whole fleet at once.
    let judge = |after: Option<&str>, limit: usize| {
        let (slice, next) = sim.catalog.retention_slice(after, limit).expect("slice");
        let mut expired = 0;
        for (service, backups) in slice {
            let policy = sim.catalog.effective_policy(&service).expect("policy");
            expired += evaluate(&policy, &backups, now)
                .values()
                .filter(|v| v.expired())
                .count();
        }
        (expired, next)
    };
    let (slice, _) = best(3, || {
        judge(None, strongbox_coordinator::controllers::retention::SLICE)
    });
    let (whole, _) = best(1, || judge(None, usize::MAX));
    println!(
        "  retention pass: {:.1} ms a slice of 500 services (max over the run {:.1} ms); the whole fleet at once: {:.1} ms; ratio {:.1}x",
        ms(slice),
        ms(s.retention_max),
        ms(whole),
        whole.as_secs_f64() / slice.as_secs_f64()
    );

    // The first page of each list, as the handlers read it.
    let c = &sim.catalog;
    let (t, _) = best(5, || c.hosts_page(None, 20).expect("hosts"));
    println!("  first page: host list {:.2} ms", ms(t));
    let (t, _) = best(5, || {
        let page = c.services_page(None, 20).expect("services");
        c.services_snapshot(page.items).expect("snapshot")
    });
    println!("  first page: service list {:.2} ms", ms(t));
    let (t, _) = best(5, || {
        let page = c.backups_page("", None, 20).expect("backups");
        let mut seen = std::collections::BTreeSet::new();
        for b in &page.items {
            if seen.insert(b.service.clone()) {
                let policy = c.effective_policy(&b.service).expect("policy");
                let _ = evaluate(&policy, &c.service_backups(&b.service).expect("b"), now);
            }
        }
    });
    println!("  first page: backup list {:.2} ms", ms(t));
    let (t, _) = best(5, || c.jobs_page(JobKind::Restore, "", None, 20));
    println!("  first page: restore list {:.2} ms", ms(t));
    let (t, _) = best(5, || c.audit_page(None, 20));
    println!("  first page: audit list {:.2} ms", ms(t));

    // A snapshot: exported while the region goes on, installed into a fresh node's catalog.
    let before = rss_mib();
    let export = sim.catalog.begin_export().expect("export");
    let index = export.index;
    let file = dir.path().join("snapshot");
    let t = Instant::now();
    let walking = {
        let file = file.clone();
        std::thread::spawn(move || export.write_to(&file).expect("export"))
    };
    let mut during = 0;
    while !walking.is_finished() {
        sim.hour();
        during += 1;
    }
    let facts = walking.join().expect("walk");
    let exported = t.elapsed();
    let fresh_dir = dir.path().join("fresh");
    let fresh_db = strongbox_coordinator::store::Store::open(&fresh_dir, 64 << 20).expect("store");
    let fresh = Catalog::open(&fresh_db).expect("catalog");
    let t = Instant::now();
    fresh
        .prepare_install(&file, index, &facts)
        .expect("prepare");
    fresh
        .install_prepared(index, fresh_db.batch())
        .expect("install");
    let installed = t.elapsed();
    let after = rss_mib();
    println!(
        "  snapshot: {:.1} MiB exported in {:.1} s while {during} simulated hours applied; installed in {:.1} s; RSS {} MiB before, {} MiB after, peak {} MiB",
        facts.bytes as f64 / (1 << 20) as f64,
        exported.as_secs_f64(),
        installed.as_secs_f64(),
        before.0,
        after.0,
        after.1
    );
    println!(
        "  done in {:.0} s; simulated {:.0} days",
        started.elapsed().as_secs_f64(),
        (sim.now - strongbox_benches::fleet::T0) as f64 / DAY as f64
    );
}
