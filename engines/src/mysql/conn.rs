//! Reaching one server with the `mariadb` client ([`Endpoint`]): connection options from the
//! service's config (or a fresh server's socket), queries in batch mode, errors with a hint.
//!
//! Invariants: every client starts with `--no-defaults` (no `my.cnf` can redirect it) and in
//! `--binary-mode`; the password travels as `MYSQL_PWD` only; every script of ours starts with
//! [`SESSION_MODE`] and stops at its first error.

use std::path::Path;

use crate::error::{Error, Result};
use crate::process::ToolCommand;
use crate::ServiceSpec;

use super::quote::unescape_batch;
use super::{MyTools, SESSION_MODE, SUPERUSER};

/// How a client reaches one server.
#[derive(Clone)]
pub(super) struct Endpoint {
    /// Connection options (after `--no-defaults`).
    pub(super) args: Vec<String>,
    pub(super) password: Option<String>,
    /// For messages (never with a password).
    pub(super) target: String,
}

impl Endpoint {
    pub(super) fn for_spec(spec: &ServiceSpec) -> Result<Endpoint> {
        let user = spec.user.clone().unwrap_or_else(|| SUPERUSER.to_string());
        let mut args = Vec::new();
        let target = match &spec.host {
            Some(h) if h.starts_with('/') => {
                args.push("--protocol=SOCKET".to_string());
                args.push(format!("--socket={h}"));
                h.clone()
            }
            Some(h) => {
                let port = spec.port.unwrap_or(3306);
                args.push("--protocol=TCP".to_string());
                args.push(format!("--host={h}"));
                args.push(format!("--port={port}"));
                format!("{h}:{port}")
            }
            None => {
                if let Some(port) = spec.port {
                    args.push("--protocol=TCP".to_string());
                    args.push("--host=127.0.0.1".to_string());
                    args.push(format!("--port={port}"));
                    format!("127.0.0.1:{port}")
                } else {
                    "the default local socket".to_string()
                }
            }
        };
        args.push(format!("--user={user}"));
        Ok(Endpoint {
            args,
            password: spec.password()?,
            target: format!("{target} (user {user})"),
        })
    }

    pub(super) fn local(socket: &Path, password: Option<String>) -> Endpoint {
        Endpoint {
            args: vec![
                "--protocol=SOCKET".into(),
                format!("--socket={}", socket.display()),
                format!("--user={SUPERUSER}"),
            ],
            password,
            target: socket.display().to_string(),
        }
    }

    /// `program --no-defaults <connection options>`, with `MYSQL_PWD` when there is a password.
    pub(super) fn command(&self, program: &Path) -> ToolCommand {
        let mut cmd = ToolCommand::new(program);
        cmd.arg("--no-defaults").args(&self.args);
        if let Some(pw) = &self.password {
            cmd.env("MYSQL_PWD", pw);
        }
        cmd
    }

    /// The `mariadb` client for this endpoint (with a connect timeout, which only the client
    /// knows), in `--binary-mode`: it runs no client command but `DELIMITER` (no `\!`, no
    /// `source`), and passes statements on byte for byte (a `\r\n` inside a name stays).
    pub(super) fn client(&self, tools: &MyTools) -> Result<ToolCommand> {
        let mut cmd = self.command(&tools.client()?);
        cmd.args(["--connect-timeout=10", "--binary-mode"]);
        Ok(cmd)
    }

    /// Runs `sql` (after [`SESSION_MODE`]) with the client in batch mode, stopping at the
    /// first error; returns the rows, fields unescaped.
    pub(super) async fn query(&self, tools: &MyTools, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut cmd = self.client(tools)?;
        cmd.args(["-N", "-B"]);
        let out = cmd
            .capture_with_input(format!("{SESSION_MODE}{sql}").as_bytes())
            .await?;
        if !out.success {
            return Err(self.client_error(&out.stderr));
        }
        Ok(parse_rows(&out.stdout))
    }

    /// A failed client run as `Error::Database`, with a hint for the usual causes.
    pub(super) fn client_error(&self, stderr: &str) -> Error {
        let mut message = stderr.trim().to_string();
        if is_access_denied(stderr) {
            message.push_str(
                " - check the user and the password in the service's password_file or password_env",
            );
        } else if is_unreachable(stderr) {
            message.push_str(" - check that the server runs and that host/port/socket in the service's config are right");
        }
        Error::Database {
            engine: "MariaDB",
            target: self.target.clone(),
            message,
        }
    }
}

pub(super) fn parse_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(unescape_batch).collect())
        .collect()
}

pub(super) fn is_access_denied(stderr: &str) -> bool {
    ["ERROR 1045", "ERROR 1698", "ERROR 1044", "Access denied"]
        .iter()
        .any(|m| stderr.contains(m))
}

pub(super) fn is_unreachable(stderr: &str) -> bool {
    [
        "ERROR 2002",
        "ERROR 2003",
        "ERROR 2005",
        "ERROR 2013",
        "Can't connect",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}
