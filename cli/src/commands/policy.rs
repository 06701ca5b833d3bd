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

use crate::grammar::policy::*;
use anyhow::bail;
use strongbox_proto::v1::{GetPolicyRequest, GetPolicyResponse, PolicyInfo, SetPolicyRequest};

use crate::connect::Api;
use crate::grammar::ConnectArgs;
use crate::output::Output;
use crate::views::backup::BackupView;
use crate::views::policy::{self, PolicySetView, PolicyShowView};

// ------------------------------------------------------------------------------ printing

/// Prints a policy: a table of its fields (with whose policy it is), or JSON.
pub fn print_policy(r: &GetPolicyResponse, output: Output) {
    let view = PolicyShowView::from(r);
    match output {
        Output::Json => output.json(&view),
        Output::Table => {
            println!("{}", view.heading());
            println!("{}", view.table());
        }
    }
}

/// Prints the backups a policy change expires (or would), as a table.
fn print_expiring(backups: &[BackupView<'_>]) {
    println!(
        "{}",
        policy::expiring_table(backups, strongbox_core::clock::now_ms())
    );
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
            let view = PolicySetView::from(&r);
            let n = view.would_expire.len();
            output.json(&view);
            if !view.applied {
                if output == Output::Table {
                    print_expiring(&view.would_expire);
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
                    print_expiring(&view.would_expire);
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
