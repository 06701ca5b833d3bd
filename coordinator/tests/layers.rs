//! The layering docs/ARCHITECTURE.md states ("never imports"), checked on the sources: each
//! rule names a folder or file of the workspace and what its code never names. A rule broken
//! fails here with the file and line, before the layering rots.

use std::path::{Path, PathBuf};

/// (folder or file from the workspace root, names its code never uses, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "coordinator/src/policy",
        &[
            "crate::catalog",
            "crate::raft",
            "crate::node",
            "crate::api",
            "tokio",
            "crate::store",
            "fjall",
            "SystemTime",
            "now_ms",
        ],
        "policy is pure functions of records and a time",
    ),
    (
        "coordinator/src/catalog",
        &["crate::api", "crate::node", "crate::raft", "tokio", "fjall"],
        "the catalog applies commands; it knows no services, Raft or async, and stores through crate::store",
    ),
    (
        "coordinator/src/raft",
        &[
            "crate::api",
            "crate::node",
            "crate::worker",
            "crate::controllers",
            "fjall",
        ],
        "Raft is below the node, and stores through crate::store",
    ),
    (
        "coordinator/src/node.rs",
        &["crate::api", "crate::controllers"],
        "the node is below the services and workers that use it",
    ),
    (
        "coordinator/src/worker.rs",
        &["crate::api", "crate::controllers"],
        "the worker runner knows no particular worker",
    ),
    (
        "coordinator/src/chunks",
        &["crate::api", "crate::controllers"],
        "chunk storage and replication are below the services",
    ),
    (
        "coordinator/src/controllers",
        &["crate::api"],
        "controllers propose through the node, not through the services",
    ),
    (
        "coordinator/src/http.rs",
        &["crate::api"],
        "the HTTP listener reads the node, not the gRPC services",
    ),
    (
        "engines/src",
        &[
            "strongbox_agent",
            "strongbox_coordinator",
            "tonic::",
            "_client::",
        ],
        "engines never talk to coordinators: a service goes in, parts come out",
    ),
    (
        "agent/src/backup.rs",
        &["crate::agent", "crate::session"],
        "a pipeline gets a JobCtx, never the agent that starts it",
    ),
    (
        "agent/src/restore.rs",
        &["crate::agent", "crate::session"],
        "a pipeline gets a JobCtx, never the agent that starts it",
    ),
    (
        "cli/src",
        &["strongbox_agent", "strongbox_coordinator"],
        "the CLI talks to coordinators over the wire and links engine knowledge only",
    ),
    (
        "cli/src/grammar",
        &[
            "crate::connect",
            "crate::commands",
            "crate::views",
            "println!",
        ],
        "the CLI's grammar parses; it never calls a coordinator or prints",
    ),
    (
        "cli/src/commands",
        &["json!", "serde_json", "clap::"],
        "a command prints through a view and gets its arguments parsed",
    ),
    (
        "cli/src/views",
        &["crate::connect", "crate::commands", "clap::"],
        "a view is data and its drawing: no calls, no grammar",
    ),
    (
        "core/src",
        &["strongbox_proto", "_server::", "tonic::transport::Server"],
        "core holds formats and trust: no wire messages, no server code",
    ),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.expect("a folder entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file: its lines up to its unit tests, comments left out.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
}

#[test]
fn every_never_imports_rule_holds() {
    let root = workspace();
    let mut broken = Vec::new();
    for (place, never, why) in RULES {
        let mut files = Vec::new();
        rust_files(&root.join(place), &mut files);
        assert!(
            !files.is_empty(),
            "{place}: no sources (a rule for a path that moved?)"
        );
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file");
            for (n, line) in code_lines(&text) {
                for name in *never {
                    if line.contains(name) {
                        broken.push(format!(
                            "{}:{n}: uses `{name}` ({why}): {}",
                            file.strip_prefix(&root).unwrap_or(&file).display(),
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn a_broken_rule_is_found() {
    // The check itself: a use of a forbidden name in code is seen, one in a comment is not.
    let text = "//! about tokio\nuse tokio::sync::watch;\n#[cfg(test)]\nuse tokio::test;\n";
    let found: Vec<usize> = code_lines(text)
        .filter(|(_, l)| l.contains("tokio"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(found, vec![2]);
}
