//! Tests of the harness itself, against real servers: they start, answer queries, and leave
//! no process or folder behind — after a normal drop, a drop during a panic, a crash
//! (SIGKILL) and a SIGSTOP.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use strongbox_integration::pg::{pg_bin_dir, pg_tool, PgServer};
use strongbox_integration::ports::{free_port, free_port_on};
use strongbox_integration::wait::until;
use strongbox_integration::{tmp, HarnessError, MariaDbServer, SqliteDb};

/// Identity of a process that survives pid reuse: pid plus start time (field 22 of
/// `/proc/<pid>/stat`, in clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcId {
    pid: u32,
    start_time: u64,
}

/// Parses `/proc/<pid>/stat`: returns (state, ppid, start_time) or None if it is gone.
fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field N is at index N - 3.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start_time))
}

fn proc_id(pid: u32) -> ProcId {
    let (_, _, start_time) = proc_stat(pid).unwrap_or_else(|| panic!("process {pid} not found"));
    ProcId { pid, start_time }
}

/// All processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<ProcId> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((_, ppid, start_time)) = proc_stat(child) {
            if ppid == pid {
                out.push(ProcId {
                    pid: child,
                    start_time,
                });
            }
        }
    }
    out
}

/// Asserts that the process is gone: `kill(pid, 0)` fails with ESRCH, or the pid now belongs
/// to a different (later-started) process.
fn assert_gone(p: ProcId) {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), None) {
        Err(nix::errno::Errno::ESRCH) => {}
        other => {
            let now = proc_stat(p.pid);
            assert!(
                now.is_none_or(|(_, _, start)| start != p.start_time),
                "process {} still exists (kill -0: {other:?}, stat: {now:?})",
                p.pid
            );
        }
    }
}

/// Whether the process has exited (zombies count as dead).
fn is_dead(p: ProcId) -> bool {
    match proc_stat(p.pid) {
        None => true,
        Some((state, _, start)) => start != p.start_time || state == 'Z',
    }
}

fn assert_dir_gone(dir: &Path) {
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn pg_runs_queries_and_pgbench_then_cleans_up() {
    let pg = PgServer::start().expect("start PostgreSQL");
    assert!(pg.is_running());
    assert_eq!(pg.host(), "127.0.0.1");
    assert!(pg.data_dir().join("PG_VERSION").is_file());
    assert!(pg.bin_dir().join("pg_dump").is_file());
    assert!(pg
        .socket_dir()
        .join(format!(".s.PGSQL.{}", pg.port()))
        .exists());

    pg.create_database("app").expect("create database");
    let out = pg
        .psql(
            "app",
            "create table t (id int primary key, name text);
             insert into t select g, 'n' || g from generate_series(1, 10) g;
             select count(*) from t;",
        )
        .expect("psql");
    assert_eq!(out, "10");
    assert_eq!(
        pg.psql("app", "select id, name from t where id <= 2 order by id")
            .expect("psql"),
        "1|n1\n2|n2"
    );

    pg.pgbench_init("app", 1).expect("pgbench -i");
    assert_eq!(
        pg.psql("app", "select count(*) from pgbench_accounts")
            .expect("count"),
        "100000"
    );

    // The connection helpers point at this server.
    let out = std::process::Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-c", "select current_database()"])
        .arg(pg.conninfo("app"))
        .output()
        .expect("run psql with conninfo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app");
    let out = pg
        .client_command("psql")
        .args(["-X", "-A", "-t", "-d", "app", "-c", "select 6 * 7"])
        .output()
        .expect("run psql via client_command");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    assert!(pg
        .url("app")
        .ends_with(&format!("127.0.0.1:{}/app", pg.port())));

    let postmaster = proc_id(pg.pid());
    let backends = children_of(pg.pid());
    assert!(!backends.is_empty(), "postmaster has no child processes?");
    let dir = pg.temp_dir().to_path_buf();
    drop(pg);

    assert_gone(postmaster);
    for b in backends {
        assert_gone(b);
    }
    assert_dir_gone(&dir);
}

#[test]
fn pg_errors_carry_stderr_and_builder_options_apply() {
    let mut pg = PgServer::builder()
        .superuser("admin")
        .conf("wal_level = logical")
        .conf("max_wal_senders = 4")
        .initdb_arg("--data-checksums")
        .start()
        .expect("start PostgreSQL with options");
    assert_eq!(pg.superuser(), "admin");
    assert_eq!(
        pg.psql("postgres", "select current_user").expect("psql"),
        "admin"
    );
    assert_eq!(
        pg.psql("postgres", "show wal_level").expect("psql"),
        "logical"
    );
    assert_eq!(
        pg.psql("postgres", "show max_wal_senders").expect("psql"),
        "4"
    );
    assert_eq!(
        pg.psql("postgres", "show data_checksums").expect("psql"),
        "on"
    );
    assert_eq!(pg.psql("postgres", "show fsync").expect("psql"), "off");

    // ON_ERROR_STOP: the first error ends the script and its message is in the error.
    let err = pg
        .psql(
            "postgres",
            "select 1; select * from no_such_table; select 2;",
        )
        .expect_err("query on a missing table must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("no_such_table"),
        "error lacks psql's stderr: {msg}"
    );

    // Stop, then restart on the same data directory and port.
    pg.psql(
        "postgres",
        "create table kept (x int); insert into kept values (7)",
    )
    .expect("psql");
    let port = pg.port();
    let first = proc_id(pg.pid());
    pg.stop().expect("stop");
    assert!(!pg.is_running());
    assert_gone(first);
    assert!(matches!(
        pg.psql("postgres", "select 1"),
        Err(HarnessError::NotRunning { .. })
    ));
    pg.stop().expect("second stop is a no-op");
    pg.restart().expect("restart");
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid(), first.pid);
    assert_eq!(
        pg.psql("postgres", "select x from kept").expect("psql"),
        "7"
    );
}

#[test]
fn pg_dropped_during_panic_is_cleaned_up() {
    let mut recorded: Option<(ProcId, PathBuf)> = None;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let pg = PgServer::start().expect("start PostgreSQL");
        pg.psql("postgres", "select 1").expect("psql");
        recorded = Some((proc_id(pg.pid()), pg.temp_dir().to_path_buf()));
        panic!("deliberate panic while PostgreSQL runs");
    }));
    assert!(result.is_err(), "the closure must have panicked");
    let (proc, dir) = recorded.expect("server was started before the panic");
    assert_gone(proc);
    assert_dir_gone(&dir);
}

#[test]
fn pg_stopped_or_crashed_servers_are_cleaned_up() {
    // SIGSTOPped: the stop must continue it so it can shut down.
    let pg = PgServer::builder()
        .stop_timeout(Duration::from_secs(20))
        .start()
        .expect("start PostgreSQL");
    let proc = proc_id(pg.pid());
    let dir = pg.temp_dir().to_path_buf();
    pg.signal(Signal::SIGSTOP).expect("SIGSTOP");
    until("postmaster to be stopped", Duration::from_secs(10), || {
        proc_stat(proc.pid).is_some_and(|(state, _, _)| state == 'T')
    });
    let started = Instant::now();
    drop(pg);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopping a SIGSTOPped server took {:?}: SIGCONT missing?",
        started.elapsed()
    );
    assert_gone(proc);
    assert_dir_gone(&dir);

    // Crashed (SIGKILL): noticed as not running, and cleanup still works.
    let pg = PgServer::start().expect("start PostgreSQL");
    let proc = proc_id(pg.pid());
    let dir = pg.temp_dir().to_path_buf();
    pg.signal(Signal::SIGKILL).expect("SIGKILL");
    until(
        "killed postmaster to be noticed",
        Duration::from_secs(10),
        || !pg.is_running(),
    );
    drop(pg);
    assert_gone(proc);
    assert_dir_gone(&dir);
}

#[test]
fn mariadb_runs_queries_then_cleans_up() {
    let db = MariaDbServer::start().expect("start MariaDB");
    assert!(db.is_running());
    assert!(db.socket().exists());
    db.create_database("shop").expect("create database");
    let out = db
        .query_db(
            "shop",
            "create table items (id int primary key, name varchar(20)) engine=InnoDB;
             insert into items values (1, 'apple'), (2, 'pear'), (3, 'plum');
             select count(*) from items;",
        )
        .expect("query");
    assert_eq!(out, "3");
    assert_eq!(
        db.query("select id, name from shop.items where id < 3 order by id")
            .expect("query"),
        "1\tapple\n2\tpear"
    );
    let err = db
        .query("select * from shop.missing_table")
        .expect_err("query on a missing table must fail");
    assert!(err.to_string().contains("missing_table"), "{err}");

    let proc = proc_id(db.pid());
    let dir = db.temp_dir().to_path_buf();
    drop(db);
    assert_gone(proc);
    assert_dir_gone(&dir);
}

#[test]
fn mariadb_password_restart_and_crash() {
    let mut db = MariaDbServer::builder()
        .arg("--log-bin=binlog")
        .arg("--server-id=7")
        .start()
        .expect("start MariaDB with options");
    assert_eq!(db.query("select @@server_id").expect("query"), "7");
    assert_eq!(db.query("select @@log_bin").expect("query"), "1");

    db.set_root_password("s3cr'et").expect("set root password");
    assert_eq!(db.root_password(), Some("s3cr'et"));
    assert_eq!(db.query("select 1").expect("query with password"), "1");
    let out = db
        .client_command()
        .env_remove("MYSQL_PWD")
        .args(["-e", "select 1"])
        .output()
        .expect("run mariadb client");
    assert!(
        !out.status.success(),
        "login without the password must fail now"
    );

    db.query("create database d; create table d.t (x int); insert into d.t values (5)")
        .expect("query");
    let port = db.port();
    let first = proc_id(db.pid());
    db.restart().expect("restart");
    assert_gone(first);
    assert_eq!(db.port(), port);
    assert_eq!(db.query("select x from d.t").expect("query"), "5");

    let proc = proc_id(db.pid());
    let dir = db.temp_dir().to_path_buf();
    db.signal(Signal::SIGKILL).expect("SIGKILL");
    until(
        "killed mariadbd to be noticed",
        Duration::from_secs(10),
        || !db.is_running(),
    );
    drop(db);
    assert_gone(proc);
    assert_dir_gone(&dir);
}

#[test]
fn mariadb_dropped_during_panic_is_cleaned_up() {
    let mut recorded: Option<(ProcId, PathBuf)> = None;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let db = MariaDbServer::start().expect("start MariaDB");
        db.query("select 1").expect("query");
        recorded = Some((proc_id(db.pid()), db.temp_dir().to_path_buf()));
        panic!("deliberate panic while MariaDB runs");
    }));
    assert!(result.is_err(), "the closure must have panicked");
    let (proc, dir) = recorded.expect("server was started before the panic");
    assert_gone(proc);
    assert_dir_gone(&dir);
}

#[test]
fn sqlite_create_and_query() {
    let db = SqliteDb::create().expect("create sqlite db");
    assert!(db.path().is_file());
    db.execute_batch(
        "create table t (id integer primary key, v text);
         insert into t (v) values ('a'), ('b'), ('c');",
    )
    .expect("batch");
    assert_eq!(
        db.execute("delete from t where v = 'b'").expect("delete"),
        1
    );
    assert_eq!(
        db.query_value::<i64>("select count(*) from t")
            .expect("count"),
        2
    );
    assert_eq!(
        db.query_value::<String>("select group_concat(v, ',') from t order by id")
            .expect("concat"),
        "a,c"
    );
    assert_eq!(
        db.query_value::<String>("pragma journal_mode")
            .expect("journal mode"),
        "wal"
    );
    let other = db.open_connection().expect("second connection");
    let n: i64 = other
        .query_row("select count(*) from t", [], |r| r.get(0))
        .expect("count via second connection");
    assert_eq!(n, 2);
    drop(other);

    let err = db
        .query_value::<i64>("select nope from t")
        .expect_err("bad column must fail");
    assert!(err.to_string().contains("nope"), "{err}");

    let dir = db.dir().to_path_buf();
    drop(db);
    assert_dir_gone(&dir);

    // The free function creates a database where it is told to.
    let tmp = strongbox_integration::tmp::temp_dir("sqlite-test").expect("temp dir");
    let path = tmp.path().join("x.db");
    let conn = strongbox_integration::create_sqlite_db(&path).expect("create at path");
    conn.execute_batch("create table a (x); insert into a values (1);")
        .expect("batch");
    assert!(path.is_file());
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let port = free_port().expect("free port");
        assert!(seen.insert(port), "port {port} handed out twice");
    }
    let addr = std::net::Ipv4Addr::new(127, 0, 0, 9);
    let port = free_port_on(addr.into()).expect("free port on 127.0.0.9");
    std::net::TcpListener::bind((addr, port)).expect("bind the free port");
}

#[test]
fn pg_binaries_are_found() {
    let dir = pg_bin_dir().expect("pg bin dir");
    for tool in [
        "initdb",
        "postgres",
        "psql",
        "pg_dump",
        "pg_restore",
        "pgbench",
    ] {
        assert!(
            dir.join(tool).is_file(),
            "{tool} missing in {}",
            dir.display()
        );
    }
    assert_eq!(pg_tool("pg_dump").expect("pg_dump"), dir.join("pg_dump"));
    let err = pg_tool("no_such_pg_tool").expect_err("missing tool must fail");
    assert!(err.to_string().contains("apt-get install"), "{err}");
}

/// Set only in the child process of `servers_die_with_a_killed_test_process`.
const ORPHAN_REPORT_ENV: &str = "STRONGBOX_HARNESS_ORPHAN_REPORT";

/// Not a test on its own: does nothing unless run as the child process of
/// `servers_die_with_a_killed_test_process`. Then it starts both servers, reports their pids
/// and folders, and blocks until it is killed.
#[test]
fn orphan_child_helper() {
    let Some(report) = std::env::var_os(ORPHAN_REPORT_ENV) else {
        return;
    };
    let report = PathBuf::from(report);
    let pg = PgServer::start().expect("start PostgreSQL");
    let db = MariaDbServer::start().expect("start MariaDB");
    let text = format!(
        "{}\n{}\n{}\n{}\n",
        pg.pid(),
        pg.temp_dir().display(),
        db.pid(),
        db.temp_dir().display()
    );
    // Write then rename, so the parent never reads a half-written report.
    let partial = report.with_extension("partial");
    std::fs::write(&partial, text).expect("write report");
    std::fs::rename(&partial, &report).expect("publish report");
    loop {
        std::thread::park();
    }
}

/// A test process killed with SIGKILL runs no destructor; its servers must die anyway
/// (PR_SET_PDEATHSIG), or a test-runner timeout would leak them.
#[test]
fn servers_die_with_a_killed_test_process() {
    let dir = tmp::temp_dir("orphan-report").expect("temp dir");
    let report = dir.path().join("report");
    // Orphans of the child test process get reparented to us instead of pid 1, so this test
    // can reap them and check that they are fully gone (pid 1 of a container may never reap).
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "servers::orphan_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_REPORT_ENV, &report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the child test process");

    let deadline = Instant::now() + Duration::from_secs(120);
    while !report.exists() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("child test process exited early ({status}); see its stderr above");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child test process did not report its servers within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&report).expect("read report");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "bad report: {text:?}");
    let pg = proc_id(lines[0].parse().expect("pg pid"));
    let db = proc_id(lines[2].parse().expect("mariadb pid"));
    let folders = [PathBuf::from(lines[1]), PathBuf::from(lines[3])];
    let mut tracked = vec![pg, db];
    tracked.extend(children_of(pg.pid));
    tracked.extend(children_of(db.pid));

    child.kill().expect("SIGKILL the child test process");
    child.wait().expect("reap the child test process");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for p in &tracked {
            if is_dead(*p) {
                // Ours now (subreaper): reap it. ECHILD: already gone or reaped.
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(p.pid as i32),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
        if tracked
            .iter()
            .all(|p| proc_stat(p.pid).is_none_or(|(_, _, start)| start != p.start_time))
        {
            break;
        }
        if Instant::now() >= deadline {
            // Do not leak them even when the harness is broken.
            for p in &tracked {
                if !is_dead(*p) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid as i32),
                        Signal::SIGKILL,
                    );
                }
            }
            for folder in &folders {
                let _ = std::fs::remove_dir_all(folder);
            }
            panic!(
                "processes of the killed test process still exist after 20 s \
                 (pdeathsig missing?): {:?}",
                tracked
                    .iter()
                    .map(|p| (p.pid, proc_stat(p.pid)))
                    .collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in tracked {
        assert_gone(p);
    }

    // No destructor ran in the child, so its folders are still there: clean up for it.
    for folder in folders {
        assert!(
            folder.starts_with(tmp::base_dir()),
            "unexpected folder {}",
            folder.display()
        );
        std::fs::remove_dir_all(&folder).expect("remove the killed test's folder");
    }
}
