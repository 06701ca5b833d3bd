//! Where engine programs are: the one search for every program an engine runs (`pg_dump`,
//! `pg_restore`, `initdb`, `postgres`, `mariadb-dump`, `mariadbd`, `mariadb-install-db`, ...).
//! The engines use it for their tools, the CLI for `download --format sql` and `dev`, and the
//! test harness for its servers, so all of them find the same programs.
//!
//! Where it looks:
//! - in a configured folder (a service's `bin_dir`, the harness's `STRONGBOX_PG_BIN_DIR`):
//!   there and nowhere else;
//! - otherwise on `PATH`, then in the engine's usual folders: for PostgreSQL the versioned
//!   `/usr/lib/postgresql/<version>/bin` of Debian and Ubuntu, newest version first; for
//!   MariaDB `/usr/sbin`, `/usr/bin`, `/usr/local/bin`, `/usr/local/sbin`.
//!
//! Invariants:
//! - A program is found only as an executable regular file; nothing here runs a program or
//!   writes a file.
//! - A server's programs come from one folder ([`postgres_server_dir`]): `initdb` and
//!   `postgres` of two installations never meet.
//! - A miss is a [`NotFound`] naming what was looked for and where; how to install it is the
//!   caller's to say, as only the caller knows who reads the message.

use std::path::{Path, PathBuf};

use strongbox_core::process::{find_program, is_executable};

/// The folder of Debian's and Ubuntu's PostgreSQL installations, one `<version>/bin` each.
pub const POSTGRES_VERSIONS: &str = "/usr/lib/postgresql";
/// Where MariaDB's packages put its programs, searched after `PATH`.
pub const MARIADB_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"];

/// A program (or a folder of programs) that is nowhere it was looked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{program} not found in {searched}")]
pub struct NotFound {
    /// What was looked for: a program, names of one program joined with ` / `, or programs
    /// that must share a folder joined with `, `.
    pub program: String,
    /// Where, for a message: a folder, or `PATH, …`.
    pub searched: String,
    /// A folder that held the first of the programs that must share one, and the first of the
    /// others it lacked: a partial installation, which a message should name.
    pub lacking: Option<(PathBuf, String)>,
}

/// `/usr/lib/postgresql/<version>/bin` folders, newest version first (versions compare by
/// number: 9.6 < 10 < 15).
pub fn postgres_versioned_dirs() -> Vec<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(POSTGRES_VERSIONS) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(version) = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<u32>, _>>()
            {
                found.push((version, entry.path().join("bin")));
            }
        }
    }
    found.sort();
    found.into_iter().rev().map(|(_, p)| p).collect()
}

/// Where [`postgres_program`] and [`postgres_server_dir`] look when no folder is configured.
const POSTGRES_SEARCHED: &str = "PATH, /usr/lib/postgresql/*/bin";

/// The PostgreSQL program `name`: in `bin_dir` when one is configured (and nowhere else), else
/// on `PATH`, else in the newest [`postgres_versioned_dirs`] that has it.
pub fn postgres_program(name: &str, bin_dir: Option<&Path>) -> Result<PathBuf, NotFound> {
    if let Some(dir) = bin_dir {
        let path = dir.join(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(NotFound {
                program: name.to_string(),
                searched: dir.display().to_string(),
                lacking: None,
            })
        };
    }
    if let Some(path) = find_program(&[name], &[]) {
        return Ok(path);
    }
    postgres_versioned_dirs()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
        .ok_or_else(|| NotFound {
            program: name.to_string(),
            searched: POSTGRES_SEARCHED.to_string(),
            lacking: None,
        })
}

/// The one folder that holds every program of `programs` (e.g. `initdb`, `postgres`, `psql`),
/// so that a server is made and run by one installation: `bin_dir` when one is configured (and
/// nowhere else); else the folder of the first program as found on `PATH`, symbolic links
/// resolved (a link in `/usr/local/bin` leads to its installation's folder), when it holds the
/// others too; else the newest [`postgres_versioned_dirs`] that holds them all.
pub fn postgres_server_dir(bin_dir: Option<&Path>, programs: &[&str]) -> Result<PathBuf, NotFound> {
    let lacks = |dir: &Path| {
        programs
            .iter()
            .find(|p| !is_executable(&dir.join(p)))
            .map(|p| p.to_string())
    };
    if let Some(dir) = bin_dir {
        return match lacks(dir) {
            None => Ok(dir.to_path_buf()),
            Some(program) => Err(NotFound {
                program,
                searched: dir.display().to_string(),
                lacking: None,
            }),
        };
    }
    let mut lacking = None;
    let on_path = programs
        .first()
        .and_then(|first| find_program(&[first], &[]))
        .map(|found| std::fs::canonicalize(&found).unwrap_or(found))
        .and_then(|found| found.parent().map(Path::to_path_buf));
    for dir in on_path.into_iter().chain(postgres_versioned_dirs()) {
        match lacks(&dir) {
            None => return Ok(dir),
            Some(missing) => {
                let holds_first = programs
                    .first()
                    .is_some_and(|first| is_executable(&dir.join(first)));
                if lacking.is_none() && holds_first {
                    lacking = Some((dir, missing));
                }
            }
        }
    }
    Err(NotFound {
        program: programs.join(", "),
        searched: POSTGRES_SEARCHED.to_string(),
        lacking,
    })
}

/// The first of `names` (one program's names, e.g. `mariadb-dump`, then `mysqldump`): in
/// `bin_dir` when one is configured (and nowhere else), else on `PATH`, then in
/// [`MARIADB_DIRS`].
pub fn mariadb_program(names: &[&str], bin_dir: Option<&Path>) -> Result<PathBuf, NotFound> {
    let (found, searched) = match bin_dir {
        Some(dir) => (
            names.iter().map(|n| dir.join(n)).find(|p| is_executable(p)),
            dir.display().to_string(),
        ),
        None => (
            find_program(names, MARIADB_DIRS),
            format!("PATH, {}", MARIADB_DIRS.join(", ")),
        ),
    };
    found.ok_or_else(|| NotFound {
        program: names.join(" / "),
        searched,
        lacking: None,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A folder holding `programs` as executable files (and `plain` as a file that is not).
    fn folder(programs: &[&str], plain: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, mode) in programs
            .iter()
            .map(|p| (p, 0o755))
            .chain(plain.iter().map(|p| (p, 0o644)))
        {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        dir
    }

    #[test]
    fn a_configured_folder_is_the_only_place_looked_in() {
        let dir = folder(&["pg_dump", "mariadb-dump"], &["psql"]);
        assert_eq!(
            postgres_program("pg_dump", Some(dir.path())),
            Ok(dir.path().join("pg_dump"))
        );
        // Not executable: not a program, even where PATH has one.
        let err = postgres_program("psql", Some(dir.path())).unwrap_err();
        assert_eq!(err.program, "psql");
        assert_eq!(err.searched, dir.path().display().to_string());
        assert!(postgres_program("sh", Some(dir.path())).is_err());
        assert_eq!(
            mariadb_program(&["mysqldump", "mariadb-dump"], Some(dir.path())),
            Ok(dir.path().join("mariadb-dump"))
        );
        let err = mariadb_program(&["mariadbd", "mysqld"], Some(dir.path())).unwrap_err();
        assert_eq!(err.program, "mariadbd / mysqld");
        assert!(
            err.to_string().contains("mariadbd / mysqld not found in"),
            "{err}"
        );
    }

    #[test]
    fn a_server_folder_holds_every_program_or_names_the_missing_one() {
        let full = folder(&["initdb", "postgres", "psql"], &[]);
        assert_eq!(
            postgres_server_dir(Some(full.path()), &["initdb", "postgres", "psql"]),
            Ok(full.path().to_path_buf())
        );
        let partial = folder(&["initdb", "postgres"], &["psql"]);
        let err =
            postgres_server_dir(Some(partial.path()), &["initdb", "postgres", "psql"]).unwrap_err();
        assert_eq!(err.program, "psql");
        assert_eq!(err.searched, partial.path().display().to_string());
    }

    #[test]
    fn programs_on_path_are_found() {
        // `sh` is on every PATH this runs with; a name no one has is not.
        assert!(mariadb_program(&["no-such-program-strongbox", "sh"], None).is_ok());
        let err = mariadb_program(&["no-such-program-strongbox"], None).unwrap_err();
        assert_eq!(
            err.searched,
            "PATH, /usr/sbin, /usr/bin, /usr/local/bin, /usr/local/sbin"
        );
        let err = postgres_program("no-such-program-strongbox", None).unwrap_err();
        assert_eq!(err.searched, "PATH, /usr/lib/postgresql/*/bin");
        let err = postgres_server_dir(None, &["no-such-program-strongbox", "initdb"]).unwrap_err();
        assert_eq!(err.program, "no-such-program-strongbox, initdb");
        assert_eq!(err.lacking, None);
    }

    #[test]
    fn versioned_folders_come_newest_first() {
        let dirs = postgres_versioned_dirs();
        let versions: Vec<Vec<u32>> = dirs
            .iter()
            .filter_map(|d| d.parent()?.file_name()?.to_str().map(str::to_string))
            .map(|v| v.split('.').filter_map(|n| n.parse().ok()).collect())
            .collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.reverse();
        assert_eq!(versions, sorted);
        assert!(dirs.iter().all(|d| d.ends_with("bin")));
    }
}
