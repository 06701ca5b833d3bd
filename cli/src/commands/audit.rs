//! `strongbox audit list`: the operator changes the catalog recorded (restores, purges, policy,
//! holds), newest first, each with the certificate identity that made it.
//!
//! Invariant: read-only; entries are printed as the coordinators return them (newest first).

use crate::grammar::audit::*;
use strongbox_proto::v1::ListAuditRequest;

use crate::connect::Api;
use crate::grammar::ConnectArgs;
use crate::output::Output;
use crate::views::audit::{self, AuditEntryView};

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
            let views: Vec<AuditEntryView<'_>> = entries.iter().map(AuditEntryView::from).collect();
            match output {
                Output::Json => output.json(&views),
                Output::Table => {
                    if views.is_empty() {
                        println!("No audit entries yet.");
                        return Ok(());
                    }
                    let now = strongbox_core::clock::now_ms();
                    println!("{}", audit::table(&views, now));
                }
            }
        }
    }
    Ok(())
}
