//! PostgreSQL: probe a member, dump a cluster as parts (`globals`, then one per database),
//! provision a fresh cluster, load parts into it, verify it, stop it; or load parts into the
//! service's own live server (an in-place restore) and verify that.
//!
//! Invariants:
//! - **Consistent parts.** Each database part is `pg_dump --format=custom --compress=0
//!   --snapshot=<id>`, where the snapshot is exported by a `REPEATABLE READ READ ONLY`
//!   transaction that stays open until that part's dump has finished. The part's table stats
//!   (`<database>.<schema>.<table>`, exact rows) are counted from the archive itself as it
//!   streams by ([`archive`]); a table the stream did not count, or every table when the
//!   archive could not be read, is counted with `count(*)` inside that same transaction. Either
//!   way they describe exactly the dumped rows, whatever writers do meanwhile.
//! - **Tools.** `spec.bin_dir` when configured (and nothing else then), else `PATH`, else the
//!   newest `/usr/lib/postgresql/<version>/bin`. Passwords reach them as `PGPASSWORD` only.
//! - **Fresh servers** live entirely under their folder: `data/` (PGDATA), `socket/` (the only
//!   unix socket, `trust` there; the folder is 0700 and belongs to the server's user),
//!   `postgres.log`, `superuser.password` (0600, the `postgres` superuser's password, which
//!   TCP connections need: `scram-sha-256`), and `pg_ctl.path` (which `pg_ctl` stops it). They
//!   run detached from the agent (`pg_ctl start`), as the `postgres` system user when the
//!   agent is root. The password reaches the server only as a SCRAM verifier computed here.
//! - **Loading** makes every database of the backup with `pg_restore --create`: a database
//!   the server has already (a fresh cluster's `postgres` and `template1`, which initdb made
//!   empty; in place, the live one) is dropped first (a template is made a plain database to
//!   be dropped; the dump makes it a template again). So everything about the database
//!   itself comes back too (see below). One loader (`Loader`) serves fresh clusters and the
//!   live server. A spooled part (and pg_restore's log) is removed after its load, also when
//!   the load fails.
//! - **A restore loads everything it can.** `pg_restore` runs without `--exit-on-error`;
//!   each object it fails on is read from its `--verbose` stderr (kept in a file beside the
//!   spool: the TOC entry it names, the server's error, `Command was: …`) and reported in
//!   [`Verification::failed_objects`](crate::Verification::failed_objects), which makes `ok`
//!   false: the result is "restored with errors", not a failure of the whole restore.
//!   pg_restore stopping part way (it could not connect or read the archive: no `errors
//!   ignored on restore`) fails the load.
//! - **Verification reads; it leaves nothing behind and fires nothing of the user's.** On a
//!   fresh cluster, `pg_amcheck` needs the `amcheck` extension: where the backup did not
//!   have it, it is created for the check in a schema of its own and dropped with that
//!   schema right after, each in one transaction with `session_replication_role = replica`
//!   (ordinary event triggers do not fire then) and event triggers enabled `ALWAYS` or
//!   `REPLICA` disabled inside that transaction and enabled again before it commits. Row
//!   counts of a partitioned table are its root's total (the sum over its partitions): which
//!   partition holds a row may change on restore (hash partitioning on an enum, whose values
//!   get new OIDs), the rows do not.
//! - **Every database is in the backup, or the backup fails.** All databases but
//!   `template0` are dumped, `template1` included (its settings, comment, grants and
//!   objects). `template0` never is: initdb makes it the same everywhere, it refuses
//!   connections and must not be changed (pg_dumpall leaves it out too); nor is a database
//!   that a failed `DROP DATABASE` left invalid (`datconnlimit = -2`, nothing can connect).
//!   A database that refuses connections (`datallowconn = false`) fails the backup with an
//!   error naming it: dumping it would mean changing the source; allow connections, or list
//!   the databases to back up in `databases` (then only those are dumped).
//! - **Tablespaces** of a fresh cluster are made under its own folder,
//!   `<dir>/tablespaces/<name>` (0700, the server's user; a name that is no plain file name
//!   gets `~<n>`), whatever the source's location and whether or not this machine has it;
//!   owner, options, comments and grants come from the globals as dumped, and tables and
//!   indexes land in them by name. In place, a tablespace that exists is kept as it is.
//!
//! What a restore gives back: roles (with passwords when the backup was taken as a
//! superuser), role memberships and settings, tablespaces (relocated, as above), and per
//! database its objects, data, owner, encoding and locale, `ALTER DATABASE … SET` settings,
//! `ALTER ROLE … IN DATABASE … SET` settings, comment, security labels, connection limit,
//! template flag and grants. What it does not: cluster settings (`postgresql.conf`,
//! `ALTER SYSTEM`, `pg_hba.conf`, `pg_ident.conf`), which are no part of a logical backup;
//! `template0`; the contents of the source's tablespace locations as paths (only the
//! tablespaces' names and contents); statistics (`ANALYZE` after a restore), replication
//! slots, subscriptions' remote state and anything else `pg_dump`/`pg_dumpall` leave out;
//! objects `pg_restore` fails on, which are named in the verification.
//! - **In place** (the live server, reached as the service's configured user; never a
//!   replica): a database part replaces exactly that database (`DROP DATABASE ... WITH
//!   (FORCE)` ends its sessions, `pg_restore --create` makes it again, commits synchronous);
//!   databases not in the backup are never touched, nor counted. No role is ever dropped:
//!   the globals skip `CREATE ROLE` for roles that exist, and the role the agent connects as
//!   keeps its password and attributes. No extension is installed: `pg_amcheck` checks only
//!   restored databases that have `amcheck`, else the engine check is reported skipped. A
//!   tablespace that exists is not made again.
//! - **Names are data, never syntax.** A name from a database, the config or a request (a
//!   database, role, schema or table; it may start with `-`, hold newlines, quotes, `=` or
//!   backslashes) reaches a tool only through the environment (`PGHOST`, `PGUSER`, ...) or as
//!   the value inside one `--option=value` argument: databases as a libpq connection string
//!   `--dbname=dbname='…'` (`\` and `'` escaped with a backslash, `dbname_conninfo`, which
//!   libpq never reads as options or a URI), `pg_amcheck`'s databases as a double-quoted
//!   pattern `--database="…"` (`""` inside), which matches that one name literally. It
//!   reaches SQL only as a parameter (`$1`) or quoted by the server itself
//!   (`format('%I')`, `quote_ident`); SQL text is never edited. The agent's sessions go
//!   through tokio-postgres's API (names in the startup packet), no psql script.
//! - **The globals part is applied statement by statement.** It is parsed whole first
//!   (`globals::script::parse`: quotes, dollar quotes and comments as the server reads them; only
//!   the statements pg_dumpall writes); a statement is then left out whole by what it is
//!   and the role it names, compared with the server's `pg_roles` by the server, or sent
//!   alone through the extended protocol, which refuses a text holding two commands. A name
//!   can therefore never end a statement or start one, whatever it holds. On a fresh
//!   cluster, `CREATE TABLESPACE` is not sent: the server composes the statements that make
//!   the tablespace under the cluster's folder (`format('%I', '%L')`). A statement that
//!   fails is skipped and named as a failed object of the verification, fresh and in place
//!   (a restore loads everything it can); a part that does not parse applies nothing.
//!   (`pg_restore` runs through `/bin/sh -c 'exec "$0" "$@" 2>"$STRONGBOX_RESTORE_LOG"'`
//!   so its stderr goes to a file: names still reach it only as separate arguments.)
//! - **Names are UTF-8, or the backup fails.** A backup's parts and table stats are named in
//!   UTF-8, and its globals are dumped in UTF-8 (`PGCLIENTENCODING=UTF8`). A database, role
//!   or table whose name is not (possible with `SQL_ASCII`) fails the backup with an error
//!   naming it escaped (`\xe9`), before anything is dumped; it is never skipped silently.
//!
//! Files: `tools` (where the programs are), `quote` (names into SQL, conninfo and
//! `postgresql.conf`), `conn` (sessions and client tools for one server), `catalog` (the
//! databases, tables and row counts a server holds), `backup` (dumping parts),
//! [`archive`] (counting rows in the custom archive as it streams), `provision` (fresh
//! clusters), `load` (database parts into a server), `verify` (row counts and
//! `pg_amcheck` after a load), `globals` (the globals part), `in_place` (the service's own
//! server).

pub mod archive;
mod backup;
mod catalog;
mod conn;
mod globals;
mod in_place;
mod load;
mod provision;
mod quote;
mod tools;
mod verify;

use std::path::Path;

use crate::error::{Error, Result};
use crate::{BackupRun, Engine, EngineKind, Probe, RestoreTarget, Role, ServiceSpec};

use conn::{pg_error, Endpoint};

pub use in_place::PgInPlace;
pub use provision::{provision, teardown, PgTarget};
pub use quote::{quote_ident, quote_literal};
pub use tools::PgTools;

/// Name of the superuser of a provisioned cluster.
pub const SUPERUSER: &str = "postgres";

/// A PostgreSQL service's member on this host.
pub struct Postgres {
    spec: ServiceSpec,
    tools: PgTools,
}

impl Postgres {
    pub fn new(spec: ServiceSpec) -> Result<Postgres> {
        if spec.path.is_some() {
            return Err(Error::Config {
                service: spec.name.clone(),
                message: "`path` is for SQLite services; a PostgreSQL service is reached with \
                          host and port"
                    .into(),
            });
        }
        let tools = PgTools::new(spec.bin_dir.as_deref()).map_err(|e| Error::Config {
            service: spec.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Postgres { spec, tools })
    }

    /// The database used for cluster-wide questions: `postgres`, or the first configured one.
    fn maintenance_db(&self) -> &str {
        match self.spec.databases.first() {
            Some(db) if !self.spec.databases.iter().any(|d| d == "postgres") => db,
            _ => "postgres",
        }
    }
}

#[async_trait::async_trait]
impl Engine for Postgres {
    fn kind(&self) -> EngineKind {
        EngineKind::Postgres
    }

    fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    async fn probe(&self) -> Result<Probe> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let db = self.maintenance_db();
        let client = match ep.connect_raw(db).await {
            Ok(c) => c,
            Err(e) => {
                let err = pg_error(&ep.target(db), &e);
                // The server answered and refused us: that is configuration to fix (a wrong
                // password, user, database or pg_hba.conf), unless it is starting or stopping.
                let starting =
                    e.code() == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW);
                if e.as_db_error().is_some() && !starting {
                    return Err(err);
                }
                tracing::warn!(service = %self.spec.name, error = %err, "PostgreSQL is unreachable");
                return Ok(Probe {
                    role: Role::Standalone,
                    healthy: false,
                    version: String::new(),
                });
            }
        };
        let row = match client
            .query_one(
                "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('server_version')",
                &[],
            )
            .await
        {
            Ok(row) => row,
            Err(e) => {
                tracing::warn!(service = %self.spec.name, error = %pg_error(&ep.target(db), &e), "PostgreSQL did not answer the probe");
                return Ok(Probe {
                    role: Role::Standalone,
                    healthy: false,
                    version: String::new(),
                });
            }
        };
        let (in_recovery, version): (bool, String) = match (row.try_get(0), row.try_get(1)) {
            (Ok(r), Ok(v)) => (r, v),
            (Err(e), _) | (_, Err(e)) => return Err(pg_error(&ep.target(db), &e)),
        };
        Ok(Probe {
            role: if in_recovery {
                Role::Replica
            } else {
                Role::Primary
            },
            healthy: true,
            version: version
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        })
    }

    async fn begin_backup(&self) -> Result<Box<dyn BackupRun>> {
        self.begin_backup_run().await
    }

    async fn in_place(&self, scratch: &Path) -> Result<Box<dyn RestoreTarget>> {
        Ok(Box::new(self.open_in_place(scratch).await?))
    }
}
