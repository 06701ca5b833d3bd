//! Printing results: aligned `key: value` lines and tables for people, one JSON document for
//! scripts; and the formats people read: sizes in kB/MB/GB, times as "3 minutes ago" or "in 2
//! days", absolute times in UTC to the second.
//!
//! Invariants: with `--output json`, stdout holds exactly one JSON document and nothing else
//! (notes for people go to stderr, and only in table mode); formatting never panics, whatever
//! the numbers (a zero time is "-", a time in the future is "in the future").

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Parses `--output`: `table` or `json`. Anything else is named as what it looks like: a path
/// is not a format (files and folders are `-o/--out`), and a format of `backup download` is
/// `--format`.
pub fn parse_output(s: &str) -> Result<Output, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "table" => Ok(Output::Table),
        "json" => Ok(Output::Json),
        "native" | "sql" => Err(format!(
            "{s:?} is not an output format (table or json): the format of a download is \
             `--format {s}`"
        )),
        _ if s.contains('/') || s.contains('.') => Err(format!(
            "{s:?} is not an output format (table or json): a file or folder to write is \
             `-o/--out {s}`"
        )),
        _ => Err(format!("{s:?} is not an output format: use table or json")),
    }
}

impl Output {
    /// Prints a flat record: a JSON object, or one aligned line per field.
    pub fn record(self, fields: &[(&str, Value)]) {
        match self {
            Output::Json => {
                let map: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                println!("{}", Value::Object(map));
            }
            Output::Table => print_fields(fields),
        }
    }

    /// Prints one JSON document (json mode only; a no-op in table mode).
    pub fn json(self, value: &Value) {
        if self == Output::Json {
            println!("{value}");
        }
    }

    /// A note for people on stderr (table mode only, so scripts see clean output).
    pub fn note(self, text: &str) {
        if self == Output::Table {
            eprintln!("{text}");
        }
    }
}

/// One aligned `key  value` line per field, on stdout.
pub fn print_fields(fields: &[(&str, Value)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in fields {
        println!("{k:>width$}  {}", text(v));
    }
}

/// A JSON value as people read it: strings bare, arrays comma-separated, null as "-".
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A table with the CLI's look, and the given header.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(header);
    t
}

/// A byte count for people, in decimal units: `512 B`, `1.5 kB`, `12.3 MB`, `1.2 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    // Round first, so that 999_999 bytes reads "1.0 MB" rather than "1000.0 kB".
    while (value * 10.0).round() / 10.0 >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A span of `s` seconds (at least 10) in its largest whole unit: "3 minutes", "2 days".
fn span(s: u64) -> String {
    match s {
        0..=59 => plural(s, "second"),
        60..=3_599 => plural(s / 60, "minute"),
        3_600..=86_399 => plural(s / 3_600, "hour"),
        86_400..=2_591_999 => plural(s / 86_400, "day"),
        2_592_000..=31_535_999 => plural(s / 2_592_000, "month"),
        _ => plural(s / 31_536_000, "year"),
    }
}

/// How long ago `unix_ms` was, seen from `now_ms`: "just now", "3 minutes ago", "2 days ago".
/// 0 (never) is "-".
pub fn relative(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".to_string();
    }
    if unix_ms > now_ms {
        // Clocks of different machines disagree a little; a minute ahead is still "just now".
        return if unix_ms - now_ms < 60_000 {
            "just now".to_string()
        } else {
            "in the future".to_string()
        };
    }
    let s = (now_ms - unix_ms) / 1000;
    if s < 10 {
        "just now".to_string()
    } else {
        format!("{} ago", span(s))
    }
}

/// Like [`relative`], but a time in the future reads "in 3 hours" (for times the coordinators
/// plan: the next backup, an expiry, the end of a lock). 0 is "-".
pub fn relative_either(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms <= now_ms {
        return relative(unix_ms, now_ms);
    }
    let s = (unix_ms - now_ms) / 1000;
    if s < 60 {
        "in under a minute".to_string()
    } else {
        format!("in {}", span(s))
    }
}

/// An absolute time for people: RFC 3339 in UTC, to the second ("-" for 0).
pub fn utc(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".to_string();
    }
    text(&timestamp(unix_ms - unix_ms % 1000))
}

/// An absolute time with how far it is from now: `2026-11-20T02:00:00Z (in 3 hours)`; "-" for 0.
pub fn at(unix_ms: u64) -> String {
    at_from(unix_ms, strongbox_core::clock::now_ms())
}

/// [`at`] seen from `now_ms`.
pub fn at_from(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".to_string();
    }
    format!("{} ({})", utc(unix_ms), relative_either(unix_ms, now_ms))
}

/// Relative to now.
pub fn ago(unix_ms: u64) -> String {
    relative(unix_ms, strongbox_core::clock::now_ms())
}

/// An RFC 3339 UTC timestamp for scripts (null for 0, which means "never").
pub fn timestamp(unix_ms: u64) -> Value {
    if unix_ms == 0 {
        return Value::Null;
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Null, Value::String)
}

/// A duration for people: `850 ms`, `12.3 s`, `4 min 5 s`.
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_decimal_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1000), "1.0 kB");
        assert_eq!(size(1536), "1.5 kB");
        assert_eq!(size(999_999), "1.0 MB");
        assert_eq!(size(12_345_678), "12.3 MB");
        assert_eq!(size(1_200_000_000), "1.2 GB");
        assert_eq!(size(3_400_000_000_000), "3.4 TB");
        assert_eq!(size(u64::MAX), "18446.7 PB");
    }

    #[test]
    fn relative_times_read_like_speech() {
        let now = 1_700_000_000_000;
        assert_eq!(relative(0, now), "-");
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - 9_999, now), "just now");
        assert_eq!(relative(now - 10_000, now), "10 seconds ago");
        assert_eq!(relative(now - 60_000, now), "1 minute ago");
        assert_eq!(relative(now - 3 * 60_000 - 5_000, now), "3 minutes ago");
        assert_eq!(relative(now - 3_600_000, now), "1 hour ago");
        assert_eq!(relative(now - 5 * 3_600_000, now), "5 hours ago");
        assert_eq!(relative(now - 86_400_000, now), "1 day ago");
        assert_eq!(relative(now - 40 * 86_400_000, now), "1 month ago");
        assert_eq!(relative(now - 800 * 86_400_000, now), "2 years ago");
        assert_eq!(relative(now + 5_000, now), "just now");
        assert_eq!(relative(now + 3_600_000, now), "in the future");
    }

    #[test]
    fn future_times_read_like_speech() {
        let now = 1_700_000_000_000;
        assert_eq!(relative_either(0, now), "-");
        assert_eq!(relative_either(now - 3_600_000, now), "1 hour ago");
        assert_eq!(relative_either(now, now), "just now");
        assert_eq!(relative_either(now + 30_000, now), "in under a minute");
        assert_eq!(relative_either(now + 60_000, now), "in 1 minute");
        assert_eq!(relative_either(now + 5 * 3_600_000, now), "in 5 hours");
        assert_eq!(relative_either(now + 3 * 86_400_000, now), "in 3 days");
        assert_eq!(relative_either(now + 400 * 86_400_000, now), "in 1 year");
    }

    #[test]
    fn absolute_times_are_utc_to_the_second() {
        let now = 1_700_000_000_000;
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(at_from(0, now), "-");
        assert_eq!(
            at_from(now + 2 * 3_600_000, now),
            "2023-11-15T00:13:20Z (in 2 hours)"
        );
        assert_eq!(
            at_from(now - 86_400_000, now),
            "2023-11-13T22:13:20Z (1 day ago)"
        );
    }

    #[test]
    fn timestamps_and_durations() {
        assert_eq!(timestamp(0), Value::Null);
        assert_eq!(
            timestamp(1_700_000_000_000),
            Value::String("2023-11-14T22:13:20Z".into())
        );
        assert_eq!(duration(std::time::Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(std::time::Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(duration(std::time::Duration::from_secs(245)), "4 min 5 s");
    }

    #[test]
    fn text_of_values() {
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&serde_json::json!(["a", 1])), "a, 1");
        assert_eq!(text(&serde_json::json!("x")), "x");
    }
}
