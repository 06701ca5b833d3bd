//! Schedules and when the next scheduled backup of a service is due.
//!
//! - `every D` (`every 24h`, `every 1h`, `every 30m`): the next slot is D after the *anchor*, the
//!   newest of: the slot of the last scheduled backup that did not fail, and the start of the last
//!   manual (or pre-restore) backup that did not fail. So a manual backup at 15:00 moves the next
//!   `every 24h` backup to 15:00 the next day (CSC's rule). With no backup yet, the first slot is
//!   when the service was first seen plus its jitter offset.
//! - `daily HH:MM [ZONE]` (`daily 02:00 UTC`, `daily 01:30 Europe/Helsinki`): one slot a day at
//!   that wall-clock time plus the service's jitter offset; manual backups do not move it.
//! - `none`: no scheduled backups.
//!
//! Invariants: slots are a function of the schedule, the anchor and the time only, so every
//! leader computes the same slot (and the same job id from it: see `controllers::scheduler`);
//! when slots were missed (no primary, the cluster down), only the newest one is due, never a
//! burst of catch-up backups, and the missed ones are counted.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;

use super::time::{millis, timestamp};

/// The shortest `every` period accepted.
pub const MIN_EVERY_MS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    None,
    Every { every_ms: u64 },
    Daily { hour: i8, minute: i8, zone: String },
}

pub use strongbox_core::durations::{format as format_duration, parse as parse_duration};

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["none"] => Ok(Schedule::None),
            ["every", d] => {
                let every_ms = parse_duration(d)?;
                if every_ms < MIN_EVERY_MS {
                    return Err(format!("`every {d}` is too often: at least every 10s"));
                }
                Ok(Schedule::Every { every_ms })
            }
            ["daily", hm, zone @ ..] if zone.len() <= 1 => {
                let (h, m) = hm
                    .split_once(':')
                    .ok_or_else(|| format!("{hm:?}: write the time as HH:MM, e.g. 02:00"))?;
                let hour: i8 = h.parse().ok().filter(|h| (0..24).contains(h)).ok_or_else(
                    || format!("{hm:?}: the hour is 00 to 23"),
                )?;
                let minute: i8 = m.parse().ok().filter(|m| (0..60).contains(m)).ok_or_else(
                    || format!("{hm:?}: the minute is 00 to 59"),
                )?;
                let zone = zone.first().copied().unwrap_or("UTC").to_string();
                TimeZone::get(&zone).map_err(|_| {
                    format!("unknown time zone {zone:?}; use UTC or a name like Europe/Helsinki")
                })?;
                Ok(Schedule::Daily { hour, minute, zone })
            }
            _ => Err(format!(
                "schedule {s:?} is not understood; use `every 24h`, `every 1h`, `daily 02:00 UTC` or `none`"
            )),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::None => write!(f, "none"),
            Schedule::Every { every_ms } => write!(f, "every {}", format_duration(*every_ms)),
            Schedule::Daily { hour, minute, zone } => {
                write!(f, "daily {hour:02}:{minute:02} {zone}")
            }
        }
    }
}

/// A service's fixed offset in the jitter window: spreads a fleet, stable across leaders.
pub fn jitter_offset(service: &str, jitter_ms: u64) -> u64 {
    if jitter_ms == 0 {
        return 0;
    }
    let h = blake3::hash(service.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(first) % jitter_ms
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// No scheduled backups.
    Never,
    /// The next slot, in the future.
    At(u64),
    /// A slot is due now; `missed` older slots passed with no backup.
    Due { slot: u64, missed: u64 },
}

impl Schedule {
    /// The next slot of a service. `anchor`: see the module doc (for `daily`, only scheduled
    /// backups' slots count); `first_seen`: when the catalog first heard of the service.
    pub fn next(&self, offset_ms: u64, anchor: Option<u64>, first_seen: u64, now: u64) -> Next {
        match self {
            Schedule::None => Next::Never,
            Schedule::Every { every_ms } => {
                let d = (*every_ms).max(1);
                let first = match anchor {
                    Some(a) => a.saturating_add(d),
                    None => first_seen.saturating_add(offset_ms),
                };
                if now < first {
                    return Next::At(first);
                }
                let missed = (now - first) / d;
                Next::Due {
                    slot: first + missed * d,
                    missed,
                }
            }
            Schedule::Daily { hour, minute, zone } => {
                let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
                let slot_of = |date: jiff::civil::Date| -> u64 {
                    date.at(*hour, *minute, 0, 0)
                        .to_zoned_datetime(tz.clone())
                        .map(|z| millis(z.timestamp()))
                        .unwrap_or(u64::MAX)
                        .saturating_add(offset_ms)
                };
                let today = timestamp(now.saturating_sub(offset_ms))
                    .to_zoned_datetime(tz.clone())
                    .date();
                let mut latest = slot_of(today);
                if latest > now {
                    latest = slot_of(super::time::add_days(today, -1));
                }
                let covered = anchor.unwrap_or(0).max(first_seen);
                if covered >= latest {
                    let mut next = slot_of(super::time::add_days(today, 1));
                    if next <= latest {
                        next = slot_of(super::time::add_days(today, 2));
                    }
                    // The slot of today may still be ahead.
                    let today_slot = slot_of(today);
                    if today_slot > now && today_slot < next {
                        next = today_slot;
                    }
                    return Next::At(next);
                }
                // Slots of the schedule's own calendar days between the anchor and the latest
                // (not 24 h periods: a day of a DST change is 23 or 25 hours long).
                let date_of = |ms: u64| {
                    timestamp(ms.saturating_sub(offset_ms))
                        .to_zoned_datetime(tz.clone())
                        .date()
                };
                let missed = match anchor {
                    Some(a) => {
                        let (from, to) = (date_of(a), date_of(latest));
                        let mut days = 0u64;
                        let mut d = from;
                        while d < to && days < 100_000 {
                            d = super::time::add_days(d, 1);
                            days += 1;
                        }
                        days.saturating_sub(1)
                    }
                    None => 0,
                };
                Next::Due {
                    slot: latest,
                    missed,
                }
            }
        }
    }
}

/// Wait before retry `attempt` (1, 2, …) of a failed scheduled backup: 1 min, doubling, at most 1 h.
pub fn retry_backoff_ms(attempt: u32) -> u64 {
    (60_000u64 << attempt.saturating_sub(1).min(6)).min(3_600_000)
}

#[cfg(test)]
mod tests {
    use super::super::time::DAY_MS;
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn parses_and_prints_schedules() {
        for s in [
            "every 24h",
            "every 1h",
            "every 30s",
            "daily 02:00 UTC",
            "none",
        ] {
            assert_eq!(s.parse::<Schedule>().unwrap().to_string(), s);
        }
        assert_eq!(
            "daily 2:05".parse::<Schedule>().unwrap().to_string(),
            "daily 02:05 UTC"
        );
        assert!("daily 25:00 UTC".parse::<Schedule>().is_err());
        assert!("daily 02:00 Mars/Olympus".parse::<Schedule>().is_err());
        assert!("every 1s".parse::<Schedule>().is_err());
        assert!("weekly".parse::<Schedule>().is_err());
    }

    #[test]
    fn a_manual_backup_at_15_moves_every_24h_to_15_the_next_day() {
        let day = "every 24h".parse::<Schedule>().unwrap();
        let t0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS; // a midnight UTC
                                                                 // Scheduled backup at 02:00 (its slot), manual at 15:00 the same day.
        let manual = t0 + 15 * H;
        assert_eq!(
            day.next(0, Some(manual), 0, t0 + 16 * H),
            Next::At(manual + 24 * H)
        );
        assert_eq!(
            day.next(0, Some(manual), 0, manual + 24 * H + 5),
            Next::Due {
                slot: manual + 24 * H,
                missed: 0
            }
        );
        // Three days with no backup: one due slot, two missed.
        assert_eq!(
            day.next(0, Some(manual), 0, manual + 72 * H + 5),
            Next::Due {
                slot: manual + 72 * H,
                missed: 2
            }
        );
    }

    #[test]
    fn missed_daily_slots_are_calendar_days_across_a_dst_change() {
        // Europe/Berlin leaves summer time on 2026-10-25 (a 25-hour day).
        let s = "daily 02:30 Europe/Berlin".parse::<Schedule>().unwrap();
        let oct24 = 1_792_801_800_000; // 2026-10-24T02:30:00+02:00
                                       // 02:30 comes twice on Oct 25; the slot is the first (CEST), 24 h later.
        let oct25 = oct24 + 24 * H;
        let oct26 = oct24 + 49 * H; // 2026-10-26T02:30:00+01:00: 25 h after Oct 25's
                                    // Oct 24 taken; at Oct 25 03:00 the Oct 25 slot is due and nothing was missed.
        assert_eq!(
            s.next(0, Some(oct24), 0, oct25 + 30 * 60_000),
            Next::Due {
                slot: oct25,
                missed: 0
            }
        );
        // At Oct 26 03:00 with Oct 25 missed: one missed, not two.
        assert_eq!(
            s.next(0, Some(oct24), 0, oct26 + 30 * 60_000),
            Next::Due {
                slot: oct26,
                missed: 1
            }
        );
    }

    #[test]
    fn daily_slots_are_wall_clock_times() {
        let s = "daily 02:00 UTC".parse::<Schedule>().unwrap();
        let t0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
        // First seen at 01:00: due at 02:00.
        assert_eq!(s.next(0, None, t0 + H, t0 + H + 1), Next::At(t0 + 2 * H));
        assert_eq!(
            s.next(0, None, t0 + H, t0 + 3 * H),
            Next::Due {
                slot: t0 + 2 * H,
                missed: 0
            }
        );
        // Covered today: the next is tomorrow's.
        assert_eq!(
            s.next(0, Some(t0 + 2 * H), 0, t0 + 3 * H),
            Next::At(t0 + 26 * H)
        );
        // A manual backup does not move it (the anchor is a scheduled slot only).
        let hel = "daily 02:00 Europe/Helsinki".parse::<Schedule>().unwrap();
        match hel.next(0, None, 0, t0 + 12 * H) {
            Next::Due { slot, .. } => assert_eq!(slot % H, 0),
            other => panic!("{other:?}"),
        }
        // With a jitter offset the slot moves by it.
        assert_eq!(
            s.next(600_000, Some(t0 + 2 * H + 600_000), 0, t0 + 3 * H),
            Next::At(t0 + 26 * H + 600_000)
        );
    }

    #[test]
    fn jitter_is_stable_and_inside_the_window() {
        let j = jitter_offset("orders", H);
        assert_eq!(j, jitter_offset("orders", H));
        assert!(j < H);
        assert_eq!(jitter_offset("orders", 0), 0);
        // `strongbox dev` takes a manual backup of its service `demo` seconds after it
        // appears; its first scheduled one comes well after (then 24 h after the manual one).
        let demo = jitter_offset("demo", crate::policy::effective::DEFAULT_JITTER_MS);
        assert!(demo > 5 * 60_000, "{demo}");
        assert_eq!(retry_backoff_ms(1), 60_000);
        assert_eq!(retry_backoff_ms(3), 240_000);
        assert_eq!(retry_backoff_ms(30), 3_600_000);
    }
}
