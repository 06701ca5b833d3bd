//! A backup as scripts see it (`backup list`, `backup show`, the backups a policy change
//! would expire).

use serde::Serialize;
use strongbox_proto::v1::{BackupInfo, BackupKind, BackupState, FailureClass};

use super::job::JobView;
use super::rfc3339;
use crate::output::{self, Fields};

#[derive(Serialize)]
pub struct BackupView<'a> {
    pub id: &'a str,
    pub service: &'a str,
    pub host: &'a str,
    pub kind: BackupKind,
    pub state: BackupState,
    pub reason: &'a str,
    pub failure: FailureClass,
    pub created_unix_ms: u64,
    pub created: Option<String>,
    pub completed_unix_ms: u64,
    pub completed: Option<String>,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
    pub chunk_count: u64,
    pub table_count: u64,
    /// The sealed manifest's name in the chunk store, 64 hex digits.
    pub manifest_id: String,
    pub held: bool,
    pub hold_reason: &'a str,
    /// Why retention keeps it now (`daily 2026-11-20`, `manual`, `hold`); empty: expiring.
    pub kept_because: &'a str,
    pub expires_unix_ms: u64,
    pub expires: Option<String>,
    pub locked_until_unix_ms: u64,
    pub locked_until: Option<String>,
}

impl<'a> From<&'a BackupInfo> for BackupView<'a> {
    fn from(b: &'a BackupInfo) -> Self {
        BackupView {
            id: &b.id,
            service: &b.service,
            host: &b.host,
            kind: b.kind(),
            state: b.state(),
            reason: &b.reason,
            failure: b.failure(),
            created_unix_ms: b.created_unix_ms,
            created: rfc3339(b.created_unix_ms),
            completed_unix_ms: b.completed_unix_ms,
            completed: rfc3339(b.completed_unix_ms),
            plain_bytes: b.plain_bytes,
            stored_bytes: b.stored_bytes,
            chunk_count: b.chunk_count,
            table_count: b.table_count,
            manifest_id: hex::encode(&b.manifest_id),
            held: b.held,
            hold_reason: &b.hold_reason,
            kept_because: &b.kept_because,
            expires_unix_ms: b.expires_unix_ms,
            expires: rfc3339(b.expires_unix_ms),
            locked_until_unix_ms: b.locked_until_unix_ms,
            locked_until: rfc3339(b.locked_until_unix_ms),
        }
    }
}

/// `backup show`: the backup, and its manifest's contents when a key file opened it.
#[derive(Serialize)]
pub struct BackupShowView<'a> {
    #[serde(flatten)]
    pub backup: BackupView<'a>,
    /// Absent without `--key-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<super::manifest::ManifestView<'a>>,
}

/// `backup create` and `service deprovision`: the job, and the backup it made once it ended
/// (`null` without `--wait`, or when it made none).
#[derive(Serialize)]
pub struct BackupJobView<'a> {
    pub job: JobView<'a>,
    pub backup: Option<BackupView<'a>>,
}

/// `backup purge`: the backup deleted.
#[derive(Serialize)]
pub struct PurgedView<'a> {
    pub purged: &'a str,
}

impl BackupView<'_> {
    /// The `keep` column of `backup list`: "hold", the first rule that keeps the backup
    /// ("daily 2026-11-20", "manual"), "expires in 3 days", or "-" (not completed, or nothing
    /// to say).
    pub fn keep_label(&self, now_ms: u64) -> String {
        if self.held {
            return "hold".to_string();
        }
        if let Some(first) = self
            .kept_because
            .split(',')
            .map(str::trim)
            .find(|r| !r.is_empty())
        {
            return first.to_string();
        }
        if self.expires_unix_ms != 0 {
            return if self.expires_unix_ms > now_ms {
                format!(
                    "expires {}",
                    output::relative_either(self.expires_unix_ms, now_ms)
                )
            } else {
                "expiring".to_string()
            };
        }
        "-".to_string()
    }

    /// The retention lines of `backup show`: why it is kept, when it expires, its hold, its
    /// lock.
    pub fn retention_fields(&self, now_ms: u64) -> Fields {
        let mut f = Fields::default();
        f.push_some("kept because", self.kept_because);
        // With rules keeping it: when the last of them stops; with none: now (it goes at the
        // next retention pass). 0: kept until deleted (manual, final, held).
        if self.expires_unix_ms != 0 {
            f.push("expires", output::at_from(self.expires_unix_ms, now_ms));
        }
        if self.held {
            f.push(
                "held",
                if self.hold_reason.is_empty() {
                    "yes".to_string()
                } else {
                    format!("yes ({})", self.hold_reason)
                },
            );
        }
        if self.locked_until_unix_ms > now_ms {
            f.push(
                "locked until",
                output::at_from(self.locked_until_unix_ms, now_ms),
            );
        }
        f
    }

    /// The lines of `backup show` for people (without its manifest).
    pub fn fields(&self, now_ms: u64) -> Fields {
        let mut f = Fields::default();
        f.push("id", self.id);
        f.push("service", self.service);
        f.push("host", self.host);
        f.push("kind", self.kind.to_string());
        f.push("state", self.state.to_string());
        f.push_some("reason", self.reason);
        f.push("created", output::at_from(self.created_unix_ms, now_ms));
        f.push("completed", output::at_from(self.completed_unix_ms, now_ms));
        f.push("size", output::size(self.plain_bytes));
        f.push("new", output::size(self.stored_bytes));
        f.push("chunks", self.chunk_count.to_string());
        f.push("manifest", self.manifest_id.clone());
        f.extend(self.retention_fields(now_ms));
        f
    }
}

/// `backup list` for people, like `wrangler d1 backup list`: newest first as given, with a
/// service column when the backups are of several services.
pub fn table(backups: &[BackupView<'_>], now_ms: u64) -> comfy_table::Table {
    let services = backups
        .iter()
        .map(|b| b.service)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut header = vec!["created", "id"];
    if services > 1 {
        header.push("service");
    }
    header.extend(["kind", "state", "tables", "size", "new", "chunks", "keep"]);
    let mut t = output::table(header);
    for b in backups {
        let mut row = vec![
            output::relative(b.created_unix_ms, now_ms),
            b.id.to_string(),
        ];
        if services > 1 {
            row.push(b.service.to_string());
        }
        row.extend([
            b.kind.to_string(),
            b.state.to_string(),
            if b.state == BackupState::Completed {
                b.table_count.to_string()
            } else {
                "-".to_string()
            },
            output::size(b.plain_bytes),
            output::size(b.stored_bytes),
            b.chunk_count.to_string(),
            b.keep_label(now_ms),
        ]);
        t.add_row(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_column_says_why_or_when() {
        let now = 1_700_000_000_000;
        let b = |held: bool, kept: &str, expires: u64| BackupInfo {
            held,
            kept_because: kept.into(),
            expires_unix_ms: expires,
            ..Default::default()
        };
        assert_eq!(
            BackupView::from(&b(true, "hold", 0)).keep_label(now),
            "hold"
        );
        assert_eq!(BackupView::from(&b(true, "", 0)).keep_label(now), "hold");
        assert_eq!(
            BackupView::from(&b(false, "daily 2023-11-14, monthly 2023-11", now + 1))
                .keep_label(now),
            "daily 2023-11-14"
        );
        assert_eq!(
            BackupView::from(&b(false, "manual", 0)).keep_label(now),
            "manual"
        );
        assert_eq!(
            BackupView::from(&b(false, "", now + 3 * 86_400_000)).keep_label(now),
            "expires in 3 days"
        );
        assert_eq!(
            BackupView::from(&b(false, "", now - 1)).keep_label(now),
            "expiring"
        );
        assert_eq!(BackupView::from(&b(false, "", 0)).keep_label(now), "-");
    }

    #[test]
    fn retention_lines_of_show() {
        let now = 1_700_000_000_000;
        let keys = |b: &BackupInfo| -> Vec<String> {
            let f = BackupView::from(b).retention_fields(now).joined("\n");
            f.lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect()
        };
        let held = BackupInfo {
            held: true,
            hold_reason: "INC-42".into(),
            kept_because: "hold, daily 2023-11-14".into(),
            locked_until_unix_ms: now + 2 * 86_400_000,
            ..Default::default()
        };
        assert_eq!(
            keys(&held),
            [
                "kept because: hold, daily 2023-11-14",
                "held: yes (INC-42)",
                "locked until: 2023-11-16T22:13:20Z (in 2 days)",
            ]
        );
        let daily = BackupInfo {
            kept_because: "daily 2023-11-14".into(),
            expires_unix_ms: now + 30 * 86_400_000,
            ..Default::default()
        };
        assert_eq!(
            keys(&daily),
            [
                "kept because: daily 2023-11-14",
                "expires: 2023-12-14T22:13:20Z (in 1 month)",
            ]
        );
        let held = BackupInfo {
            held: true,
            ..Default::default()
        };
        assert_eq!(keys(&held), ["held: yes"]);
        let expiring = BackupInfo {
            expires_unix_ms: now + 3_600_000,
            locked_until_unix_ms: now - 1,
            ..Default::default()
        };
        assert_eq!(
            keys(&expiring),
            ["expires: 2023-11-14T23:13:20Z (in 1 hour)"]
        );
        assert!(keys(&BackupInfo::default()).is_empty());
    }
}
