//! `strongbox policy show|set`: the fleet policy (schedule, retention, lock, final backups,
//! jitter, concurrency) of the region default or of one service.
//!
//! Unset fields inherit: a service's from the region default, the region default's from the
//! built-in defaults. `show` prints each field's effective value and where it comes from.
//!
//! Invariants: `set` sends only the fields given (proto3 optional fields), so nothing else
//! changes; a change that would delete backups is applied only with `--yes` (the coordinators
//! refuse it otherwise and list what it would delete, which we print before failing); durations
//! are read and written in the coordinators' own format (`30d`, `12h`, `1h30m`, `45s`, `0`).

use anyhow::bail;
use serde_json::Value;
use strongbox_proto::v1::{
    BackupInfo, GetPolicyRequest, GetPolicyResponse, PolicyInfo, SetPolicyRequest,
};

use crate::connect::{Api, ConnectArgs};
use crate::output::{self, ago, size, Output};

use strongbox_core::durations::{format as format_duration_ms, parse as parse_duration_ms};
#[cfg(test)]
use strongbox_core::durations::{DAY_MS, MINUTE_MS};

#[derive(clap::Subcommand)]
pub enum Command {
    /// The policy of the region default (or of one service): every field, its effective value
    /// and where it comes from.
    Show {
        /// A service's policy (default: the region default every service inherits from).
        #[arg(long)]
        service: Option<String>,
    },
    /// Change the policy of the region default (or of one service); only the fields given
    /// change. A change that would delete backups lists them and needs --yes.
    Set(SetArgs),
}

#[derive(clap::Args, Debug, Default)]
pub struct SetArgs {
    /// Set a service's own policy (default: the region default every service inherits from).
    #[arg(long)]
    pub service: Option<String>,
    /// When scheduled backups run: `every 24h`, `every 1h`, `daily 02:00 UTC` (or another time
    /// zone, e.g. `daily 01:30 Europe/Helsinki`), or `none`.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Keep the newest scheduled backup of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub hourly: Option<u32>,
    /// Keep the newest scheduled backup of each of the last N days (UTC).
    #[arg(long, value_name = "N")]
    pub daily: Option<u32>,
    /// Keep the newest scheduled backup of each of the last N months.
    #[arg(long, value_name = "N")]
    pub monthly: Option<u32>,
    /// Keep the newest scheduled backup of each of the last N years.
    #[arg(long, value_name = "N")]
    pub yearly: Option<u32>,
    /// Keep no scheduled backup older than this (`30d`, `12h`, `90m`, `45s`); `none` or `0`: no
    /// limit.
    #[arg(long, value_name = "DUR", value_parser = parse_duration_ms)]
    pub max_age: Option<u64>,
    /// Nobody can purge a backup younger than N days, and retention keeps it (0: no lock).
    #[arg(long, value_name = "N")]
    pub lock_days: Option<u32>,
    /// Retention never expires the N newest completed backups of a service, whatever the rules,
    /// failures or clocks say (at least 1; default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub min_keep: Option<u32>,
    /// Take a final backup when a service is deprovisioned, and keep it until purged.
    #[arg(long, value_name = "true|false")]
    pub keep_final: Option<bool>,
    /// Spread the scheduled starts of the fleet over this window (`30m`; `0`: all at once).
    #[arg(long, value_name = "DUR", value_parser = parse_duration_ms)]
    pub jitter: Option<u64>,
    /// At most N backups of the region run at once (a region setting: not with --service).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u32>,
    /// Drop every field set at this level first (then apply the fields given, if any), so that
    /// the level inherits again.
    #[arg(long)]
    pub reset: bool,
    /// Confirm a change that deletes backups the new policy no longer keeps.
    #[arg(long)]
    pub yes: bool,
}

// ------------------------------------------------------------------------------ printing

/// `policy show` as JSON for scripts (its view, `views::policy`).
pub fn response_json(r: &GetPolicyResponse) -> Value {
    serde_json::to_value(crate::views::policy::PolicyShowView::from(r)).unwrap_or(Value::Null)
}

/// The rows of `policy show`: (field, effective value, where it comes from). Field names are
/// the `policy set` flags.
pub fn policy_rows(r: &GetPolicyResponse) -> Vec<[String; 3]> {
    let empty = PolicyInfo::default();
    let stored = r.stored.as_ref().unwrap_or(&empty);
    let eff = r.effective.as_ref().unwrap_or(&empty);
    let from = |set: bool| {
        if set {
            "this level"
        } else if r.service.is_empty() {
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
            eff.schedule.clone().unwrap_or_else(|| "-".into()),
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
            if r.service.is_empty() {
                from(stored.max_concurrent.is_some())
            } else {
                "region default".to_string()
            },
        ],
    ]
}

/// Prints a policy: a table of its fields, or JSON.
pub fn print_policy(r: &GetPolicyResponse, output: Output) {
    match output {
        Output::Json => output.json(&response_json(r)),
        Output::Table => {
            if r.service.is_empty() {
                println!(
                    "Policy of the region default (services inherit the fields they do not set):"
                );
            } else {
                println!("Policy of service {}:", r.service);
            }
            let mut t = output::table(["field", "value", "from"]);
            for row in policy_rows(r) {
                t.add_row(row);
            }
            println!("{t}");
        }
    }
}

/// The backups a policy change expires, as a table.
fn print_expiring(backups: &[BackupInfo]) {
    let mut t = output::table(["created", "id", "service", "kind", "size"]);
    for b in backups {
        t.add_row([
            ago(b.created_unix_ms),
            b.id.clone(),
            b.service.clone(),
            b.kind().to_string(),
            size(b.plain_bytes),
        ]);
    }
    println!("{t}");
}

// ------------------------------------------------------------------------------ set

/// The request for `policy set`: only the fields given are set. Refuses an empty change and a
/// service-level `max_concurrent` (a region setting).
pub fn set_request(a: &SetArgs) -> anyhow::Result<SetPolicyRequest> {
    let service = a.service.clone().unwrap_or_default();
    if let Some(s) = &a.schedule {
        if s.trim().is_empty() {
            bail!("--schedule is empty: use `every 24h`, `every 1h`, `daily 02:00 UTC` or `none`");
        }
    }
    let policy = PolicyInfo {
        schedule: a.schedule.as_ref().map(|s| s.trim().to_string()),
        hourly: a.hourly,
        daily: a.daily,
        monthly: a.monthly,
        yearly: a.yearly,
        max_age_ms: a.max_age,
        lock_days: a.lock_days,
        keep_final: a.keep_final,
        jitter_ms: a.jitter,
        max_concurrent: a.max_concurrent,
        min_keep: a.min_keep,
    };
    if policy == PolicyInfo::default() && !a.reset {
        bail!(
            "nothing to change: give at least one of --schedule, --hourly, --daily, --monthly, --yearly, --max-age, --lock-days, --min-keep, --keep-final, --jitter, --max-concurrent, or --reset (`strongbox policy show` shows the policy now)"
        );
    }
    if !service.is_empty() && policy.max_concurrent.is_some() {
        bail!("--max-concurrent is a region setting: set it without --service");
    }
    Ok(SetPolicyRequest {
        service,
        policy: Some(policy),
        reset: a.reset,
        yes: a.yes,
    })
}

fn plural_backups(n: usize) -> String {
    format!("{n} backup(s)")
}

async fn get(api: &Api, service: String) -> anyhow::Result<GetPolicyResponse> {
    api.call("GetPolicy", |mut c| {
        let service = service.clone();
        async move { c.get_policy(GetPolicyRequest { service }).await }
    })
    .await
}

/// The effective `keep_final` of a service, if the coordinators answer.
pub async fn keeps_final(api: &Api, service: &str) -> Option<bool> {
    get(api, service.to_string())
        .await
        .ok()
        .and_then(|r| r.effective.and_then(|p| p.keep_final))
}

pub async fn run(cmd: Command, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    match cmd {
        Command::Show { service } => {
            let api = Api::new(conn)?;
            let r = get(&api, service.unwrap_or_default()).await?;
            print_policy(&r, output);
        }
        Command::Set(args) => {
            let req = set_request(&args)?;
            let api = Api::new(conn)?;
            let r = api
                .call("SetPolicy", |mut c| {
                    let req = req.clone();
                    async move { c.set_policy(req).await }
                })
                .await?;
            let n = r.would_expire.len();
            if output == Output::Json {
                output.json(
                    &serde_json::to_value(crate::views::policy::PolicySetView::from(&r))
                        .unwrap_or(Value::Null),
                );
            }
            if !r.applied {
                if output == Output::Table {
                    print_expiring(&r.would_expire);
                }
                bail!(
                    "This policy would delete {}. Nothing was changed; run again with --yes to apply.",
                    plural_backups(n)
                );
            }
            if output == Output::Table {
                if n > 0 {
                    println!(
                        "Deleted {} that the new policy no longer keeps; their chunks go at the next GC.",
                        plural_backups(n)
                    );
                    print_expiring(&r.would_expire);
                    println!();
                }
                match &r.policy {
                    Some(p) => print_policy(p, output),
                    None => print_policy(&get(&api, req.service.clone()).await?, output),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let rows = policy_rows(&r);
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
        let rows = policy_rows(&region);
        assert_eq!(rows[5], ["max-age", "none", "built-in default"]);
        assert_eq!(rows[9], ["jitter", "0", "this level"]);
    }

    #[test]
    fn set_sends_only_the_fields_given() {
        let req = set_request(&SetArgs {
            service: Some("orders".into()),
            daily: Some(7),
            max_age: Some(0),
            keep_final: Some(false),
            yes: true,
            ..Default::default()
        })
        .expect("a change");
        assert_eq!(req.service, "orders");
        assert!(req.yes && !req.reset);
        assert_eq!(
            req.policy,
            Some(PolicyInfo {
                daily: Some(7),
                max_age_ms: Some(0),
                keep_final: Some(false),
                ..Default::default()
            })
        );

        assert!(
            set_request(&SetArgs::default()).is_err(),
            "nothing to change"
        );
        let reset = set_request(&SetArgs {
            reset: true,
            ..Default::default()
        })
        .expect("a reset alone is a change");
        assert!(reset.reset && reset.service.is_empty());
        assert!(set_request(&SetArgs {
            service: Some("orders".into()),
            max_concurrent: Some(2),
            ..Default::default()
        })
        .is_err());
        assert!(set_request(&SetArgs {
            schedule: Some("  ".into()),
            ..Default::default()
        })
        .is_err());
    }
}
