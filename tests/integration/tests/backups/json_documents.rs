//! The `--output json` documents are strongbox's scripting interface: each test pins the
//! fields of one, so a change to a field is a decision taken here (issue 16). A document's
//! shape is the sorted list of its field paths (`a.b`, `list[].c`; an array by its first
//! element), read from the real CLI against a real fleet with a backup and a restore.

use std::collections::BTreeSet;

use serde_json::Value;
use strongbox_integration::agent::AgentProcess;
use strongbox_integration::fleet::{cli, fleet, sqlite_service, Fleet};
use strongbox_integration::sqlite::SqliteDb;

/// Every field path of `v`, objects' keys joined with `.`, arrays as `[]` (their first element).
fn shape(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, at: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.insert(path.clone());
                    walk(child, &path, out);
                }
            }
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    walk(first, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// The fields of `backup show`.
const BACKUP_SHOW: &[&str] = &[
    "chunk_count",
    "completed",
    "completed_unix_ms",
    "created",
    "created_unix_ms",
    "expires",
    "expires_unix_ms",
    "failure",
    "held",
    "hold_reason",
    "host",
    "id",
    "kept_because",
    "kind",
    "locked_until",
    "locked_until_unix_ms",
    "manifest_id",
    "plain_bytes",
    "reason",
    "service",
    "state",
    "stored_bytes",
    "table_count",
];

/// The fields of `restore show`.
const RESTORE_SHOW: &[&str] = &[
    "after_job",
    "attempt",
    "backup_id",
    "backup_kind",
    "bytes_done",
    "bytes_total",
    "created",
    "created_unix_ms",
    "failure",
    "host",
    "id",
    "in_place",
    "kind",
    "outcome",
    "phase",
    "reason",
    "requested_by",
    "result",
    "result.backup_created_unix_ms",
    "result.connection",
    "result.connection.data_dir",
    "result.connection.engine",
    "result.connection.host",
    "result.connection.password_file",
    "result.connection.port",
    "result.connection.user",
    "result.in_place",
    "result.outcome",
    "result.phases",
    "result.phases.fetch_manifest_ms",
    "result.phases.flush_ms",
    "result.phases.load_ms",
    "result.phases.provision_ms",
    "result.phases.verify_ms",
    "result.verification",
    "result.verification.engine_check",
    "result.verification.failed_objects",
    "result.verification.mismatches",
    "result.verification.ok",
    "result.verification.rows_checked",
    "result.verification.tables_checked",
    "server",
    "server_stopped_unix_ms",
    "service",
    "slot",
    "slot_unix_ms",
    "state",
    "target_job",
    "updated",
    "updated_unix_ms",
];

/// The fields of `service list`.
const SERVICE_LIST: &[&str] = &[
    "[].backups",
    "[].engine",
    "[].last_backup",
    "[].last_backup_unix_ms",
    "[].last_failure",
    "[].last_success",
    "[].last_success_unix_ms",
    "[].members",
    "[].members[].engine_version",
    "[].members[].healthy",
    "[].members[].host",
    "[].members[].role",
    "[].missed",
    "[].name",
    "[].next_backup",
    "[].next_backup_unix_ms",
    "[].primary_host",
    "[].primary_since",
    "[].primary_since_unix_ms",
    "[].role_changes",
    "[].role_changes[].from",
    "[].role_changes[].from_down",
    "[].role_changes[].host",
    "[].role_changes[].time",
    "[].role_changes[].to",
    "[].role_changes[].to_down",
    "[].role_changes[].unix_ms",
    "[].schedule",
    "[].state",
    "[].state_reason",
];

/// The fields of `cluster status`.
const CLUSTER_STATUS: &[&str] = &[
    "leader_id",
    "nodes",
    "nodes[].address",
    "nodes[].applied_index",
    "nodes[].commit_index",
    "nodes[].id",
    "nodes[].lag",
    "nodes[].matched",
    "nodes[].name",
    "nodes[].role",
    "nodes[].term",
    "nodes[].voter",
    "nodes[].workers",
    "nodes[].workers[].interval_ms",
    "nodes[].workers[].items",
    "nodes[].workers[].last_error",
    "nodes[].workers[].last_pass",
    "nodes[].workers[].last_pass_took_ms",
    "nodes[].workers[].last_pass_unix_ms",
    "nodes[].workers[].leader_only",
    "nodes[].workers[].name",
    "nodes[].workers[].passes",
    "nodes[].workers[].waiting",
    "region",
];

/// The policy fields, under `stored` and `effective` in `policy show`.
const POLICY_FIELDS: &[&str] = &[
    "daily",
    "hourly",
    "jitter_ms",
    "keep_final",
    "lock_days",
    "max_age_ms",
    "max_concurrent",
    "min_keep",
    "monthly",
    "schedule",
    "yearly",
];

fn json(f: &Fleet, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend(args);
    let out = cli(f, &all);
    assert!(out.status.success(), "strongbox {all:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("strongbox {all:?}: {e}"))
}

/// Fails with the whole difference when `doc`'s shape is not `pinned`.
fn pinned(what: &str, doc: &Value, pinned: &[&str]) {
    let have = shape(doc);
    let want: BTreeSet<String> = pinned.iter().map(|s| s.to_string()).collect();
    let added: Vec<&String> = have.difference(&want).collect();
    let lost: Vec<&String> = want.difference(&have).collect();
    assert!(
        added.is_empty() && lost.is_empty(),
        "the JSON of `{what}` changed: new fields {added:?}, gone {lost:?}\n{doc:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_document_keeps_its_fields() {
    let f = fleet().await;
    let db = SqliteDb::create_named("shop.db").unwrap();
    db.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT); INSERT INTO orders VALUES (1, 'tea');")
        .unwrap();
    let _db_host = AgentProcess::start(
        &f.cluster,
        "db-1",
        false,
        &[sqlite_service("shop", db.path())],
        &f.key_file,
    )
    .unwrap();
    let _spare = AgentProcess::start(&f.cluster, "spare-1", true, &[], &f.key_file).unwrap();
    f.wait_hosts(&["db-1", "spare-1"]).await;
    let (_, backup) = f.backup("shop").await;
    let (restore, _) = f.restore_verified(&backup.id, "spare-1").await;

    let listed: Vec<String> = BACKUP_SHOW.iter().map(|f| format!("[].{f}")).collect();
    let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    pinned("backup list", &json(&f, &["backup", "list"]), &listed);
    pinned(
        "backup show",
        &json(&f, &["backup", "show", &backup.id]),
        BACKUP_SHOW,
    );
    pinned(
        "restore show",
        &json(&f, &["restore", "show", &restore.id]),
        RESTORE_SHOW,
    );
    pinned(
        "service list",
        &json(&f, &["service", "list"]),
        SERVICE_LIST,
    );
    let mut policy = vec!["service".to_string(), "stored".into(), "effective".into()];
    for level in ["stored", "effective"] {
        policy.extend(POLICY_FIELDS.iter().map(|f| format!("{level}.{f}")));
    }
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();
    pinned("policy show", &json(&f, &["policy", "show"]), &policy);
    pinned(
        "cluster status",
        &json(&f, &["cluster", "status"]),
        CLUSTER_STATUS,
    );
}

#[test]
fn a_shape_lists_every_field_path() {
    let doc = serde_json::json!({"a": 1, "b": {"c": [ {"d": true}, {"e": 2} ]}, "f": []});
    let got: Vec<String> = shape(&doc).into_iter().collect();
    assert_eq!(got, ["a", "b", "b.c", "b.c[].d", "f"]);
}
