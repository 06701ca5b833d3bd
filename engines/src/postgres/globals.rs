//! Applying the globals part (roles, memberships, settings, tablespaces, grants) to a fresh
//! cluster or the live server, statement by statement, as [`script`] reads it.
//!
//! Invariants: the part is parsed whole before anything applies; a statement is left out whole
//! (by what it is and the role it names, compared by the server) or sent alone through the
//! extended protocol, never edited; the role the agent connects as keeps its password and
//! attributes; on a fresh cluster a tablespace is made under the cluster's own folder; a
//! statement that fails is named and the rest applies.

mod script;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::process::SystemUser;
use crate::FailedObject;

use super::conn::{compose, pg_error, Endpoint};

/// Largest globals part a restore accepts (it is read whole, and parsed whole before any of it
/// is applied).
const MAX_GLOBALS_PART: u64 = 64 << 20;

/// Reads a globals part whole.
pub(super) async fn read_globals(reader: Box<dyn AsyncRead + Send + Unpin>) -> Result<Vec<u8>> {
    let mut script = Vec::new();
    reader
        .take(MAX_GLOBALS_PART + 1)
        .read_to_end(&mut script)
        .await
        .map_err(|source| Error::Stream {
            what: "receiving the globals part".into(),
            source,
        })?;
    if script.len() as u64 > MAX_GLOBALS_PART {
        return Err(Error::Other(format!(
            "the globals part is larger than {} MiB, more than a restore holds; apply it by \
             hand with psql (strongbox backup download)",
            MAX_GLOBALS_PART >> 20
        )));
    }
    Ok(script)
}

/// Applies the globals part `script` to the server `ep` reaches, in one session on `db`,
/// statement by statement (see the module's doc): the script is parsed whole first
/// ([`script::parse`]), so that a script it refuses changes nothing. Left out:
/// psql's `\restrict`/`\unrestrict`; `CREATE ROLE` of a role that exists; `ALTER ROLE` of
/// the session's own role (`current_user`) that changes attributes or the password, so that
/// the agent keeps its way in. Whether a role exists or is the session's own is the server's
/// answer for the exact name, never a comparison of text here. Every other statement is sent
/// alone through the extended protocol, which refuses a text holding more than one command.
/// A statement that fails is skipped and the rest still applied (a restore loads everything
/// it can): returns the statements that failed, each named by its line and start, with the
/// server's error.
pub(super) async fn apply_globals(
    ep: &Endpoint,
    db: &str,
    script: &[u8],
    restore: &str,
    tablespaces: &Tablespaces,
) -> Result<Vec<FailedObject>> {
    use script::{Kind, RoleRef};
    let statements = script::parse(script).map_err(|e| Error::Other(e.to_string()))?;
    let target = ep.target(db);
    let client = ep.connect(db).await?;
    // The parser starts with standard strings, as pg_dumpall's own SET says; so must the
    // session, whatever the server's default.
    client
        .batch_execute("SET standard_conforming_strings = on")
        .await
        .map_err(|e| pg_error(&target, &e))?;

    // The named roles: which exist, which is the session's own.
    let mut names: Vec<&str> = statements
        .iter()
        .filter_map(|s| match &s.kind {
            Kind::CreateRole(RoleRef::Named(n))
            | Kind::AlterRole {
                role: RoleRef::Named(n),
                ..
            } => Some(n.as_str()),
            _ => None,
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut exists: HashSet<&str> = HashSet::new();
    let mut own: HashSet<&str> = HashSet::new();
    let rows = client
        .query(
            "SELECT u.i, EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname::text = u.n), \
                    u.n = CURRENT_USER::text \
             FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS u(n, i)",
            &[&names],
        )
        .await
        .map_err(|e| pg_error(&target, &e))?;
    for row in rows {
        let facts = (|| -> std::result::Result<(i64, bool, bool), tokio_postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        })()
        .map_err(|e| pg_error(&target, &e))?;
        let (i, found, is_own) = facts;
        let Some(name) = usize::try_from(i - 1).ok().and_then(|k| names.get(k)) else {
            return Err(Error::Other(format!(
                "{target} answered about role number {i} of {}",
                names.len()
            )));
        };
        if found {
            exists.insert(name);
        }
        if is_own {
            own.insert(name);
        }
    }

    // The tablespaces that exist (in place: the live server has its own).
    let existing_tablespaces: HashSet<String> = client
        .query("SELECT spcname::text FROM pg_catalog.pg_tablespace", &[])
        .await
        .map_err(|e| pg_error(&target, &e))?
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| pg_error(&target, &e))?;

    let mut failed = Vec::new();
    let (mut applied, mut skipped) = (0usize, 0usize);
    for (index, s) in statements.iter().enumerate() {
        if let (Kind::CreateTablespace { name, owner }, Tablespaces::Under { root, user }) =
            (&s.kind, tablespaces)
        {
            // The source's location means nothing here: the tablespace goes under the
            // restored server's own folder, and only its location differs.
            let dir = root.join(tablespace_dir_name(name, index));
            let made = make_tablespace(&client, &target, name, owner, &dir, user.as_ref()).await;
            match made {
                Ok(()) => applied += 1,
                Err(e) => failed.push(FailedObject {
                    name: format!("globals: line {} ({})", s.line, script::preview(s.text)),
                    reason: e.to_string(),
                }),
            }
            continue;
        }
        let skip = match &s.kind {
            Kind::PsqlGuard => true,
            Kind::CreateTablespace { name, .. } => existing_tablespaces.contains(name),
            Kind::CreateRole(RoleRef::Named(n)) => exists.contains(n.as_str()),
            Kind::AlterRole {
                role,
                attributes: true,
            } => match role {
                RoleRef::Named(n) => own.contains(n.as_str()),
                RoleRef::Current | RoleRef::All => true,
            },
            _ => false,
        };
        if skip {
            skipped += 1;
            continue;
        }
        match client.query_typed(s.text, &[]).await {
            Ok(_) => applied += 1,
            Err(e) => failed.push(FailedObject {
                name: format!("globals: line {} ({})", s.line, script::preview(s.text)),
                reason: match pg_error(&target, &e) {
                    Error::Database { message, .. } => message,
                    other => other.to_string(),
                },
            }),
        }
    }
    tracing::info!(restore = %restore, applied, skipped, failed = failed.len(), "globals part applied");
    Ok(failed)
}

/// Where [`apply_globals`] makes the tablespaces of a globals part.
pub(super) enum Tablespaces {
    /// As the part says, except those that exist already (the live server has its own).
    AsDumped,
    /// Each in its own folder under `root` (a fresh cluster's `<dir>/tablespaces`), made for
    /// the server's system user `user` (mode 0700).
    Under {
        root: PathBuf,
        user: Option<SystemUser>,
    },
}

/// The folder name of tablespace `name` (statement `index` of the globals): the name when it
/// is a plain file name (`[A-Za-z0-9_-]`, not empty), else `~<index>`, which no plain name is.
fn tablespace_dir_name(name: &str, index: usize) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_string()
    } else {
        format!("~{index}")
    }
}

/// Makes tablespace `name`, owned by `owner`, in the new folder `dir` (0700, owned by the
/// server's user). The statements are composed by the server (`format('%I', '%L')`).
async fn make_tablespace(
    client: &Client,
    target: &str,
    name: &str,
    owner: &str,
    dir: &Path,
    user: Option<&SystemUser>,
) -> Result<()> {
    if let Some(parent) = dir.parent() {
        if !parent.is_dir() {
            strongbox_core::private::create_dir(parent, strongbox_core::private::PRIVATE_DIR)
                .map_err(|e| Error::Other(format!("creating the tablespaces folder: {e}")))?;
            if let Some(u) = user {
                u.chown(parent)?;
            }
        }
    }
    strongbox_core::private::create_dir(dir, strongbox_core::private::PRIVATE_DIR).map_err(
        |e| {
            Error::Other(format!(
                "creating the tablespace folder {}: {e}",
                dir.display()
            ))
        },
    )?;
    if let Some(u) = user {
        u.chown(dir)?;
    }
    let location = dir.to_str().ok_or_else(|| {
        Error::Other(format!(
            "the tablespace folder {} is not UTF-8; choose a data root whose path is",
            dir.display()
        ))
    })?;
    for (form, args) in [
        (
            "CREATE TABLESPACE %I LOCATION %L",
            [name, location].as_slice(),
        ),
        ("ALTER TABLESPACE %I OWNER TO %I", [name, owner].as_slice()),
    ] {
        let sql = compose(client, target, form, args).await?;
        client.batch_execute(&sql).await.map_err(|e| {
            let mut err = pg_error(target, &e);
            if let Error::Database { message, .. } = &mut err {
                *message = format!(
                    "making tablespace {} in {} failed: {message}",
                    script::preview(name),
                    dir.display()
                );
            }
            err
        })?;
    }
    tracing::info!(tablespace = %script::preview(name), dir = %dir.display(), "tablespace made under the restored server's folder");
    Ok(())
}
