//! Issue 12: what strongbox writes is private from the moment it exists.
//!
//! Every file that holds data or secrets — restored servers of every engine and their folders,
//! spools, downloads, password files, keys and certificates, the coordinators' chunk store and
//! catalog — must be unreadable by other users (0600 files, 0700 folders; 0711 where a server
//! user only needs to pass through). The binaries run here with the common umask 022 inherited
//! from the test, so they must make their files private themselves.
//!
//! The test backs up an SQLite file (0600), a PostgreSQL and a MariaDB server, restores each onto
//! a spare, downloads one backup with the CLI, makes a CA, a certificate and a keyring with the
//! CLI; then, with every folder the harness made on the way only traversable (0711), it walks
//! everything strongbox wrote and
//! - as the user `nobody`, opens every regular file and folder for reading: none may open;
//! - checks every mode: files without group or other bits, folders 0700 (0711 only for the
//!   folders a server user must pass through: the agent's data root and its `r/`).
//!
//! Needs root (to act as `nobody` and to run servers as `postgres` and `mysql`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use strongbox_integration::agent::AgentProcess;
use strongbox_integration::fleet::{
    cli, download, files_in, fleet, mariadb_service, pg_service, sqlite_service,
};
use strongbox_integration::mariadb::MariaDbServer;
use strongbox_integration::pg::PgServer;
use strongbox_integration::sqlite::SqliteDb;
use strongbox_proto::v1::JobState;

/// A folder a server user may pass through (never listable by others); every other folder
/// must have no group or other bits.
const TRAVERSE_DIR: u32 = 0o711;

/// One path that breaks the rule, and why; `exposed` when `nobody` could actually open it
/// (the others are too open by mode but still shut by a private folder above them).
struct Offence {
    exposed: bool,
    path: PathBuf,
    why: String,
}

/// Every regular file and folder under `root` (itself included), not following symlinks;
/// sockets and other special files are left out (opening them reads nothing stored).
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        // A running server removes temp files while we walk: skip what vanished.
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
            out.push((p, meta));
        } else if meta.is_file() {
            out.push((p, meta));
        }
    }
    out
}

/// The uid and gid of `nobody`.
fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody")
        .expect("looking up the user nobody")
        .expect("the user nobody must exist");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The paths of `paths` that the user `nobody` can open for reading (a file's bytes, a folder's
/// list of names). One shell as `nobody` tries them all (`true <PATH` opens PATH read-only).
fn opened_by_nobody(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    let (uid, gid) = nobody();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"while IFS= read -r p; do if true 2>/dev/null <"$p"; then printf '%s\n' "$p"; fi; done"#)
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting a shell as nobody");
    let mut stdin = child.stdin.take().expect("stdin");
    let list: Vec<u8> = paths
        .iter()
        .flat_map(|p| {
            let mut line = p.as_os_str().as_encoded_bytes().to_vec();
            line.push(b'\n');
            line
        })
        .collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&list);
    });
    let mut text = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut text)
        .expect("reading the shell's answer");
    let _ = writer.join();
    assert!(child.wait().expect("the shell as nobody").success());
    text.lines().map(PathBuf::from).collect()
}

/// Checks the trees under `roots`; `traverse` are the folders that may be 0711. Returns how
/// many paths were checked, and the offences.
fn offences(roots: &[PathBuf], traverse: &BTreeSet<PathBuf>) -> (usize, Vec<Offence>) {
    let mut found = Vec::new();
    let mut all = Vec::new();
    for root in roots {
        all.extend(walk(root));
    }
    for (path, meta) in &all {
        let mode = meta.mode() & 0o7777;
        let bad = if meta.is_dir() && traverse.contains(path) {
            mode != TRAVERSE_DIR && mode & 0o077 != 0
        } else {
            mode & 0o077 != 0
        };
        if bad {
            found.push(Offence {
                exposed: false,
                path: path.clone(),
                why: format!(
                    "{} mode {mode:04o} (owner uid {}): {}",
                    if meta.is_dir() { "folder" } else { "file" },
                    meta.uid(),
                    if meta.is_dir() {
                        "wanted 0700 (0711 where a server user passes through)"
                    } else {
                        "wanted 0600"
                    }
                ),
            });
        }
    }
    // A control that must open, so a broken probe cannot pass the test.
    let control = PathBuf::from("/etc/passwd");
    let mut probe: Vec<PathBuf> = all.iter().map(|(p, _)| p.clone()).collect();
    probe.push(control.clone());
    let opened = opened_by_nobody(&probe);
    assert!(
        opened.contains(&control),
        "the probe as nobody could not even open {}: it is broken",
        control.display()
    );
    for (path, meta) in &all {
        if opened.contains(path) {
            found.push(Offence {
                exposed: true,
                path: path.clone(),
                why: format!(
                    "{} mode {:04o} (owner uid {}): nobody can {}",
                    if meta.is_dir() { "folder" } else { "file" },
                    meta.mode() & 0o7777,
                    meta.uid(),
                    if meta.is_dir() { "list it" } else { "read it" }
                ),
            });
        }
    }
    found.sort_by(|a, b| (!a.exposed, &a.path).cmp(&(!b.exposed, &b.path)));
    (all.len(), found)
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_strongbox_writes_is_private_even_under_umask_022() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: this test acts as the user nobody and needs root");
        return;
    }
    // The common default: every process this test starts inherits it, so strongbox's
    // binaries must not rely on a stricter one.
    // SAFETY: umask only sets this process's file creation mask.
    unsafe {
        libc::umask(0o022);
    }
    let f = fleet().await;

    // Sources: an SQLite file kept 0600 by its owner, a PostgreSQL and a MariaDB server.
    let sqlite = SqliteDb::create_named("vault.db").unwrap();
    sqlite
        .execute_batch(
            "CREATE TABLE secrets (id INTEGER PRIMARY KEY, secret TEXT);
             INSERT INTO secrets (secret) VALUES ('sqlite-launch-code-0451');",
        )
        .unwrap();
    set_mode(sqlite.path(), 0o600);
    let pg = PgServer::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE secrets (id int PRIMARY KEY, secret text);
         INSERT INTO secrets VALUES (1, 'pg-launch-code-0451');",
    )
    .unwrap();
    let maria = MariaDbServer::start().unwrap();
    maria.create_database("vault").unwrap();
    maria
        .query_db(
            "vault",
            "CREATE TABLE secrets (id INT PRIMARY KEY, secret VARCHAR(64));
             INSERT INTO secrets VALUES (1, 'maria-launch-code-0451');",
        )
        .unwrap();
    let services = [
        sqlite_service("vault-sqlite", sqlite.path()),
        pg_service("vault-pg", &pg),
        mariadb_service("vault-maria", &maria),
    ];
    let db_agent = AgentProcess::start(&f.cluster, "db-1", false, &services, &f.key_file).unwrap();
    let spare = AgentProcess::start(&f.cluster, "spare-1", true, &[], &f.key_file).unwrap();
    f.wait_hosts(&["db-1", "spare-1"]).await;

    // Back up and restore each onto the spare.
    let mut sqlite_backup = String::new();
    let mut restored_sqlite = PathBuf::new();
    for service in ["vault-sqlite", "vault-pg", "vault-maria"] {
        let (job, backup) = f.backup(service).await;
        assert_eq!(
            job.state(),
            JobState::Completed,
            "backup of {service}: {}",
            job.reason
        );
        let (_, result) = f.restore_verified(&backup.id, "spare-1").await;
        if service == "vault-sqlite" {
            sqlite_backup = backup.id.clone();
            restored_sqlite = PathBuf::from(result["connection"]["data_dir"].as_str().unwrap());
        }
    }

    // Folders the test itself makes are traversable only, so that only strongbox's own modes
    // stand between `nobody` and what strongbox wrote.
    let outside = tempfile::tempdir().unwrap();
    set_mode(outside.path(), TRAVERSE_DIR);
    let dl = outside.path().join("dl");
    let r = download(&f, &sqlite_backup, &f.key_file, &dl);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(files_in(&dl).len(), 1, "{:?}", files_in(&dl));
    let (ca, certs, keys) = (
        outside.path().join("ca"),
        outside.path().join("certs"),
        outside.path().join("keys"),
    );
    for args in [
        vec!["pki", "init-ca", "--dir", ca.to_str().unwrap()],
        vec![
            "pki",
            "issue",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--role",
            "agent",
            "--name",
            "db-9",
            "--out",
            certs.to_str().unwrap(),
        ],
        vec!["keygen", "-o", keys.join("fleet.key").to_str().unwrap()],
    ] {
        let out = cli(&f, &args);
        assert!(
            out.status.success(),
            "strongbox {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cluster_dir = f.cluster.data_dir(1).parent().unwrap().to_path_buf();
    set_mode(&cluster_dir, TRAVERSE_DIR);

    // The reported case, as it was found: `nobody` runs sqlite3 on the restored file.
    let mut reported = None;
    if let Ok(sqlite3) = which("sqlite3") {
        let (uid, gid) = nobody();
        let out = Command::new(sqlite3)
            .arg(&restored_sqlite)
            .arg("select * from secrets")
            .current_dir("/")
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains("launch-code") {
            reported = Some(format!(
                "nobody read the restored secrets with sqlite3 {}: {}",
                restored_sqlite.display(),
                stdout.trim()
            ));
        }
    }

    let spare_root = spare.data_root();
    let mut roots = vec![
        spare_root.parent().unwrap().to_path_buf(),
        db_agent.data_root().parent().unwrap().to_path_buf(),
        dl.clone(),
        ca,
        certs,
        keys,
    ];
    roots.extend(f.cluster.ids().iter().map(|id| f.cluster.data_dir(*id)));
    let traverse: BTreeSet<PathBuf> = [
        spare_root.parent().unwrap().to_path_buf(),
        spare_root.clone(),
        spare_root.join("r"),
        db_agent.data_root().parent().unwrap().to_path_buf(),
        db_agent.data_root(),
        db_agent.data_root().join("r"),
    ]
    .into_iter()
    .collect();
    let (checked, found) = offences(&roots, &traverse);
    eprintln!(
        "checked {checked} files and folders under {} roots",
        roots.len()
    );
    if !found.is_empty() || reported.is_some() {
        let exposed = found.iter().filter(|o| o.exposed).count();
        let shown: Vec<String> = found
            .iter()
            .take(500)
            .map(|o| format!("  {}  {}", o.path.display(), o.why))
            .collect();
        panic!(
            "{}{} path(s) strongbox wrote are not private ({exposed} of them opened by nobody; \
             {checked} checked):\n{}{}",
            reported.map(|r| r + "\n").unwrap_or_default(),
            found.len(),
            shown.join("\n"),
            if found.len() > shown.len() {
                format!("\n  … and {} more", found.len() - shown.len())
            } else {
                String::new()
            }
        );
    }
    // Sanity: the walk saw the restored servers of every engine and the chunk store.
    let restored: Vec<PathBuf> = walk(&spare_root.join("r"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let sqlite_name = restored_sqlite.file_name().unwrap().to_str().unwrap();
    for needle in [
        sqlite_name,
        "PG_VERSION",
        "superuser.password",
        "aria_log_control",
    ] {
        assert!(
            restored.iter().any(|p| p.ends_with(needle)),
            "the walk never saw a {needle} under {}",
            spare_root.display()
        );
    }
    assert!(
        walk(&f.cluster.data_dir(1).join("chunks"))
            .iter()
            .any(|(p, m)| m.is_file() && p.file_name().is_some_and(|n| n.len() == 64)),
        "the walk never saw a chunk file"
    );
}

/// A program on `PATH`.
fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
