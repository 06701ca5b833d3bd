//! `strongbox cluster status|add-node` run as an operator would, against real coordinators.

use std::process::Command;
use std::time::{Duration, Instant};

use strongbox_core::pki::Role;
use strongbox_core::tls::TlsFiles;
use strongbox_integration::cluster::{workspace_bin, Cluster, ClusterOptions};

fn strongbox(c: &Cluster, tls: &TlsFiles, args: &[&str]) -> std::process::Output {
    let addrs: Vec<String> = c.ids().iter().map(|id| c.addr(*id).to_string()).collect();
    Command::new(workspace_bin("strongbox").unwrap())
        .args(args)
        .env("STRONGBOX_COORDINATORS", addrs.join(","))
        .env("STRONGBOX_TLS_CA", &tls.ca)
        .env("STRONGBOX_TLS_CERT", &tls.cert)
        .env("STRONGBOX_TLS_KEY", &tls.key)
        .output()
        .unwrap()
}

fn status_json(c: &Cluster, tls: &TlsFiles) -> Option<serde_json::Value> {
    let out = strongbox(c, tls, &["--output", "json", "cluster", "status"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("one JSON document"))
}

fn wait_for(what: &str, mut f: impl FnMut() -> Option<serde_json::Value>) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cluster_status_shows_roles_indexes_and_unreachable_nodes() {
    strongbox_core::tls::install_crypto_provider();
    let mut c = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let formed = wait_for("three voters and a leader", || {
        status_json(&c, &viewer).filter(|v| {
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            v["leader_id"].as_u64().unwrap_or(0) != 0
                && nodes.len() == 3
                && nodes
                    .iter()
                    .all(|n| n["voter"] == true && n["term"].as_u64().unwrap_or(0) > 0)
        })
    });
    let leader = formed["leader_id"].as_u64().unwrap();
    let roles: Vec<&str> = formed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{formed}"
    );

    let table = strongbox(&c, &viewer, &["cluster", "status"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("leader") && text.contains("applied"),
        "{text}"
    );

    let victim = c.ids().into_iter().find(|i| *i != leader).unwrap();
    c.kill(victim).unwrap();
    let after = wait_for("the killed node shown unreachable", || {
        status_json(&c, &viewer).filter(|v| {
            v["nodes"].as_array().is_some_and(|ns| {
                ns.iter()
                    .any(|n| n["id"] == victim && n["role"] == "unreachable")
            })
        })
    });
    assert_eq!(after["nodes"].as_array().unwrap().len(), 3);

    // A viewer may not change the cluster, and is told so.
    let denied = strongbox(
        &c,
        &viewer,
        &[
            "cluster",
            "add-node",
            "--id",
            "9",
            "--address",
            "127.0.0.1:1",
        ],
    );
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("permission denied") && err.contains("operator"),
        "{err}"
    );
}
