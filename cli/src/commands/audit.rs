//! `strongbox audit list`: the operator changes the catalog recorded (restores, purges, policy,
//! holds), newest first, each with the certificate identity that made it.
//!
//! Invariant: read-only; entries are printed as the coordinators return them (newest first).

use crate::grammar::audit::*;
use strongbox_proto::v1::ListAuditRequest;

use crate::commands::pages::{print_list, Fetched};
use crate::connect::Api;
use crate::grammar::ConnectArgs;
use crate::output::Output;
use crate::views::audit::{self, AuditEntryView};

pub async fn run(cmd: Command, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        Command::List { page } => {
            let now = strongbox_core::clock::now_ms();
            print_list(
                output,
                page.wanted(output == Output::Json),
                |p| {
                    let api = &api;
                    async move {
                        let r = api
                            .call("ListAudit", |mut c| {
                                let page = Some(p.clone());
                                async move { c.list_audit(ListAuditRequest { page }).await }
                            })
                            .await?;
                        Ok(Fetched {
                            items: r.entries,
                            next: r.next_page_token,
                        })
                    }
                },
                |printer, entries| {
                    let views: Vec<AuditEntryView<'_>> =
                        entries.iter().map(AuditEntryView::from).collect();
                    printer.page(&views, |v| audit::table(v, now));
                },
                "No audit entries yet.",
                "audit entries, newest first",
            )
            .await?;
        }
    }
    Ok(())
}
