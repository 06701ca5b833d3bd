//! What a service is, as the agent's config names it: its engine ([`EngineKind`], by the names
//! operators use) and how to reach its server or file ([`ServiceSpec`]).
//!
//! Invariant: a password is read from its file or environment variable when needed, never kept
//! in the spec, and never in an error.

use std::path::PathBuf;

use serde::Deserialize;
use strongbox_proto::v1::Engine as WireEngine;

use crate::error::{Error, Result};

/// The engines strongbox backs up. In a config, the names operators use are taken, in any
/// case: `postgres`, `postgresql`, `pg`; `mariadb`, `mysql`; `sqlite`, `sqlite3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum EngineKind {
    Postgres,
    /// MariaDB or MySQL.
    Mysql,
    Sqlite,
}

impl EngineKind {
    /// The engine as the wire names it.
    pub fn wire(self) -> WireEngine {
        match self {
            EngineKind::Postgres => WireEngine::Postgres,
            EngineKind::Mysql => WireEngine::Mysql,
            EngineKind::Sqlite => WireEngine::Sqlite,
        }
    }

    /// The engine a wire value names (`None`: unset).
    pub fn from_wire(engine: WireEngine) -> Option<Self> {
        match engine {
            WireEngine::Postgres => Some(EngineKind::Postgres),
            WireEngine::Mysql => Some(EngineKind::Mysql),
            WireEngine::Sqlite => Some(EngineKind::Sqlite),
            WireEngine::Unspecified => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.wire().word()
    }

    /// An engine's name as people write it (`postgresql`, `MariaDB`, `sqlite3`, …).
    pub fn parse(s: &str) -> Option<Self> {
        WireEngine::from_word(s).and_then(EngineKind::from_wire)
    }
}

impl serde::Serialize for EngineKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl TryFrom<String> for EngineKind {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        EngineKind::parse(&s).ok_or_else(|| {
            format!(
                "unknown engine {s:?}: use postgres (or postgresql), mariadb (or mysql), or sqlite"
            )
        })
    }
}

/// One `[[service]]` table of the agent's config: a database server (or SQLite file) on this
/// host, and how to reach it.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name, shared by every member of it across hosts.
    pub name: String,
    pub engine: EngineKind,
    /// PostgreSQL/MariaDB: host name or address (or a socket directory/file path for a local
    /// socket). Default: the engine's default local socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The user to connect as (PostgreSQL default `postgres`, MariaDB default `root`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A file whose first line is the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Databases to back up; empty means every database (except templates and system schemas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Folder of the engine's tools; default: PATH, then `/usr/lib/postgresql/*/bin` (newest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<PathBuf>,
    /// SQLite: the database file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl ServiceSpec {
    /// Service `name` of `engine`, every other setting unset (its default).
    pub fn new(name: impl Into<String>, engine: EngineKind) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            engine,
            host: None,
            port: None,
            user: None,
            password_file: None,
            password_env: None,
            databases: Vec::new(),
            bin_dir: None,
            path: None,
        }
    }

    /// The password, read from `password_file` or `password_env` (None when neither is set).
    pub fn password(&self) -> Result<Option<String>> {
        if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
                what: "reading the password file",
                path: file.clone(),
                source,
            })?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(Error::Config {
                    service: self.name.clone(),
                    message: format!("environment variable `{var}` (password_env) is not set"),
                }),
            };
        }
        Ok(None)
    }
}
