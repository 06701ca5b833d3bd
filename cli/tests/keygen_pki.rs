//! The `strongbox` binary's keygen and pki commands, run as an operator would.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn strongbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(args)
        .env_remove("STRONGBOX_OUTPUT")
        .output()
        .expect("run strongbox")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = strongbox(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_0600_refuses_overwrite_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fleet.key");
    let k = key.to_str().unwrap();
    let v = ok_json(&["keygen", "--out", k]);
    assert_eq!(v["new_key_id"], 1);
    assert_eq!(mode(&key), 0o600);
    let first = std::fs::read(&key).unwrap();

    let out = strongbox(&["keygen", "--out", k]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        first,
        "the refused run left the file alone"
    );

    let v = ok_json(&["keygen", "--out", k, "--rotate"]);
    assert_eq!(v["new_key_id"], 2);
    assert_eq!(v["key_ids"], serde_json::json!([1, 2]));
    assert_eq!(mode(&key), 0o600);

    let v = ok_json(&["keygen", "--out", k, "--force"]);
    assert_eq!(v["key_ids"], serde_json::json!([1]));
    assert_ne!(std::fs::read(&key).unwrap(), first);
}

#[test]
fn pki_init_ca_and_issue_write_usable_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = dir.path().join("certs");
    ok_json(&["pki", "init-ca", "--dir", ca.to_str().unwrap()]);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    let again = strongbox(&["pki", "init-ca", "--dir", ca.to_str().unwrap()]);
    assert!(!again.status.success());
    // It says what to do, and offers no flag that does not exist.
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("another --dir") && !err.contains("--force"),
        "{err}"
    );

    let v = ok_json(&[
        "pki",
        "issue",
        "--ca-dir",
        ca.to_str().unwrap(),
        "--role",
        "node",
        "--name",
        "node-1",
        "--san",
        "127.0.0.1",
        "--san",
        "coord1.example.net",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(v["identity"], "spiffe://strongbox/node/node-1");
    assert_eq!(mode(&out.join("node-1.key")), 0o600);
    assert!(out.join("ca.crt").exists());
    let pem = std::fs::read_to_string(out.join("node-1.crt")).unwrap();
    let id = strongbox_core::pki::identity_from_pem(&pem).unwrap();
    assert_eq!((id.role.as_str(), id.name.as_str()), ("node", "node-1"));

    let bad = strongbox(&[
        "pki",
        "issue",
        "--ca-dir",
        ca.to_str().unwrap(),
        "--role",
        "admin",
        "--name",
        "x",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("expected node, agent, operator, viewer or region"));

    // The table output is for people: one aligned line per field.
    let table = strongbox(&[
        "pki",
        "issue",
        "--ca-dir",
        ca.to_str().unwrap(),
        "--role",
        "viewer",
        "--name",
        "grafana",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout)
        .contains("identity  spiffe://strongbox/viewer/grafana"));
}
