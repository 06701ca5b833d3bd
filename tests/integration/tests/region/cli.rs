//! `strongbox cluster status|add-node` run as an operator would, against real coordinators.

use std::process::Command;
use std::time::{Duration, Instant};

use strongbox_core::pki::Role;
use strongbox_core::tls::TlsFiles;
use strongbox_integration::cluster::{workspace_bin, Cluster, ClusterOptions};
use strongbox_proto::v1::JobState;

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
    let options = ClusterOptions {
        schedule_backups: true,
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start(3, options).expect("cluster");
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

    // Every node is named, the ones the first node met in its config too (issue 15, fault 10).
    let named = wait_for("every node named", || {
        status_json(&c, &viewer).filter(|v| {
            v["nodes"].as_array().is_some_and(|ns| {
                ns.iter()
                    .all(|n| n["name"].as_str().is_some_and(|s| s.starts_with("node-")))
            })
        })
    });
    assert_eq!(named["nodes"].as_array().unwrap().len(), 3, "{named}");

    // Every node runs its own workers, each in a task of its own: maintenance everywhere, the
    // controllers on the leader, where each has passed (issue 16).
    let working = wait_for("the leader's controllers passed", || {
        status_json(&c, &viewer).filter(|v| {
            let leader = v["nodes"]
                .as_array()
                .and_then(|ns| ns.iter().find(|n| n["id"] == v["leader_id"]).cloned());
            leader.is_some_and(|l| {
                ["region", "clock", "retention", "scheduler", "maintenance"]
                    .iter()
                    .all(|name| {
                        l["workers"].as_array().is_some_and(|ws| {
                            ws.iter().any(|w| {
                                w["name"] == *name && w["passes"].as_u64().unwrap_or(0) > 0
                            })
                        })
                    })
            })
        })
    });
    for n in working["nodes"].as_array().unwrap() {
        let workers = n["workers"].as_array().expect("each node's workers");
        let maintenance = workers
            .iter()
            .find(|w| w["name"] == "maintenance")
            .expect("maintenance on every node");
        assert_eq!(maintenance["leader_only"], false, "{n}");
        let scheduler = workers
            .iter()
            .find(|w| w["name"] == "scheduler")
            .expect("the scheduler on every node, idle where it does not lead");
        if n["id"] != working["leader_id"] {
            assert!(
                scheduler["waiting"]
                    .as_str()
                    .is_some_and(|w| w.contains("runs on the leader")),
                "{n}"
            );
        }
        for key in [
            "interval_ms",
            "passes",
            "items",
            "last_pass_unix_ms",
            "last_pass",
            "last_pass_took_ms",
            "last_error",
        ] {
            assert!(maintenance.get(key).is_some(), "{key} in {maintenance}");
        }
    }

    let table = strongbox(&c, &viewer, &["cluster", "status"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("leader") && text.contains("applied"),
        "{text}"
    );
    assert!(
        text.contains("workers") && text.contains("scheduler") && text.contains("maintenance"),
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
            "--name",
            "node-9",
        ],
    );
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("permission denied") && err.contains("operator"),
        "{err}"
    );

    // An operator cannot rewrite a live node by adding its id again, nor remove a node that
    // is not there: both are refused, and nothing changes.
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    let live = c.ids().into_iter().find(|i| *i != victim).unwrap();
    let again = strongbox(
        &c,
        &operator,
        &[
            "cluster",
            "add-node",
            "--id",
            &live.to_string(),
            "--address",
            "127.0.0.1:1",
            "--name",
            "node-x",
        ],
    );
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("exists already") && err.contains("remove-node"),
        "{again:?}"
    );
    let gone = strongbox(&c, &operator, &["cluster", "remove-node", "--id", "99"]);
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(
        !gone.status.success() && err.contains("no node 99"),
        "{gone:?}"
    );
    let now = status_json(&c, &viewer).expect("status");
    let kept = now["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == live)
        .expect("the live node")
        .clone();
    assert_ne!(kept["address"], "127.0.0.1:1", "{now}");
    assert_eq!(now["nodes"].as_array().unwrap().len(), 3, "{now}");
}

/// `strongbox host list|approve|revoke` as an operator runs them against real agents: a
/// spare and a second host of a known service wait for approval, the list says so, approval
/// binds them, revoke takes it back.
#[test]
fn host_approve_and_revoke_bind_what_agents_claim() {
    use strongbox_integration::agent::AgentProcess;
    use strongbox_integration::fleet::{cli, sqlite_service};
    strongbox_core::tls::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = rt.block_on(strongbox_integration::fleet::fleet());
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    for p in [&a, &b] {
        strongbox_integration::create_sqlite_db(p)
            .unwrap()
            .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');")
            .unwrap();
    }
    let _db1 = AgentProcess::start(
        &f.cluster,
        "db-1",
        false,
        &[sqlite_service("notes", &a)],
        &f.key_file,
    )
    .unwrap();
    let hosts = |f: &strongbox_integration::fleet::Fleet| -> serde_json::Value {
        let out = cli(f, &["--output", "json", "host", "list"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("one JSON document")
    };
    let host = |v: &serde_json::Value, name: &str| -> Option<serde_json::Value> {
        v.as_array()?.iter().find(|h| h["name"] == name).cloned()
    };
    wait_for("db-1 to serve notes", || {
        host(&hosts(&f), "db-1").filter(|h| h["members"].as_array().is_some_and(|m| !m.is_empty()))
    });
    let _db2 = AgentProcess::start(
        &f.cluster,
        "db-2",
        false,
        &[sqlite_service("notes", &b)],
        &f.key_file,
    )
    .unwrap();
    let _spare = AgentProcess::start(&f.cluster, "spare-1", true, &[], &f.key_file).unwrap();
    let list = wait_for("db-2 and spare-1 to register", || {
        let v = hosts(&f);
        (host(&v, "db-2").is_some() && host(&v, "spare-1").is_some()).then_some(v)
    });
    let db2 = host(&list, "db-2").unwrap();
    assert_eq!(db2["members"], serde_json::json!([]), "{db2}");
    assert_eq!(db2["pending_members"][0]["service"], "notes", "{db2}");
    let spare = host(&list, "spare-1").unwrap();
    assert_eq!(spare["spare"], false, "{spare}");
    assert_eq!(spare["spare_requested"], true, "{spare}");
    let table = cli(&f, &["host", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("awaiting approval") && text.contains("AWAITING APPROVAL"),
        "{text}"
    );

    let out = cli(&f, &["host", "approve", "spare-1"]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&f, &["--output", "json", "host", "approve", "db-2"]);
    assert!(out.status.success(), "{out:?}");
    let db2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(db2["bound_services"], serde_json::json!(["notes"]), "{db2}");
    let list = hosts(&f);
    assert_eq!(host(&list, "spare-1").unwrap()["spare"], true);
    assert_eq!(
        host(&list, "db-2").unwrap()["members"][0]["service"],
        "notes"
    );

    // A service name typed wrong is an error naming the closest known one (issue 15, fault 8).
    let out = cli(&f, &["backup", "list", "note"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no service \"note\"") && err.contains("\"notes\""),
        "{err}"
    );
    let out = cli(&f, &["backup", "list", "notes"]);
    assert!(out.status.success(), "{out:?}");
    // The lists' columns: tables, and the service when several are listed; JSON carries both.
    let (job, _) = rt.block_on(f.backup("notes"));
    assert_eq!(job.state(), JobState::Completed, "{}", job.reason);
    let out = cli(&f, &["backup", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TABLES") || text.contains("tables"), "{text}");
    let out = cli(&f, &["--output", "json", "backup", "list", "notes"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list[0]["service"], "notes", "{list}");
    assert!(
        list[0]["table_count"].as_u64().is_some_and(|n| n >= 1),
        "{list}"
    );
    // Revoking needs a target; then the claim waits again.
    let out = cli(&f, &["host", "revoke", "db-2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--service"),
        "{out:?}"
    );
    let out = cli(&f, &["host", "revoke", "db-2", "--service", "notes"]);
    assert!(out.status.success(), "{out:?}");
    let db2 = host(&hosts(&f), "db-2").unwrap();
    assert_eq!(db2["members"], serde_json::json!([]), "{db2}");
    // Nothing left to approve on spare-1: a clear refusal.
    let out = cli(&f, &["host", "approve", "spare-1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing awaiting approval"),
        "{out:?}"
    );
}

/// Issue 15, fault 5: `strongbox … | head -3` ended in a panic ("failed printing to stdout:
/// Broken pipe", exit 101). Output into a pipe nobody reads any more ends the command quietly.
#[test]
fn output_into_a_pipe_whose_reader_went_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let run_into_closed_pipe = |args: &[&str]| {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read); // the reader went before anything was written
        Command::new(workspace_bin("strongbox").unwrap())
            .args(args)
            .stdout(std::process::Stdio::from(write))
            .output()
            .unwrap()
    };
    for args in [
        vec!["pki", "init-ca", "--dir", ca.to_str().unwrap()],
        vec![
            "pki",
            "init-ca",
            "--dir",
            ca.to_str().unwrap(),
            "--output",
            "json",
        ],
    ] {
        let _ = std::fs::remove_dir_all(&ca);
        let out = run_into_closed_pipe(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
        // It did its work before the write failed.
        assert!(ca.join("ca.crt").is_file(), "{args:?}");
    }
}

/// Issue 15, fault 12: global options crowded every command's help, and `--output` (a format)
/// was easy to confuse with `-o` (a path).
#[test]
fn short_help_is_short_and_an_output_format_is_a_format() {
    let strongbox = workspace_bin("strongbox").unwrap();
    let run = |args: &[&str]| Command::new(&strongbox).args(args).output().unwrap();
    let short = run(&["backup", "list", "-h"]);
    let text = String::from_utf8_lossy(&short.stdout);
    assert!(
        !text.contains("--tls-cert"),
        "-h lists the connection options:\n{text}"
    );
    let long = run(&["backup", "list", "--help"]);
    let text = String::from_utf8_lossy(&long.stdout);
    assert!(
        text.contains("Connection") && text.contains("--tls-cert"),
        "{text}"
    );
    for (value, hint) in [
        ("./dump", "-o/--out"),
        ("sql", "--format sql"),
        ("yaml", "table or json"),
    ] {
        let out = run(&["--output", value, "service", "list"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(hint), "--output {value}: {err}");
    }
}
