//! The SQLite engine against real database files: a backup taken while a writer writes is a
//! consistent copy whose stats match it, restores to an identical file that verifies, and a
//! restore never overwrites a file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use strongbox_engines::{self as engines, EngineKind, PartKind, Role, ServiceSpec, TableStat};
use strongbox_integration::sqlite::SqliteDb;

fn spec(path: &std::path::Path) -> ServiceSpec {
    ServiceSpec {
        name: "notes".into(),
        engine: EngineKind::Sqlite,
        host: None,
        port: None,
        user: None,
        password_file: None,
        password_env: None,
        databases: vec![],
        bin_dir: None,
        path: Some(path.to_path_buf()),
    }
}

fn dump_of(path: &std::path::Path, sql: &str) -> Vec<String> {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut stmt = db.prepare(sql).unwrap();
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<rusqlite::Result<Vec<String>>>()
        .unwrap();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writing_restores_identically_and_verifies() {
    let src = SqliteDb::create_named("app.db").unwrap();
    src.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, blob BLOB);
         CREATE TABLE empty_t (a INT);
         CREATE TABLE \"odd \"\"name\" (x INT);
         INSERT INTO \"odd \"\"name\" VALUES (1), (2);
         CREATE INDEX notes_body ON notes(body);
         CREATE VIEW short_notes AS SELECT id FROM notes WHERE length(body) < 5;
         CREATE TABLE log (note INTEGER);
         CREATE TRIGGER note_log AFTER INSERT ON notes BEGIN INSERT INTO log VALUES (new.id); END;",
    )
    .unwrap();
    for i in 0..2000 {
        src.execute(&format!(
            "INSERT INTO notes (body, blob) VALUES ('note {i} '';(\n', x'00ff{:02x}')",
            i % 256
        ))
        .unwrap();
    }

    // A writer keeps inserting while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let conn = src.open_connection().unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                conn.execute("INSERT INTO notes (body) VALUES ('w')", [])
                    .unwrap();
                n += 1;
            }
            n
        })
    };

    let engine = engines::open(spec(src.path())).unwrap();
    let probe = engine.probe().await.unwrap();
    assert!(probe.healthy);
    assert_eq!(probe.role, Role::Standalone);
    assert!(!probe.version.is_empty());

    let mut run = engine.begin_backup().await.unwrap();
    let parts = run.parts().to_vec();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].name, "app.db");
    assert_eq!(parts[0].kind, PartKind::File);
    let mut dump = run.dump(&parts[0]).await.unwrap();
    let bytes = dump.read_all().await.unwrap();
    let stats: Vec<TableStat> = dump.finish.await.unwrap();
    run.close().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 0, "the writer wrote nothing");

    let by_name = |n: &str| stats.iter().find(|s| s.name == n).map(|s| s.rows);
    assert_eq!(by_name("empty_t"), Some(0));
    assert_eq!(by_name("odd \"name"), Some(2));
    let notes = by_name("notes").unwrap();
    assert!(notes >= 2000);
    // The trigger ran in the same transactions: a consistent copy has one log row per note.
    assert_eq!(by_name("log"), Some(notes));
    assert!(stats.iter().all(|s| !s.name.starts_with("sqlite_")));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restore");
    let mut target = engines::provision(EngineKind::Sqlite, &dir, "127.0.0.1", None, "app.db")
        .await
        .unwrap();
    target
        .load(&parts[0], Box::new(std::io::Cursor::new(bytes)))
        .await
        .unwrap();
    let v = target.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert!(v.mismatches.is_empty());
    assert_eq!(v.engine_check, "PRAGMA integrity_check: ok");
    assert_eq!(v.tables_checked, stats.len() as u64);

    let conn = target.connection();
    assert_eq!(conn.engine, strongbox_engines::EngineKind::Sqlite);
    let restored = conn.data_dir.clone();
    assert_eq!(restored, dir.join("app.db"));
    assert!(!dir.join(".app.db.partial").exists());
    // Same schema (view, index, trigger) and the same first rows as the source.
    let schema =
        "SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_master ORDER BY name";
    assert_eq!(dump_of(&restored, schema), dump_of(src.path(), schema));
    let rows = "SELECT id || '|' || body || '|' || hex(coalesce(blob, '')) FROM notes WHERE id <= 2000 ORDER BY id";
    assert_eq!(dump_of(&restored, rows), dump_of(src.path(), rows));

    // The copy of the backup is gone (closed), and a restore never overwrites a file.
    assert!(
        engines::provision(EngineKind::Sqlite, &dir, "127.0.0.1", None, "app.db")
            .await
            .is_err()
    );
    engines::teardown(EngineKind::Sqlite, &dir).await.unwrap();
}

#[tokio::test]
async fn a_verification_notices_a_wrong_count_and_a_missing_table() {
    let src = SqliteDb::create().unwrap();
    src.execute_batch("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    let engine = engines::open(spec(src.path())).unwrap();
    let mut run = engine.begin_backup().await.unwrap();
    let part = run.parts()[0].clone();
    let mut dump = run.dump(&part).await.unwrap();
    let bytes = dump.read_all().await.unwrap();
    dump.finish.await.unwrap();
    run.close().await.unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let mut target = engines::provision(EngineKind::Sqlite, tmp.path(), "", None, "test.db")
        .await
        .unwrap();
    target
        .load(&part, Box::new(std::io::Cursor::new(bytes)))
        .await
        .unwrap();
    let expected = vec![
        TableStat {
            name: "t".into(),
            rows: 3,
        },
        TableStat {
            name: "gone".into(),
            rows: 1,
        },
    ];
    let v = target.verify(&expected).await.unwrap();
    assert!(!v.ok);
    assert_eq!(
        v.mismatches,
        vec![
            ("t".to_string(), 3, 2),
            ("gone (missing)".to_string(), 1, 0)
        ]
    );
}

#[tokio::test]
async fn a_missing_file_is_unhealthy_and_cannot_be_backed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = engines::open(spec(&tmp.path().join("nope.db"))).unwrap();
    assert!(!engine.probe().await.unwrap().healthy);
    let err = engine.begin_backup().await.err().unwrap().to_string();
    assert!(err.contains("no such file"), "{err}");
    assert!(
        !tmp.path().join("nope.db").exists(),
        "the probe created the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_replaces_the_live_file_under_open_connections() {
    let live = SqliteDb::create_named("app.db").unwrap();
    live.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
         CREATE INDEX notes_body ON notes(body);
         CREATE TABLE tags (name TEXT);
         INSERT INTO tags VALUES ('a'), ('b');",
    )
    .unwrap();
    for i in 0..500 {
        live.execute(&format!("INSERT INTO notes (body) VALUES ('note {i}')"))
            .unwrap();
    }
    let engine = engines::open(spec(live.path())).unwrap();
    let mut run = engine.begin_backup().await.unwrap();
    let part = run.parts()[0].clone();
    let mut dump = run.dump(&part).await.unwrap();
    let bytes = dump.read_all().await.unwrap();
    let stats = dump.finish.await.unwrap();
    run.close().await.unwrap();
    let notes = "SELECT id || '|' || body FROM notes ORDER BY id";
    let tags = "SELECT name FROM tags ORDER BY name";
    let schema = "SELECT type || ' ' || name FROM sqlite_master ORDER BY name";
    let before = [
        dump_of(live.path(), notes),
        dump_of(live.path(), tags),
        dump_of(live.path(), schema),
    ];

    // The live file moves on: rows added and changed, a table dropped, one added.
    live.execute_batch(
        "INSERT INTO notes (body) VALUES ('late');
         UPDATE notes SET body = 'changed' WHERE id <= 10;
         DROP TABLE tags;
         CREATE TABLE newer (x INT);",
    )
    .unwrap();
    // A second connection stays open through the restore.
    let reader = live.open_connection().unwrap();
    let count = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&reader), 501);

    let scratch = tempfile::tempdir().unwrap();
    let mut target = engine.in_place(scratch.path()).await.unwrap();
    target
        .load(&part, Box::new(std::io::Cursor::new(bytes)))
        .await
        .unwrap();
    let v = target.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.engine_check, "PRAGMA integrity_check: ok");
    assert_eq!(v.tables_checked, stats.len() as u64);
    assert_eq!(v.rows_checked, 502);

    // Both open connections see the restored database.
    assert_eq!(count(&reader), 500);
    assert_eq!(count(live.conn()), 500);
    assert_eq!(
        live.query_value::<i64>("SELECT count(*) FROM tags")
            .unwrap(),
        2
    );
    assert!(reader
        .query_row("SELECT count(*) FROM newer", [], |r| r.get::<_, i64>(0))
        .is_err());
    let after = [
        dump_of(live.path(), notes),
        dump_of(live.path(), tags),
        dump_of(live.path(), schema),
    ];
    assert_eq!(after, before);
    assert_eq!(
        live.query_value::<String>("PRAGMA journal_mode").unwrap(),
        "wal",
        "the live file keeps its journal mode"
    );

    let conn = target.connection();
    assert_eq!(conn.engine, strongbox_engines::EngineKind::Sqlite);
    assert_eq!(conn.data_dir, live.path());
    assert_eq!(conn.host, live.path().display().to_string());
    // The restored copy in the scratch folder is gone.
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Hostile names (issue 12, kind 1): table names and the file's path reach SQLite only through
// its API, quoted by its rules, never as SQL text or a URI.
// ---------------------------------------------------------------------------------------------

use strongbox_integration::hostile::{mariadb_names, PWNED_FILE};

/// A table named `name` per hostile name (`i + 1` rows), in the file at `path`.
fn hostile_tables(path: &std::path::Path) -> Vec<String> {
    let db = strongbox_integration::sqlite::create_sqlite_db(path).unwrap();
    let names = mariadb_names();
    for (i, n) in names.iter().enumerate() {
        let q = format!("\"{}\"", n.replace('"', "\"\""));
        db.execute_batch(&format!(
            "CREATE TABLE {q} (id INTEGER PRIMARY KEY, v TEXT);\n\
             WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {rows})\n\
             INSERT INTO {q} SELECT x, 'row ' || x FROM s;",
            rows = i + 1
        ))
        .unwrap();
    }
    names
}

/// Backs the file at `path` up, restores it into a fresh file and in place (after the live file
/// moved on), checking names, counts and content at each step.
async fn round_trip(path: &std::path::Path, names: &[String]) {
    let content = |p: &std::path::Path| -> Vec<String> {
        let db =
            rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        names
            .iter()
            .map(|n| {
                db.query_row(
                    &format!(
                        "SELECT count(*) || ':' || coalesce(group_concat(id || v), '') FROM \"{}\"",
                        n.replace('"', "\"\"")
                    ),
                    [],
                    |r| r.get::<_, String>(0),
                )
                .unwrap_or_else(|e| panic!("{n:?} in {}: {e}", p.display()))
            })
            .collect()
    };
    // The test itself opens the file by its absolute path: a relative one could read as a URI.
    let abs = std::path::absolute(path).unwrap();
    let before = content(&abs);
    let engine = engines::open(spec(path)).unwrap();
    assert!(engine.probe().await.unwrap().healthy);
    let mut run = engine.begin_backup().await.unwrap();
    let parts = run.parts().to_vec();
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(parts[0].name, file_name);
    let mut dump = run.dump(&parts[0]).await.unwrap();
    let bytes = dump.read_all().await.unwrap();
    let stats = dump.finish.await.unwrap();
    run.close().await.unwrap();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            stats.iter().find(|s| &s.name == n).map(|s| s.rows),
            Some(i as u64 + 1),
            "{n:?}: {stats:?}"
        );
    }
    assert_eq!(stats.len(), names.len());

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restore");
    let mut target = engines::provision(EngineKind::Sqlite, &dir, "", None, &file_name)
        .await
        .unwrap();
    target
        .load(&parts[0], Box::new(std::io::Cursor::new(bytes.clone())))
        .await
        .unwrap();
    let v = target.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.engine_check, "PRAGMA integrity_check: ok");
    let restored = target.connection().data_dir;
    assert_eq!(restored, dir.join(&file_name));
    assert_eq!(content(&restored), before);

    // In place, after the live file moved on.
    {
        let live = rusqlite::Connection::open(&abs).unwrap();
        for n in names {
            live.execute(
                &format!("DELETE FROM \"{}\" WHERE id = 1", n.replace('"', "\"\"")),
                [],
            )
            .unwrap();
        }
    }
    assert_ne!(content(&abs), before);
    let scratch = tempfile::tempdir().unwrap();
    let mut live = engine.in_place(scratch.path()).await.unwrap();
    live.load(&parts[0], Box::new(std::io::Cursor::new(bytes)))
        .await
        .unwrap();
    let v = live.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(content(&abs), before);
    assert!(
        !std::path::Path::new(PWNED_FILE).exists(),
        "{PWNED_FILE} exists: a hostile name ran as a shell command"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_table_names_and_file_name_survive_backup_restore_and_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    // A file name that starts like an option, with quotes, spaces and a line break.
    let path = tmp
        .path()
        .join("-Ah2130706434 it's \"a\" db;\n$(touch x).db");
    let names = hostile_tables(&path);
    round_trip(&path, &names).await;
}

/// A relative `path` that starts with `file:` names a file, not an SQLite URI (which would
/// open, or in place write, another file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_path_that_looks_like_a_uri_names_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    // The only test here that uses a relative path: the others use absolute ones, so changing
    // the folder of the process does not disturb them.
    std::env::set_current_dir(tmp.path()).unwrap();
    let relative = std::path::Path::new("file:app.db?mode=memory");
    let names = hostile_tables(&tmp.path().join(relative));
    round_trip(relative, &names).await;
    assert!(!tmp.path().join("app.db").exists(), "a URI was opened");
}

/// `sqlite3 FILE .dump` (the engine's own tool), for comparing a copy with its source.
fn sqlite3_dump(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(path)
        .arg(".dump")
        .output()
        .expect("sqlite3 runs (scripts/setup installs it)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 13: a restored SQLite file equals its source in `.dump` and in the pragmas kept in
/// the file (user_version, application_id, page_size, auto_vacuum, journal_mode), also when
/// they differ from SQLite's defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_file_keeps_its_dump_and_its_pragmas() {
    let src = SqliteDb::create_named("tuned.db").unwrap();
    src.execute_batch(
        "PRAGMA journal_mode = DELETE;
         PRAGMA page_size = 8192;
         PRAGMA auto_vacuum = FULL;
         VACUUM;
         PRAGMA user_version = 7;
         PRAGMA application_id = 1234567;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT) STRICT;
         CREATE TABLE w (k TEXT PRIMARY KEY, n INT) WITHOUT ROWID;
         INSERT INTO t (v) VALUES ('a'), ('b'), (NULL);
         INSERT INTO w VALUES ('x', 1), ('y', 2);",
    )
    .unwrap();
    let pragmas = |p: &std::path::Path| -> Vec<String> {
        [
            "user_version",
            "application_id",
            "page_size",
            "auto_vacuum",
            "journal_mode",
            "encoding",
        ]
        .iter()
        .map(|name| {
            let db = rusqlite::Connection::open(p).unwrap();
            let v: rusqlite::types::Value = db
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .unwrap();
            format!("{name}={v:?}")
        })
        .collect()
    };
    let before = pragmas(src.path());
    assert!(
        before.contains(&"page_size=Integer(8192)".to_string()),
        "{before:?}"
    );

    let engine = engines::open(spec(src.path())).unwrap();
    let mut run = engine.begin_backup().await.unwrap();
    let parts = run.parts().to_vec();
    let mut dump = run.dump(&parts[0]).await.unwrap();
    let bytes = dump.read_all().await.unwrap();
    let stats: Vec<TableStat> = dump.finish.await.unwrap();
    run.close().await.unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restore");
    let mut target = engines::provision(EngineKind::Sqlite, &dir, "127.0.0.1", None, "tuned.db")
        .await
        .unwrap();
    target
        .load(&parts[0], Box::new(std::io::Cursor::new(bytes)))
        .await
        .unwrap();
    let v = target.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:?}");
    let restored = target.connection().data_dir.clone();
    assert_eq!(pragmas(std::path::Path::new(&restored)), before);
    assert_eq!(
        sqlite3_dump(std::path::Path::new(&restored)),
        sqlite3_dump(src.path())
    );
    engines::teardown(EngineKind::Sqlite, &dir).await.unwrap();
}
