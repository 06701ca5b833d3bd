//! Calendar arithmetic on Unix milliseconds (UTC unless a zone is given), over `jiff`.
//!
//! Invariant: every function is total: an out-of-range time gives a clamped answer, not a panic.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;

pub use strongbox_core::durations::{DAY_MS, HOUR_MS};

pub fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from_millisecond(ms.min(i64::MAX as u64) as i64).unwrap_or(Timestamp::MAX)
}

pub fn millis(t: Timestamp) -> u64 {
    t.as_millisecond().max(0) as u64
}

/// The UTC calendar date of a time.
pub fn utc_date(ms: u64) -> Date {
    timestamp(ms).to_zoned_datetime(TimeZone::UTC).date()
}

/// Midnight UTC at the start of `date`, in Unix milliseconds.
pub fn utc_midnight(date: Date) -> u64 {
    date.to_zoned_datetime(TimeZone::UTC)
        .map(|z| millis(z.timestamp()))
        .unwrap_or(u64::MAX)
}

/// `date` moved by whole months (day 1 of the result month).
pub fn add_months(date: Date, months: i64) -> Date {
    let index = date.year() as i64 * 12 + (date.month() as i64 - 1) + months;
    let year = index.div_euclid(12).clamp(-9999, 9999) as i16;
    let month = (index.rem_euclid(12) + 1) as i8;
    Date::new(year, month, 1).unwrap_or(date)
}

/// `date` moved by whole days.
pub fn add_days(date: Date, days: i64) -> Date {
    date.checked_add(jiff::Span::new().days(days))
        .unwrap_or(date)
}

/// RFC 3339 in UTC to the second, for messages.
pub fn rfc3339(ms: u64) -> String {
    timestamp(ms).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
