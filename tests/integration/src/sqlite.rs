//! SQLite databases for tests.
//!
//! Job: create SQLite database files (SQLite has no server) and give tests a small API to
//! run SQL and read single values, using the bundled `rusqlite`.
//!
//! Invariants:
//! - [`SqliteDb::create`] puts the database file in its own temp folder
//!   `strongbox-sqlite-XXXXXX`, removed when the [`SqliteDb`] is dropped (the connection is
//!   closed first). [`create_sqlite_db`] creates a file where the caller says and leaves
//!   cleanup to the caller.
//! - Databases are created in WAL journal mode (what a production SQLite database the product
//!   backs up typically uses); use [`SqliteDb::execute_batch`] with `PRAGMA journal_mode=...`
//!   to change it.

use std::path::{Path, PathBuf};

use rusqlite::types::FromSql;
use rusqlite::Connection;

use crate::error::{HarnessError, Result};
use crate::tmp;

/// Creates (or opens, if it exists) the SQLite database at `path`, switches it to WAL mode
/// and returns the connection. The parent folder must exist.
pub fn create_sqlite_db(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| HarnessError::sqlite(format!("opening {}", path.display()), e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(|e| HarnessError::sqlite(format!("enabling WAL on {}", path.display()), e))?;
    tracing::debug!(path = %path.display(), journal_mode = %mode, "sqlite database ready");
    Ok(conn)
}

/// An SQLite database in its own temp folder, with an open connection.
///
/// Dropping it closes the connection and removes the folder.
#[derive(Debug)]
pub struct SqliteDb {
    // Field order matters for drop: close the connection before removing the folder.
    conn: Connection,
    path: PathBuf,
    tmp: tmp::TempDir,
}

impl SqliteDb {
    /// Creates `test.db` in a new temp folder.
    pub fn create() -> Result<SqliteDb> {
        Self::create_named("test.db")
    }

    /// Creates `file_name` in a new temp folder.
    pub fn create_named(file_name: &str) -> Result<SqliteDb> {
        let tmp = tmp::temp_dir("sqlite")?;
        let path = tmp.path().join(file_name);
        let conn = create_sqlite_db(&path)?;
        Ok(SqliteDb { conn, path, tmp })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp folder holding the database (and its `-wal`/`-shm` files).
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The open connection.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs any number of `;`-separated statements.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| HarnessError::sqlite(format!("executing `{}`", abbreviate(sql)), e))
    }

    /// Runs one statement and returns the number of changed rows.
    pub fn execute(&self, sql: &str) -> Result<usize> {
        self.conn
            .execute(sql, [])
            .map_err(|e| HarnessError::sqlite(format!("executing `{}`", abbreviate(sql)), e))
    }

    /// Runs a query and returns the first column of its first row, e.g.
    /// `db.query_value::<i64>("select count(*) from t")`.
    pub fn query_value<T: FromSql>(&self, sql: &str) -> Result<T> {
        self.conn
            .query_row(sql, [], |row| row.get(0))
            .map_err(|e| HarnessError::sqlite(format!("querying `{}`", abbreviate(sql)), e))
    }

    /// Opens a second, independent connection to the same file.
    pub fn open_connection(&self) -> Result<Connection> {
        Connection::open(&self.path)
            .map_err(|e| HarnessError::sqlite(format!("opening {}", self.path.display()), e))
    }
}

fn abbreviate(sql: &str) -> String {
    const MAX: usize = 200;
    let sql = sql.trim();
    match sql.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &sql[..i]),
        None => sql.to_string(),
    }
}
