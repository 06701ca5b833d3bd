//! The agent binary documents its options and explains a missing one.

use std::process::Command;

#[test]
fn help_documents_every_option_and_missing_ones_are_named() {
    let bin = env!("CARGO_BIN_EXE_strongbox-agent");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for opt in [
        "--config",
        "--coordinator",
        "--region",
        "--host",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "--key-file",
        "--data-root",
        "--spare",
        "STRONGBOX_KEY_FILE",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
    let out = Command::new(bin)
        .args(["--coordinator", "127.0.0.1:7000"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing --region"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
