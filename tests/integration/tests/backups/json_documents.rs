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

/// The fields of a job (`restore show`, `backup create`'s `job`), and `result` when it is
/// null.
const JOB: &[&str] = &[
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

/// The fields of a restore's `result`.
const RESTORE_RESULT: &[&str] = &[
    "backup_created_unix_ms",
    "connection",
    "connection.data_dir",
    "connection.engine",
    "connection.host",
    "connection.password_file",
    "connection.port",
    "connection.user",
    "in_place",
    "outcome",
    "phases",
    "phases.fetch_manifest_ms",
    "phases.flush_ms",
    "phases.load_ms",
    "phases.provision_ms",
    "phases.verify_ms",
    "verification",
    "verification.databases",
    "verification.databases[].failed_objects",
    "verification.databases[].mismatched_tables",
    "verification.databases[].name",
    "verification.databases[].ok",
    "verification.databases[].rows_checked",
    "verification.databases[].tables_checked",
    "verification.engine_check",
    "verification.failed_objects",
    "verification.mismatches",
    "verification.ok",
    "verification.rows_checked",
    "verification.tables_checked",
];

/// The fields of a service (`service list`, `service show`).
const SERVICE: &[&str] = &[
    "backups",
    "engine",
    "last_backup",
    "last_backup_unix_ms",
    "last_failure",
    "last_success",
    "last_success_unix_ms",
    "members",
    "members[].engine_version",
    "members[].healthy",
    "members[].host",
    "members[].role",
    "missed",
    "name",
    "next_backup",
    "next_backup_unix_ms",
    "primary_host",
    "primary_since",
    "primary_since_unix_ms",
    "role_changes",
    "role_changes[].from",
    "role_changes[].from_down",
    "role_changes[].host",
    "role_changes[].time",
    "role_changes[].to",
    "role_changes[].to_down",
    "role_changes[].unix_ms",
    "schedule",
    "state",
    "state_reason",
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

/// The fields of `backup show --key-file`'s `manifest`.
const MANIFEST: &[&str] = &[
    "engine",
    "engine_version",
    "left_out",
    "not_in_backup",
    "parts",
    "parts[].chunks",
    "parts[].kind",
    "parts[].name",
    "parts[].plain_bytes",
    "parts[].tables",
    "parts[].tables[].name",
    "parts[].tables[].rows",
    "row_count",
    "table_count",
];

/// The fields of `backup download`.
const DOWNLOAD: &[&str] = &[
    "backup",
    "dir",
    "engine",
    "engine_version",
    "files",
    "files[].bytes",
    "files[].kind",
    "files[].load",
    "files[].part",
    "files[].path",
    "files[].tables",
    "plain_bytes",
    "seconds",
    "service",
];

/// The fields of a host (`host list`).
const HOST: &[&str] = &[
    "agent",
    "bound_services",
    "changed",
    "changed_unix_ms",
    "members",
    "members[].engine",
    "members[].engine_version",
    "members[].healthy",
    "members[].role",
    "members[].service",
    "name",
    "pending_members",
    "region",
    "registered",
    "registered_unix_ms",
    "session_node",
    "since",
    "since_unix_ms",
    "spare",
    "spare_approved",
    "spare_requested",
];

/// The fields of an audit entry (`audit list`).
const AUDIT: &[&str] = &["actor", "index", "time", "unix_ms", "what"];

/// The fields of `keygen`, `pki init-ca` and `pki issue`.
const KEYGEN: &[&str] = &["key_ids", "mode", "new_key_id", "path"];
const INIT_CA: &[&str] = &["ca_cert", "ca_key", "valid_days"];
const ISSUE: &[&str] = &[
    "ca_cert",
    "cert",
    "identity",
    "key",
    "name",
    "role",
    "sans",
    "valid_days",
];

/// `fields` as paths under `prefix` (`prefix.f`; `prefix[].f` for a list when `prefix` ends
/// with `[]`), and `prefix` itself when it names an object.
fn under(prefix: &str, fields: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = fields.iter().map(|f| format!("{prefix}.{f}")).collect();
    if !prefix.ends_with("[]") {
        out.push(prefix.to_string());
    }
    out
}

/// `fields` as they are, for [`pinned`].
fn own(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

fn json(f: &Fleet, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend(args);
    let out = cli(f, &all);
    assert!(out.status.success(), "strongbox {all:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("strongbox {all:?}: {e}"))
}

/// Fails with the whole difference when `doc`'s shape is not `pinned`.
fn pinned<S: AsRef<str>>(what: &str, doc: &Value, pinned: &[S]) {
    let have = shape(doc);
    let want: BTreeSet<String> = pinned.iter().map(|s| s.as_ref().to_string()).collect();
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

    let backup_doc = own(BACKUP_SHOW);
    let restore_doc = [own(JOB), under("result", RESTORE_RESULT)].concat();
    pinned(
        "backup list",
        &json(&f, &["backup", "list"]),
        &under("[]", BACKUP_SHOW),
    );
    pinned(
        "backup show",
        &json(&f, &["backup", "show", &backup.id]),
        &backup_doc,
    );
    let key = f.key_file.to_str().expect("a UTF-8 path");
    pinned(
        "backup show --key-file",
        &json(&f, &["backup", "show", &backup.id, "--key-file", key]),
        &[own(BACKUP_SHOW), under("manifest", MANIFEST)].concat(),
    );
    pinned(
        "backup hold",
        &json(&f, &["backup", "hold", &backup.id, "--reason", "INC-1"]),
        &backup_doc,
    );
    pinned(
        "backup unhold",
        &json(&f, &["backup", "unhold", &backup.id]),
        &backup_doc,
    );
    let out = tempfile::tempdir().expect("a temporary folder");
    let dir = out.path().join("download");
    pinned(
        "backup download",
        &json(
            &f,
            &[
                "backup",
                "download",
                &backup.id,
                "--key-file",
                key,
                "-o",
                dir.to_str().expect("UTF-8"),
            ],
        ),
        DOWNLOAD,
    );
    pinned(
        "backup create --wait",
        &json(&f, &["backup", "create", "shop", "--wait"]),
        &[under("backup", BACKUP_SHOW), under("job", JOB)].concat(),
    );
    pinned(
        "restore show",
        &json(&f, &["restore", "show", &restore.id]),
        &restore_doc,
    );
    pinned(
        "restore list",
        &json(&f, &["restore", "list"]),
        &under(
            "[]",
            &restore_doc.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
    );
    pinned(
        "service list",
        &json(&f, &["service", "list"]),
        &under("[]", SERVICE),
    );
    pinned(
        "service show",
        &json(&f, &["service", "show", "shop"]),
        SERVICE,
    );
    let state_change = [vec!["final_backup".to_string()], under("service", SERVICE)].concat();
    pinned(
        "service exclude",
        &json(&f, &["service", "exclude", "shop"]),
        &state_change,
    );
    pinned(
        "service include",
        &json(&f, &["service", "include", "shop"]),
        &state_change,
    );
    let mut policy = vec!["service".to_string()];
    for level in ["stored", "effective"] {
        policy.extend(under(level, POLICY_FIELDS));
    }
    pinned("policy show", &json(&f, &["policy", "show"]), &policy);
    let policy_set = [
        own(&["applied", "would_expire"]),
        under(
            "policy",
            &policy.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
    ]
    .concat();
    pinned(
        "policy set",
        &json(&f, &["policy", "set", "--service", "shop", "--daily", "9"]),
        &policy_set,
    );
    pinned(
        "host list",
        &json(&f, &["host", "list"]),
        &under("[]", HOST),
    );
    pinned(
        "audit list",
        &json(&f, &["audit", "list"]),
        &under("[]", AUDIT),
    );
    pinned(
        "cluster status",
        &json(&f, &["cluster", "status"]),
        CLUSTER_STATUS,
    );
    let path = |name: &str| out.path().join(name).to_str().expect("UTF-8").to_string();
    pinned(
        "keygen",
        &json(&f, &["keygen", "--out", &path("fleet.key")]),
        KEYGEN,
    );
    pinned(
        "pki init-ca",
        &json(&f, &["pki", "init-ca", "--dir", &path("ca")]),
        INIT_CA,
    );
    pinned(
        "pki issue",
        &json(
            &f,
            &[
                "pki",
                "issue",
                "--ca-dir",
                &path("ca"),
                "--role",
                "viewer",
                "--name",
                "eve",
                "--out",
                &path("eve"),
            ],
        ),
        ISSUE,
    );
    // Last: the job it starts runs on after the answer (a second backup would wait for it).
    pinned(
        "backup create",
        &json(&f, &["backup", "create", "shop"]),
        &[vec!["backup".to_string()], under("job", JOB)].concat(),
    );
}

#[test]
fn a_shape_lists_every_field_path() {
    let doc = serde_json::json!({"a": 1, "b": {"c": [ {"d": true}, {"e": 2} ]}, "f": []});
    let got: Vec<String> = shape(&doc).into_iter().collect();
    assert_eq!(got, ["a", "b", "b.c", "b.c[].d", "f"]);
}
