//! A policy as scripts see it (`policy show`, `policy set`): what is stored at one level and
//! what is in effect there, every field `null` where unset; and what people see drawn from
//! the same structs: the table of the fields in effect and where each comes from, and the
//! table of the backups a change expires.

use comfy_table::Table;
use serde::Serialize;
use strongbox_core::durations::format as format_duration_ms;
use strongbox_proto::v1::{GetPolicyResponse, PolicyInfo, SetPolicyResponse};

use super::backup::BackupView;
use crate::output;

/// One level's policy: every field, `null` where unset (units in the names).
#[derive(Serialize, Default)]
pub struct PolicyView<'a> {
    pub schedule: Option<&'a str>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub max_age_ms: Option<u64>,
    pub lock_days: Option<u32>,
    pub min_keep: Option<u32>,
    pub keep_final: Option<bool>,
    pub jitter_ms: Option<u64>,
    pub max_concurrent: Option<u32>,
}

/// `policy show`: the service (empty: the region default), what is stored at its level, and
/// what is in effect after inheritance.
#[derive(Serialize)]
pub struct PolicyShowView<'a> {
    pub service: &'a str,
    pub stored: Option<PolicyView<'a>>,
    pub effective: Option<PolicyView<'a>>,
}

/// `policy set`: whether it applied, the backups it expires (or would), the policy after.
#[derive(Serialize)]
pub struct PolicySetView<'a> {
    pub applied: bool,
    pub would_expire: Vec<BackupView<'a>>,
    pub policy: Option<PolicyShowView<'a>>,
}

impl<'a> From<&'a PolicyInfo> for PolicyView<'a> {
    fn from(p: &'a PolicyInfo) -> Self {
        PolicyView {
            schedule: p.schedule.as_deref(),
            hourly: p.hourly,
            daily: p.daily,
            monthly: p.monthly,
            yearly: p.yearly,
            max_age_ms: p.max_age_ms,
            lock_days: p.lock_days,
            min_keep: p.min_keep,
            keep_final: p.keep_final,
            jitter_ms: p.jitter_ms,
            max_concurrent: p.max_concurrent,
        }
    }
}

impl<'a> From<&'a GetPolicyResponse> for PolicyShowView<'a> {
    fn from(r: &'a GetPolicyResponse) -> Self {
        PolicyShowView {
            service: &r.service,
            stored: r.stored.as_ref().map(PolicyView::from),
            effective: r.effective.as_ref().map(PolicyView::from),
        }
    }
}

impl<'a> From<&'a SetPolicyResponse> for PolicySetView<'a> {
    fn from(r: &'a SetPolicyResponse) -> Self {
        PolicySetView {
            applied: r.applied,
            would_expire: r
                .would_expire
                .iter()
                .map(BackupView::from)
                .collect::<Vec<_>>(),
            policy: r.policy.as_ref().map(PolicyShowView::from),
        }
    }
}

impl PolicyShowView<'_> {
    /// The line above the table: whose policy it is.
    pub fn heading(&self) -> String {
        if self.service.is_empty() {
            "Policy of the region default (services inherit the fields they do not set):"
                .to_string()
        } else {
            format!("Policy of service {}:", self.service)
        }
    }

    /// The rows of `policy show`: (field, effective value, where it comes from). Field names
    /// are the `policy set` flags.
    pub fn rows(&self) -> Vec<[String; 3]> {
        let empty = PolicyView::default();
        let stored = self.stored.as_ref().unwrap_or(&empty);
        let eff = self.effective.as_ref().unwrap_or(&empty);
        let from = |set: bool| {
            if set {
                "this level"
            } else if self.service.is_empty() {
                "built-in default"
            } else {
                "inherited"
            }
            .to_string()
        };
        let num = |v: Option<u32>| v.map_or("-".to_string(), |n| n.to_string());
        let dur = |v: Option<u64>, zero: &str| {
            v.map_or("-".to_string(), |ms| {
                if ms == 0 {
                    zero.to_string()
                } else {
                    format_duration_ms(ms)
                }
            })
        };
        vec![
            [
                "schedule".into(),
                eff.schedule.unwrap_or("-").to_string(),
                from(stored.schedule.is_some()),
            ],
            [
                "hourly".into(),
                num(eff.hourly),
                from(stored.hourly.is_some()),
            ],
            ["daily".into(), num(eff.daily), from(stored.daily.is_some())],
            [
                "monthly".into(),
                num(eff.monthly),
                from(stored.monthly.is_some()),
            ],
            [
                "yearly".into(),
                num(eff.yearly),
                from(stored.yearly.is_some()),
            ],
            [
                "max-age".into(),
                dur(eff.max_age_ms, "none"),
                from(stored.max_age_ms.is_some()),
            ],
            [
                "lock-days".into(),
                num(eff.lock_days),
                from(stored.lock_days.is_some()),
            ],
            [
                "min-keep".into(),
                num(eff.min_keep),
                from(stored.min_keep.is_some()),
            ],
            [
                "keep-final".into(),
                eff.keep_final.map_or("-".to_string(), |b| b.to_string()),
                from(stored.keep_final.is_some()),
            ],
            [
                "jitter".into(),
                dur(eff.jitter_ms, "0"),
                from(stored.jitter_ms.is_some()),
            ],
            [
                "max-concurrent".into(),
                num(eff.max_concurrent),
                if self.service.is_empty() {
                    from(stored.max_concurrent.is_some())
                } else {
                    "region default".to_string()
                },
            ],
        ]
    }

    /// The table of [`Self::rows`].
    pub fn table(&self) -> Table {
        let mut t = output::table(["field", "value", "from"]);
        for row in self.rows() {
            t.add_row(row);
        }
        t
    }
}

/// The backups a policy change expires (or would), as a table; times seen from `now_ms`.
pub fn expiring_table(backups: &[BackupView<'_>], now_ms: u64) -> Table {
    let mut t = output::table(["created", "id", "service", "kind", "size"]);
    for b in backups {
        t.add_row([
            output::relative(b.created_unix_ms, now_ms),
            b.id.to_string(),
            b.service.to_string(),
            b.kind.to_string(),
            output::size(b.plain_bytes),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_core::durations::{DAY_MS, MINUTE_MS};

    fn full() -> PolicyInfo {
        PolicyInfo {
            schedule: Some("every 24h".into()),
            hourly: Some(24),
            daily: Some(30),
            monthly: Some(12),
            yearly: Some(6),
            max_age_ms: Some(0),
            lock_days: Some(0),
            keep_final: Some(true),
            jitter_ms: Some(30 * MINUTE_MS),
            max_concurrent: Some(4),
            min_keep: Some(1),
        }
    }

    #[test]
    fn rows_say_where_each_value_comes_from() {
        let r = GetPolicyResponse {
            service: "orders".into(),
            stored: Some(PolicyInfo {
                daily: Some(7),
                max_age_ms: Some(90 * DAY_MS),
                ..Default::default()
            }),
            effective: Some(PolicyInfo {
                daily: Some(7),
                max_age_ms: Some(90 * DAY_MS),
                ..full()
            }),
        };
        let rows = PolicyShowView::from(&r).rows();
        let row = |name: &str| {
            rows.iter()
                .find(|r| r[0] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no row {name}"))
        };
        assert_eq!(row("schedule"), ["schedule", "every 24h", "inherited"]);
        assert_eq!(row("daily"), ["daily", "7", "this level"]);
        assert_eq!(row("max-age"), ["max-age", "90d", "this level"]);
        assert_eq!(row("jitter"), ["jitter", "30m", "inherited"]);
        assert_eq!(row("keep-final"), ["keep-final", "true", "inherited"]);
        assert_eq!(
            row("max-concurrent"),
            ["max-concurrent", "4", "region default"]
        );
        assert_eq!(row("hourly"), ["hourly", "24", "inherited"]);
        assert_eq!(row("min-keep"), ["min-keep", "1", "inherited"]);
        assert_eq!(rows.len(), 11);

        let region = GetPolicyResponse {
            service: String::new(),
            stored: Some(PolicyInfo {
                jitter_ms: Some(0),
                ..Default::default()
            }),
            effective: Some(PolicyInfo {
                jitter_ms: Some(0),
                ..full()
            }),
        };
        let rows = PolicyShowView::from(&region).rows();
        assert_eq!(rows[5], ["max-age", "none", "built-in default"]);
        assert_eq!(rows[9], ["jitter", "0", "this level"]);

        let nothing = PolicyShowView::from(&GetPolicyResponse::default()).rows();
        assert_eq!(nothing[0], ["schedule", "-", "built-in default"]);
    }
}
