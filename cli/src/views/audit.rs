//! An audit entry as scripts see it (`audit list`): an operator change the catalog recorded,
//! when, and who made it; and the `audit list` table people see, drawn from the same struct.

use comfy_table::Table;
use serde::Serialize;
use strongbox_proto::v1::AuditEntry;

use super::rfc3339;
use crate::output;

#[derive(Serialize)]
pub struct AuditEntryView<'a> {
    /// Its place in the catalog's log.
    pub index: u64,
    pub unix_ms: u64,
    pub time: Option<String>,
    /// `role:name` of the certificate that made the change.
    pub actor: &'a str,
    pub what: &'a str,
}

impl<'a> From<&'a AuditEntry> for AuditEntryView<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        AuditEntryView {
            index: e.index,
            unix_ms: e.unix_ms,
            time: rfc3339(e.unix_ms),
            actor: &e.actor,
            what: &e.what,
        }
    }
}

/// The `audit list` table, in the entries' order, times seen from `now_ms`.
pub fn table(entries: &[AuditEntryView<'_>], now_ms: u64) -> Table {
    let mut t = output::table(["when", "index", "actor", "what"]);
    for e in entries {
        t.add_row([
            output::relative(e.unix_ms, now_ms),
            e.index.to_string(),
            // What an operator or an agent wrote, escaped: it cannot drive the terminal.
            output::printable(e.actor),
            output::printable(e.what),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_as_json_and_as_a_row() {
        let e = AuditEntry {
            index: 12,
            unix_ms: 1_700_000_000_000,
            actor: "operator:alice".into(),
            what: "hold b-1".into(),
        };
        let v = AuditEntryView::from(&e);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({
                "index": 12, "unix_ms": 1_700_000_000_000u64, "time": "2023-11-14T22:13:20Z",
                "actor": "operator:alice", "what": "hold b-1",
            })
        );
        let t = table(&[v], 1_700_000_000_000 + 120_000).to_string();
        assert!(
            t.contains("2 minutes ago") && t.contains("operator:alice"),
            "{t}"
        );
    }
}
