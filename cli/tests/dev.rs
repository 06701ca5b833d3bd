//! End to end: `strongbox dev --exit-when-done --output json` starts 3 coordinators and 2
//! agents, backs up the SQLite demo database, restores it onto the spare, and cleans up; its
//! stdout is one JSON document saying the backup completed and the restore verified.
//!
//! Needs the workspace binaries next to `strongbox` (`cargo build --workspace --bins`); the
//! test says so and fails when they are missing, rather than passing without running.

use std::process::Command;

#[test]
fn dev_backs_up_and_restores_the_demo_database() {
    let strongbox = env!("CARGO_BIN_EXE_strongbox");
    let dir = std::path::Path::new(strongbox)
        .parent()
        .expect("the binary has a folder");
    for b in ["strongbox-coordinator", "strongbox-agent"] {
        assert!(
            dir.join(b).is_file(),
            "{b} is missing in {}: run `cargo build --workspace --bins` first",
            dir.display()
        );
    }
    let out = Command::new(strongbox)
        .args(["dev", "--exit-when-done", "--output", "json"])
        .env_remove("STRONGBOX_OUTPUT")
        .output()
        .expect("runs strongbox dev");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "strongbox dev failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));

    // The summary's fields are pinned (its jobs and backup are the views `backup create` and
    // `restore show` print, pinned in `backups/json_documents.rs`).
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map_or_else(Vec::new, |o| o.keys().cloned().collect());
        k.sort();
        k
    };
    assert_eq!(
        keys(&v),
        [
            "backup",
            "backup_job",
            "coordinators",
            "dir",
            "ok",
            "restore_job",
            "timings_ms",
            "verified"
        ],
        "{v:#}"
    );
    assert_eq!(
        keys(&v["timings_ms"]),
        ["agents", "backup", "cluster", "database", "restore", "setup", "total"],
        "{v:#}"
    );
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["backup_job"]["state"], "completed", "{v:#}");
    assert_eq!(v["backup"]["state"], "completed", "{v:#}");
    assert!(
        v["backup"]["plain_bytes"].as_u64().unwrap_or(0) > 100_000,
        "{v:#}"
    );
    assert!(
        v["backup"]["chunk_count"].as_u64().unwrap_or(0) >= 1,
        "{v:#}"
    );
    assert_eq!(v["restore_job"]["state"], "completed", "{v:#}");
    assert_eq!(v["restore_job"]["host"], "dev-spare", "{v:#}");
    let verification = &v["restore_job"]["result"]["verification"];
    assert_eq!(verification["ok"], true, "{v:#}");
    assert_eq!(verification["tables_checked"], 3, "{v:#}");
    assert_eq!(verification["rows_checked"], 7200, "{v:#}");
    assert!(v["timings_ms"]["total"].as_u64().is_some(), "{v:#}");

    let temp = v["dir"]
        .as_str()
        .expect("the summary names the temp folder");
    assert!(
        !std::path::Path::new(temp).exists(),
        "dev must remove its temp folder {temp}"
    );
}
