//! Verifying a server after a load: exact row counts of the restored databases' tables
//! (history included for system-versioned ones, as their dumps carry it) and `mariadb-check`.
//!
//! Invariant: verification reads; it counts and checks only the databases it is given (in
//! place: those of the backup).

use std::collections::HashMap;

use crate::error::Result;

use super::load::Loader;
use super::quote::{quote_ident, unhex};

impl Loader {
    /// Exact row counts (`<db>.<table>`) of the base tables of the databases `include` says
    /// yes to (system databases never).
    pub(super) async fn count(
        &self,
        include: impl Fn(&str) -> bool,
    ) -> Result<HashMap<String, u64>> {
        let tables = self
            .ep
            .query(
                &self.tools,
                "SELECT HEX(TABLE_SCHEMA), HEX(TABLE_NAME), TABLE_TYPE FROM information_schema.TABLES \
                 WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND TABLE_SCHEMA NOT IN \
                 ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2",
            )
            .await?;
        let mut names = Vec::new();
        let mut script = String::new();
        for (i, r) in tables.iter().enumerate() {
            if r.len() < 3 {
                continue;
            }
            let (db, table) = (unhex(&r[0])?, unhex(&r[1])?);
            if !include(&db) {
                continue;
            }
            // A system-versioned table counts its history too, as its dump does.
            let history = if r[2] == "SYSTEM VERSIONED" {
                " FOR SYSTEM_TIME ALL"
            } else {
                ""
            };
            script.push_str(&format!(
                "SELECT {i}, COUNT(*) FROM {}.{}{history};\n",
                quote_ident(&db),
                quote_ident(&table)
            ));
            names.push((i, format!("{db}.{table}")));
        }
        let mut found: HashMap<String, u64> = HashMap::new();
        if !script.is_empty() {
            let counts: HashMap<usize, u64> = self
                .ep
                .query(&self.tools, &script)
                .await?
                .iter()
                .filter_map(|r| Some((r.first()?.parse().ok()?, r.get(1)?.parse().ok()?)))
                .collect();
            for (i, name) in names {
                if let Some(n) = counts.get(&i) {
                    found.insert(name, *n);
                }
            }
        }
        Ok(found)
    }

    /// `mariadb-check` over every database (`None`) or over `databases`: (ok, what it said,
    /// plus the object-level grants that found no database).
    pub(super) async fn check(&self, databases: Option<&[String]>) -> Result<(bool, String)> {
        let (ok, mut text) = self.run_check(databases).await?;
        if !self.waiting_grants.is_empty() {
            let dbs: Vec<&str> = self
                .waiting_grants
                .iter()
                .map(|(d, _)| d.as_str())
                .collect();
            text.push_str(&format!(
                "\nobject-level grants on databases not in this restore were not applied: {dbs:?}"
            ));
        }
        Ok((ok, text))
    }

    async fn run_check(&self, databases: Option<&[String]>) -> Result<(bool, String)> {
        let tool = match self.tools.path(&["mariadb-check", "mysqlcheck"]) {
            Ok(t) => t,
            Err(e) => return Ok((false, format!("mariadb-check could not run: {e}"))),
        };
        let mut cmd = self.ep.command(&tool);
        cmd.arg("--silent");
        match databases {
            None => {
                cmd.arg("--all-databases");
            }
            Some([]) => return Ok((true, "mariadb-check: no databases restored".to_string())),
            Some(dbs) => {
                // After `--`, every name is a database, even `-Ah2130706434`.
                cmd.args(["--databases", "--"]).args(dbs);
            }
        }
        let out = cmd.capture().await?;
        let text = out.stdout.trim().to_string();
        if out.success && text.is_empty() {
            Ok((true, "mariadb-check: all tables OK".to_string()))
        } else {
            Ok((
                false,
                format!("mariadb-check ({}): {text}\n{}", out.status, out.stderr),
            ))
        }
    }
}
