//! Test harness for strongbox's integration tests: real database servers, never mocks.
//!
//! Job: give every integration test (and benchmark) throwaway PostgreSQL ([`pg`]), MariaDB
//! ([`mariadb`]) and SQLite ([`sqlite`]) databases, free ports ([`ports`]), temp folders
//! ([`tmp`]) and leak-free child processes ([`process`]).
//!
//! Invariants kept by the whole crate:
//! - Every server runs as a child process on loopback, on a port that was free, in its own
//!   temp folder; nothing outside that folder is written.
//! - Dropping a server handle — normally or while a test panics — stops the server (graceful
//!   signal, deadline, SIGKILL, process group killed, child reaped) and then removes its
//!   folder. Children are also SIGKILLed by the kernel if the test process itself dies
//!   (see [`process`]).
//! - Waiting is always for a condition with a deadline (a server accepting connections, a
//!   process exiting), never a fixed sleep.
//! - All fallible operations return [`HarnessError`], whose messages say what to do.
//!
//! ```no_run
//! use strongbox_integration::pg::PgServer;
//! let pg = PgServer::start()?;
//! pg.create_database("app")?;
//! assert_eq!(pg.psql("app", "select 1")?, "1");
//! # Ok::<(), strongbox_integration::HarnessError>(())
//! ```

pub mod agent;
pub mod cluster;
pub mod error;
pub mod fleet;
pub mod hostile;
pub mod mariadb;
pub mod pg;
pub mod ports;
pub mod process;
pub mod raw_agent;
pub mod sqlite;
pub mod tmp;
pub mod wait;

pub use error::{HarnessError, Result};
pub use mariadb::{MariaDbBuilder, MariaDbServer};
pub use pg::{pg_bin_dir, PgBuilder, PgServer};
pub use sqlite::{create_sqlite_db, SqliteDb};
