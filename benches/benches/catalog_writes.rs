//! Catalog writes through Raft on 3 local coordinator processes: commits per second and
//! p50/p99 latency, with many concurrent writers (agents registering their hosts, each a Raft
//! entry applied on every node). Target: at least 1,000 commits/s with p99 under 20 ms.
//!
//! `cargo bench -p strongbox-benches --bench catalog_writes`; `WRITES` (default 5000) and
//! `WRITERS` (default 8) set the load.

use std::time::{Duration, Instant};

use strongbox_core::pki::Role;
use strongbox_integration::cluster::Cluster;
use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::v1::RegisterRequest;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    strongbox_core::tls::install_crypto_provider();
    let smoke = !std::env::args().any(|a| a == "--bench");
    let writes = if smoke { 200 } else { env_num("WRITES", 5000) };
    let writers = if smoke { 8 } else { env_num("WRITERS", 8) };
    let c = Cluster::start(3, strongbox_benches::cluster_options()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "bench", &[]).unwrap();
    let leader = c.wait_for_leader(&viewer, 3).await.expect("cluster");

    let per_writer = writes / writers;
    let mut tasks = Vec::new();
    let start = Instant::now();
    for w in 0..writers {
        let host = format!("bench-host-{w}");
        let tls = c.pki.issue(Role::Agent, &host, &[]).unwrap();
        let channel = c.channel(leader, &tls).unwrap();
        let region = c.options.region.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = AgentServiceClient::new(channel);
            let mut lat = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let t = Instant::now();
                client
                    .register(RegisterRequest {
                        host: host.clone(),
                        region: region.clone(),
                        spare: i % 2 == 0,
                        agent_version: format!("{i}"),
                        members: vec![],
                    })
                    .await
                    .expect("register");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let rate = lat.len() as f64 / elapsed.as_secs_f64();
    println!(
        "catalog writes on 3 nodes: {} commits by {writers} writers in {:.2?}",
        lat.len(),
        elapsed
    );
    println!(
        "  {:.0} commits/s (target >= 1000) {}   p50 {:.2?}   p99 {:.2?} (target < 20ms) {}",
        rate,
        if rate >= 1000.0 { "ok" } else { "BELOW TARGET" },
        pct(0.50),
        pct(0.99),
        if pct(0.99) < Duration::from_millis(20) {
            "ok"
        } else {
            "ABOVE TARGET"
        }
    );
}
