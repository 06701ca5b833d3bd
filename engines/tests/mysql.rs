//! The MariaDB engine against real servers: a backup (accounts, roles, grants down to tables
//! and routines, two databases, a trigger, a stored procedure and function, awkward data)
//! restores into a fresh, provisioned server that verifies and equals the source; the stats
//! counted from the stream match; failures name their cause; provisioned servers never
//! outlive a test.

use std::path::PathBuf;
use std::process::Command;

use strongbox_engines::Error;
use strongbox_engines::{
    self as engines, Connection, EngineKind, PartKind, PartPlan, Role, ServiceSpec, TableStat,
};
use strongbox_integration::mariadb::{mariadb_tool, MariaDbServer};

fn spec(db: &MariaDbServer, password_file: Option<PathBuf>) -> ServiceSpec {
    ServiceSpec {
        name: "maria-test".into(),
        engine: EngineKind::Mysql,
        host: Some(db.host().to_string()),
        port: Some(db.port()),
        user: Some("root".into()),
        password_file,
        password_env: None,
        databases: vec![],
        bin_dir: None,
        path: None,
    }
}

/// Stops a provisioned server when dropped, also when an assertion failed.
struct Teardown {
    dir: PathBuf,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let dir = self.dir.clone();
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(engines::teardown(EngineKind::Mysql, &dir))
        })
        .join();
        if !matches!(result, Ok(Ok(()))) {
            eprintln!("tearing down {} failed: {result:?}", self.dir.display());
        }
    }
}

/// A source server with its own temp folder: MariaDB servers sharing `/tmp` can delete each
/// other's internal temporary tables when tests run in parallel.
fn source_server() -> (MariaDbServer, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::geteuid().is_root() {
        if let Ok(Some(mysql)) = nix::unistd::User::from_name("mysql") {
            std::os::unix::fs::chown(
                tmp.path(),
                Some(mysql.uid.as_raw()),
                Some(mysql.gid.as_raw()),
            )
            .unwrap();
        }
    }
    let server = MariaDbServer::builder()
        .arg(format!("--tmpdir={}", tmp.path().display()))
        .start()
        .unwrap();
    (server, tmp)
}

fn restore_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

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

/// Runs `sql` with the `mariadb` client against a restored server over TCP.
fn query_as(conn: &Connection, user: &str, password: &str, sql: &str) -> String {
    let client = mariadb_tool(&["mariadb", "mysql"]).unwrap();
    let out = Command::new(client)
        .env_clear()
        .env("MYSQL_PWD", password)
        .arg("--no-defaults")
        .arg("--protocol=TCP")
        .arg(format!("--host={}", conn.host))
        .arg(format!("--port={}", conn.port))
        .arg(format!("--user={user}"))
        .args(["-N", "-B", "-e", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

const SETUP: &str = r#"
CREATE DATABASE shop;
CREATE DATABASE logs;
CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL, data BLOB, price DECIMAL(10,2));
CREATE TABLE shop.audit (id INT AUTO_INCREMENT PRIMARY KEY, item INT, note VARCHAR(100));
CREATE TABLE shop.empty_t (a INT);
CREATE TABLE shop.`odd ``name` (x INT);
INSERT INTO shop.`odd ``name` VALUES (1), (2);
CREATE TRIGGER shop.items_audit AFTER INSERT ON shop.items FOR EACH ROW
  INSERT INTO shop.audit (item, note) VALUES (NEW.id, CONCAT('added ', NEW.name));
INSERT INTO shop.items (name, data, price)
  SELECT CONCAT('item ', seq, ' it''s; (a "paren"\n\\', seq), UNHEX(LPAD(HEX(seq), 8, '0')), seq / 3
  FROM shop.seq_1_to_3000;
CREATE TABLE logs.events (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(50), at DATETIME);
INSERT INTO logs.events (msg, at) SELECT CONCAT('m', seq), '2026-01-01 00:00:00' FROM logs.seq_1_to_5000;
CREATE VIEW shop.cheap AS SELECT id, name FROM shop.items WHERE price < 10;
CREATE FUNCTION shop.add_up(a INT, b INT) RETURNS INT DETERMINISTIC RETURN a + b;
CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw';
CREATE ROLE reader;
GRANT SELECT ON logs.* TO reader;
GRANT reader TO 'app'@'%';
SET DEFAULT ROLE reader FOR 'app'@'%';
GRANT SELECT, INSERT ON shop.items TO 'app'@'%';
GRANT SELECT (msg) ON logs.events TO 'app'@'%';
"#;

const PROCEDURE: &str = "CREATE PROCEDURE shop.add_item(n TEXT)
BEGIN
  INSERT INTO shop.items (name) VALUES (n);
  INSERT INTO shop.items (name) VALUES (CONCAT(n, ' again'));
END";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restores_into_a_fresh_server_that_equals_it() {
    let (mut src, _src_tmp) = source_server();
    src.query(SETUP).unwrap();
    src.query(&format!(
        "DELIMITER //\n{PROCEDURE}//\nDELIMITER ;\nGRANT EXECUTE ON PROCEDURE shop.add_item TO 'app'@'%';"
    ))
    .unwrap();
    src.set_root_password("source-root-pw").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pw_file = tmp.path().join("pw");
    std::fs::write(&pw_file, "source-root-pw\n").unwrap();

    let engine = engines::open(spec(&src, Some(pw_file.clone()))).unwrap();
    let probe = engine.probe().await.unwrap();
    assert!(probe.healthy);
    assert_eq!(probe.role, Role::Primary);
    assert!(probe.version.contains("MariaDB"), "{}", probe.version);

    let parts = backup(spec(&src, Some(pw_file.clone()))).await;
    let names: Vec<(&str, PartKind)> = parts
        .iter()
        .map(|p| (p.0.name.as_str(), p.0.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("grants", PartKind::Globals),
            ("logs", PartKind::Database),
            ("shop", PartKind::Database)
        ]
    );
    let grants = String::from_utf8_lossy(&parts[0].1).into_owned();
    assert!(
        grants.contains("CREATE USER IF NOT EXISTS `app`@`%`"),
        "{grants}"
    );
    assert!(
        grants.contains("CREATE ROLE IF NOT EXISTS `reader`"),
        "{grants}"
    );
    assert!(!grants.contains("`root`"), "root must not travel: {grants}");
    assert!(!grants.contains("source-root-pw"));

    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let rows = |n: &str| stats.iter().find(|s| s.name == n).map(|s| s.rows);
    assert_eq!(rows("shop.items"), Some(3000));
    assert_eq!(rows("shop.audit"), Some(3000));
    assert_eq!(rows("shop.empty_t"), Some(0));
    assert_eq!(rows("shop.odd `name"), Some(2));
    assert_eq!(rows("logs.events"), Some(5000));
    assert_eq!(rows("shop.cheap"), None, "a view is not a table");
    assert_eq!(stats.len(), 5, "{stats:?}");

    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let mut target = engines::provision(EngineKind::Mysql, &dir, "127.0.0.1", None, "")
        .await
        .unwrap();
    for (part, bytes, _) in &parts {
        target
            .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap();
    }
    let v = target.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.tables_checked, 5);
    assert_eq!(v.rows_checked, 3000 + 3000 + 2 + 5000);
    assert!(
        v.engine_check.contains("mariadb-check"),
        "{}",
        v.engine_check
    );

    let conn = target.connection();
    assert_eq!(conn.engine, strongbox_engines::EngineKind::Mysql);
    assert_eq!(conn.user, "root");
    let file = conn.password_file.clone().unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pw = std::fs::read_to_string(&file).unwrap().trim().to_string();
    let q = |sql: &str| query_as(&conn, "root", &pw, sql);

    for table in [
        "shop.items",
        "shop.audit",
        "shop.empty_t",
        "shop.`odd ``name`",
        "logs.events",
    ] {
        let sql = format!("CHECKSUM TABLE {table} EXTENDED");
        assert_eq!(q(&sql), src.query(&sql).unwrap(), "{table}");
    }
    for sql in [
        "SELECT TRIGGER_NAME, EVENT_MANIPULATION, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'",
        "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop' ORDER BY 1",
        "SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'shop'",
        "SELECT shop.add_up(2, 3)",
        "SELECT MAX(id) FROM shop.items",
    ] {
        assert_eq!(q(sql), src.query(sql).unwrap(), "{sql}");
    }
    for account in ["'app'@'%'", "reader"] {
        let sql = format!("SHOW GRANTS FOR {account}");
        assert_eq!(
            sorted_lines(&q(&sql)),
            sorted_lines(&src.query(&sql).unwrap()),
            "{sql}"
        );
    }
    // app logs in with its own password; its role, column, table and routine grants work.
    let app = |sql: &str| query_as(&conn, "app", "app-pw", sql);
    assert_eq!(app("SELECT COUNT(*) FROM logs.events"), "5000");
    assert_eq!(app("SELECT msg FROM logs.events WHERE id = 1").len(), 2);
    app("CALL shop.add_item('new')");
    assert_eq!(q("SELECT COUNT(*) FROM shop.items"), "3002");
    assert_eq!(
        q("SELECT COUNT(*) FROM shop.audit"),
        "3002",
        "the trigger fired"
    );

    // Teardown stops the server.
    let pid: u32 = std::fs::read_to_string(dir.join("mariadbd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    engines::teardown(EngineKind::Mysql, &dir).await.unwrap();
    assert!(!alive(pid), "mariadbd {pid} still runs after teardown");
    src.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_counted_from_the_stream_match_while_writers_write() {
    let (src, _src_tmp) = source_server();
    src.query(
        "CREATE DATABASE w;
         CREATE TABLE w.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;
         INSERT INTO w.t (v) SELECT CONCAT('row ', seq) FROM w.seq_1_to_20000;",
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut cmd = src.client_command();
        cmd.arg("--database=w");
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut c = Command::new(cmd.get_program());
                c.args(cmd.get_args());
                c.args(["-e", "INSERT INTO t (v) VALUES ('x'), ('y; (z)')"]);
                assert!(c.status().unwrap().success());
                rounds += 1;
            }
            rounds
        })
    };
    // Let the writer start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while src.query("SELECT COUNT(*) FROM w.t").unwrap() == "20000" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let parts = backup(spec(&src, None)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(writer.join().unwrap() > 0);
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let counted = stats.iter().find(|s| s.name == "w.t").unwrap().rows;
    assert!(counted > 20000);

    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let mut target = engines::provision(EngineKind::Mysql, &dir, "127.0.0.1", None, "")
        .await
        .unwrap();
    for (part, bytes, _) in &parts {
        target
            .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap();
    }
    let v = target.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.rows_checked, counted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_with_a_clear_error() {
    let (mut src, _src_tmp) = source_server();
    src.query("CREATE DATABASE shop; CREATE TABLE shop.t (a INT);")
        .unwrap();
    let engine = engines::open(spec(&src, None)).unwrap();
    let mut run = engine.begin_backup().await.unwrap();
    let shop = run.parts()[1].clone();
    src.stop().unwrap();

    // The dump tool fails: its error says why.
    let mut dump = run.dump(&shop).await.unwrap();
    dump.read_all().await.unwrap();
    match dump.finish.await.unwrap_err() {
        Error::Tool { tool, stderr, .. } => {
            assert_eq!(tool, "mariadb-dump");
            assert!(stderr.contains("Can't connect"), "{stderr}");
        }
        other => panic!("expected mariadb-dump's error, got {other:?}"),
    }
    // So do the grants and a new backup, naming what to check.
    let err = run
        .dump(&run.parts()[0].clone())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Can't connect"), "{err}");
    run.close().await.unwrap();
    let err = engine.begin_backup().await.err().unwrap().to_string();
    assert!(
        err.contains("Can't connect") && err.contains("check that the server runs"),
        "{err}"
    );
    assert!(!engine.probe().await.unwrap().healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_tells_replicas_and_wrong_passwords() {
    let (mut src, _src_tmp) = source_server();
    src.set_root_password("right").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let right = tmp.path().join("right");
    std::fs::write(&right, "right\n").unwrap();
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();

    let engine = engines::open(spec(&src, Some(right))).unwrap();
    assert_eq!(engine.probe().await.unwrap().role, Role::Primary);
    src.query("SET GLOBAL read_only = 1").unwrap();
    assert_eq!(engine.probe().await.unwrap().role, Role::Replica);

    let engine = engines::open(spec(&src, Some(wrong))).unwrap();
    let err = engine.probe().await.err().unwrap().to_string();
    assert!(err.contains("Access denied"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    src.stop().unwrap();
}

const CHECKED_TABLES: &[&str] = &[
    "shop.items",
    "shop.audit",
    "shop.empty_t",
    "shop.`odd ``name`",
    "logs.events",
];

fn checksums(db: &MariaDbServer) -> Vec<String> {
    CHECKED_TABLES
        .iter()
        .map(|t| db.query(&format!("CHECKSUM TABLE {t} EXTENDED")).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_replaces_the_live_databases_with_the_backup() {
    use std::io::{BufRead, Write};
    let (src, _src_tmp) = source_server();
    src.query(SETUP).unwrap();
    let before = checksums(&src);
    let app_grants =
        |db: &MariaDbServer| sorted_lines(&db.query("SHOW GRANTS FOR 'app'@'%'").unwrap());
    let grants_before = app_grants(&src);

    let parts = backup(spec(&src, None)).await;
    let expected: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    assert_eq!(expected.len(), 5, "{expected:?}");

    // The live server moves on: rows added and changed, a table dropped, an account's password
    // and grants changed, and a database the backup does not know.
    src.query(
        "INSERT INTO shop.items (name, price) VALUES ('late', 1);
         UPDATE shop.items SET price = 0 WHERE id <= 100;
         DROP TABLE logs.events;
         SET PASSWORD FOR 'app'@'%' = PASSWORD('changed');
         REVOKE SELECT, INSERT ON shop.items FROM 'app'@'%';
         CREATE DATABASE later;
         CREATE TABLE later.t (x INT);
         INSERT INTO later.t VALUES (7);",
    )
    .unwrap();
    assert_ne!(app_grants(&src), grants_before);

    // A session inside a transaction on shop.items holds a metadata lock that would block
    // DROP DATABASE: the restore ends it.
    let mut holder = src
        .client_command()
        .args(["--database=shop", "--unbuffered"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"SELECT CONNECTION_ID();\nBEGIN;\nSELECT COUNT(*) FROM items;\n")
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let holder_id: u64 = line.trim().parse().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "3001");

    let engine = engines::open(spec(&src, None)).unwrap();
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
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.tables_checked, 5);
    assert_eq!(v.rows_checked, 3000 + 3000 + 2 + 5000);
    assert!(
        v.engine_check.contains("mariadb-check: all tables OK"),
        "{}",
        v.engine_check
    );

    // The live server holds the backup's data and grants again.
    assert_eq!(checksums(&src), before);
    assert_eq!(app_grants(&src), grants_before);
    assert_eq!(
        src.query(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {holder_id}"
        ))
        .unwrap(),
        "0",
        "the session on shop was ended"
    );
    // What the backup does not know is left alone.
    assert_eq!(src.query("SELECT x FROM later.t").unwrap(), "7");

    let conn = target.connection();
    assert_eq!(conn.engine, strongbox_engines::EngineKind::Mysql);
    assert_eq!(conn.host, src.host());
    assert_eq!(conn.port, src.port());
    assert_eq!(conn.user, "root");
    assert_eq!(conn.data_dir, PathBuf::new());
    // app logs in with the backup's password again; its table grant works.
    assert_eq!(
        query_as(&conn, "app", "app-pw", "SELECT COUNT(*) FROM shop.items"),
        "3000"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile names (issue 12, kind 1): names from a database reach tools only after `--` and SQL
// only quoted by the server's rules.
// ---------------------------------------------------------------------------------------------

use strongbox_integration::hostile::{mariadb_names, PWNED_FILE};
use strongbox_integration::mariadb::quote_ident;

/// Names aimed at the grants part's own format (its `-- strongbox: after database` markers,
/// lines, comments), on top of the shared corpus.
fn grants_format_names() -> Vec<String> {
    vec![
        "x\n-- strongbox: after database 78\nGRANT ALL ON *.* TO x;".into(),
        "y\n;\nDROP DATABASE mysql;\n--".into(),
    ]
}

/// Runs `sql` with the `mariadb` client in binary mode (so `\r\n` inside a quoted name stays
/// as it is) and returns its output; panics with the client's error when it fails.
fn run_sql(db: &MariaDbServer, sql: &str) -> String {
    let mut cmd = db.client_command();
    cmd.arg("--binary-mode");
    feed(cmd, sql)
}

/// Runs `cmd` (a `mariadb` client) with `sql` on its standard input; its trimmed output.
fn feed(mut cmd: Command, sql: &str) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Like [`run_sql`] against a restored server, reached as `root` with its password.
fn run_sql_on(conn: &Connection, sql: &str) -> String {
    let client = mariadb_tool(&["mariadb", "mysql"]).unwrap();
    let pw = std::fs::read_to_string(conn.password_file.as_ref().unwrap()).unwrap();
    let mut cmd = Command::new(client);
    cmd.env_clear()
        .env("MYSQL_PWD", pw.trim())
        .arg("--no-defaults")
        .arg("--protocol=TCP")
        .arg(format!("--host={}", conn.host))
        .arg(format!("--port={}", conn.port))
        .args(["--user=root", "-N", "-B", "--binary-mode"]);
    feed(cmd, sql)
}

/// Every database's name (hex, so that nothing is lost in the client's batch escaping).
fn database_names(query: impl Fn(&str) -> String) -> Vec<String> {
    query(
        "SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN \
           ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1",
    )
    .lines()
    .map(|h| String::from_utf8(hex::decode(h.trim()).unwrap()).unwrap())
    .collect()
}

fn assert_not_pwned() {
    assert!(
        !std::path::Path::new(PWNED_FILE).exists(),
        "{PWNED_FILE} exists: a hostile name ran as a shell command"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_named_like_an_option_is_dumped_alone_from_the_right_server() {
    let (mut src, _src_tmp) = source_server();
    // `-Ah2130706434` would read as --all-databases --host=127.0.0.2 (a dotless IPv4): the
    // agent would send root's password to whoever listens there.
    let hostile = ["-Ah2130706434", "--host=127.0.0.2"];
    let mut sql = String::from("CREATE DATABASE bystander; CREATE TABLE bystander.t (a INT);\n");
    for (i, name) in hostile.iter().enumerate() {
        let db = quote_ident(name);
        sql.push_str(&format!(
            "CREATE DATABASE {db}; CREATE TABLE {db}.t (a INT);\n\
             INSERT INTO {db}.t SELECT seq FROM {db}.seq_1_to_{};\n",
            10 + i
        ));
    }
    run_sql(&src, &sql);
    src.set_root_password("root-secret").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pw_file = tmp.path().join("pw");
    std::fs::write(&pw_file, "root-secret\n").unwrap();

    // Every database, and the configured subset alike.
    let mut only = spec(&src, Some(pw_file.clone()));
    only.databases = vec![hostile[0].to_string()];
    let subset = backup(only).await;
    let names: Vec<&str> = subset.iter().map(|p| p.0.name.as_str()).collect();
    assert_eq!(names, ["grants", hostile[0]]);

    let parts = backup(spec(&src, Some(pw_file.clone()))).await;
    let names: Vec<&str> = parts.iter().map(|p| p.0.name.as_str()).collect();
    assert_eq!(names, ["grants", hostile[1], hostile[0], "bystander"]);
    for (part, bytes, stats) in parts.iter().chain(&subset).skip(1) {
        if part.kind != PartKind::Database {
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        // Exactly this database: one CREATE DATABASE, naming it.
        let creates: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("CREATE DATABASE"))
            .collect();
        assert_eq!(creates.len(), 1, "{}: {creates:?}", part.name);
        assert!(
            creates[0].contains(&quote_ident(&part.name)),
            "{}: {creates:?}",
            part.name
        );
        assert!(
            !text.contains("`mysql`"),
            "{}: the dump holds mysql",
            part.name
        );
        let expected_rows = match hostile.iter().position(|h| *h == part.name) {
            Some(i) => 10 + i as u64,
            None => 0,
        };
        assert_eq!(
            stats,
            &vec![TableStat {
                name: format!("{}.t", part.name),
                rows: expected_rows
            }],
            "{}",
            part.name
        );
    }

    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let mut target = engines::provision(EngineKind::Mysql, &dir, "127.0.0.1", None, "")
        .await
        .unwrap();
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    for (part, bytes, _) in &parts {
        target
            .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap();
    }
    let v = target.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.rows_checked, 10 + 11);
    assert_eq!(v.engine_check, "mariadb-check: all tables OK");
    let conn = target.connection();
    let mut want: Vec<String> = hostile.iter().map(|s| s.to_string()).collect();
    want.push("bystander".into());
    want.sort_by_key(|n| hex::encode_upper(n));
    assert_eq!(database_names(|sql| run_sql_on(&conn, sql)), want);
    src.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_survive_backup_restore_verification_and_in_place() {
    let (src, _src_tmp) = source_server();
    let mut names = mariadb_names();
    names.extend(grants_format_names());
    // Per name: a database and a table both named so, i + 1 rows, an account `name`@`%` with
    // a database grant and a table grant (object-level: it waits for its database), a role
    // named so, granted to the account as its default role.
    let mut sql = String::new();
    for (i, n) in names.iter().enumerate() {
        let q = quote_ident(n);
        sql.push_str(&format!(
            "CREATE DATABASE {q};\n\
             CREATE TABLE {q}.{q} (id INT PRIMARY KEY, v TEXT);\n\
             INSERT INTO {q}.{q} SELECT seq, CONCAT('row ', seq) FROM {q}.seq_1_to_{rows};\n\
             CREATE USER {q}@'%' IDENTIFIED BY 'pw-{i}';\n\
             GRANT SELECT ON {q}.* TO {q}@'%';\n\
             GRANT INSERT, UPDATE ON {q}.{q} TO {q}@'%';\n\
             CREATE ROLE {q};\n\
             GRANT DELETE ON {q}.{q} TO {q};\n\
             GRANT {q} TO {q}@'%';\n\
             SET DEFAULT ROLE {q} FOR {q}@'%';\n",
            rows = i + 1
        ));
    }
    run_sql(&src, &sql);
    let checksums = |query: &dyn Fn(&str) -> String| -> Vec<String> {
        names
            .iter()
            .map(|n| {
                let q = quote_ident(n);
                query(&format!(
                    "SELECT HEX(CONCAT(COUNT(*), ':', COALESCE(SUM(CRC32(CONCAT(id, v))), 0))) \
                     FROM {q}.{q}"
                ))
            })
            .collect()
    };
    let grants = |query: &dyn Fn(&str) -> String| -> Vec<Vec<String>> {
        names
            .iter()
            .flat_map(|n| {
                let q = quote_ident(n);
                [
                    sorted_lines(&query(&format!("SHOW GRANTS FOR {q}@'%'"))),
                    sorted_lines(&query(&format!("SHOW GRANTS FOR {q}"))),
                ]
            })
            .collect()
    };
    let on_src = |sql: &str| run_sql(&src, sql);
    let sums_before = checksums(&on_src);
    let grants_before = grants(&on_src);
    let mut all_names = names.clone();
    all_names.sort_by_key(|n| hex::encode_upper(n));
    assert_eq!(database_names(on_src), all_names);

    // The agent's work runs under a global sql_mode that changes what quotes mean (`"` quotes
    // names, a backslash is a plain character); the test's own queries do not.
    let hostile_mode = |on: bool| {
        let mode = if on {
            "'ANSI,NO_BACKSLASH_ESCAPES'"
        } else {
            "DEFAULT"
        };
        run_sql(&src, &format!("SET GLOBAL sql_mode = {mode}"));
    };

    // Backup: one part per database, each exactly that database with its rows.
    hostile_mode(true);
    let parts = backup(spec(&src, None)).await;
    hostile_mode(false);
    let mut dumped: Vec<String> = parts[1..].iter().map(|p| p.0.name.clone()).collect();
    dumped.sort_by_key(|n| hex::encode_upper(n));
    assert_eq!(dumped, all_names);
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    for (i, n) in names.iter().enumerate() {
        let got: Vec<&TableStat> = stats
            .iter()
            .filter(|s| s.name == format!("{n}.{n}"))
            .collect();
        assert_eq!(got.len(), 1, "{n:?}: {stats:?}");
        assert_eq!(got[0].rows, i as u64 + 1, "{n:?}");
    }
    assert_eq!(stats.len(), names.len(), "{stats:?}");
    assert_not_pwned();

    // Onto a fresh server: everything comes back, verifies and checks.
    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let mut target = engines::provision(EngineKind::Mysql, &dir, "127.0.0.1", None, "")
        .await
        .unwrap();
    for (part, bytes, _) in &parts {
        target
            .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap_or_else(|e| panic!("loading {:?}: {e}", part.name));
    }
    let v = target.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.tables_checked, names.len() as u64);
    assert_eq!(v.engine_check, "mariadb-check: all tables OK");
    let conn = target.connection();
    let on_target = |sql: &str| run_sql_on(&conn, sql);
    assert_eq!(database_names(on_target), all_names);
    assert_eq!(checksums(&on_target), sums_before);
    assert_eq!(grants(&on_target), grants_before);
    // Nothing else came along: the accounts are those of the source (but root, which each
    // server has its own of).
    let accounts = "SELECT HEX(User), HEX(Host) FROM mysql.user WHERE User <> 'root' ORDER BY 1, 2";
    assert_eq!(on_target(accounts), on_src(accounts));
    assert_not_pwned();

    // In place: the live server moves on, then gets the backup back.
    let mut change = String::new();
    for n in &names {
        let q = quote_ident(n);
        change.push_str(&format!(
            "DELETE FROM {q}.{q} WHERE id = 1;\n\
             INSERT INTO {q}.{q} VALUES (1000, 'late');\n\
             REVOKE INSERT, UPDATE ON {q}.{q} FROM {q}@'%';\n\
             REVOKE DELETE ON {q}.{q} FROM {q};\n"
        ));
    }
    run_sql(&src, &change);
    assert_ne!(checksums(&on_src), sums_before);
    assert_ne!(grants(&on_src), grants_before);
    hostile_mode(true);
    let engine = engines::open(spec(&src, None)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut live = engine.in_place(scratch.path()).await.unwrap();
    for (part, bytes, _) in &parts {
        live.load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap_or_else(|e| panic!("loading {:?} in place: {e}", part.name));
    }
    let v = live.verify(&stats).await.unwrap();
    hostile_mode(false);
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.engine_check, "mariadb-check: all tables OK");
    assert_eq!(checksums(&on_src), sums_before);
    assert_eq!(grants(&on_src), grants_before);
    assert_eq!(database_names(on_src), all_names);
    assert_not_pwned();
}

// ---------------------------------------------------------------------------------------------
// Issue 13: what the dump tool leaves out, objects across databases, load order
// ---------------------------------------------------------------------------------------------

/// A server's content as the comparison of issue 13 sees it: every database (but the
/// system ones) as `mariadb-dump --dump-history` writes it (without its comments, which hold
/// dates), and every account's `SHOW GRANTS` (sorted), `root` and the server's own accounts
/// left out (each server has its own).
fn content(args: &[String], password: Option<&str>) -> (Vec<(String, String)>, Vec<String>) {
    let client = mariadb_tool(&["mariadb", "mysql"]).unwrap();
    let dump_tool = mariadb_tool(&["mariadb-dump", "mysqldump"]).unwrap();
    let with_pw = |mut cmd: Command| {
        cmd.env_clear();
        if let Some(pw) = password {
            cmd.env("MYSQL_PWD", pw);
        }
        cmd
    };
    let query = |sql: &str| {
        let mut cmd = with_pw(Command::new(&client));
        cmd.arg("--no-defaults")
            .args(args)
            .args(["-N", "-B", "--binary-mode"]);
        feed(cmd, sql)
    };
    let mut dumps = Vec::new();
    for db in database_names(query) {
        let mut cmd = with_pw(Command::new(&dump_tool));
        let out = cmd
            .arg("--no-defaults")
            .args(args)
            .args([
                "--skip-comments",
                "--dump-history",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--databases",
                "--",
                &db,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dumping {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dumps.push((db, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let accounts = query(
        "SELECT HEX(User), HEX(Host), is_role FROM mysql.user WHERE User NOT IN \
         ('root', 'mariadb.sys', 'PUBLIC', '') ORDER BY 1, 2",
    );
    let mut grants = Vec::new();
    for line in accounts.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let user = String::from_utf8(hex::decode(f[0]).unwrap()).unwrap();
        let host = String::from_utf8(hex::decode(f[1]).unwrap()).unwrap();
        let who = if f[2] == "Y" {
            quote_ident(&user)
        } else {
            format!("{}@{}", quote_ident(&user), quote_ident(&host))
        };
        grants.push(format!("{who}:"));
        grants.extend(sorted_lines(&query(&format!("SHOW GRANTS FOR {who}"))));
    }
    (dumps, grants)
}

/// [`content`] of a restored server, reached as root with its password.
fn content_of(conn: &Connection) -> (Vec<(String, String)>, Vec<String>) {
    let pw = std::fs::read_to_string(conn.password_file.as_ref().unwrap()).unwrap();
    let args = [
        "--protocol=TCP".to_string(),
        format!("--host={}", conn.host),
        format!("--port={}", conn.port),
        "--user=root".to_string(),
    ];
    content(&args, Some(pw.trim()))
}

/// Restores `parts` onto a fresh server the way a restore job does (load every part, finish,
/// verify).
async fn restore_fresh(
    dir: &std::path::Path,
    parts: &[(PartPlan, Vec<u8>, Vec<TableStat>)],
) -> (Box<dyn engines::RestoreTarget>, engines::Verification) {
    let mut target = engines::provision(EngineKind::Mysql, dir, "127.0.0.1", None, "")
        .await
        .unwrap();
    for (part, bytes, _) in parts {
        target
            .load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap_or_else(|e| panic!("loading {:?}: {e}", part.name));
    }
    target.finish_load().await.unwrap();
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    let v = target.verify(&stats).await.unwrap();
    (target, v)
}

/// Kind 1: a system-versioned table's history (rows and their timestamps) comes back, and
/// verification counts it on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_versioning_history_restores_with_its_timestamps() {
    let (src, _src_tmp) = source_server();
    src.query(
        "CREATE DATABASE hist;
         CREATE TABLE hist.prices (id INT PRIMARY KEY, price INT) WITH SYSTEM VERSIONING;
         INSERT INTO hist.prices SELECT seq, seq FROM hist.seq_1_to_100;
         UPDATE hist.prices SET price = price + 1 WHERE id <= 40;
         UPDATE hist.prices SET price = price + 1 WHERE id <= 10;
         DELETE FROM hist.prices WHERE id > 90;",
    )
    .unwrap();
    assert_eq!(
        src.query("SELECT COUNT(*) FROM hist.prices FOR SYSTEM_TIME ALL")
            .unwrap(),
        "150"
    );
    let parts = backup(spec(&src, None)).await;
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    assert_eq!(
        stats
            .iter()
            .find(|s| s.name == "hist.prices")
            .map(|s| s.rows),
        Some(150),
        "the backup counts history rows: {stats:?}"
    );
    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let (target, v) = restore_fresh(&dir, &parts).await;
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.rows_checked, 150);
    assert_eq!(
        content_of(&target.connection()),
        content(&src.client_args(), None)
    );
}

/// Views across databases (both ways), a routine, and object grants on them.
const CROSS_DATABASE: &str = "CREATE DATABASE a_reports;
CREATE DATABASE b_sales;
CREATE TABLE b_sales.orders (id INT PRIMARY KEY, total INT);
INSERT INTO b_sales.orders SELECT seq, seq * 7 % 500 FROM b_sales.seq_1_to_300;
CREATE VIEW a_reports.big_orders AS SELECT id, total FROM b_sales.orders WHERE total > 400;
CREATE VIEW b_sales.biggest AS SELECT MAX(total) AS m FROM a_reports.big_orders;
CREATE TABLE a_reports.runs (id INT PRIMARY KEY, n INT);
INSERT INTO a_reports.runs VALUES (1, 2);
DELIMITER //
CREATE PROCEDURE a_reports.p_count() SELECT COUNT(*) FROM a_reports.big_orders//
DELIMITER ;
CREATE USER 'u'@'%' IDENTIFIED BY 'u-pw';
GRANT EXECUTE ON PROCEDURE a_reports.p_count TO 'u'@'%';
GRANT SELECT (total) ON b_sales.orders TO 'u'@'%';
GRANT SELECT ON a_reports.big_orders TO 'u'@'%';
";

/// Kinds 2 and 3: a view over another database's table, a routine grant and a column grant
/// restore onto a fresh server equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_across_databases_and_object_grants_restore_equal() {
    let (src, _src_tmp) = source_server();
    run_sql(&src, CROSS_DATABASE);
    let parts = backup(spec(&src, None)).await;
    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let (target, v) = restore_fresh(&dir, &parts).await;
    assert!(v.ok, "{v:#?}");
    assert_eq!(
        content_of(&target.connection()),
        content(&src.client_args(), None)
    );
    let conn = target.connection();
    assert_eq!(
        query_as(&conn, "u", "u-pw", "CALL a_reports.p_count()"),
        src.query("CALL a_reports.p_count()").unwrap()
    );
}

/// Kind 4: an object that cannot come back (a view over a database left out of the backup)
/// does not stop the restore: everything else loads, and verification names the object and
/// why, and is not ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_cannot_be_restored_is_named_and_the_rest_loads() {
    let (src, _src_tmp) = source_server();
    run_sql(&src, CROSS_DATABASE);
    run_sql(
        &src,
        "CREATE TABLE a_reports.after_it (id INT PRIMARY KEY);
         INSERT INTO a_reports.after_it SELECT seq FROM a_reports.seq_1_to_50;
         CREATE VIEW a_reports.fine AS SELECT n FROM a_reports.runs;",
    );
    let mut only_a = spec(&src, None);
    only_a.databases = vec!["a_reports".into()];
    let parts = backup(only_a).await;
    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let (target, v) = restore_fresh(&dir, &parts).await;
    assert!(!v.ok, "{v:#?}");
    assert!(v.mismatches.is_empty(), "{v:#?}");
    assert_eq!(v.failed_objects.len(), 1, "{v:#?}");
    let failed = &v.failed_objects[0];
    assert_eq!(failed.name, "a_reports: VIEW `big_orders`");
    assert!(
        failed.reason.contains("ERROR 1146")
            && failed.reason.contains("b_sales.orders' doesn't exist")
            && failed.reason.contains("statement: "),
        "{}",
        failed.reason
    );
    let conn = target.connection();
    let pw = std::fs::read_to_string(conn.password_file.as_ref().unwrap()).unwrap();
    let q = |sql: &str| query_as(&conn, "root", pw.trim(), sql);
    assert_eq!(q("SELECT COUNT(*) FROM a_reports.after_it"), "50");
    assert_eq!(q("SELECT n FROM a_reports.fine"), "2");
    assert_eq!(
        q("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'a_reports'"),
        "1"
    );
}

/// Kind 1, the limit: a table with transaction-precise history (which mariadb-dump cannot
/// dump with history) does not fail its database's backup; the database comes back with
/// current rows and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_precise_history_does_not_fail_the_backup() {
    let (src, _src_tmp) = source_server();
    src.query(
        "CREATE DATABASE trx;
         CREATE TABLE trx.t (x INT,
           s BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE,
           e BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE,
           PERIOD FOR SYSTEM_TIME (s, e)) WITH SYSTEM VERSIONING ENGINE=InnoDB;
         INSERT INTO trx.t (x) VALUES (1), (2), (3);
         UPDATE trx.t SET x = x + 10;",
    )
    .unwrap();
    let parts = backup(spec(&src, None)).await;
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();
    assert_eq!(
        stats.iter().find(|s| s.name == "trx.t").map(|s| s.rows),
        Some(3)
    );
    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let (target, v) = restore_fresh(&dir, &parts).await;
    assert!(v.ok, "{v:#?}");
    let conn = target.connection();
    let pw = std::fs::read_to_string(conn.password_file.as_ref().unwrap()).unwrap();
    assert_eq!(
        query_as(&conn, "root", pw.trim(), "SELECT SUM(x) FROM trx.t"),
        "36"
    );
}

// ---------------------------------------------------------------------------------------------
// A corpus of awkward objects: the kinds other dump tools' bug reports show breaking.
// ---------------------------------------------------------------------------------------------

/// Three databases of objects other dump tools' bug reports show breaking. `c_main.tickets`
/// (a column DEFAULT NEXTVAL of a sequence) has rows: they came back only once the dump
/// stopped writing `LOCK TABLES <table> WRITE` around a table's rows (`--skip-add-locks`),
/// under which MariaDB refuses the INSERT (ERROR 1100 "Table 'ticket_seq' was not locked").
const AWKWARD: &str = r#"
SET NAMES utf8mb4;
CREATE DATABASE b_ref CHARACTER SET latin1 COLLATE latin1_swedish_ci;
CREATE DATABASE c_main CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci;
CREATE DATABASE c_prog;
CREATE TABLE b_ref.owners (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB
  COMMENT 'owners; referenced from c_main';
INSERT INTO b_ref.owners VALUES (1, 'Zoë'), (2, 'René');
CREATE TABLE c_main.shapes (
  id INT AUTO_INCREMENT PRIMARY KEY COMMENT 'the id, it''s "quoted"',
  w INT NOT NULL,
  h INT NOT NULL,
  area INT AS (w * h) VIRTUAL,
  perimeter INT AS (2 * (w + h)) STORED,
  secret VARCHAR(20) INVISIBLE DEFAULT 'hidden',
  owner INT,
  KEY (perimeter),
  CONSTRAINT shapes_owner FOREIGN KEY (owner) REFERENCES b_ref.owners (id)
) ENGINE=InnoDB COMMENT 'shapes with generated columns';
INSERT INTO c_main.shapes (w, h, owner) VALUES (2, 3, 1), (4, 5, 2), (6, 7, NULL);
INSERT INTO c_main.shapes (id, w, h, secret) VALUES (100, 1, 1, 'visible now');
DELETE FROM c_main.shapes WHERE id = 100;
CREATE SEQUENCE c_main.ticket_seq START WITH 1000 INCREMENT BY 5 CACHE 10;
SELECT SETVAL(c_main.ticket_seq, 5000);
CREATE TABLE c_main.tickets (
  id BIGINT NOT NULL DEFAULT NEXTVAL(c_main.ticket_seq) PRIMARY KEY,
  what VARCHAR(30)
);
SELECT NEXTVAL(c_main.ticket_seq), NEXTVAL(c_main.ticket_seq);
INSERT INTO c_main.tickets (what) VALUES ('first'), ('second');
CREATE TABLE c_main.texts (
  id INT PRIMARY KEY,
  l1 VARCHAR(30) CHARACTER SET latin1 COLLATE latin1_german1_ci,
  u8 VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin COMMENT 'accent é here',
  bin VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  body TEXT,
  FULLTEXT KEY ft_body (body)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COLLATE=latin1_bin;
INSERT INTO c_main.texts VALUES
  (1, 'café é', 'party 🎉🐬', 'Abc', 'the quick brown fox'),
  (2, 'naïve', '日本語 ✓', 'abc', 'jumps over the lazy dog');
CREATE TABLE c_main.blobs (
  id INT PRIMARY KEY,
  b BLOB,
  fixed BINARY(8),
  vb VARBINARY(16)
);
INSERT INTO c_main.blobs VALUES
  (1, UNHEX('00FF00C3280A0D5C27225A00'), UNHEX('0000000000000000'), UNHEX('FFFE00')),
  (2, UNHEX('E28228A1F09028BC'), UNHEX('C0AF000102'), ''),
  (3, NULL, NULL, NULL);
CREATE TABLE c_main.docs (
  id INT PRIMARY KEY,
  doc LONGTEXT CHECK (JSON_VALID(doc)),
  j JSON,
  CONSTRAINT doc_has_kind CHECK (JSON_EXISTS(doc, '$.kind'))
);
INSERT INTO c_main.docs VALUES
  (1, '{"kind": "a", "n": [1, 2, {"x": "é🎉"}]}', '{"k": null}'),
  (2, '{"kind": "b\\"q", "s": "line\\nbreak"}', '[]');
CREATE TABLE c_main.places (
  id INT PRIMARY KEY,
  pt POINT NOT NULL,
  SPATIAL INDEX sp_pt (pt)
) ENGINE=InnoDB;
INSERT INTO c_main.places VALUES (1, POINT(1.5, -2.25)), (2, ST_GeomFromText('POINT(10 20)'));
CREATE TABLE c_main.sales (
  id INT NOT NULL,
  sold DATE NOT NULL,
  amount DECIMAL(8,2),
  PRIMARY KEY (id, sold)
) PARTITION BY RANGE (YEAR(sold)) (
  PARTITION p2020 VALUES LESS THAN (2021),
  PARTITION p2021 VALUES LESS THAN (2022),
  PARTITION pmax VALUES LESS THAN MAXVALUE
);
INSERT INTO c_main.sales VALUES (1, '2020-05-01', 1.5), (2, '2021-06-01', 2.5), (3, '2030-01-01', 3.5);
CREATE TABLE c_main.counter (id INT AUTO_INCREMENT PRIMARY KEY, v INT) AUTO_INCREMENT = 10;
INSERT INTO c_main.counter (v) VALUES (1), (2);
INSERT INTO c_main.counter (id, v) VALUES (500, 3);
DELETE FROM c_main.counter WHERE id = 500;
CREATE TABLE c_main.log (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(60), at DATETIME);
CREATE USER 'definer'@'localhost' IDENTIFIED BY 'definer-pw';
GRANT ALL ON c_main.* TO 'definer'@'localhost';
GRANT ALL ON c_prog.* TO 'definer'@'localhost';
CREATE TABLE c_prog.dates (id INT PRIMARY KEY, d DATE, dt DATETIME, ts TIMESTAMP NULL);
CREATE VIEW c_prog.wide_shapes AS SELECT id, w, h FROM c_main.shapes WHERE w > 1;
CREATE ALGORITHM=MERGE DEFINER='definer'@'localhost' SQL SECURITY INVOKER
  VIEW c_main.big_shapes AS SELECT id, w, h FROM c_main.shapes WHERE w >= 4 WITH CASCADED CHECK OPTION;
CREATE ALGORITHM=TEMPTABLE VIEW c_main.shape_count AS SELECT COUNT(*) AS n FROM c_main.shapes;
CREATE ALGORITHM=UNDEFINED VIEW c_main.big_wide AS SELECT id, w FROM c_main.big_shapes WHERE w < 100
  WITH LOCAL CHECK OPTION;
DELIMITER //
CREATE DEFINER='definer'@'localhost' TRIGGER c_main.shapes_bi BEFORE INSERT ON c_main.shapes
FOR EACH ROW BEGIN
  IF NEW.w < 0 THEN SET NEW.w = 0; END IF;
END//
CREATE TRIGGER c_main.shapes_ai AFTER INSERT ON c_main.shapes
FOR EACH ROW INSERT INTO c_main.log (what, at) VALUES (CONCAT('shape ', NEW.id), '2026-01-01 00:00:00')//
CREATE DEFINER='definer'@'localhost' PROCEDURE c_prog.add_shape(IN pw INT, IN ph INT)
  SQL SECURITY INVOKER
  COMMENT 'adds a shape; it''s invoker'
BEGIN
  INSERT INTO c_main.shapes (w, h) VALUES (pw, ph);
  SELECT LAST_INSERT_ID();
END//
CREATE DEFINER='definer'@'localhost' FUNCTION c_prog.area_of(pw INT, ph INT) RETURNS BIGINT
  DETERMINISTIC SQL SECURITY INVOKER
  RETURN pw * ph//
CREATE DEFINER='definer'@'localhost' EVENT c_prog.nightly
  ON SCHEDULE EVERY 1 DAY STARTS '2037-01-01 03:00:00'
  ON COMPLETION PRESERVE ENABLE
  COMMENT 'never runs in a test'
  DO INSERT INTO c_main.log (what) VALUES ('nightly')//
CREATE EVENT c_prog.paused
  ON SCHEDULE AT '2037-06-01 00:00:00'
  ON COMPLETION PRESERVE DISABLE
  DO DELETE FROM c_main.log//
DELIMITER ;
INSERT INTO c_main.shapes (w, h, owner) VALUES (-5, 9, 1);
CREATE ROLE c_auditor;
GRANT SELECT ON c_main.* TO c_auditor;
CREATE USER 'col_user'@'%' IDENTIFIED BY 'col-pw';
GRANT SELECT (id, w), UPDATE (h) ON c_main.shapes TO 'col_user'@'%';
GRANT c_auditor TO 'col_user'@'%';
SET DEFAULT ROLE c_auditor FOR 'col_user'@'%';
GRANT EXECUTE ON FUNCTION c_prog.area_of TO 'col_user'@'%';
CREATE USER 'secure'@'10.0.0.%' IDENTIFIED BY 'secure-pw'
  REQUIRE SSL WITH MAX_QUERIES_PER_HOUR 100 MAX_USER_CONNECTIONS 3;
GRANT SELECT ON b_ref.* TO 'secure'@'10.0.0.%';
"#;

/// Zero dates, if the server's sql_mode lets them in.
const ZERO_DATES: &str = "INSERT INTO c_prog.dates VALUES
  (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00'),
  (2, '2026-02-00', '2026-00-10 12:00:00', NULL),
  (3, '2026-03-04', '2026-03-04 05:06:07', '2026-03-04 05:06:07');";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_awkward_objects_restores_equal() {
    let (src, _src_tmp) = source_server();
    run_sql(&src, AWKWARD);
    let mode = src.query("SELECT @@GLOBAL.sql_mode").unwrap();
    let zero_dates = !mode.contains("NO_ZERO_DATE") && !mode.contains("NO_ZERO_IN_DATE");
    if zero_dates {
        run_sql(&src, ZERO_DATES);
    } else {
        eprintln!("sql_mode {mode} refuses zero dates: left out");
    }
    let q = |sql: &str| run_sql(&src, sql);
    // The corpus is what it should be before anything is backed up.
    assert_eq!(
        q("SELECT area, perimeter FROM c_main.shapes WHERE id = 1"),
        "6\t10"
    );
    assert_eq!(
        q("SELECT w FROM c_main.shapes WHERE h = 9"),
        "0",
        "BEFORE trigger"
    );
    assert_eq!(q("SELECT COUNT(*) FROM c_main.log"), "1", "AFTER trigger");
    let next_ids = "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
                    WHERE TABLE_SCHEMA = 'c_main' AND TABLE_NAME IN ('counter', 'shapes') ORDER BY TABLE_NAME";
    assert_eq!(q(next_ids), "501\n102");
    let events = "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS \
                  WHERE EVENT_SCHEMA = 'c_prog' ORDER BY 1";
    assert_eq!(q(events), "nightly\tENABLED\npaused\tDISABLED");
    let before = content(&src.client_args(), None);

    let parts = backup(spec(&src, None)).await;
    let names: Vec<&str> = parts.iter().map(|p| p.0.name.as_str()).collect();
    assert_eq!(names, ["grants", "b_ref", "c_main", "c_prog"]);
    let stats: Vec<TableStat> = parts.iter().flat_map(|p| p.2.clone()).collect();

    // Onto a fresh server: verified, and equal.
    let root = restore_root();
    let dir = root.path().join("restore");
    let _guard = Teardown { dir: dir.clone() };
    let (target, v) = restore_fresh(&dir, &parts).await;
    assert!(v.ok, "{v:#?}");
    assert!(v.failed_objects.is_empty(), "{v:#?}");
    let conn = target.connection();
    let restored = content_of(&conn);
    for ((db, want), (got_db, got)) in before.0.iter().zip(&restored.0) {
        assert_eq!(db, got_db);
        assert_eq!(got, want, "database {db}");
    }
    assert_eq!(restored, before);
    let on_target = |sql: &str| run_sql_on(&conn, sql);
    for sql in [
        next_ids,
        events,
        "SELECT HEX(b), HEX(fixed), HEX(vb) FROM c_main.blobs ORDER BY id",
        "SELECT HEX(l1), HEX(u8), COUNT(*) FROM c_main.texts WHERE bin = 'abc' GROUP BY 1, 2",
        "SELECT id FROM c_main.texts WHERE MATCH(body) AGAINST ('lazy')",
        "SELECT ST_AsText(pt) FROM c_main.places ORDER BY id",
        "SELECT PARTITION_NAME, TABLE_ROWS FROM information_schema.PARTITIONS \
         WHERE TABLE_SCHEMA = 'c_main' AND TABLE_NAME = 'sales' ORDER BY 1",
        "SELECT secret FROM c_main.shapes ORDER BY id",
        "SELECT c_prog.area_of(3, 4)",
    ] {
        assert_eq!(on_target(sql), q(sql), "{sql}");
    }
    // The restored objects still behave: the sequence default, the check option, the
    // invoker routine, the foreign key, the JSON check.
    // (The sequence comes back at its next value not yet cached, as after a restart: ids
    // handed out on the source are not handed out again.)
    on_target("INSERT INTO c_main.tickets (what) VALUES ('after restore')");
    let id: i64 = on_target("SELECT id FROM c_main.tickets WHERE what = 'after restore'")
        .parse()
        .unwrap();
    assert!(id > 5010 && (id - 5000) % 5 == 0, "{id}");
    let refused = |sql: &str| {
        let client = mariadb_tool(&["mariadb", "mysql"]).unwrap();
        let pw = std::fs::read_to_string(conn.password_file.as_ref().unwrap()).unwrap();
        let out = Command::new(client)
            .env_clear()
            .env("MYSQL_PWD", pw.trim())
            .arg("--no-defaults")
            .arg("--protocol=TCP")
            .arg(format!("--host={}", conn.host))
            .arg(format!("--port={}", conn.port))
            .args(["--user=root", "-e", sql])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sql} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(refused("INSERT INTO c_main.big_shapes (w, h) VALUES (1, 1)").contains("CHECK OPTION"));
    assert!(
        refused("INSERT INTO c_main.shapes (w, h, owner) VALUES (1, 1, 99)")
            .contains("foreign key")
    );
    assert!(refused("INSERT INTO c_main.docs VALUES (9, 'not json', NULL)").contains("CONSTRAINT"));
    assert_eq!(
        query_as(&conn, "col_user", "col-pw", "SELECT c_prog.area_of(5, 6)"),
        "30"
    );
    assert_eq!(
        query_as(
            &conn,
            "col_user",
            "col-pw",
            "SELECT COUNT(*) FROM c_main.docs"
        ),
        "2",
        "the default role is active"
    );

    // In place over a damaged source: a table dropped, rows deleted, the sequence moved on,
    // while the foreign key across databases stays live (each database is dropped with
    // foreign_key_checks off; with them on, MariaDB refused to drop b_ref, ERROR 1451).
    q("DROP TABLE c_main.places;
       DELETE FROM c_main.blobs WHERE id = 1;
       DELETE FROM c_main.shapes WHERE id = 3;
       INSERT INTO b_ref.owners VALUES (3, 'late');
       DELETE FROM c_main.counter;
       SELECT NEXTVAL(c_main.ticket_seq);");
    assert_ne!(content(&src.client_args(), None), before);
    let engine = engines::open(spec(&src, None)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut live = engine.in_place(scratch.path()).await.unwrap();
    for (part, bytes, _) in &parts {
        live.load(part, Box::new(std::io::Cursor::new(bytes.clone())))
            .await
            .unwrap_or_else(|e| panic!("loading {:?} in place: {e}", part.name));
    }
    live.finish_load().await.unwrap();
    let v = live.verify(&stats).await.unwrap();
    assert!(v.ok, "{v:#?}");
    let after = content(&src.client_args(), None);
    for ((db, want), (got_db, got)) in before.0.iter().zip(&after.0) {
        assert_eq!(db, got_db);
        assert_eq!(got, want, "database {db} in place");
    }
    assert_eq!(after, before);
    assert_eq!(q(next_ids), "501\n102", "the gaps are the same");
}

/// Issue 13, kind 2: a service configured with a subset of its databases says which it left
/// out, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_subset_names_the_databases_it_leaves_out() {
    let (src, _tmp) = source_server();
    run_sql(&src, "CREATE DATABASE kept; CREATE DATABASE skipped;");
    let mut only = spec(&src, None);
    only.databases = vec!["kept".into()];
    let engine = engines::open(only).unwrap();
    let run = engine.begin_backup().await.unwrap();
    let parts: Vec<String> = run.parts().iter().map(|p| p.name.clone()).collect();
    assert_eq!(parts, ["grants", "kept"]);
    let left: Vec<String> = run.left_out().into_iter().map(|l| l.name).collect();
    assert_eq!(left, ["skipped"]);
    run.close().await.unwrap();
}
