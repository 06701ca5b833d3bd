//! What an operator gets wrong at 3 a.m., against a real fleet: each mistake is refused before
//! anything happens, with a message that says what to do (found by trying the CLI as a new
//! operator would).

use strongbox_integration::fleet::{cli, fleet};

/// The command fails, says `want`, and prints nothing on stdout.
fn refused(out: &std::process::Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {out:?}");
    assert!(err.contains(want), "{want:?} not in: {err}");
    assert!(out.stdout.is_empty(), "stdout: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_are_refused_before_anything_happens() {
    let f = fleet().await;
    let (_db, _host) = f
        .sqlite_host(
            "db-1",
            "notes",
            "notes.db",
            "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');",
        )
        .await;
    let (_, backup) = f.backup("notes").await;
    let key = f.key_file.to_str().unwrap();

    // SQL is PostgreSQL's conversion: an SQLite backup is its file, and nothing is written.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("dl");
    let out = cli(
        &f,
        &[
            "--output",
            "json",
            "backup",
            "download",
            &backup.id,
            "--key-file",
            key,
            "--format",
            "sql",
            "-o",
            out_dir.to_str().unwrap(),
        ],
    );
    refused(&out, "sqlite3 FILE .dump");
    assert!(!out_dir.exists(), "nothing is written");

    // A service nobody serves is named as such, not listed as having no restores.
    refused(
        &cli(&f, &["restore", "list", "--service", "ntoes"]),
        "did you mean \"notes\"",
    );

    // A zero timeout would give up before the job starts, leaving it running unseen.
    let out = cli(
        &f,
        &["backup", "create", "notes", "--wait", "--timeout", "0"],
    );
    refused(&out, "at least 1s");

    // A hold reason is one line: a terminal escape or a line break would forge what tables
    // and the audit log show.
    let out = cli(
        &f,
        &[
            "backup",
            "hold",
            &backup.id,
            "--reason",
            "ok\u{1b}[2J\r\nfake: line",
        ],
    );
    refused(&out, "one line");
    let shown = cli(&f, &["--output", "json", "backup", "show", &backup.id]);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["held"], false, "{v}");
}
