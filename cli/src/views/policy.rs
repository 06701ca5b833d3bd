//! A policy as scripts see it (`policy show`, `policy set`): what is stored at one level and
//! what is in effect there, every field `null` where unset.

use serde::Serialize;
use strongbox_proto::v1::{GetPolicyResponse, PolicyInfo, SetPolicyResponse};

use super::backup::BackupView;

/// One level's policy: every field, `null` where unset (units in the names).
#[derive(Serialize)]
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
