//! The PostgreSQL engine against real servers: a full backup of a cluster (roles, grants,
//! several databases, pgbench data, a view, a function, a sequence) restores into a fresh,
//! provisioned cluster that verifies and equals the source; a backup taken while pgbench
//! writes restores to a state where pgbench's balance invariant holds; failures name their
//! cause without showing the password; provisioned servers never outlive a test; hostile
//! names (the shared corpus, and role names crafted against a line-by-line edit of the
//! globals) go through dump, counts, restore, `pg_amcheck` and in-place restore as data, and a
//! name that is not UTF-8 fails the backup with an error naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use strongbox_engines::Error;
use strongbox_engines::{
    self as engines, Connection, EngineKind, PartKind, PartPlan, Role, ServiceSpec, TableStat,
};
use strongbox_integration::pg::PgServer;
use tokio::io::AsyncReadExt;

fn spec(pg: &PgServer, user: &str, password_file: Option<PathBuf>) -> ServiceSpec {
    ServiceSpec {
        name: "pg-test".into(),
        engine: EngineKind::Postgres,
        host: Some(pg.host().to_string()),
        port: Some(pg.port()),
        user: Some(user.to_string()),
        password_file,
        password_env: None,
        databases: vec![],
        bin_dir: Some(pg.bin_dir().to_path_buf()),
        path: None,
    }
}

/// Stops a provisioned server when dropped, also when an assertion failed.
struct Teardown {
    kind: EngineKind,
    dir: PathBuf,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let (kind, dir) = (self.kind, self.dir.clone());
        // Drop may run inside the test's runtime: stop on a thread with its own.
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(engines::teardown(kind, &dir))
        })
        .join();
        if !matches!(result, Ok(Ok(()))) {
            eprintln!("tearing down {} failed: {result:?}", self.dir.display());
        }
    }
}

/// A temp folder the `postgres` system user can reach (tests run as root).
fn restore_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// Dumps every part into memory: (part, bytes, stats).
async fn backup(spec: ServiceSpec) -> Vec<(PartPlan, Vec<u8>, Vec<TableStat>)> {
    let engine = engines::open(spec).unwrap();
    let mut run = engine.begin_backup().await.unwrap();
    let mut out = Vec::new();
    for part in run.parts().to_vec() {
        let mut dump = run.dump(&part).await.unwrap();
        let bytes = dump.read_all().await.unwrap();
        let stats = dump.finish.await.unwrap();
        out.push((part, bytes, stats));
    }
    run.close().await.unwrap();
    out
}

/// Provisions a fresh cluster under `root`, loads every part, verifies.
async fn restore(
    root: &Path,
    bin_dir: &Path,
    parts: &[(PartPlan, Vec<u8>, Vec<TableStat>)],
) -> (Connection, Teardown, engines::Verification) {
    let dir = root.join("restore");
    let guard = Teardown {
        kind: EngineKind::Postgres,
        dir: dir.clone(),
    };
    let mut target = engines::provision(EngineKind::Postgres, &dir, "127.0.0.1", Some(bin_dir), "")
        .await
        .unwrap();
    for (part, bytes, _) in parts {
        target
            .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap();
    }
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let v = target.verify(&expected).await.unwrap();
    (target.connection(), guard, v)
}

/// An in-place restore of `parts` into the server of `spec`, verified against `expected`.
async fn in_place(
    spec: ServiceSpec,
    parts: &[(PartPlan, Vec<u8>, Vec<TableStat>)],
    expected: &[TableStat],
) -> strongbox_engines::Verification {
    let engine = engines::open(spec).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut target = engine.in_place(scratch.path()).await.unwrap();
    for (part, bytes, _) in parts {
        target
            .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap();
    }
    target.verify(expected).await.unwrap()
}

/// Runs `sql` with psql against a restored server over TCP, as `user` with `password`.
fn psql_as(
    bin_dir: &Path,
    conn: &Connection,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
) -> String {
    let out = Command::new(bin_dir.join("psql"))
        .env_clear()
        .env("PGHOST", &conn.host)
        .env("PGPORT", conn.port.to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn superuser_password(conn: &Connection) -> String {
    let file = conn.password_file.as_ref().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "password file mode");
    std::fs::read_to_string(file).unwrap().trim().to_string()
}

fn postmaster_pid(data_dir: &Path) -> u32 {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restores_into_a_fresh_server_that_equals_it() {
    let pg = PgServer::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE app LOGIN PASSWORD 'app-secret';
         CREATE ROLE reader NOLOGIN;
         GRANT reader TO app;",
    )
    .unwrap();
    pg.create_database("shop").unwrap();
    pg.create_database("bench").unwrap();
    pg.pgbench_init("bench", 1).unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric, tags text[]);
         INSERT INTO items (name, price, tags)
           SELECT 'item ' || g || E' \\'quoted\\'; (paren\n', g * 1.5, ARRAY['a', 'b;c']
           FROM generate_series(1, 5000) g;
         CREATE TABLE empty_t (a int);
         CREATE SCHEMA extra;
         CREATE TABLE extra.\"Odd Name\" (x int);
         INSERT INTO extra.\"Odd Name\" VALUES (1), (2), (3);
         CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 100;
         CREATE FUNCTION add_up(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b';
         CREATE SEQUENCE counter;
         SELECT setval('counter', 42);
         ALTER TABLE items OWNER TO app;
         GRANT SELECT ON items, cheap TO reader;
         GRANT USAGE ON SCHEMA extra TO reader;",
    )
    .unwrap();

    let engine = engines::open(spec(&pg, "postgres", None)).unwrap();
    let probe = engine.probe().await.unwrap();
    assert!(probe.healthy);
    assert_eq!(probe.role, Role::Primary);
    assert!(
        probe.version.starts_with(|c: char| c.is_ascii_digit()),
        "{}",
        probe.version
    );

    let parts = backup(spec(&pg, "postgres", None)).await;
    let names: Vec<(&str, PartKind)> = parts
        .iter()
        .map(|p| (p.0.name.as_str(), p.0.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("globals", PartKind::Globals),
            ("bench", PartKind::Database),
            ("postgres", PartKind::Database),
            ("shop", PartKind::Database),
            // Every database but template0 (issue 13): initdb's template1 too.
            ("template1", PartKind::Database)
        ]
    );
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let rows = |n: &str| stats.iter().find(|s| s.name == n).map(|s| s.rows);
    assert_eq!(rows("bench.public.pgbench_accounts"), Some(100_000));
    assert_eq!(rows("bench.public.pgbench_branches"), Some(1));
    assert_eq!(rows("shop.public.items"), Some(5000));
    assert_eq!(rows("shop.public.empty_t"), Some(0));
    assert_eq!(rows("shop.extra.Odd Name"), Some(3));
    assert!(String::from_utf8_lossy(&parts[0].1).contains("CREATE ROLE app"));

    let root = restore_root();
    let (conn, guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.tables_checked, stats.len() as u64);
    assert!(v.rows_checked >= 105_000);
    assert!(v.engine_check.contains("pg_amcheck"), "{}", v.engine_check);
    assert_eq!(conn.engine, strongbox_engines::EngineKind::Postgres);
    assert_eq!(conn.host, "127.0.0.1");
    assert_eq!(conn.user, "postgres");
    assert!(conn.data_dir.starts_with(root.path()));
    assert!(
        std::fs::read_dir(root.path().join("restore"))
            .unwrap()
            .all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("spool")),
        "a spool file was left behind"
    );

    // Reached over TCP with the generated password (scram-sha-256).
    let pw = superuser_password(&conn);
    let bin = pg.bin_dir();
    let q = |db: &str, sql: &str| psql_as(bin, &conn, "postgres", &pw, db, sql);

    // Every table's rows, compared by content.
    for s in &stats {
        let mut it = s.name.splitn(3, '.');
        let (db, schema, table) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let sql = format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') \
             FROM \"{schema}\".\"{table}\" t"
        );
        assert_eq!(q(db, &sql), pg.psql(db, &sql).unwrap(), "table {}", s.name);
    }
    for (db, sql) in [
        ("shop", "SELECT last_value FROM counter"),
        ("shop", "SELECT pg_get_viewdef('cheap')"),
        ("shop", "SELECT add_up(2, 3)"),
        ("shop", "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"),
        ("shop", "SELECT has_table_privilege('reader', 'items', 'SELECT'), has_table_privilege('reader', 'cheap', 'SELECT'), has_table_privilege('reader', 'empty_t', 'SELECT'), has_schema_privilege('reader', 'extra', 'USAGE')"),
        ("postgres", "SELECT rolname || ' ' || rolcanlogin FROM pg_roles WHERE rolname IN ('app', 'reader') ORDER BY 1"),
        ("postgres", "SELECT pg_has_role('app', 'reader', 'member')"),
        ("postgres", "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1"),
    ] {
        assert_eq!(q(db, sql), pg.psql(db, sql).unwrap(), "{db}: {sql}");
    }
    assert_eq!(q("shop", "SELECT last_value FROM counter"), "42");
    assert_eq!(q("shop", "SELECT add_up(2, 3)"), "5");
    // The role's password came along: app logs in with it.
    assert_eq!(
        psql_as(
            bin,
            &conn,
            "app",
            "app-secret",
            "shop",
            "SELECT count(*) FROM items"
        ),
        "5000"
    );

    // Teardown stops the server; nothing keeps running.
    let pid = postmaster_pid(&conn.data_dir);
    assert!(alive(pid));
    engines::teardown(EngineKind::Postgres, &root.path().join("restore"))
        .await
        .unwrap();
    assert!(!alive(pid), "postgres {pid} still runs after teardown");
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_pgbench_restores_to_a_consistent_state() {
    let pg = PgServer::start().unwrap();
    pg.create_database("bench").unwrap();
    pg.pgbench_init("bench", 1).unwrap();

    let mut bench = pg.client_command("pgbench");
    bench.args(["-n", "-T", "5", "-c", "2", "bench"]);
    let mut bench = bench
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until pgbench has written something.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pg
        .psql("bench", "SELECT count(*) FROM pgbench_history")
        .unwrap()
        == "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pgbench wrote nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let parts = backup(spec(&pg, "postgres", None)).await;
    let still_running = bench.try_wait().unwrap().is_none();
    let status = bench.wait().unwrap();
    assert!(status.success(), "pgbench failed");
    assert!(
        still_running,
        "pgbench ended before the backup did: no concurrency was tested"
    );

    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let history = stats
        .iter()
        .find(|s| s.name == "bench.public.pgbench_history")
        .unwrap()
        .rows;
    assert!(history > 0);

    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(v.ok, "{v:#?}");
    let pw = superuser_password(&conn);
    let sums = psql_as(
        pg.bin_dir(),
        &conn,
        "postgres",
        &pw,
        "bench",
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' ||
                (SELECT sum(bbalance) FROM pgbench_branches) || ' ' ||
                (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' ||
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history) || ' ' ||
                (SELECT count(*) FROM pgbench_history)",
    );
    let v: Vec<i64> = sums.split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!(v[0], v[1], "accounts vs branches: {sums}");
    assert_eq!(v[1], v[2], "branches vs tellers: {sums}");
    assert_eq!(v[2], v[3], "tellers vs history: {sums}");
    assert_eq!(v[4] as u64, history, "history rows vs the backup's stats");
    // The source moved on after the backup: the restore is the snapshot, not the end state.
    let source_history: u64 = pg
        .psql("bench", "SELECT count(*) FROM pgbench_history")
        .unwrap()
        .parse()
        .unwrap();
    assert!(source_history > history, "{source_history} <= {history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_with_a_clear_error_that_hides_it() {
    let pg = PgServer::builder()
        .hba("host all app 127.0.0.1/32 scram-sha-256")
        .start()
        .unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE app LOGIN SUPERUSER PASSWORD 'right-password'",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "wrong-password\n").unwrap();
    let right = tmp.path().join("right");
    std::fs::write(&right, "right-password\n").unwrap();

    // Connecting with the wrong password: a configuration error, for the probe too.
    let engine = engines::open(spec(&pg, "app", Some(wrong.clone()))).unwrap();
    let err = engine.begin_backup().await.err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, Error::Database { .. }), "{err:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains("password_file"), "{text}");
    assert!(!text.contains("wrong-password"), "{text}");
    let err = engine.probe().await.err().unwrap().to_string();
    assert!(err.contains("password authentication failed"), "{err}");

    // The password changes between the start of a backup and a dump: the dump tool fails.
    let engine = engines::open(spec(&pg, "app", Some(right))).unwrap();
    let mut run = engine.begin_backup().await.unwrap();
    pg.psql("postgres", "ALTER ROLE app PASSWORD 'changed-password'")
        .unwrap();
    let globals = run.parts()[0].clone();
    let mut dump = run.dump(&globals).await.unwrap();
    dump.read_all().await.unwrap();
    let err = dump.finish.await.unwrap_err();
    let text = err.to_string();
    match &err {
        Error::Tool { tool, stderr, .. } => {
            assert_eq!(tool, "pg_dumpall");
            assert!(
                stderr.contains("password authentication failed"),
                "{stderr}"
            );
        }
        other => panic!("expected the tool's error, got {other:?}"),
    }
    assert!(!text.contains("right-password"), "{text}");
    run.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unhealthy_and_a_dropped_dump_stops_pg_dump() {
    let mut pg = PgServer::start().unwrap();
    pg.create_database("big").unwrap();
    pg.pgbench_init("big", 1).unwrap();
    let engine = engines::open(spec(&pg, "postgres", None)).unwrap();
    let mut run = engine.begin_backup().await.unwrap();
    let big = run
        .parts()
        .iter()
        .find(|p| p.name == "big")
        .unwrap()
        .clone();
    let mut dump = run.dump(&big).await.unwrap();
    let mut first = [0u8; 5];
    dump.reader.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"PGDMP", "custom format");
    drop(dump);
    // pg_dump is gone, and the snapshot transaction with it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = pg
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('pg_dump', 'strongbox-agent')",
            )
            .unwrap();
        if left == "0" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left} sessions left");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    run.close().await.unwrap();

    pg.stop().unwrap();
    let probe = engine.probe().await.unwrap();
    assert!(!probe.healthy);
    let err = engine.begin_backup().await.err().unwrap().to_string();
    assert!(err.contains("check that the server runs"), "{err}");
}

/// `count:md5` of every row of each table, for comparing a table's content.
fn fingerprint(pg: &PgServer, tables: &[(&str, &str)]) -> Vec<String> {
    tables
        .iter()
        .map(|(db, table)| {
            pg.psql(
                db,
                &format!(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') \
                     FROM {table} t"
                ),
            )
            .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_replaces_the_live_databases_with_the_backup() {
    let pg = PgServer::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE app LOGIN PASSWORD 'app-secret';
         CREATE ROLE reader NOLOGIN;
         GRANT reader TO app;",
    )
    .unwrap();
    pg.create_database("shop").unwrap();
    pg.psql(
        "shop",
        "CREATE EXTENSION amcheck;
         CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric);
         INSERT INTO items (name, price) SELECT 'item ' || g, g * 1.5 FROM generate_series(1, 3000) g;
         CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g;
         ALTER TABLE items OWNER TO app;
         GRANT SELECT ON notes TO reader;",
    )
    .unwrap();
    let tables = [("shop", "items"), ("shop", "notes")];
    let before = fingerprint(&pg, &tables);

    let parts = backup(spec(&pg, "postgres", None)).await;
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    assert!(expected
        .iter()
        .any(|s| s.name == "shop.public.notes" && s.rows == 50));

    // The live server moves on: rows added and changed, a table dropped, a role changed, a
    // database and a role that the backup does not know.
    pg.psql(
        "shop",
        "INSERT INTO items (name, price) VALUES ('late', 1);
         UPDATE items SET price = 0 WHERE id <= 100;
         DROP TABLE notes;",
    )
    .unwrap();
    pg.psql("postgres", "ALTER ROLE app NOLOGIN; CREATE ROLE newcomer;")
        .unwrap();
    pg.create_database("later").unwrap();
    pg.psql("later", "CREATE TABLE t (x int); INSERT INTO t VALUES (7);")
        .unwrap();
    assert_eq!(
        pg.psql("shop", "SELECT to_regclass('notes') IS NULL")
            .unwrap(),
        "t"
    );

    // An idle session on shop: the restore ends it instead of waiting for it.
    let (idle, idle_connection) = tokio_postgres::connect(
        &format!("{} application_name=idle-app", pg.conninfo("shop")),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let idle_connection = tokio::spawn(idle_connection);
    idle.simple_query("SELECT 1").await.unwrap();

    let engine = engines::open(spec(&pg, "postgres", None)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut target = engine.in_place(scratch.path()).await.unwrap();
    let v = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        for (part, bytes, _) in &parts {
            target
                .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
                .await
                .unwrap();
        }
        target.verify(&expected).await.unwrap()
    })
    .await
    .expect("the in-place restore did not finish: did an open session block it?");
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.tables_checked, expected.len() as u64);
    assert!(v.mismatches.is_empty());
    assert!(
        v.engine_check
            .starts_with("pg_amcheck: no corruption found")
            || v.engine_check.starts_with("pg_amcheck: ok"),
        "{}",
        v.engine_check
    );
    assert!(
        !v.engine_check.contains("globals:"),
        "no globals statement should fail: {}",
        v.engine_check
    );

    // The live server holds the backup's data again.
    assert_eq!(fingerprint(&pg, &tables), before);
    for (db, sql, want) in [
        (
            "shop",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'items'",
            "app",
        ),
        (
            "shop",
            "SELECT has_table_privilege('reader', 'notes', 'SELECT')",
            "t",
        ),
        (
            "postgres",
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app'",
            "t",
        ),
        (
            "postgres",
            "SELECT pg_has_role('app', 'reader', 'member')",
            "t",
        ),
        // What the backup does not know is left alone.
        (
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'newcomer'",
            "1",
        ),
        ("later", "SELECT x FROM t", "7"),
        (
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'",
            "t",
        ),
    ] {
        assert_eq!(pg.psql(db, sql).unwrap(), want, "{db}: {sql}");
    }
    // The idle session was ended by the drop.
    assert!(idle.simple_query("SELECT 1").await.is_err());
    let _ = idle_connection.await;
    // No spool file is left behind.
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);

    let conn = target.connection();
    assert_eq!(conn.engine, strongbox_engines::EngineKind::Postgres);
    assert_eq!(conn.host, pg.host());
    assert_eq!(conn.port, pg.port());
    assert_eq!(conn.user, "postgres");
    assert_eq!(conn.password_file, None);
    assert_eq!(conn.data_dir, PathBuf::new());
}

/// Runs `pg_dump --format=custom --compress=<compress>` of `db` into a pipe, as the agent does,
/// and feeds what arrives to an `ArchiveCounter` in odd-sized pieces. Returns the archive's
/// size and the counter's result.
fn count_streamed_dump(
    pg: &PgServer,
    db: &str,
    compress: &str,
) -> (
    u64,
    Result<Vec<strongbox_engines::postgres::archive::TableRows>, String>,
) {
    use std::io::Read;
    let mut child = Command::new(strongbox_integration::pg::pg_tool("pg_dump").unwrap())
        .envs(pg.env())
        .args([
            "--format=custom",
            &format!("--compress={compress}"),
            "-d",
            db,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut counter = strongbox_engines::postgres::archive::ArchiveCounter::new();
    let mut buf = vec![0u8; 65_521];
    let sizes = [1usize, 3, 7, 4093, 65_521, 13];
    let (mut total, mut k) = (0u64, 0usize);
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(sizes[k % sizes.len()].min(rest.len()));
            counter.feed(piece);
            rest = tail;
            k += 1;
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (total, counter.finish())
}

#[test]
fn a_streamed_custom_archive_counts_the_rows_of_every_table() {
    use strongbox_engines::postgres::archive::TableRows;
    use strongbox_integration::pg::quote_ident;
    let pg = PgServer::start().unwrap();
    pg.create_database("counts").unwrap();
    pg.psql(
        "counts",
        r#"CREATE SCHEMA "Sales";
           CREATE SCHEMA other;
           CREATE TABLE "Sales"."Order Lines" (id int, note text);
           INSERT INTO "Sales"."Order Lines" VALUES
             (1, E'two\nlines'), (2, E'a\ttab'), (3, E'back\\slash'), (4, E'\\.'),
             (5, E'\\.\n\\.\n'), (6, NULL), (7, ''), (8, E'\r\n\\N');
           CREATE TABLE "Sales"."dotted.name" (v text);
           INSERT INTO "Sales"."dotted.name" SELECT E'\\.' FROM generate_series(1, 4);
           CREATE TABLE other.empty (x int);
           CREATE TABLE other.measurements (at date, v int) PARTITION BY RANGE (at);
           CREATE TABLE other.m2023 PARTITION OF other.measurements
             FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
           CREATE TABLE other.m2024 PARTITION OF other.measurements
             FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
           INSERT INTO other.measurements
             SELECT date '2023-01-01' + g, g FROM generate_series(0, 699) g;
           CREATE TABLE public.parent (id int, body text);
           CREATE TABLE public.child (extra int) INHERITS (public.parent);
           INSERT INTO public.parent SELECT g, 'p' || g FROM generate_series(1, 10) g;
           INSERT INTO public.child SELECT g, E'c\n' || g, g FROM generate_series(1, 20) g;
           CREATE TABLE public."Big" (id int, payload text);
           INSERT INTO public."Big"
             SELECT g, repeat(md5(g::text), 4) || E'\n\t\\' FROM generate_series(1, 30000) g;
           SELECT lo_from_bytea(0, 'x');
           SELECT lo_from_bytea(0, convert_to(E'a\nb\n\\.\n', 'UTF8'));"#,
    )
    .unwrap();

    let (size, counted) = count_streamed_dump(&pg, "counts", "0");
    let mut counted = counted.unwrap();
    assert!(size > 3 << 20, "the archive is only {size} bytes");

    // Every plain table (the partitioned parent has no data of its own), counted by the server.
    let listing = pg
        .psql(
            "counts",
            "SELECT n.nspname || E'\\t' || c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
        )
        .unwrap();
    let mut expected: Vec<TableRows> = listing
        .lines()
        .map(|line| {
            let (schema, table) = line.split_once('\t').unwrap();
            let sql = format!(
                "SELECT count(*) FROM ONLY {}.{}",
                quote_ident(schema),
                quote_ident(table)
            );
            TableRows {
                schema: schema.into(),
                table: table.into(),
                rows: pg.psql("counts", &sql).unwrap().parse().unwrap(),
            }
        })
        .collect();
    let key = |t: &TableRows| (t.schema.clone(), t.table.clone());
    expected.sort_by_key(key);
    counted.sort_by_key(key);
    assert_eq!(counted, expected);
    let rows = |table: &str| counted.iter().find(|t| t.table == table).map(|t| t.rows);
    assert_eq!(expected.len(), 8);
    assert_eq!(rows("Order Lines"), Some(8));
    assert_eq!(rows("dotted.name"), Some(4));
    assert_eq!(rows("empty"), Some(0));
    assert_eq!(rows("m2023"), Some(365));
    assert_eq!(rows("m2024"), Some(335));
    assert_eq!(rows("parent"), Some(10));
    assert_eq!(rows("child"), Some(20));
    assert_eq!(rows("Big"), Some(30_000));
    assert_eq!(rows("measurements"), None);
}

#[test]
fn a_compressed_custom_archive_is_an_error_not_a_wrong_count() {
    let pg = PgServer::start().unwrap();
    pg.create_database("counts").unwrap();
    pg.psql(
        "counts",
        "CREATE TABLE t (id int, s text);
         INSERT INTO t SELECT g, E'a\\nb' FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    let (_, uncompressed) = count_streamed_dump(&pg, "counts", "0");
    assert_eq!(uncompressed.unwrap()[0].rows, 1000);
    let (_, compressed) = count_streamed_dump(&pg, "counts", "6");
    let err = compressed.unwrap_err();
    assert!(err.contains("compressed"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Hostile names (issue 12, kind 1)
// ---------------------------------------------------------------------------------------------

/// A session on `db` of `pg` as `user`, with every name passed through the client's API (never
/// through a connection string or a command line).
async fn connect_as(pg: &PgServer, user: &str, db: &str) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config.host(pg.host()).port(pg.port()).user(user).dbname(db);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Whether a role named exactly `name` exists on `client`'s server.
async fn role_exists(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

/// The file the smuggled statement of [`smuggling_role_name`] would create (short: a role name
/// holds at most 63 bytes).
const SMUGGLED_FILE: &str = "/tmp/sbxpw";

/// A role name that a line-by-line edit of `pg_dumpall --globals-only` output turned into SQL
/// run by the agent's superuser: the edit dropped the lines starting `ALTER ROLE postgres WITH`
/// (the agent's own role), among them the two lines that close this name's quotes, so the
/// first line of the name came out as SQL: `COPY ... TO PROGRAM`.
fn smuggling_role_name() -> String {
    let name = format!(";COPY(SELECT)TO PROGRAM'>{SMUGGLED_FILE}';\nALTER ROLE postgres WITH ");
    assert!(name.len() <= 63, "{} bytes", name.len());
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_runs_no_sql_smuggled_in_role_names() {
    let _ = std::fs::remove_file(SMUGGLED_FILE);
    let pg = PgServer::start().unwrap();
    pg.psql("postgres", "CREATE ROLE mallory LOGIN CREATEROLE")
        .unwrap();
    // Made by a user with CREATEROLE only, not by a superuser.
    let hostile = [
        smuggling_role_name(),
        "x\";\nCREATE ROLE postgres;\n--".to_string(),
        "CREATE ROLE postgres;".to_string(),
        "a\nALTER ROLE postgres WITH NOLOGIN".to_string(),
    ];
    let mallory = connect_as(&pg, "mallory", "postgres").await;
    for name in &hostile {
        let quoted: String = mallory
            .query_one("SELECT pg_catalog.quote_ident($1)", &[name])
            .await
            .unwrap()
            .get(0);
        mallory
            .batch_execute(&format!("CREATE ROLE {quoted} LOGIN"))
            .await
            .unwrap();
    }
    drop(mallory);

    let parts = backup(spec(&pg, "postgres", None)).await;
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let engine = engines::open(spec(&pg, "postgres", None)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut target = engine.in_place(scratch.path()).await.unwrap();
    let mut loaded = Vec::new();
    for (part, bytes, _) in &parts {
        loaded.push(
            target
                .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
                .await,
        );
    }
    let v = target.verify(&expected).await;

    assert!(
        !Path::new(SMUGGLED_FILE).exists(),
        "a statement smuggled in a role name ran as the superuser (loads: {loaded:?}, \
         verification: {v:#?})"
    );
    for l in &loaded {
        assert!(l.is_ok(), "{l:?}");
    }
    let v = v.unwrap();
    assert!(v.ok, "{v:#?}");
    assert!(!v.engine_check.contains("globals:"), "{}", v.engine_check);
    let admin = connect_as(&pg, "postgres", "postgres").await;
    for name in &hostile {
        assert!(role_exists(&admin, name).await, "role {name:?} is gone");
    }
    // Nothing but the roles that were there: no role made from a piece of a name.
    let roles: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 2 + hostile.len() as i64);
    let (superuser, login): (bool, bool) = {
        let row = admin
            .query_one(
                "SELECT rolsuper, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = 'postgres'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(superuser && login, "the agent's own role was changed");
}

/// Runs `sql` (bytes: it may hold names that are not UTF-8) with psql on database `db` (a
/// plain name), with the client encoding `SQL_ASCII` so that the bytes reach the server as
/// they are.
fn psql_bytes(pg: &PgServer, db: &str, sql: &[u8]) {
    use std::io::Write;
    let mut child = pg
        .client_command("psql")
        .env("PGCLIENTENCODING", "SQL_ASCII")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .arg(format!("--dbname={db}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(sql).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name` quoted by the server (`quote_ident`), for SQL the test sends.
async fn ident(client: &tokio_postgres::Client, name: &str) -> String {
    client
        .query_one("SELECT pg_catalog.quote_ident($1)", &[&name])
        .await
        .unwrap()
        .get(0)
}

/// Rows of table `public.<name>` in database `name` of the server `config` reaches.
async fn rows_of(config: &tokio_postgres::Config, name: &str) -> i64 {
    let mut config = config.clone();
    config.dbname(name);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let sql = format!("SELECT count(*) FROM public.{}", ident(&client, name).await);
    client.query_one(sql.as_str(), &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_go_through_backup_restore_and_in_place_restore_as_data() {
    use strongbox_integration::hostile::{postgres_names, PWNED_FILE};
    let _ = std::fs::remove_file(PWNED_FILE);
    let _ = std::fs::remove_file(SMUGGLED_FILE);
    let names = postgres_names();
    let pg = PgServer::start().unwrap();
    pg.psql("postgres", "CREATE ROLE mallory LOGIN CREATEROLE")
        .unwrap();
    // For every name: a role (made by mallory, who may only create roles), a database, and
    // in it a table of that name, owned by that role, with amcheck (so that the in-place
    // check reaches every database by name).
    let mallory = connect_as(&pg, "mallory", "postgres").await;
    let admin = connect_as(&pg, "postgres", "postgres").await;
    for name in &names {
        let id = ident(&admin, name).await;
        mallory
            .batch_execute(&format!("CREATE ROLE {id} LOGIN PASSWORD 'pw'"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {id}"))
            .await
            .unwrap();
    }
    drop(mallory);
    for (k, name) in names.iter().enumerate() {
        let db = connect_as(&pg, "postgres", name).await;
        let id = ident(&db, name).await;
        db.batch_execute(&format!(
            "CREATE EXTENSION amcheck;
             CREATE TABLE public.{id} (id int PRIMARY KEY, v text);
             INSERT INTO public.{id} SELECT g, 'v' || g FROM generate_series(1, {}) g;
             ALTER TABLE public.{id} OWNER TO {id};",
            k + 1
        ))
        .await
        .unwrap();
    }

    // The backup: a part per database, named exactly, rows counted for each.
    let parts = backup(spec(&pg, "postgres", None)).await;
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    for (k, name) in names.iter().enumerate() {
        assert!(
            parts
                .iter()
                .any(|p| p.0.kind == PartKind::Database && &p.0.name == name),
            "no part for database {name:?}"
        );
        let stat = format!("{name}.public.{name}");
        assert_eq!(
            expected.iter().find(|s| s.name == stat).map(|s| s.rows),
            Some(k as u64 + 1),
            "rows of {stat:?}"
        );
    }

    // Onto a fresh server: every database, table and role, and pg_amcheck over all of them.
    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.tables_checked, expected.len() as u64);
    assert!(
        v.engine_check.starts_with("pg_amcheck:"),
        "{}",
        v.engine_check
    );
    let mut fresh = tokio_postgres::Config::new();
    fresh
        .host(&conn.host)
        .port(conn.port)
        .user("postgres")
        .password(superuser_password(&conn))
        .dbname("postgres");
    let (fresh_admin, connection) = fresh.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    for (k, name) in names.iter().enumerate() {
        assert!(role_exists(&fresh_admin, name).await, "role {name:?}");
        assert_eq!(rows_of(&fresh, name).await, k as i64 + 1, "{name:?}");
    }

    // In place: half of the roles are gone with their tables, the other tables lost rows.
    for (k, name) in names.iter().enumerate() {
        let db = connect_as(&pg, "postgres", name).await;
        let id = ident(&db, name).await;
        if k % 2 == 0 {
            db.batch_execute(&format!("DROP OWNED BY {id}"))
                .await
                .unwrap();
            drop(db);
            admin
                .batch_execute(&format!("DROP ROLE {id}"))
                .await
                .unwrap();
        } else {
            db.batch_execute(&format!("DELETE FROM public.{id}"))
                .await
                .unwrap();
        }
    }
    let v = in_place(spec(&pg, "postgres", None), &parts, &expected).await;
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.tables_checked, expected.len() as u64);
    assert!(
        v.engine_check
            .starts_with("pg_amcheck: no corruption found")
            || v.engine_check.starts_with("pg_amcheck: ok"),
        "{}",
        v.engine_check
    );
    assert!(!v.engine_check.contains("globals:"), "{}", v.engine_check);
    // The restore replaced `postgres` too, ending the session there.
    let admin = connect_as(&pg, "postgres", "postgres").await;
    let mut live = tokio_postgres::Config::new();
    live.host(pg.host()).port(pg.port()).user("postgres");
    for (k, name) in names.iter().enumerate() {
        assert!(role_exists(&admin, name).await, "role {name:?}");
        assert_eq!(rows_of(&live, name).await, k as i64 + 1, "{name:?}");
    }

    for file in [PWNED_FILE, SMUGGLED_FILE] {
        assert!(
            !Path::new(file).exists(),
            "{file} exists: a name ran as code"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_not_utf8_fails_the_backup_with_an_error_naming_it() {
    use strongbox_integration::hostile::non_utf8_name;
    let pg = PgServer::start().unwrap();
    // A SQL_ASCII database takes names of any bytes; shared catalogs then hold them.
    pg.psql(
        "postgres",
        "CREATE DATABASE ascii ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'",
    )
    .unwrap();
    pg.psql("ascii", "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
    let raw = non_utf8_name();
    let shown = "latin1-\\xe9t\\xe9";
    let mut sql = b"CREATE DATABASE \"".to_vec();
    sql.extend_from_slice(&raw);
    sql.extend_from_slice(b"\";");
    psql_bytes(&pg, "ascii", &sql);

    // Every database: the backup fails before dumping anything, naming it.
    let engine = engines::open(spec(&pg, "postgres", None)).unwrap();
    let err = engine.begin_backup().await.err().unwrap().to_string();
    assert!(err.contains(shown), "{err}");
    assert!(err.contains("not UTF-8"), "{err}");

    // Listed databases only: the backup goes on, and so does an in-place restore on this
    // server, which holds a database it cannot name.
    let mut only = spec(&pg, "postgres", None);
    only.databases = vec!["postgres".into(), "ascii".into()];
    let parts = backup(only.clone()).await;
    assert_eq!(parts.len(), 3);
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let v = in_place(only.clone(), &parts, &expected).await;
    assert!(v.ok, "{v:#?}");

    // A table named so in a listed database: its dump fails, naming it.
    let mut sql = b"CREATE TABLE \"".to_vec();
    sql.extend_from_slice(&raw);
    sql.extend_from_slice(b"\" (x int);");
    psql_bytes(&pg, "ascii", &sql);
    let engine = engines::open(only.clone()).unwrap();
    let mut run = engine.begin_backup().await.unwrap();
    let part = run
        .parts()
        .iter()
        .find(|p| p.name == "ascii")
        .unwrap()
        .clone();
    let mut dump = run.dump(&part).await.unwrap();
    dump.read_all().await.unwrap();
    let err = dump.finish.await.unwrap_err().to_string();
    assert!(err.contains(shown) && err.contains("\"ascii\""), "{err}");
    run.close().await.unwrap();

    // A role named so: the backup fails before dumping anything, naming it.
    let mut sql = b"CREATE ROLE \"".to_vec();
    sql.extend_from_slice(&raw);
    sql.extend_from_slice(b"\";");
    psql_bytes(&pg, "ascii", &sql);
    let engine = engines::open(only).unwrap();
    let err = engine.begin_backup().await.err().unwrap().to_string();
    assert!(err.contains(shown) && err.contains("role"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Issue 13: a restored copy equals its source (as pg_dumpall --globals-only and pg_dump
// --create see them), verification leaves nothing behind, and what fails is named.
// ---------------------------------------------------------------------------------------------

/// Libpq environment reaching a restored server over TCP as its superuser.
fn restored_env(conn: &Connection) -> Vec<(&'static str, String)> {
    vec![
        ("PGHOST", conn.host.clone()),
        ("PGPORT", conn.port.to_string()),
        ("PGUSER", "postgres".into()),
        ("PGPASSWORD", superuser_password(conn)),
    ]
}

/// Runs a client tool of `bin` with only `env` (and PATH), returning its stdout.
fn tool_output(bin: &Path, env: &[(&'static str, String)], tool: &str, args: &[&str]) -> String {
    let out = Command::new(bin.join(tool))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A cluster as the dump tools see it: `pg_dumpall --globals-only`, then every database
/// (but template0) as the sorted lines of `pg_dump --create`. Masked, as they differ between
/// any two clusters: psql's random `\restrict` keys, the superuser's password (a restored
/// server gets its own) and tablespace locations (a restore puts them under its folder).
fn cluster_image(bin: &Path, env: &[(&'static str, String)]) -> Vec<(String, Vec<String>)> {
    let mask = |line: &str| -> Option<String> {
        if line.starts_with("\\restrict") || line.starts_with("\\unrestrict") {
            return None;
        }
        if line.starts_with("ALTER ROLE postgres WITH ") {
            return Some(
                line.split(" PASSWORD ")
                    .next()
                    .unwrap()
                    .trim_end_matches(';')
                    .into(),
            );
        }
        if line.starts_with("CREATE TABLESPACE ") {
            return Some(line.split(" LOCATION ").next().unwrap().into());
        }
        Some(line.to_string())
    };
    let globals = tool_output(bin, env, "pg_dumpall", &["--globals-only"]);
    let mut image = vec![(
        "globals".to_string(),
        globals.lines().filter_map(mask).collect(),
    )];
    let databases = tool_output(
        bin,
        env,
        "psql",
        &[
            "-X",
            "-A",
            "-t",
            "-d",
            "postgres",
            "-c",
            "SELECT datname FROM pg_database WHERE datname <> 'template0' ORDER BY 1",
        ],
    );
    for db in databases.lines() {
        let dump = tool_output(bin, env, "pg_dump", &["--create", "--dbname", db]);
        let mut lines: Vec<String> = dump.lines().filter_map(mask).collect();
        lines.sort();
        image.push((db.to_string(), lines));
    }
    image
}

/// Fails, listing the differences, when `copy`'s image is not `source`'s.
fn assert_same_image(source: &[(String, Vec<String>)], copy: &[(String, Vec<String>)], what: &str) {
    let diff = image_diff(source, copy);
    assert!(diff.is_empty(), "{what} differs:\n{}", diff.join("\n"));
}

/// What differs between two cluster images, line by line (lines counted, not placed).
fn image_diff(source: &[(String, Vec<String>)], copy: &[(String, Vec<String>)]) -> Vec<String> {
    use std::collections::BTreeMap;
    let count = |image: &[(String, Vec<String>)]| {
        let mut m: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (part, lines) in image {
            for line in lines {
                *m.entry((part.clone(), line.clone())).or_default() += 1;
            }
        }
        m
    };
    let (a, b) = (count(source), count(copy));
    let mut diff = Vec::new();
    for key in a.keys().chain(b.keys()) {
        let (x, y) = (
            a.get(key).copied().unwrap_or(0),
            b.get(key).copied().unwrap_or(0),
        );
        if x != y {
            let line = format!("{}: {} (source {x}, copy {y})", key.0, key.1);
            if !diff.contains(&line) {
                diff.push(line);
            }
        }
    }
    let names = |image: &[(String, Vec<String>)]| -> Vec<String> {
        image.iter().map(|p| p.0.clone()).collect()
    };
    if names(source) != names(copy) {
        diff.push(format!(
            "databases: source {:?}, copy {:?}",
            names(source),
            names(copy)
        ));
    }
    diff
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_level_properties_of_every_database_come_back_fresh_and_in_place() {
    let pg = PgServer::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE app LOGIN;
         CREATE ROLE reader NOLOGIN;
         ALTER DATABASE postgres SET work_mem = '12MB';
         ALTER ROLE app IN DATABASE postgres SET work_mem = '3MB';
         COMMENT ON DATABASE postgres IS 'the maintenance database';
         ALTER DATABASE postgres CONNECTION LIMIT 40;
         GRANT CONNECT, TEMPORARY ON DATABASE postgres TO reader;
         ALTER DATABASE template1 SET work_mem = '5MB';
         COMMENT ON DATABASE template1 IS 'template';
         CREATE DATABASE shop OWNER app;
         ALTER DATABASE shop SET search_path = shop, public;
         ALTER ROLE reader IN DATABASE shop SET statement_timeout = '5s';
         REVOKE CONNECT ON DATABASE shop FROM PUBLIC;
         GRANT CONNECT ON DATABASE shop TO reader;",
    )
    .unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 100);",
    )
    .unwrap();
    let env = pg.env();
    let source = cluster_image(pg.bin_dir(), &env);

    let parts = backup(spec(&pg, "postgres", None)).await;
    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(v.ok, "{v:#?}");
    let copy = cluster_image(pg.bin_dir(), &restored_env(&conn));
    assert_same_image(&source, &copy, "the fresh copy");

    // In place: the live server's databases lose what they gained since, and get back what
    // they lost.
    pg.psql(
        "postgres",
        "ALTER DATABASE postgres RESET work_mem;
         ALTER ROLE app IN DATABASE postgres RESET work_mem;
         COMMENT ON DATABASE postgres IS NULL;
         ALTER DATABASE template1 SET work_mem = '7MB';
         ALTER DATABASE shop RESET search_path;
         GRANT TEMPORARY ON DATABASE shop TO app;",
    )
    .unwrap();
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let v = in_place(spec(&pg, "postgres", None), &parts, &expected).await;
    assert!(v.ok, "{v:#?}");
    let after = cluster_image(pg.bin_dir(), &env);
    assert_same_image(&source, &after, "the in-place copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_refuses_connections_fails_the_backup_naming_it() {
    let pg = PgServer::start().unwrap();
    pg.create_database("fenced").unwrap();
    pg.psql(
        "fenced",
        "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 10);",
    )
    .unwrap();
    pg.psql("postgres", "ALTER DATABASE fenced ALLOW_CONNECTIONS false")
        .unwrap();

    let engine = engines::open(spec(&pg, "postgres", None)).unwrap();
    let err = match engine.begin_backup().await {
        Ok(run) => {
            let names: Vec<String> = run.parts().iter().map(|p| p.name.clone()).collect();
            panic!("the backup started without database fenced: parts {names:?}");
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("\"fenced\""), "{err}");
    assert!(err.contains("datallowconn = false"), "{err}");
    assert!(err.contains("`databases`"), "{err}");

    // Listed databases: only those, and fenced is not one of them.
    let mut only = spec(&pg, "postgres", None);
    only.databases = vec!["postgres".into()];
    let parts = backup(only).await;
    let names: Vec<&str> = parts.iter().map(|p| p.0.name.as_str()).collect();
    assert_eq!(names, ["globals", "postgres"]);

    // Allowed again: every database but template0 is in the backup.
    pg.psql("postgres", "ALTER DATABASE fenced ALLOW_CONNECTIONS true")
        .unwrap();
    let parts = backup(spec(&pg, "postgres", None)).await;
    let names: Vec<&str> = parts.iter().map(|p| p.0.name.as_str()).collect();
    assert_eq!(names, ["globals", "fenced", "postgres", "template1"]);
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    assert!(stats
        .iter()
        .any(|s| s.name == "fenced.public.t" && s.rows == 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_fires_no_event_trigger_and_leaves_no_extension_behind() {
    let pg = PgServer::start().unwrap();
    pg.create_database("audited").unwrap();
    pg.psql(
        "audited",
        "CREATE TABLE ddl_log (id serial PRIMARY KEY, trigger text, tag text, object text);
         CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO public.ddl_log (trigger, tag, object)
             SELECT TG_EVENT, command_tag, object_identity FROM pg_event_trigger_ddl_commands();
         END $$;
         CREATE FUNCTION log_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO public.ddl_log (trigger, tag, object)
             SELECT TG_EVENT, object_type, object_identity FROM pg_event_trigger_dropped_objects();
         END $$;
         CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl();
         CREATE EVENT TRIGGER log_ddl_always ON ddl_command_end EXECUTE FUNCTION log_ddl();
         ALTER EVENT TRIGGER log_ddl_always ENABLE ALWAYS;
         CREATE EVENT TRIGGER log_drop_replica ON sql_drop EXECUTE FUNCTION log_drop();
         ALTER EVENT TRIGGER log_drop_replica ENABLE REPLICA;
         CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
    )
    .unwrap();
    assert_eq!(
        pg.psql("audited", "SELECT count(*) FROM ddl_log").unwrap(),
        "4"
    );
    let source = cluster_image(pg.bin_dir(), &pg.env());

    let parts = backup(spec(&pg, "postgres", None)).await;
    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(v.ok, "{v:#?}");
    assert!(
        v.engine_check
            .starts_with("pg_amcheck: no corruption found")
            || v.engine_check.starts_with("pg_amcheck: ok"),
        "{}",
        v.engine_check
    );
    let pw = superuser_password(&conn);
    let q = |db: &str, sql: &str| psql_as(pg.bin_dir(), &conn, "postgres", &pw, db, sql);
    assert_eq!(q("audited", "SELECT count(*) FROM ddl_log"), "4");
    for db in ["audited", "postgres", "template1"] {
        assert_eq!(
            q(
                db,
                "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'"
            ),
            "0",
            "{db}"
        );
    }
    assert_eq!(
        q(
            "audited",
            "SELECT string_agg(evtname || ':' || evtenabled::text, ',' ORDER BY evtname) FROM pg_event_trigger"
        ),
        "log_ddl:O,log_ddl_always:A,log_drop_replica:R"
    );
    let copy = cluster_image(pg.bin_dir(), &restored_env(&conn));
    assert_same_image(&source, &copy, "the copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_hash_partitioned_on_an_enum_verifies_by_its_total() {
    let pg = PgServer::start().unwrap();
    pg.create_database("parts").unwrap();
    pg.psql(
        "parts",
        "CREATE TABLE padding (x int); DROP TABLE padding;
         CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE feelings (m mood NOT NULL, n int) PARTITION BY HASH (m);
         CREATE TABLE feelings_0 PARTITION OF feelings FOR VALUES WITH (MODULUS 3, REMAINDER 0);
         CREATE TABLE feelings_1 PARTITION OF feelings FOR VALUES WITH (MODULUS 3, REMAINDER 1);
         CREATE TABLE feelings_2 PARTITION OF feelings FOR VALUES WITH (MODULUS 3, REMAINDER 2);
         INSERT INTO feelings SELECT m, g FROM unnest(enum_range(NULL::mood)) m,
           generate_series(1, 1000) g;
         CREATE TABLE plain (x int); INSERT INTO plain VALUES (1), (2);",
    )
    .unwrap();
    let parts = backup(spec(&pg, "postgres", None)).await;
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let rows = |n: &str| stats.iter().find(|s| s.name == n).map(|s| s.rows);
    assert_eq!(rows("parts.public.feelings"), Some(3000), "{stats:?}");
    assert_eq!(rows("parts.public.plain"), Some(2));

    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(v.ok, "{v:#?}");
    let pw = superuser_password(&conn);
    let sql = "SELECT m || ':' || count(*) FROM feelings GROUP BY m ORDER BY m";
    assert_eq!(
        psql_as(pg.bin_dir(), &conn, "postgres", &pw, "parts", sql),
        pg.psql("parts", sql).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablespaces_restore_under_the_restored_servers_folder() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let pg = PgServer::start().unwrap();
    let owner = std::fs::metadata(pg.data_dir()).unwrap();
    let location = pg.temp_dir().join("ts_fast");
    std::fs::create_dir(&location).unwrap();
    std::os::unix::fs::chown(&location, Some(owner.uid()), Some(owner.gid())).unwrap();
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE app; CREATE TABLESPACE ts_fast OWNER app LOCATION '{}';
             COMMENT ON TABLESPACE ts_fast IS 'fast disks';",
            location.display()
        ),
    )
    .unwrap();
    pg.create_database("shop").unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE items (id int, name text) TABLESPACE ts_fast;
         CREATE INDEX items_id ON items (id) TABLESPACE ts_fast;
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    let source = cluster_image(pg.bin_dir(), &pg.env());

    // Onto a spare on the same machine, where the source's folder is in use.
    let parts = backup(spec(&pg, "postgres", None)).await;
    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(v.ok, "{v:#?}");
    let copy = cluster_image(pg.bin_dir(), &restored_env(&conn));
    assert_same_image(&source, &copy, "the copy");
    let pw = superuser_password(&conn);
    let q = |db: &str, sql: &str| psql_as(pg.bin_dir(), &conn, "postgres", &pw, db, sql);
    let dir = root.path().join("restore/tablespaces/ts_fast");
    assert_eq!(
        q(
            "postgres",
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts_fast'"
        ),
        dir.display().to_string()
    );
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let server = std::fs::metadata(&conn.data_dir).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (server.uid(), server.gid()));
    assert_eq!(
        q(
            "shop",
            "SELECT string_agg(c.relname || ':' || t.spcname, ',' ORDER BY c.relname) \
             FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace \
             WHERE c.relname IN ('items', 'items_id')"
        ),
        "items:ts_fast,items_id:ts_fast"
    );

    // In place: the live server keeps its tablespace, and nothing fails.
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let v = in_place(spec(&pg, "postgres", None), &parts, &expected).await;
    assert!(v.ok, "{v:#?}");
    assert!(!v.engine_check.contains("globals:"), "{}", v.engine_check);
    let after = cluster_image(pg.bin_dir(), &pg.env());
    assert_same_image(&source, &after, "the in-place copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_cannot_be_restored_is_named_and_everything_else_comes_back() {
    let pg = PgServer::start().unwrap();
    pg.create_database("docs").unwrap();
    pg.psql(
        "docs",
        "CREATE TABLE documents (id int PRIMARY KEY, body text);
         INSERT INTO documents SELECT g, 'word' || (g % 7) || ' other' FROM generate_series(1, 200) g;
         CREATE MATERIALIZED VIEW word_stats AS
           SELECT * FROM ts_stat('SELECT to_tsvector(''simple'', body) FROM documents');
         CREATE TABLE later (x int); INSERT INTO later VALUES (1), (2), (3);",
    )
    .unwrap();
    let source = cluster_image(pg.bin_dir(), &pg.env());

    let parts = backup(spec(&pg, "postgres", None)).await;
    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(!v.ok, "{v:#?}");
    assert!(v.mismatches.is_empty(), "{v:#?}");
    assert_eq!(v.failed_objects.len(), 1, "{v:#?}");
    let failed = &v.failed_objects[0];
    assert!(
        failed.name.starts_with("docs: MATERIALIZED VIEW DATA")
            && failed.name.contains("word_stats"),
        "{failed:?}"
    );
    assert!(
        failed
            .reason
            .contains("relation \"documents\" does not exist")
            && failed
                .reason
                .contains("REFRESH MATERIALIZED VIEW public.word_stats"),
        "{failed:?}"
    );
    // Everything else came back: the copy lacks only the view's data.
    let copy = cluster_image(pg.bin_dir(), &restored_env(&conn));
    let diff = image_diff(&source, &copy);
    // (Comments and blank lines of pg_dump's output around the entry left aside.)
    let statements: Vec<&String> = diff
        .iter()
        .filter(|d| !d.starts_with("docs:  (") && !d.starts_with("docs: --"))
        .collect();
    assert_eq!(
        statements,
        ["docs: REFRESH MATERIALIZED VIEW public.word_stats; (source 1, copy 0)"],
        "{}",
        diff.join("\n")
    );
}

/// Issue 13, kind 6, for the globals part: a statement the fresh server refuses is named as a
/// failed object, and every statement after it still applies (a restore loads everything it
/// can); the result is "restored with errors", not a failure of the whole restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_globals_statement_that_fails_is_named_and_the_rest_applies() {
    let pg = PgServer::start().unwrap();
    let globals = b"SET standard_conforming_strings = on;\n\
CREATE ROLE first_one;\n\
ALTER ROLE first_one SET work_mem TO 'not a size';\n\
CREATE ROLE after_it;\n"
        .to_vec();
    let parts = vec![(
        PartPlan {
            name: "globals".into(),
            kind: PartKind::Globals,
        },
        globals,
        Vec::new(),
    )];
    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(!v.ok, "{v:#?}");
    assert_eq!(v.failed_objects.len(), 1, "{v:#?}");
    let f = &v.failed_objects[0];
    assert!(f.name.contains("globals: line 3"), "{f:?}");
    assert!(f.reason.contains("work_mem"), "{f:?}");
    let password = superuser_password(&conn);
    let roles = psql_as(
        pg.bin_dir(),
        &conn,
        "postgres",
        &password,
        "postgres",
        "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('first_one', 'after_it')",
    );
    assert_eq!(roles, "after_it,first_one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_awkward_objects_restores_equal() {
    let pg = PgServer::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE reader NOLOGIN;
         CREATE ROLE app LOGIN PASSWORD 'app-secret' VALID UNTIL '2099-12-31 23:59:59+00';
         GRANT reader TO app;
         COMMENT ON ROLE app IS 'the application';
         CREATE DATABASE shop OWNER app CONNECTION LIMIT 7;
         REVOKE CONNECT ON DATABASE shop FROM PUBLIC;
         GRANT CONNECT ON DATABASE shop TO reader;
         COMMENT ON DATABASE shop IS 'owned by app, fenced';
         ALTER ROLE app IN DATABASE shop SET work_mem = '3MB';
         CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;",
    )
    .unwrap();
    pg.psql(
        "shop",
        r#"CREATE EXTENSION pg_trgm;
         CREATE EXTENSION hstore;
         COMMENT ON EXTENSION hstore IS 'key/value pairs';
         CREATE SCHEMA "we'ird ""schema""" AUTHORIZATION app;
         COMMENT ON SCHEMA "we'ird ""schema""" IS 'a space and quotes';
         CREATE DOMAIN positive_price AS numeric CHECK (VALUE > 0);
         COMMENT ON DOMAIN positive_price IS 'prices are positive';
         CREATE DOMAIN short_code AS text NOT NULL CONSTRAINT is_short CHECK (length(VALUE) <= 3);
         CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         COMMENT ON TYPE mood IS 'how a customer feels';
         CREATE TYPE money_pair AS (amount numeric, currency short_code);
         CREATE TABLE customers (
           id int GENERATED ALWAYS AS IDENTITY (START WITH 10 INCREMENT BY 3) PRIMARY KEY,
           name text NOT NULL,
           attrs hstore,
           mood mood DEFAULT 'ok',
           name_upper text GENERATED ALWAYS AS (upper(name)) STORED);
         COMMENT ON TABLE customers IS 'who buys';
         COMMENT ON COLUMN customers.name_upper IS 'generated';
         CREATE INDEX customers_name_trgm ON customers USING gin (name gin_trgm_ops);
         COMMENT ON INDEX customers_name_trgm IS 'fuzzy search';
         INSERT INTO customers (name, attrs, mood)
           SELECT 'customer ' || g, hstore('k' || g, 'v "' || g || '"'), (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood
           FROM generate_series(1, 200) g;
         CREATE SEQUENCE order_no START 1000 INCREMENT 7;
         CREATE TABLE orders (
           id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
           no int NOT NULL DEFAULT nextval('order_no'),
           customer int REFERENCES customers DEFERRABLE INITIALLY DEFERRED,
           price positive_price,
           total money_pair,
           note text,
           changed_at timestamptz);
         ALTER SEQUENCE order_no OWNED BY orders.no;
         COMMENT ON SEQUENCE order_no IS 'order numbers';
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN NEW.changed_at := '2001-02-03 04:05:06+00'; RETURN NEW; END $$;
         COMMENT ON FUNCTION touch() IS 'stamps a row';
         CREATE TRIGGER orders_touch BEFORE INSERT OR UPDATE ON orders
           FOR EACH ROW EXECUTE FUNCTION touch();
         COMMENT ON TRIGGER orders_touch ON orders IS 'stamps orders';
         INSERT INTO orders (customer, price, total, note)
           SELECT 10 + 3 * (g % 200), g * 1.25, ROW(g * 2.5, 'EUR')::money_pair, 'a note longer than five ' || g
           FROM generate_series(1, 500) g;
         SELECT setval('order_no', 99991, false);
         ALTER TABLE orders ADD CONSTRAINT note_short CHECK (length(note) < 5) NOT VALID;
         COMMENT ON CONSTRAINT note_short ON orders IS 'old rows break it';
         CREATE TABLE secrets (id int PRIMARY KEY, owner name NOT NULL DEFAULT current_user, body text);
         INSERT INTO secrets SELECT g, CASE WHEN g % 2 = 0 THEN 'app' ELSE 'reader' END, 'secret ' || g
           FROM generate_series(1, 40) g;
         ALTER TABLE secrets OWNER TO app;
         ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
         ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
         CREATE POLICY own_rows ON secrets USING (owner = current_user) WITH CHECK (owner = current_user);
         CREATE POLICY reader_low ON secrets AS RESTRICTIVE FOR SELECT TO reader USING (id < 30);
         COMMENT ON POLICY own_rows ON secrets IS 'each sees their own';
         GRANT SELECT ON secrets TO reader;
         GRANT SELECT (id, name), UPDATE (attrs) ON customers TO reader;
         ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA "we'ird ""schema""" GRANT SELECT ON TABLES TO reader;
         ALTER DEFAULT PRIVILEGES FOR ROLE app REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
         CREATE UNLOGGED TABLE cache (k text PRIMARY KEY, v jsonb);
         INSERT INTO cache SELECT 'key ' || g, jsonb_build_object('n', g) FROM generate_series(1, 30) g;
         COMMENT ON TABLE cache IS 'unlogged';
         CREATE TABLE "we'ird ""schema"""."a table" (x int, y text);
         INSERT INTO "we'ird ""schema"""."a table" SELECT g, 'row ' || g FROM generate_series(1, 25) g;
         ALTER TABLE "we'ird ""schema"""."a table" OWNER TO app;
         CREATE VIEW visible_customers WITH (security_barrier) AS
           SELECT id, name FROM customers WHERE mood <> 'sad';
         COMMENT ON VIEW visible_customers IS 'a barrier';
         GRANT SELECT ON visible_customers TO reader;
         CREATE FUNCTION "we'ird ""schema""".total_of(c int) RETURNS numeric
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
           AS $$ SELECT sum(price) FROM public.orders WHERE customer = c $$;
         COMMENT ON FUNCTION "we'ird ""schema""".total_of(int) IS 'pinned search_path';
         SELECT lo_from_bytea(424242, '\x00ff00ff6869'::bytea);
         COMMENT ON LARGE OBJECT 424242 IS 'a blob';
         ALTER LARGE OBJECT 424242 OWNER TO app;
         GRANT SELECT ON LARGE OBJECT 424242 TO reader;
         SELECT lo_from_bytea(424243, convert_to(repeat('large ', 5000), 'UTF8'));"#,
    )
    .unwrap();
    pg.psql(
        "latin",
        "SET client_encoding = 'UTF8';
         CREATE TABLE words (id int PRIMARY KEY, word text NOT NULL);
         INSERT INTO words VALUES (1, 'café'), (2, 'Ærøskøbing'), (3, 'naïve ½ ¿qué? ß');
         COMMENT ON TABLE words IS 'mots accentués';
         CREATE INDEX words_word ON words (word);",
    )
    .unwrap();

    // The LATIN1 database's dump, read as UTF-8 like the other databases'.
    let utf8 = |mut env: Vec<(&'static str, String)>| {
        env.push(("PGCLIENTENCODING", "UTF8".into()));
        env
    };
    let env = utf8(pg.env());
    let source = cluster_image(pg.bin_dir(), &env);
    // The image shows every kind of object, so its equality below covers each of them.
    let shown = |db: &str, needle: &str| {
        source
            .iter()
            .any(|(d, lines)| d == db && lines.iter().any(|l| l.contains(needle)))
    };
    for (db, needle) in [
        ("globals", "VALID UNTIL '2099-12-31"),
        ("globals", "GRANT reader TO app"),
        (
            "shop",
            "ALTER ROLE app IN DATABASE shop SET work_mem TO '3MB'",
        ),
        ("globals", "COMMENT ON ROLE app IS 'the application'"),
        ("shop", "CONNECTION LIMIT = 7"),
        ("shop", "OWNER TO app"),
        (
            "shop",
            "REVOKE CONNECT,TEMPORARY ON DATABASE shop FROM PUBLIC",
        ),
        ("shop", "GRANT CONNECT ON DATABASE shop TO reader"),
        ("shop", "COMMENT ON DATABASE shop IS 'owned by app, fenced'"),
        ("shop", "CREATE EXTENSION IF NOT EXISTS pg_trgm"),
        ("shop", "CREATE EXTENSION IF NOT EXISTS hstore"),
        ("shop", "USING gin (name public.gin_trgm_ops)"),
        ("shop", "COMMENT ON SCHEMA \"we'ird \"\"schema\"\"\" IS"),
        ("shop", "CHECK ((VALUE > (0)::numeric))"),
        ("shop", "CREATE TYPE public.mood AS ENUM"),
        ("shop", "CREATE TYPE public.money_pair AS"),
        ("shop", "GENERATED ALWAYS AS IDENTITY"),
        ("shop", "GENERATED BY DEFAULT AS IDENTITY"),
        ("shop", "GENERATED ALWAYS AS (upper(name)) STORED"),
        (
            "shop",
            "ALTER SEQUENCE public.order_no OWNED BY public.orders.no",
        ),
        (
            "shop",
            "SELECT pg_catalog.setval('public.order_no', 99991, false)",
        ),
        (
            "shop",
            "SELECT pg_catalog.setval('public.customers_id_seq', 607, true)",
        ),
        ("shop", "NOT VALID"),
        ("shop", "DEFERRABLE INITIALLY DEFERRED"),
        ("shop", "CREATE TRIGGER orders_touch"),
        (
            "shop",
            "ALTER TABLE ONLY public.secrets FORCE ROW LEVEL SECURITY",
        ),
        (
            "shop",
            "CREATE POLICY reader_low ON public.secrets AS RESTRICTIVE",
        ),
        (
            "shop",
            "GRANT UPDATE(attrs) ON TABLE public.customers TO reader",
        ),
        (
            "shop",
            "GRANT SELECT(id) ON TABLE public.customers TO reader",
        ),
        (
            "shop",
            "GRANT SELECT(name) ON TABLE public.customers TO reader",
        ),
        ("shop", "ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA"),
        ("shop", "REVOKE ALL ON FUNCTIONS  FROM PUBLIC"),
        ("shop", "CREATE UNLOGGED TABLE public.cache"),
        ("shop", "security_barrier='true'"),
        ("shop", "SET search_path TO 'pg_catalog', 'public'"),
        ("shop", "SELECT pg_catalog.lo_create('424242')"),
        ("shop", "ALTER LARGE OBJECT 424242 OWNER TO app"),
        ("shop", "GRANT SELECT ON LARGE OBJECT 424242 TO reader"),
        ("shop", "COMMENT ON LARGE OBJECT 424242 IS 'a blob'"),
        ("shop", "SELECT pg_catalog.lowrite(0, '\\x00ff00ff6869')"),
        ("latin", "ENCODING = 'LATIN1'"),
        ("latin", "Ærøskøbing"),
    ] {
        assert!(shown(db, needle), "{db}: no {needle} in the source's image");
    }

    let parts = backup(spec(&pg, "postgres", None)).await;
    let root = restore_root();
    let (conn, _guard, v) = restore(root.path(), pg.bin_dir(), &parts).await;
    assert!(v.ok, "{v:#?}");
    let copy = cluster_image(pg.bin_dir(), &utf8(restored_env(&conn)));
    assert_same_image(&source, &copy, "the copy");
    // And they behave: app logs in with its password, and row-level security, forced on
    // its owner, shows app its own rows only, and (a member of reader) below 30 only.
    assert_eq!(
        psql_as(
            pg.bin_dir(),
            &conn,
            "app",
            "app-secret",
            "shop",
            "SELECT count(*) FROM secrets"
        ),
        "14"
    );
    assert_eq!(
        pg.psql("shop", "SET ROLE app; SELECT count(*) FROM secrets")
            .unwrap(),
        "14"
    );

    // In place over a damaged source: a table dropped, a membership revoked, rows deleted.
    pg.psql(
        "shop",
        r#"DROP TABLE "we'ird ""schema"""."a table";
         DELETE FROM orders WHERE id > 100;
         DELETE FROM cache;
         REVOKE reader FROM app;"#,
    )
    .unwrap();
    pg.psql("latin", "DELETE FROM words WHERE id = 2;").unwrap();
    assert!(!image_diff(&source, &cluster_image(pg.bin_dir(), &env)).is_empty());
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let v = in_place(spec(&pg, "postgres", None), &parts, &expected).await;
    assert!(v.ok, "{v:#?}");
    let after = cluster_image(pg.bin_dir(), &env);
    assert_same_image(&source, &after, "the in-place copy");
}

/// Issue 13, kind 2: a service configured with a subset of its databases says which it left
/// out, and why (the manifest carries it to `backup show`), instead of leaving them silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_subset_names_the_databases_it_leaves_out() {
    let pg = PgServer::start().unwrap();
    pg.create_database("kept").unwrap();
    pg.create_database("skipped").unwrap();
    let mut only = spec(&pg, "postgres", None);
    only.databases = vec!["kept".into()];
    let engine = engines::open(only).unwrap();
    let run = engine.begin_backup().await.unwrap();
    let parts: Vec<String> = run.parts().iter().map(|p| p.name.clone()).collect();
    assert_eq!(parts, ["globals", "kept"]);
    let mut left: Vec<String> = run.left_out().into_iter().map(|l| l.name).collect();
    left.sort();
    assert_eq!(left, ["postgres", "skipped", "template1"]);
    assert!(run
        .left_out()
        .iter()
        .all(|l| l.why.contains("not in the service's `databases`")));
    run.close().await.unwrap();
}
