//! MariaDB (and MySQL): probe a member, dump a server as parts (`grants`, then one per
//! database), provision a fresh server, load parts into it, verify it, stop it; or load parts
//! into the service's own live server (an in-place restore) and verify that.
//!
//! Invariants:
//! - **Consistent parts.** Each database part is `mariadb-dump --single-transaction
//!   --dump-history --routines --triggers --events --hex-blob --databases <db>`; its table
//!   stats (`<db>.<table>`) are counted from that very stream as it passes (see
//!   [`sqlcount`]), on the blocking pool, so they describe exactly the dumped rows
//!   (history rows included) whatever writers do meanwhile. Verification counts a
//!   system-versioned table `FOR SYSTEM_TIME ALL`, so both sides count its history.
//! - **Views last.** A database's dump loads in two steps, split by statements (the dump
//!   lexer's [`ViewSplit`](sqlcount::ViewSplit), never by lines): first everything up to its
//!   views' final definitions (the database, tables, data, triggers, events, routines, and each
//!   view as mariadb-dump's stand-in, which refers to nothing); then, once every database of the
//!   restore is loaded ([`RestoreTarget::finish_load`], or `verify` at the latest), the final
//!   definitions, so a view may read another database's tables (or views), whatever the
//!   order of their names. Routines, triggers and events need nothing across databases
//!   when they are created.
//! - **A restore loads everything it can.** The dumps (and only they) load with the client's
//!   `--force` (and `--skip-reconnect`): a statement that fails is noted with its error and
//!   its text, and the rest of the dump still loads. Verification then is not ok, and its
//!   `failed_objects` name each one (`<database>: <kind> <name>` as the statement says, e.g.
//!   ``shop: VIEW `v` ``, ``shop: TABLE DATA `t` ``) with the server's error and the
//!   statement's start; the row counts show what data is missing. A client error (the
//!   connection lost) still fails the load. The grants part and the object grants stop at
//!   their first error, as every script of ours does.
//! - **The grants part** is SQL this module writes from `SHOW CREATE USER` and `SHOW GRANTS`:
//!   roles, then accounts (`IF NOT EXISTS`), then their global and database grants, and last,
//!   under `-- strongbox: after database <hex name>` markers, object-level grants (tables,
//!   columns, routines), which MariaDB accepts only once the object exists: a restore applies
//!   them right after loading that database. The server's own accounts (`root`,
//!   `mariadb.sys`, `mysql`, `PUBLIC`, the anonymous one) are left out: a fresh server has its
//!   own.
//! - **Tools**: `spec.bin_dir` when configured (and nothing else then), else PATH and the
//!   usual sbin/bin folders; `mariadb*` names first, `mysql*` names as fallback. Every client
//!   starts with `--no-defaults` (no `my.cnf` can redirect it); the password travels as
//!   `MYSQL_PWD` only.
//! - **Fresh servers** live entirely under their folder: `data/`, `tmp/`, `mariadbd.sock`,
//!   `mariadbd.pid`, `error.log`, `superuser.password` (0600: the password of `root`, which
//!   exists as `root@localhost` and `root@'%'`; every other `root` account is removed). They
//!   run detached from the agent, in their own session, as the `mysql` system user when the
//!   agent is root. The root password reaches the server only as its
//!   `mysql_native_password` hash.
//! - **Names are data, never options or SQL text.** A name that comes from a database, the
//!   service's config or a request (database, table, account, role, host) reaches a tool only
//!   after `--` (`mariadb-dump --databases -- <db>`, `mariadb-check --databases -- <db>…`:
//!   MariaDB's option parser ends options there), or inside an option's `--opt=value` form
//!   for the connection settings of the config. It reaches SQL only quoted by the server's
//!   own rules: identifiers in backquotes with backquotes doubled ([`quote_ident`]), values
//!   compared as hex digits (`HEX(col) = '…'`), never pasted or edited as text. Every script
//!   of ours starts with [`SESSION_MODE`] (no `ANSI_QUOTES`, no `NO_BACKSLASH_ESCAPES`, so
//!   quotes mean what this module and the server's `SHOW` output assume), runs through the
//!   client in `--binary-mode` (no client commands; a `\r\n` inside a name stays), and stops
//!   at its first error; the two read-only exceptions (`SHOW` of every account, `KILL` of
//!   sessions) go on with `--force` and say so.
//! - **The grants part is split by statements, not by lines**: a name may hold a line break,
//!   a `;` or a `-- strongbox:` marker, so the restore lexes the part as the server does
//!   (quotes, comments) before it picks markers, statements, or the agent's own account.
//! - **Loading** is one `Loader` for fresh servers and the live one alike.
//! - **What a restore gives back**: every database of the backup with its tables, data,
//!   system-versioning history (row timestamps included), views, routines, triggers, events
//!   and database options; roles, accounts (with their password hashes and authentication
//!   plugins), their global, database, table, column and routine grants, and default roles.
//!   **What it does not**: the server's own accounts (`root`, `mariadb.sys`, `mysql`,
//!   `PUBLIC`, the anonymous one) and the system databases (`mysql` beyond the accounts,
//!   `sys`, `information_schema`, `performance_schema`); server settings (`my.cnf`, global
//!   variables), binary logs and replication state, plugins; the history of tables with
//!   transaction-precise versioning (`ROW START` a transaction id: mariadb-dump cannot dump
//!   it, so such a table's database is dumped with current rows only, which the log says);
//!   history, when the target server runs with `secure_timestamp` that forbids setting
//!   row timestamps, or the in-place account may not set `system_versioning_insert_history`
//!   (those statements fail and are reported); objects whose definer is an account the
//!   copy lacks load, but fail when used (as on any server without that account).
//! - **In place** (the live server, reached as the service's configured user; never a
//!   read-only server or a replica): a database part replaces exactly that database (the
//!   sessions whose default database it is are killed, it is dropped, waiting at most
//!   `DROP_LOCK_WAIT` seconds for locks, and its dump creates it again); databases not in
//!   the backup are never touched, counted or checked. The grants part is applied over the
//!   accounts that exist (`IF NOT EXISTS`), leaving out every line that names the account
//!   the agent connects as, so the agent keeps its way in.
//!
//! Files: `tools` (where the programs are), `quote` (names into SQL, and the client's
//! output back), `lex` (one statement as the server reads it), `conn` (the client for one
//! server), `backup` (dumping parts), [`sqlcount`] (counting rows in a dump as it streams),
//! `grants` (the grants part, written and read), `provision` (fresh servers), `load`
//! (parts into a server), `forced` (a dump loaded past the statements that fail),
//! `verify` (row counts and `mariadb-check` after a load), `in_place` (the service's own
//! server).

mod backup;
mod conn;
mod forced;
mod grants;
mod in_place;
mod lex;
mod load;
mod provision;
mod quote;
pub mod sqlcount;
mod tools;
mod verify;

use std::path::Path;

use crate::error::{Error, Result};
use crate::{BackupRun, Engine, EngineKind, Probe, RestoreTarget, Role, ServiceSpec};

use conn::{is_access_denied, parse_rows, Endpoint};

pub use in_place::MyInPlace;
pub use provision::{provision, teardown, MyTarget};
pub use quote::quote_ident;
pub use tools::MyTools;

/// The administrator account of a provisioned server.
pub const SUPERUSER: &str = "root";
/// The first statement of every script of ours: the session's `sql_mode` without the modes
/// that change what quotes mean (`ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`, and the combinations
/// that imply them), whatever the server's global mode. The rest of the mode (e.g.
/// `NO_AUTO_CREATE_USER`, which keeps a `GRANT` from creating an account) stays.
pub const SESSION_MODE: &str = "SET SESSION sql_mode = TRIM(BOTH ',' FROM \
    REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(\
    CONCAT(',', @@SESSION.sql_mode, ','), \
    ',NO_BACKSLASH_ESCAPES,', ','), ',ANSI_QUOTES,', ','), ',ANSI,', ','), ',ORACLE,', ','), \
    ',POSTGRESQL,', ','), ',MSSQL,', ','), ',DB2,', ','), ',MAXDB,', ','));\n";
/// Packets as large as MariaDB allows, so no dumped row is too large to load.
const MAX_PACKET: &str = "--max-allowed-packet=1G";

/// A MariaDB/MySQL service's member on this host.
pub struct Mysql {
    spec: ServiceSpec,
    tools: MyTools,
}

impl Mysql {
    pub fn new(spec: ServiceSpec) -> Result<Mysql> {
        if spec.path.is_some() {
            return Err(Error::Config {
                service: spec.name.clone(),
                message: "`path` is for SQLite services; a MariaDB service is reached with host \
                          and port (or host = a socket path)"
                    .into(),
            });
        }
        let tools = MyTools::new(spec.bin_dir.as_deref()).map_err(|e| Error::Config {
            service: spec.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Mysql { spec, tools })
    }
}

#[async_trait::async_trait]
impl Engine for Mysql {
    fn kind(&self) -> EngineKind {
        EngineKind::Mysql
    }

    fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    async fn probe(&self) -> Result<Probe> {
        let ep = Endpoint::for_spec(&self.spec)?;
        let mut cmd = ep.client(&self.tools)?;
        cmd.args(["-N", "-B"]);
        let out = cmd
            .capture_with_input(b"SELECT @@read_only, VERSION();\nSHOW SLAVE STATUS;\n")
            .await?;
        if !out.success {
            let err = ep.client_error(&out.stderr);
            if is_access_denied(&out.stderr) {
                return Err(err);
            }
            tracing::warn!(service = %self.spec.name, error = %err, "MariaDB is unreachable");
            return Ok(Probe {
                role: Role::Standalone,
                healthy: false,
                version: String::new(),
            });
        }
        let rows = parse_rows(&out.stdout);
        let (read_only, version) = match rows.first() {
            Some(r) if r.len() >= 2 => (r[0] == "1", r[1].clone()),
            _ => {
                return Err(Error::Database {
                    engine: "MariaDB",
                    target: ep.target,
                    message: format!("unexpected answer to the probe: {:?}", out.stdout),
                })
            }
        };
        let replicating = rows.len() > 1;
        Ok(Probe {
            role: if read_only || replicating {
                Role::Replica
            } else {
                Role::Primary
            },
            healthy: true,
            version,
        })
    }

    async fn begin_backup(&self) -> Result<Box<dyn BackupRun>> {
        self.begin_backup_run().await
    }

    async fn in_place(&self, scratch: &Path) -> Result<Box<dyn RestoreTarget>> {
        // A dump loads from its stream: nothing is spooled.
        let _ = scratch;
        Ok(Box::new(self.open_in_place().await?))
    }
}
