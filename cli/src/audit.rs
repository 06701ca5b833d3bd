//! `strongbox audit list`: the operator changes the catalog recorded (restores, purges, policy,
//! holds), newest first, each with the certificate identity that made it.
//!
//! Invariant: read-only; entries are printed as the coordinators return them (newest first).

use serde_json::{json, Value};
use strongbox_proto::v1::ListAuditRequest;

use crate::connect::{Api, ConnectArgs};
use crate::output::{self, ago, Output};

#[derive(clap::Subcommand)]
pub enum Command {
    /// The newest audit entries.
    List {
        /// How many entries (newest first).
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}

pub async fn run(cmd: Command, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        Command::List { limit } => {
            let entries = api
                .call("ListAudit", |mut c| async move {
                    c.list_audit(ListAuditRequest { limit }).await
                })
                .await?
                .entries;
            match output {
                Output::Json => output.json(&Value::Array(
                    entries
                        .iter()
                        .map(|e| {
                            json!({
                                "index": e.index,
                                "unix_ms": e.unix_ms,
                                "time": output::timestamp(e.unix_ms),
                                "actor": e.actor,
                                "what": e.what,
                            })
                        })
                        .collect(),
                )),
                Output::Table => {
                    if entries.is_empty() {
                        println!("No audit entries yet.");
                        return Ok(());
                    }
                    let mut t = output::table(["when", "index", "actor", "what"]);
                    for e in &entries {
                        t.add_row([
                            ago(e.unix_ms),
                            e.index.to_string(),
                            e.actor.clone(),
                            e.what.clone(),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
    }
    Ok(())
}
