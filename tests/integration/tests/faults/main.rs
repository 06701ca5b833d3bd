//! Faults made on purpose, against real processes: the attack run of issue 14 kept as a suite.
//! Each module is one kind of fault; each test makes the fault, then checks that strongbox
//! answers it with a clear error or a recovery, and that no committed backup is lost.
//!
//! Elsewhere, because they belong with what they break: the leader killed mid-backup under
//! pgbench (`backups::engines`), a full disk and nodes down during uploads (`region::chunks`),
//! SIGTERM of a node holding agent sessions (`region::raft`), foreign certificates and
//! malformed or oversized messages (`region::security`).

mod agents;
mod certificates;
mod chunks;
mod nodes;

use strongbox_integration::agent::AgentProcess;
use strongbox_integration::cluster::ClusterOptions;
use strongbox_integration::fleet::{fleet_with, sqlite_service, Fleet};
use strongbox_integration::sqlite::SqliteDb;

/// A fleet started with `options`, its host `db-1` beside the SQLite database of service
/// `till` (about 6 MB of incompressible rows: several chunks), and the spare `spare-1`; both approved.
pub async fn fleet_with_till(
    options: ClusterOptions,
) -> (Fleet, SqliteDb, AgentProcess, AgentProcess) {
    let f = fleet_with(options).await;
    let db = SqliteDb::create_named("till.db").unwrap();
    db.execute_batch(
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, item TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
         INSERT INTO sales SELECT i, printf('sale %d %s', i, hex(randomblob(60))) FROM n;",
    )
    .unwrap();
    let agent = AgentProcess::start(
        &f.cluster,
        "db-1",
        false,
        &[sqlite_service("till", db.path())],
        &f.key_file,
    )
    .unwrap();
    let spare = AgentProcess::start(&f.cluster, "spare-1", true, &[], &f.key_file).unwrap();
    f.wait_hosts(&["db-1", "spare-1"]).await;
    (f, db, agent, spare)
}
