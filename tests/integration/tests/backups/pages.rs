//! Paged lists through the real CLI and coordinators (issue 17, point 4): people see the
//! newest 20 by default with a note on stderr that more exist, scripts (`--output json`) the
//! whole list unless they name a limit; `--limit N`, and `--all`, which streams one JSON array
//! page by page; a bad `--limit` or an empty service name is refused.

use serde_json::Value;
use strongbox_integration::fleet::{cli, fleet};
use strongbox_proto::v1::HoldBackupRequest;

/// The command's stdout as JSON (it must succeed and print one document), and its stderr.
fn json(f: &strongbox_integration::fleet::Fleet, args: &[&str]) -> (Value, String) {
    let out = cli(f, &[&["--output", "json"], args].concat());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {out:?}"));
    (doc, err)
}

fn len(v: &Value) -> usize {
    v.as_array().expect("an array").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_the_newest_20_then_more_on_demand_and_all_streams() {
    let f = fleet().await;
    let (_db, _host) = f
        .sqlite_host(
            "db-1",
            "notes",
            "notes.db",
            "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');",
        )
        .await;
    let (_, first) = f.backup("notes").await;
    let (_, second) = f.backup("notes").await;
    // 30 audit entries: holds and unholds of the first backup.
    for i in 0..30 {
        f.op()
            .hold_backup(HoldBackupRequest {
                backup_id: first.id.clone(),
                held: i % 2 == 0,
                reason: format!("audit {i}"),
            })
            .await
            .expect("hold");
    }

    // By default people see the newest 20, and a note that more exist; scripts get them all.
    let (doc, err) = json(&f, &["audit", "list"]);
    assert!(len(&doc) >= 30, "{doc}");
    assert!(!err.contains("--limit"), "{err}");
    let out = cli(&f, &["audit", "list"]);
    assert!(out.status.success());
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("showing 20") && note.contains("--all"),
        "{note}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    // Holds carry their reason (the even ones); unholds none.
    assert!(table.contains("(audit 28)"), "the newest first: {table}");
    assert!(!table.contains("(audit 8)"), "not beyond the 20th: {table}");

    // --limit: that many, newest first.
    let (doc, err) = json(&f, &["audit", "list", "--limit", "3"]);
    assert_eq!(len(&doc), 3);
    let indexes: Vec<u64> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().expect("an index"))
        .collect();
    assert!(indexes.windows(2).all(|w| w[0] > w[1]), "{indexes:?}");
    assert!(err.contains("showing 3"), "{err}");

    // --all: every entry, one valid JSON array, no note.
    let (doc, err) = json(&f, &["audit", "list", "--all"]);
    assert!(len(&doc) >= 30, "{doc}");
    assert!(!err.contains("--limit"), "{err}");

    // The same for backups, restores, services and hosts.
    let (doc, err) = json(&f, &["backup", "list", "notes", "--limit", "1"]);
    assert_eq!(len(&doc), 1);
    assert_eq!(doc[0]["id"], second.id.as_str(), "the newest first");
    assert!(err.contains("showing 1"), "{err}");
    let (doc, _) = json(&f, &["backup", "list", "--all"]);
    assert_eq!(len(&doc), 2);
    let (doc, _) = json(&f, &["restore", "list", "--all"]);
    assert_eq!(len(&doc), 0);
    let (doc, err) = json(&f, &["service", "list", "--limit", "5"]);
    assert_eq!(len(&doc), 1);
    assert!(err.is_empty() || !err.contains("--limit"), "{err}");
    let (doc, _) = json(&f, &["host", "list", "--all"]);
    assert_eq!(doc[0]["name"], "db-1");
    assert_eq!(doc[0]["agent"], "connected");

    // A limit of 0 shows nothing: refused, as is --limit with --all.
    let out = cli(&f, &["audit", "list", "--limit", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
    let out = cli(&f, &["backup", "list", "--limit", "5", "--all"]);
    assert!(!out.status.success());
    let out = cli(&f, &["backup", "list", ""]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be empty"));
}
