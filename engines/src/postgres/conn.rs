//! Reaching one server: its address, user and password ([`Endpoint`]); sessions through
//! tokio-postgres, client tools with the matching environment, errors with a hint, and
//! statements the server composes (`format()`).
//!
//! Invariant: the password reaches a tool only as `PGPASSWORD` and never a message; names
//! reach the server in the startup packet or as parameters, never as SQL text.

use std::path::Path;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};
use crate::process::ToolCommand;
use crate::ServiceSpec;

use super::{PgTools, SUPERUSER};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach one server: host (or socket folder), port, user, password.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) password: Option<String>,
}

impl Endpoint {
    pub(super) fn for_spec(spec: &ServiceSpec) -> Result<Endpoint> {
        let host = spec.host.clone().unwrap_or_else(|| {
            if Path::new("/var/run/postgresql").is_dir() {
                "/var/run/postgresql".to_string()
            } else {
                "/tmp".to_string()
            }
        });
        Ok(Endpoint {
            host,
            port: spec.port.unwrap_or(5432),
            user: spec.user.clone().unwrap_or_else(|| SUPERUSER.to_string()),
            password: spec.password()?,
        })
    }

    /// For messages: `host:port` (no password, ever).
    pub(super) fn target(&self, db: &str) -> String {
        format!(
            "{}:{} (database {db:?}, user {:?})",
            self.host, self.port, self.user
        )
    }

    fn config(&self, db: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(db)
            .application_name("strongbox-agent")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(pw) = &self.password {
            c.password(pw.as_bytes());
        }
        c
    }

    /// Connects; the connection runs on its own task until the client is dropped.
    pub(super) async fn connect(&self, db: &str) -> Result<Client> {
        self.connect_raw(db)
            .await
            .map_err(|e| pg_error(&self.target(db), &e))
    }

    pub(super) async fn connect_raw(
        &self,
        db: &str,
    ) -> std::result::Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config(db).connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended with an error");
            }
        });
        Ok(client)
    }

    /// A client tool with PGHOST/PGPORT/PGUSER/PGPASSWORD set for this endpoint.
    pub(super) fn tool(&self, tools: &PgTools, tool: &str) -> Result<ToolCommand> {
        Ok(self.with_env(tools.command(tool)?))
    }

    /// `cmd` with PGHOST/PGPORT/PGUSER/PGPASSWORD set for this endpoint.
    pub(super) fn with_env(&self, mut cmd: ToolCommand) -> ToolCommand {
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string())
            .env("PGAPPNAME", "strongbox-agent");
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd
    }
}

/// A tokio-postgres error as `Error::Database`, with a hint for the usual causes.
pub(super) fn pg_error(target: &str, e: &tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    let mut message = match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                m.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!(" (hint: {h})"));
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let text = s.to_string();
                if !m.contains(&text) {
                    m.push_str(&format!(": {text}"));
                }
                source = s.source();
            }
            m
        }
    };
    match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD => {
            message.push_str(" - check the password in the service's password_file or password_env")
        }
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => message
            .push_str(" - check the user name and that pg_hba.conf lets it connect from this host"),
        _ if e.as_db_error().is_none() && !e.is_closed() => message.push_str(
            " - check that the server runs and that host/port in the service's config are right",
        ),
        _ => {}
    }
    Error::Database {
        engine: "PostgreSQL",
        target: target.to_string(),
        message,
    }
}

/// `format(form, args…)`, composed by the server (`%I`, `%L` quote as it reads them).
pub(super) async fn compose(
    client: &Client,
    target: &str,
    form: &str,
    args: &[&str],
) -> Result<String> {
    client
        .query_one(
            "SELECT pg_catalog.format($1, VARIADIC $2::text[])",
            &[&form, &args],
        )
        .await
        .and_then(|row| row.try_get::<_, String>(0))
        .map_err(|e| pg_error(target, &e))
}
