//! Tests of the harness's PostgreSQL streaming replication: a standby made with
//! `pg_basebackup` follows its primary, and after the primary stops it can be promoted and
//! takes writes (a failover). Both servers are cleaned up on drop.

use std::time::Duration;

use strongbox_integration::pg::PgServer;
use strongbox_integration::process::pid_exists;
use strongbox_integration::wait::until;
use strongbox_integration::HarnessError;

fn count(pg: &PgServer) -> i64 {
    let out = pg
        .psql("app", "SELECT count(*) FROM t")
        .expect("count rows");
    out.parse()
        .unwrap_or_else(|e| panic!("count(*) printed {out:?}: {e}"))
}

#[test]
fn pg_standby_follows_primary_and_takes_over_after_promotion() {
    let mut primary = PgServer::start().expect("start primary");
    assert!(!primary.is_in_recovery().expect("primary recovery state"));
    primary.create_database("app").expect("create database");
    primary
        .psql(
            "app",
            "CREATE TABLE t (id int PRIMARY KEY, note text);
             INSERT INTO t SELECT g, 'before ' || g FROM generate_series(1, 100) g;",
        )
        .expect("fill table");

    let standby = PgServer::start_standby(&primary).expect("start standby");
    assert_ne!(standby.port(), primary.port());
    assert_ne!(standby.temp_dir(), primary.temp_dir());
    assert!(standby.is_running());
    assert!(standby.is_in_recovery().expect("standby recovery state"));
    assert!(standby.data_dir().join("standby.signal").is_file());
    // The base backup already holds the first rows.
    assert_eq!(count(&standby), 100);
    // A standby is read-only.
    let err = standby
        .psql("app", "INSERT INTO t VALUES (1000, 'nope')")
        .expect_err("write on a standby must fail");
    assert!(
        err.to_string().contains("read-only transaction"),
        "unexpected error: {err}"
    );

    // Rows written on the primary afterwards are streamed to the standby.
    primary
        .psql(
            "app",
            "INSERT INTO t SELECT g, 'after ' || g FROM generate_series(101, 150) g",
        )
        .expect("insert on primary");
    until(
        "the standby to replay the new rows",
        Duration::from_secs(30),
        || count(&standby) == 150,
    );
    assert_eq!(
        standby
            .psql("app", "SELECT note FROM t WHERE id = 150")
            .expect("read on standby"),
        "after 150"
    );

    // Failover: the primary goes away, the standby is promoted and takes writes.
    primary.stop().expect("stop primary");
    assert!(!primary.is_running());
    standby.promote().expect("promote standby");
    assert!(!standby.is_in_recovery().expect("promoted recovery state"));
    standby
        .psql("app", "INSERT INTO t VALUES (151, 'after failover')")
        .expect("write on the promoted standby");
    assert_eq!(count(&standby), 151);
    // Promoting a primary is an error, not a silent no-op.
    assert!(standby.promote().is_err(), "second promotion must fail");

    // A standby of a stopped server cannot be made.
    match PgServer::start_standby(&primary) {
        Err(HarnessError::NotRunning { .. }) => {}
        other => panic!("expected NotRunning, got {other:?}"),
    }

    // Dropping the standby stops it and removes its folder, like any PgServer.
    let (pid, dir) = (standby.pid(), standby.temp_dir().to_path_buf());
    drop(standby);
    assert!(!pid_exists(pid), "standby postmaster {pid} still exists");
    assert!(!dir.exists(), "{} still exists", dir.display());
}
