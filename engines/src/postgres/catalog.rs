//! What a server holds, read from its catalog: the databases (and which allow connections),
//! the tables whose rows a part carries, the roles; and exact row counts.
//!
//! Invariant: names are read as bytes, so a name that is not UTF-8 reaches the engine as data
//! to refuse by name, never as a failed query; counts are taken in the caller's transaction
//! (a backup's snapshot, or one snapshot per database when verifying).

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::TableStat;

use super::conn::pg_error;
use super::quote::{escaped, utf8_name};

/// SQL reading the name `$e` (a column of type `name`) as bytes (`bytea`), so that a name
/// that is not UTF-8 reaches the agent as data, to refuse by name, instead of failing the
/// query or the client's decoding: as stored in a `SQL_ASCII` or UTF-8 database, converted to
/// UTF-8 (the session's client encoding) in any other. (`convert_to` checks its input against
/// the database's encoding, so it reads bytes only in `SQL_ASCII`; `textsend` converts to the
/// client's encoding, which is nothing to do in a UTF-8 database.)
macro_rules! name_bytes {
    ($e:literal) => {
        concat!(
            "(CASE WHEN pg_catalog.getdatabaseencoding() = 'SQL_ASCII' \
             THEN pg_catalog.convert_to(",
            $e,
            "::text, 'SQL_ASCII') ELSE pg_catalog.textsend(",
            $e,
            "::text) END)"
        )
    };
}

/// Tables whose rows a part carries: plain tables (and partitions), not system, temporary or
/// extension-owned ones. Inheritance children are counted on their own (`ONLY`). Schema and
/// table come as bytes ([`name_bytes`]), then the two quoted by the server (`%I.%I`), then
/// the schema and table of the partitioned table at the root of a partition's tree (the table
/// itself when it is no partition): a partition's rows are counted towards its root, since a
/// restore keeps the rows of a partitioned table, not which partition holds each (hash
/// partitions of an enum, whose values get new OIDs, place rows anew).
const TABLES_SQL: &str = concat!(
    "SELECT ",
    name_bytes!("n.nspname"),
    ", ",
    name_bytes!("c.relname"),
    ", ",
    name_bytes!("pg_catalog.format('%I.%I', n.nspname, c.relname)"),
    ", ",
    name_bytes!("rn.nspname"),
    ", ",
    name_bytes!("r.relname"),
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.pg_class r ON r.oid = CASE WHEN c.relispartition \
        THEN pg_catalog.pg_partition_root(c.oid) ELSE c.oid END \
    JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
    WHERE c.relkind = 'r' AND c.relpersistence <> 't' \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                        AND d.objid = c.oid AND d.deptype = 'e') \
    ORDER BY 1, 2"
);

/// The databases of the cluster, as bytes ([`name_bytes`]), and whether each allows
/// connections: every one but `template0` (which initdb makes, which refuses connections and
/// which no one may change, so it is never dumped, as `pg_dumpall` never dumps it) and those
/// a failed `DROP DATABASE` left invalid (`datconnlimit = -2`, which nothing can connect to
/// either; `pg_dumpall` leaves them out too).
const DATABASES_SQL: &str = concat!(
    "SELECT ",
    name_bytes!("datname"),
    ", datallowconn FROM pg_catalog.pg_database \
     WHERE datname <> 'template0' AND datconnlimit <> -2 ORDER BY 1"
);

/// Every role, as bytes ([`name_bytes`]).
pub(super) const ROLES_SQL: &str = concat!(
    "SELECT ",
    name_bytes!("rolname"),
    " FROM pg_catalog.pg_roles ORDER BY 1"
);

/// A table whose rows a part carries.
struct TableName {
    schema: String,
    table: String,
    /// `schema.table` as the server quotes them, for SQL.
    quoted: String,
    /// The root of its partition tree (schema, table): itself when it is no partition.
    root: (String, String),
}

/// The tables whose rows a part carries (`TABLES_SQL`), in the client's current transaction.
/// A name that is not UTF-8 is an error naming it (escaped) and the database `db`.
async fn list_tables(client: &Client, db: &str, target: &str) -> Result<Vec<TableName>> {
    let rows = client
        .query(TABLES_SQL, &[])
        .await
        .map_err(|e| pg_error(target, &e))?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let column = |i: usize| -> Result<String> {
            let bytes: Vec<u8> = row.try_get(i).map_err(|e| pg_error(target, &e))?;
            utf8_name(bytes).map_err(|bytes| {
                Error::Other(format!(
                    "database {db:?} on {target} has a schema or table named {} (in \
                     SQL_ASCII), which is not UTF-8: strongbox names tables in UTF-8 and \
                     cannot back it up; rename it to UTF-8 (ALTER ... RENAME TO, in a \
                     session on that database), or leave the database out of the \
                     service's `databases`",
                    escaped(&bytes)
                ))
            })
        };
        tables.push(TableName {
            schema: column(0)?,
            table: column(1)?,
            quoted: column(2)?,
            root: (column(3)?, column(4)?),
        });
    }
    Ok(tables)
}

/// A database of the cluster ([`DATABASES_SQL`]).
pub(super) struct ListedDatabase {
    /// Its name or, when that is not UTF-8, its bytes.
    pub(super) name: std::result::Result<String, Vec<u8>>,
    pub(super) allows_connections: bool,
}

/// The databases of the cluster but `template0` ([`DATABASES_SQL`]).
pub(super) async fn list_databases(client: &Client, target: &str) -> Result<Vec<ListedDatabase>> {
    client
        .query(DATABASES_SQL, &[])
        .await
        .map_err(|e| pg_error(target, &e))?
        .iter()
        .map(|row| {
            Ok(ListedDatabase {
                name: utf8_name(row.try_get::<_, Vec<u8>>(0)?),
                allows_connections: row.try_get(1)?,
            })
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(|e| pg_error(target, &e))
}

/// Exact row counts of every table of the connected database, as `<db>.<schema>.<table>`, in
/// the client's current transaction; the partitions of a partitioned table are one count,
/// named after the root of their tree (see [`TABLES_SQL`]). `known` holds counts already
/// taken from the dump stream (by (schema, table)); only the other tables are counted with
/// `count(*)`. `partitions`: each partition's own count is listed too, after the roots
/// (verification, for backups recorded before partitions were counted towards their root).
pub(super) async fn count_tables(
    client: &Client,
    db: &str,
    target: &str,
    known: &HashMap<(String, String), u64>,
    partitions: bool,
) -> Result<Vec<TableStat>> {
    let mut stats: Vec<TableStat> = Vec::new();
    let mut leaves: Vec<TableStat> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for t in list_tables(client, db, target).await? {
        let rows = match known.get(&(t.schema.clone(), t.table.clone())) {
            Some(n) => *n,
            None => {
                // The name is quoted by the server (`format('%I.%I')`).
                let sql = format!("SELECT count(*) FROM ONLY {}", t.quoted);
                let n: i64 = client
                    .query_one(sql.as_str(), &[])
                    .await
                    .map_err(|e| pg_error(target, &e))?
                    .try_get(0)
                    .map_err(|e| pg_error(target, &e))?;
                u64::try_from(n).unwrap_or(0)
            }
        };
        if partitions && t.root != (t.schema.clone(), t.table.clone()) {
            leaves.push(TableStat {
                name: format!("{db}.{}.{}", t.schema, t.table),
                rows,
            });
        }
        let name = format!("{db}.{}.{}", t.root.0, t.root.1);
        match at.get(&name) {
            Some(&i) => stats[i].rows += rows,
            None => {
                at.insert(name.clone(), stats.len());
                stats.push(TableStat { name, rows });
            }
        }
    }
    stats.extend(leaves);
    Ok(stats)
}
