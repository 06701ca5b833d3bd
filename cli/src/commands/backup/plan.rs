//! The plan of a download: which file each part of a backup becomes, and the shell command
//! that loads it. Pure functions of the manifest (no I/O but [`split_views`]), so the names a
//! hostile manifest could carry are tested here without a region.
//!
//! Invariants:
//! - file names come from part names reduced to `[A-Za-z0-9._-]`, starting with neither `.`
//!   nor `-` and at most [`MAX_STEM`] bytes long, so a manifest cannot make us write outside
//!   the output folder, nor name a file a tool would read as an option;
//! - the commands printed to load the files are shell text in which every name is data: each
//!   path is absolute (never an option, never an SQLite `file:` URI) and every word is
//!   shell-quoted ([`shell_quote`]: `'…'`, or bash's `$'…'` when it holds control characters,
//!   so each command stays on one line); no printed command carries a database name (a
//!   PostgreSQL SQL file makes its own database, `pg_restore --create` reads it from the
//!   archive).
//!
//! MariaDB loads in the order the commands are printed: every database's `<db>.sql`, then
//! every `<db>.views.sql` (the final definitions of a database's views, cut by statements out
//! of its dump with the engines' own lexer, so that a view may read any database's tables),
//! then `grants.sql` (its object grants need their tables and routines).

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;

use strongbox_core::manifest::{Manifest, PartKind};
use strongbox_engines::mysql::sqlcount::ViewSplit;
use strongbox_proto::v1::Engine;

use crate::grammar::backup::Format;
use crate::output::shell_quote;
use crate::views::manifest::manifest_engine;

/// One file `download` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Index into the manifest's parts.
    pub part: usize,
    pub file_name: String,
    /// Convert the fetched PostgreSQL custom dump to SQL with pg_restore.
    pub to_sql: bool,
    /// MariaDB database parts: the file that takes the final definitions of the database's
    /// views out of its dump (written only when it has views; see [`split_views`]).
    pub views_file: Option<String>,
}

/// Longest file-name stem `download` writes: room is left for a suffix and the temporary
/// names' `.…partial-<pid>` within the 255 bytes a file name may have.
pub const MAX_STEM: usize = 200;

/// A part name reduced to a safe file-name stem: `[A-Za-z0-9._-]`, starting with neither a dot
/// nor a dash (a tool would read `-x.sql` as an option), at most [`MAX_STEM`] bytes.
pub fn safe_stem(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        s = "part".into();
    }
    if s.starts_with('.') || s.starts_with('-') {
        s.insert(0, '_');
    }
    // Only ASCII is left: any byte is a character boundary.
    s.truncate(MAX_STEM);
    s
}

/// The file name of one part, and whether it is converted to SQL.
pub fn file_for(engine: Engine, kind: PartKind, name: &str, format: Format) -> (String, bool) {
    let stem = safe_stem(name);
    match (engine, kind) {
        (Engine::Postgres, PartKind::Globals) => (format!("{stem}.sql"), false),
        (Engine::Postgres, PartKind::Database) if format == Format::Sql => {
            (format!("{stem}.sql"), true)
        }
        (Engine::Postgres, PartKind::Database) => (format!("{stem}.dump"), false),
        (Engine::Mysql, _) => (format!("{stem}.sql"), false),
        (Engine::Sqlite, _) => {
            let lower = stem.to_ascii_lowercase();
            let base = [".sqlite3", ".sqlite", ".db"]
                .iter()
                .find_map(|suffix| {
                    lower
                        .ends_with(suffix)
                        .then(|| stem[..stem.len() - suffix.len()].to_string())
                })
                .filter(|b| !b.is_empty() && b != "_")
                .unwrap_or(stem);
            (format!("{base}.sqlite3"), false)
        }
        _ => (format!("{stem}.bin"), false),
    }
}

/// Every file of a download, with names made unique.
pub fn plan(m: &Manifest, format: Format) -> Vec<PlannedFile> {
    let mut used = HashSet::new();
    let mut unique = |name: String| {
        let mut unique = name.clone();
        let mut n = 2;
        while !used.insert(unique.clone()) {
            unique = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}-{n}.{ext}"),
                None => format!("{name}-{n}"),
            };
            n += 1;
        }
        unique
    };
    let mut out = Vec::new();
    for (i, p) in m.parts.iter().enumerate() {
        let kind = PartKind::try_from(p.kind).unwrap_or(PartKind::Unspecified);
        let (name, to_sql) = file_for(manifest_engine(m), kind, &p.name, format);
        let file_name = unique(name);
        let views_file =
            (manifest_engine(m) == Engine::Mysql && kind == PartKind::Database).then(|| {
                let stem = file_name.strip_suffix(".sql").unwrap_or(&file_name);
                unique(format!("{stem}.views.sql"))
            });
        out.push(PlannedFile {
            part: i,
            file_name,
            to_sql,
            views_file,
        });
    }
    out
}

/// Takes the final definitions of a MariaDB database's views out of its downloaded dump
/// `path`, by statements as the agent's restore does ([`ViewSplit`], the engines' lexer of
/// MariaDB dumps): the dump is cut where they start (what stays creates the database, its
/// tables and data, triggers, events, routines, and each view as mariadb-dump's stand-in,
/// which refers to nothing), and they are returned with the dump's opening statements, to be
/// loaded once every database's tables exist (a view may read another database's). None when
/// the dump has no views.
pub fn split_views(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut split = ViewSplit::new();
    let mut kept: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        let now = split
            .push(&buf[..n])
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        kept += now.len() as u64;
    }
    let (rest, views) = split.finish();
    kept += rest.len() as u64;
    if views.is_some() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(kept))
            .with_context(|| format!("cutting {}", path.display()))?;
    }
    Ok(views)
}

/// `path` as a shell word that no tool reads as an option or a URI: absolute, then quoted.
fn shell_path(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| Path::new(".").join(path));
    shell_quote(&abs.to_string_lossy())
}

/// The databases `initdb` makes that a backup holds (template0 is never dumped).
pub const PG_INITDB_DATABASES: [&str; 2] = ["postgres", "template1"];

/// How to load a downloaded file with the engine's own tools: one line of shell (bash) text
/// in which every name is a quoted word (see the module's invariants). PostgreSQL databases
/// load with `--no-tablespaces`, into the default tablespace: a tablespace's location is a
/// path of the source machine, which the machine loading a download may not have (restores
/// onto spares keep tablespaces, under the restored server's folder).
pub fn load_hint(engine: Engine, kind: PartKind, path: &Path, to_sql: bool, part: &str) -> String {
    let q = shell_path(path);
    match (engine, kind) {
        (Engine::Postgres, PartKind::Globals) => format!("psql -d postgres -f {q}"),
        // The SQL makes its database (`pg_restore --create`), replacing initdb's own.
        (Engine::Postgres, _) if to_sql && part == "postgres" => {
            format!("psql -d template1 -f {q}")
        }
        (Engine::Postgres, _) if to_sql && part == "template1" => format!(
            "psql -d postgres -c 'ALTER DATABASE template1 IS_TEMPLATE false' && \
             psql -d postgres -f {q}"
        ),
        (Engine::Postgres, _) if to_sql => format!("psql -d postgres -f {q}"),
        // The archive replaces initdb's empty one with the backup's, database settings and
        // all (`--clean` drops only that database; a template must stop being one first).
        (Engine::Postgres, _) if part == "postgres" => {
            format!("pg_restore -d template1 --clean --if-exists --create --no-tablespaces -- {q}")
        }
        (Engine::Postgres, _) if part == "template1" => format!(
            "psql -d postgres -c 'ALTER DATABASE template1 IS_TEMPLATE false' && \
             pg_restore -d postgres --clean --if-exists --create --no-tablespaces -- {q}"
        ),
        (Engine::Postgres, _) => format!("pg_restore -d postgres --create --no-tablespaces -- {q}"),
        // --binary-mode: a name may hold `\r\n`, which the client would otherwise turn into `\n`.
        (Engine::Mysql, _) => format!("mariadb --binary-mode < {q}"),
        // sqlite3 knows no `--`: the absolute path is what keeps it from being an option.
        (Engine::Sqlite, _) => format!("sqlite3 {q}"),
        _ => "(unknown engine: raw part bytes)".to_string(),
    }
}

/// The shared hostile-name corpus of the integration tests, for the download tests below.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../../tests/integration/src/hostile.rs"]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_core::manifest::Part;

    #[test]
    fn file_names_per_engine() {
        use PartKind::*;
        assert_eq!(
            file_for(Engine::Postgres, Globals, "globals", Format::Native),
            ("globals.sql".into(), false)
        );
        assert_eq!(
            file_for(Engine::Postgres, Database, "app", Format::Native),
            ("app.dump".into(), false)
        );
        assert_eq!(
            file_for(Engine::Postgres, Database, "app", Format::Sql),
            ("app.sql".into(), true)
        );
        assert_eq!(
            file_for(Engine::Postgres, Globals, "globals", Format::Sql),
            ("globals.sql".into(), false)
        );
        assert_eq!(
            file_for(Engine::Mysql, Globals, "grants", Format::Native),
            ("grants.sql".into(), false)
        );
        assert_eq!(
            file_for(Engine::Mysql, Database, "shop", Format::Sql),
            ("shop.sql".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, "demo.db", Format::Native),
            ("demo.sqlite3".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, "demo.sqlite3", Format::Native),
            ("demo.sqlite3".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, "Demo.SQLITE", Format::Native),
            ("Demo.sqlite3".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, "notes", Format::Native),
            ("notes.sqlite3".into(), false)
        );
        assert_eq!(
            file_for(Engine::Sqlite, File, ".db", Format::Native),
            ("_.db.sqlite3".into(), false)
        );
    }

    #[test]
    fn part_names_cannot_leave_the_folder() {
        assert_eq!(safe_stem("../../etc/passwd"), "_.._.._etc_passwd");
        assert_eq!(safe_stem(".."), "_..");
        assert_eq!(safe_stem(""), "part");
        assert_eq!(safe_stem("a b/c"), "a_b_c");
        for name in ["../x", "/abs", "..", ".", "a/../../b"] {
            let (f, _) = file_for(Engine::Mysql, PartKind::Database, name, Format::Native);
            assert!(!f.contains('/') && !f.starts_with('.'), "{name} → {f}");
        }
    }

    #[test]
    fn hostile_part_names_make_safe_file_names() {
        let mut names = hostile::mariadb_names();
        names.extend(hostile::postgres_names());
        names
            .extend(["..", ".", "", "/", "../../x", "-", "--", &"é".repeat(300)].map(String::from));
        for name in &names {
            for (engine, kind) in [
                (Engine::Postgres, PartKind::Globals),
                (Engine::Postgres, PartKind::Database),
                (Engine::Mysql, PartKind::Database),
                (Engine::Sqlite, PartKind::File),
            ] {
                for format in [Format::Native, Format::Sql] {
                    let (f, _) = file_for(engine, kind, name, format);
                    assert!(
                        !f.is_empty()
                            && !f.contains('/')
                            && !f.starts_with('.')
                            && !f.starts_with('-')
                            && f != ".."
                            && f.len() <= MAX_STEM + 8
                            && f.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                        "{name:?} → {f:?}"
                    );
                }
            }
        }
    }

    /// Every printed load command, run by bash against stand-ins of the tools that record
    /// their arguments (and stdin): each tool gets exactly the words meant for it, whatever
    /// the part's name and the output folder, and nothing else runs.
    #[test]
    fn printed_load_commands_keep_hostile_names_as_data() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        let seen = tmp.path().join("seen");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::create_dir_all(&seen).expect("seen");
        for tool in ["createdb", "psql", "pg_restore", "mariadb", "sqlite3"] {
            let stub = bin.join(tool);
            std::fs::write(
                &stub,
                format!(
                    "#!/bin/sh\nout={}/{tool}\n: > \"$out\"\n\
                     for a in \"$@\"; do printf '%s\\0' \"$a\" >> \"$out\"; done\n\
                     if [ {tool} = mariadb ]; then cat > \"$out.stdin\"; fi\n",
                    shell_quote(&seen.to_string_lossy())
                ),
            )
            .expect("stub");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        // The output folder is hostile too (the operator's -o, or a relative one).
        let out = tmp.path().join("-o dir $(touch x) it's\n\"q\"");
        std::fs::create_dir_all(&out).expect("out");
        let recorded = |tool: &str| -> Option<Vec<String>> {
            let bytes = std::fs::read(seen.join(tool)).ok()?;
            Some(
                bytes
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .split_last()
                    .map(|(_, args)| args.to_vec())
                    .unwrap_or_default(),
            )
        };
        let mut names = hostile::mariadb_names();
        names.extend(hostile::postgres_names());
        for name in &names {
            for (engine, kind, to_sql) in [
                (Engine::Postgres, PartKind::Globals, false),
                (Engine::Postgres, PartKind::Database, true),
                (Engine::Postgres, PartKind::Database, false),
                (Engine::Mysql, PartKind::Database, false),
                (Engine::Sqlite, PartKind::File, false),
            ] {
                let format = if to_sql { Format::Sql } else { Format::Native };
                let (file, _) = file_for(engine, kind, name, format);
                let path = out.join(&file);
                std::fs::write(&path, name.as_bytes()).expect("file");
                let abs = path.to_string_lossy().into_owned();
                for entry in std::fs::read_dir(&seen).expect("seen") {
                    std::fs::remove_file(entry.expect("entry").path()).expect("clear");
                }
                let hint = load_hint(engine, kind, Path::new(&path), to_sql, name);
                assert!(!hint.contains('\n') && !hint.contains('\r'), "{hint:?}");
                let run = std::process::Command::new("bash")
                    .arg("-c")
                    .arg(&hint)
                    .env("PATH", format!("{}:/usr/bin:/bin", bin.to_string_lossy()))
                    .current_dir(tmp.path())
                    .output()
                    .expect("bash");
                assert!(run.status.success(), "{hint}: {:?}", run);
                let words = |w: &[&str]| Some(w.iter().map(|s| s.to_string()).collect());
                match (engine, kind, to_sql) {
                    (Engine::Postgres, PartKind::Globals, _) => {
                        assert_eq!(
                            recorded("psql"),
                            words(&["-d", "postgres", "-f", &abs]),
                            "{hint}"
                        );
                    }
                    (Engine::Postgres, _, true) => {
                        // The SQL makes its own database: the name is in the file, not argv.
                        assert_eq!(recorded("createdb"), None, "{hint}");
                        assert_eq!(
                            recorded("psql"),
                            words(&["-d", "postgres", "-f", &abs]),
                            "{hint}"
                        );
                    }
                    (Engine::Postgres, _, false) => {
                        assert_eq!(
                            recorded("pg_restore"),
                            words(&["-d", "postgres", "--create", "--no-tablespaces", "--", &abs]),
                            "{hint}"
                        );
                    }
                    (Engine::Mysql, _, _) => {
                        assert_eq!(recorded("mariadb"), words(&["--binary-mode"]), "{hint}");
                        assert_eq!(
                            std::fs::read(seen.join("mariadb.stdin")).expect("stdin"),
                            name.as_bytes(),
                            "{hint}"
                        );
                    }
                    _ => {
                        assert_eq!(recorded("sqlite3"), words(&[&abs]), "{hint}");
                    }
                }
                assert!(
                    !Path::new(hostile::PWNED_FILE).exists() && !tmp.path().join("x").exists(),
                    "{hint} ran a command of the name"
                );
            }
        }
    }

    /// An empty part of a manifest, for download plans.
    fn part(name: &str, kind: PartKind) -> Part {
        Part {
            name: name.into(),
            kind: kind as i32,
            chunks: vec![],
            tables: vec![],
        }
    }

    #[test]
    fn plan_makes_names_unique() {
        let m = Manifest {
            engine: "postgres".into(),
            parts: vec![
                part("globals", PartKind::Globals),
                part("a/b", PartKind::Database),
                part("a b", PartKind::Database),
            ],
            ..Default::default()
        };
        let names: Vec<String> = plan(&m, Format::Native)
            .into_iter()
            .map(|f| f.file_name)
            .collect();
        assert_eq!(names, ["globals.sql", "a_b.dump", "a_b-2.dump"]);
    }

    #[test]
    fn mariadb_views_files_are_planned_unique_and_split_by_statements() {
        let m = Manifest {
            engine: "mysql".into(),
            parts: vec![
                part("grants", PartKind::Globals),
                part("a", PartKind::Database),
                part("a.views", PartKind::Database),
            ],
            ..Default::default()
        };
        let files: Vec<(String, Option<String>)> = plan(&m, Format::Native)
            .into_iter()
            .map(|f| (f.file_name, f.views_file))
            .collect();
        assert_eq!(
            files,
            [
                ("grants.sql".to_string(), None),
                ("a.sql".to_string(), Some("a.views.sql".to_string())),
                (
                    "a.views-2.sql".to_string(),
                    Some("a.views-2.views.sql".to_string())
                ),
            ]
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let head = "/*!40101 SET NAMES utf8mb4 */;\nCREATE DATABASE `a`;\n";
        let body = "USE `a`;\nCREATE TABLE `t` (x INT);\nINSERT INTO `t` VALUES ('USE `b`;');\n";
        let views = "USE `a`;\n/*!50001 CREATE VIEW `v` AS select 1 */;\n";
        let path = dir.path().join("a.sql");
        std::fs::write(&path, format!("{head}{body}{views}")).expect("write");
        assert_eq!(
            split_views(&path).expect("split"),
            Some(format!("{head}{views}").into_bytes())
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{head}{body}")
        );
        // No views: nothing split, nothing cut.
        assert_eq!(split_views(&path).expect("split"), None);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{head}{body}")
        );
    }

    #[test]
    fn initdbs_databases_replace_the_fresh_servers_own() {
        let path = Path::new("/dl/postgres.dump");
        assert_eq!(
            load_hint(Engine::Postgres, PartKind::Database, path, false, "postgres"),
            "pg_restore -d template1 --clean --if-exists --create --no-tablespaces -- /dl/postgres.dump"
        );
        let t = load_hint(
            Engine::Postgres,
            PartKind::Database,
            Path::new("/dl/template1.dump"),
            false,
            "template1",
        );
        assert!(t.starts_with("psql -d postgres -c 'ALTER DATABASE template1 IS_TEMPLATE false' && pg_restore -d postgres --clean"), "{t}");
        assert_eq!(
            load_hint(
                Engine::Postgres,
                PartKind::Database,
                Path::new("/dl/postgres.sql"),
                true,
                "postgres"
            ),
            "psql -d template1 -f /dl/postgres.sql"
        );
        assert_eq!(
            load_hint(
                Engine::Postgres,
                PartKind::Database,
                Path::new("/dl/shop.dump"),
                false,
                "shop"
            ),
            "pg_restore -d postgres --create --no-tablespaces -- /dl/shop.dump"
        );
    }
}
