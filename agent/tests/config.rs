//! The agent binary documents its options and explains a missing one; its configuration is
//! taken as operators write it: the engine names they use, and only the agent's own
//! environment variables (issue 15, faults 8 and 9).

use std::process::Command;

use strongbox_agent::config::{Args, Config};
use strongbox_engines::EngineKind;

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
        "STRONGBOX_AGENT_KEY_FILE",
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

fn config_with(dir: &std::path::Path, engine: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "coordinators = [\"127.0.0.1:7443\"]\nregion = \"r\"\nhost = \"db-2\"\n\
             tls_ca = \"/nonexistent/config-ca.crt\"\ntls_cert = \"/nonexistent/config-db-2.crt\"\n\
             tls_key = \"/nonexistent/config-db-2.key\"\nkey_file = \"/nonexistent/fleet.key\"\n\n\
             [[service]]\nname = \"shop\"\nengine = \"{engine}\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn engine_names_operators_use_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind) in [
        ("mariadb", EngineKind::Mysql),
        ("MariaDB", EngineKind::Mysql),
        ("mysql", EngineKind::Mysql),
        ("postgresql", EngineKind::Postgres),
        ("PostgreSQL", EngineKind::Postgres),
        ("postgres", EngineKind::Postgres),
        ("sqlite3", EngineKind::Sqlite),
    ] {
        let config = Config::load(Args {
            config: Some(config_with(dir.path(), name)),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(config.services[0].engine, kind, "{name}");
    }
    let e = Config::load(Args {
        config: Some(config_with(dir.path(), "oracle")),
        ..Default::default()
    })
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("oracle") && e.contains("mariadb"), "{e}");
}

#[test]
fn the_clis_environment_does_not_reach_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), "postgres");
    // What `strongbox dev` tells operators to export, for the CLI.
    let out = Command::new(env!("CARGO_BIN_EXE_strongbox-agent"))
        .arg("--config")
        .arg(&config)
        .env("STRONGBOX_TLS_CERT", "/nonexistent/operator.crt")
        .env("STRONGBOX_TLS_KEY", "/nonexistent/operator.key")
        .env("STRONGBOX_TLS_CA", "/nonexistent/operator-ca.crt")
        .env("STRONGBOX_HOST", "dev-operator")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config-"),
        "the config's files were not used: {err}"
    );
    assert!(
        !err.contains("operator"),
        "the CLI's variables reached the agent: {err}"
    );
    // The missing file is named with its option (issue 15, fault 7).
    assert!(
        err.contains("--tls-ca (`tls_ca`) /nonexistent/config-ca.crt: no such file"),
        "{err}"
    );
    // Its own prefix still works, and --help names it.
    let help = Command::new(env!("CARGO_BIN_EXE_strongbox-agent"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("STRONGBOX_AGENT_TLS_CERT"), "{help}");
}
