//! The policy that applies to a service: its own overrides over the region default over the
//! built-in defaults (Aptible's: every 24 h, 30 daily, 12 monthly, 6 yearly, final backups kept;
//! and 24 hourly, so the backups of an `every 1h` schedule stay a day).
//!
//! Invariant: every field of an [`Effective`] is set; a stored schedule that does not parse is
//! refused when it is set, so resolving never fails.

use strongbox_proto::catalog::Policy;

use super::schedule::Schedule;

pub const DEFAULT_SCHEDULE: &str = "every 24h";
/// Hourly keeps the sub-daily backups of `every 1h` for a day; daily-or-rarer schedules never
/// notice it.
pub const DEFAULT_HOURLY: u32 = 24;
pub const DEFAULT_DAILY: u32 = 30;
pub const DEFAULT_MONTHLY: u32 = 12;
pub const DEFAULT_YEARLY: u32 = 6;
pub const DEFAULT_KEEP_FINAL: bool = true;
/// Scheduled starts of a fleet spread over this window (per service, a fixed offset in it).
pub const DEFAULT_JITTER_MS: u64 = 30 * 60 * 1000;
pub const DEFAULT_MAX_CONCURRENT: u32 = 4;
/// Retention never expires a service's newest completed backup, whatever the rules, the clock
/// or the failures say (pgBackRest, Barman's `minimum_redundancy` and restic keep the last
/// good backups too).
pub const DEFAULT_MIN_KEEP: u32 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub schedule: Schedule,
    pub hourly: u32,
    pub daily: u32,
    pub monthly: u32,
    pub yearly: u32,
    /// 0: no maximum age.
    pub max_age_ms: u64,
    pub lock_days: u32,
    pub keep_final: bool,
    pub jitter_ms: u64,
    pub max_concurrent: u32,
    /// The newest completed backups retention never expires (at least 1).
    pub min_keep: u32,
}

impl Effective {
    pub fn lock_ms(&self) -> u64 {
        self.lock_days as u64 * super::time::DAY_MS
    }

    /// As a fully set `Policy`, for the API.
    pub fn to_policy(&self) -> Policy {
        Policy {
            schedule: Some(self.schedule.to_string()),
            hourly: Some(self.hourly),
            daily: Some(self.daily),
            monthly: Some(self.monthly),
            yearly: Some(self.yearly),
            max_age_ms: Some(self.max_age_ms),
            lock_days: Some(self.lock_days),
            keep_final: Some(self.keep_final),
            jitter_ms: Some(self.jitter_ms),
            max_concurrent: Some(self.max_concurrent),
            min_keep: Some(self.min_keep),
        }
    }
}

/// `top`'s set fields over `base`'s.
pub fn overlay(base: &Policy, top: &Policy) -> Policy {
    Policy {
        schedule: top.schedule.clone().or_else(|| base.schedule.clone()),
        hourly: top.hourly.or(base.hourly),
        daily: top.daily.or(base.daily),
        monthly: top.monthly.or(base.monthly),
        yearly: top.yearly.or(base.yearly),
        max_age_ms: top.max_age_ms.or(base.max_age_ms),
        lock_days: top.lock_days.or(base.lock_days),
        keep_final: top.keep_final.or(base.keep_final),
        jitter_ms: top.jitter_ms.or(base.jitter_ms),
        max_concurrent: top.max_concurrent.or(base.max_concurrent),
        min_keep: top.min_keep.or(base.min_keep),
    }
}

/// The effective policy of a service given the stored region default and the service's own
/// overrides (either may be absent). `max_concurrent` is the region's, whatever a service says.
pub fn resolve(region: Option<&Policy>, service: Option<&Policy>) -> Effective {
    let empty = Policy::default();
    let region = region.unwrap_or(&empty);
    let p = overlay(region, service.unwrap_or(&empty));
    let schedule = p
        .schedule
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| DEFAULT_SCHEDULE.parse().unwrap_or(Schedule::None));
    Effective {
        schedule,
        hourly: p.hourly.unwrap_or(DEFAULT_HOURLY),
        daily: p.daily.unwrap_or(DEFAULT_DAILY),
        monthly: p.monthly.unwrap_or(DEFAULT_MONTHLY),
        yearly: p.yearly.unwrap_or(DEFAULT_YEARLY),
        max_age_ms: p.max_age_ms.unwrap_or(0),
        lock_days: p.lock_days.unwrap_or(0),
        keep_final: p.keep_final.unwrap_or(DEFAULT_KEEP_FINAL),
        jitter_ms: p.jitter_ms.unwrap_or(DEFAULT_JITTER_MS),
        max_concurrent: region.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT),
        min_keep: p.min_keep.unwrap_or(DEFAULT_MIN_KEEP).max(1),
    }
}

/// The fields set in `p`, as `daily=7, lock_days=30`, for the audit log.
pub fn describe(p: &Policy) -> String {
    use strongbox_core::durations::format;
    let mut out = Vec::new();
    let mut num = |name: &str, v: Option<u32>| {
        if let Some(v) = v {
            out.push(format!("{name}={v}"));
        }
    };
    num("hourly", p.hourly);
    num("daily", p.daily);
    num("monthly", p.monthly);
    num("yearly", p.yearly);
    num("lock_days", p.lock_days);
    num("min_keep", p.min_keep);
    num("max_concurrent", p.max_concurrent);
    if let Some(s) = &p.schedule {
        out.insert(0, format!("schedule={s:?}"));
    }
    if let Some(ms) = p.max_age_ms {
        out.push(format!("max_age={}", format(ms)));
    }
    if let Some(ms) = p.jitter_ms {
        out.push(format!("jitter={}", format(ms)));
    }
    if let Some(k) = p.keep_final {
        out.push(format!("keep_final={k}"));
    }
    if out.is_empty() {
        "nothing".into()
    } else {
        out.join(", ")
    }
}

/// Checks a policy change before it is stored: the schedule parses, the numbers are sane.
pub fn validate(p: &Policy) -> Result<(), String> {
    if let Some(s) = &p.schedule {
        s.parse::<Schedule>()?;
    }
    for (name, v, max) in [
        ("hourly", p.hourly, 10_000),
        ("daily", p.daily, 10_000),
        ("monthly", p.monthly, 1_200),
        ("yearly", p.yearly, 100),
        ("lock_days", p.lock_days, 36_500),
        ("min_keep", p.min_keep, 10_000),
    ] {
        if v.is_some_and(|v| v > max) {
            return Err(format!("{name} is at most {max}"));
        }
    }
    if p.max_concurrent == Some(0) {
        return Err("max_concurrent must be at least 1".into());
    }
    if p.min_keep == Some(0) {
        return Err(
            "min_keep must be at least 1: retention always keeps a service's newest backup; \
             purge it by hand (`strongbox backup purge`) if it must go"
                .into(),
        );
    }
    if p.jitter_ms.is_some_and(|j| j > super::time::DAY_MS) {
        return Err("jitter is at most 24h".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_overrides_the_region_which_overrides_the_defaults() {
        let region = Policy {
            schedule: Some("daily 02:00 UTC".into()),
            daily: Some(14),
            max_concurrent: Some(8),
            ..Default::default()
        };
        let service = Policy {
            daily: Some(3),
            lock_days: Some(30),
            max_concurrent: Some(99),
            ..Default::default()
        };
        let e = resolve(Some(&region), Some(&service));
        assert_eq!(e.schedule.to_string(), "daily 02:00 UTC");
        assert_eq!((e.daily, e.lock_days, e.monthly), (3, 30, DEFAULT_MONTHLY));
        assert_eq!(
            e.max_concurrent, 8,
            "the region's, whatever the service says"
        );
        let d = resolve(None, None);
        assert_eq!(
            (d.schedule.to_string().as_str(), d.daily, d.keep_final),
            ("every 24h", 30, true)
        );
        assert!(validate(&Policy {
            schedule: Some("weekly".into()),
            ..Default::default()
        })
        .is_err());
        assert!(validate(&Policy {
            max_concurrent: Some(0),
            ..Default::default()
        })
        .is_err());
        assert_eq!(
            describe(&service),
            "daily=3, lock_days=30, max_concurrent=99"
        );
    }
}
