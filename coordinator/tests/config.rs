//! The coordinator binary documents its options and explains a missing one.

use std::process::Command;

#[test]
fn help_documents_every_option_and_missing_ones_are_named() {
    let bin = env!("CARGO_BIN_EXE_strongbox-coordinator");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for opt in [
        "--config",
        "--node-id",
        "--region",
        "--listen",
        "--http-listen",
        "--peer",
        "--data-dir",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "STRONGBOX_COORDINATOR_NODE_ID",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, "node_id = 1\nregion = \"test\"\n").unwrap();
    let out = Command::new(bin)
        .args(["--config", cfg.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing --listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
