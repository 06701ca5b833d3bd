//! Printing results: aligned `key: value` lines and tables for people, one JSON document for
//! scripts; and the formats people read: sizes in kB/MB/GB, times as "3 minutes ago" or "in 2
//! days", absolute times in UTC to the second.
//!
//! Invariants: with `--output json`, stdout holds exactly one JSON document and nothing else
//! (notes for people go to stderr, and only in table mode); formatting never panics, whatever
//! the numbers (a zero time is "-", a time in the future is "in the future").

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde::Serialize;
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
    /// Prints a flat record, a view whose fields are all plain values: its JSON, or one
    /// aligned `key  value` line per field (the JSON keys, values as [`text`]).
    pub fn record<T: Serialize>(self, view: &T) {
        match self {
            Output::Json => self.json(view),
            Output::Table => match serde_json::to_value(view) {
                Ok(Value::Object(map)) => {
                    let mut fields = Fields::default();
                    for (k, v) in &map {
                        fields.push(k, text(v));
                    }
                    fields.print();
                }
                Ok(other) => println!("{}", text(&other)),
                Err(e) => eprintln!("error: cannot print the result: {e}"),
            },
        }
    }

    /// Prints one JSON document, a view (json mode only; a no-op in table mode).
    pub fn json<T: Serialize + ?Sized>(self, view: &T) {
        if self == Output::Json {
            match serde_json::to_string(view) {
                Ok(text) => println!("{text}"),
                // A view is plain data: this is a bug, said on stderr rather than as JSON.
                Err(e) => eprintln!("error: cannot print the result as JSON: {e}"),
            }
        }
    }

    /// A note for people on stderr (table mode only, so scripts see clean output).
    pub fn note(self, text: &str) {
        if self == Output::Table {
            eprintln!("{text}");
        }
    }
}

/// A list printed as its pages arrive (`--all` streams): for scripts one JSON array, written
/// item by item; for people one table per page.
pub struct ListPrinter {
    output: Output,
    printed: usize,
}

impl ListPrinter {
    pub fn new(output: Output) -> Self {
        ListPrinter { output, printed: 0 }
    }

    /// Prints one page: its views, or the table `table` draws of them.
    pub fn page<V: Serialize>(&mut self, views: &[V], table: impl FnOnce(&[V]) -> Table) {
        match self.output {
            Output::Json => {
                for v in views {
                    match serde_json::to_string(v) {
                        Ok(text) => {
                            let sep = if self.printed == 0 { "[" } else { "," };
                            println!("{sep}{text}");
                            self.printed += 1;
                        }
                        Err(e) => eprintln!("error: cannot print the result as JSON: {e}"),
                    }
                }
            }
            Output::Table if views.is_empty() => {}
            Output::Table => {
                println!("{}", table(views));
                self.printed += views.len();
            }
        }
    }

    /// Ends the list (closes the JSON array); how many items it printed.
    pub fn end(self) -> usize {
        if self.output == Output::Json {
            println!("{}", if self.printed == 0 { "[]" } else { "]" });
        }
        self.printed
    }
}

/// The `key  value` lines of one record for people, in order: what a view shows in table
/// mode (`backup show`, `restore show`, `service show`).
#[derive(Default, Debug)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Adds a line; its control characters are escaped ([`printable`]), so a value that came
    /// from an agent or an operator (a reason, a name) cannot drive the terminal or forge
    /// lines.
    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.0.push((key.to_string(), printable(&value.into())));
    }

    /// Adds a line when `value` is not empty.
    pub fn push_some(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.push(key, value);
        }
    }

    /// Adds the lines of `other` after these.
    pub fn extend(&mut self, other: Fields) {
        self.0.extend(other.0);
    }

    /// The lines as `key: value` pairs joined with `sep`, for tests that read what people see.
    #[cfg(test)]
    pub fn joined(&self, sep: &str) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// Prints one aligned `key  value` line per field, on stdout.
    pub fn print(&self) {
        let width = self.0.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.0 {
            println!("{k:>width$}  {v}");
        }
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
    timestamp(unix_ms - unix_ms % 1000).unwrap_or_else(|| "-".to_string())
}

/// An absolute time with how far it is from `now_ms`: `2026-11-20T02:00:00Z (in 3 hours)`;
/// "-" for 0.
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

/// An RFC 3339 UTC timestamp for scripts (`None` for 0, which means "never"; JSON `null`).
pub fn timestamp(unix_ms: u64) -> Option<String> {
    if unix_ms == 0 {
        return None;
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
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

/// `s` as one shell word: bare when it holds only characters no shell treats specially,
/// `'…'` otherwise (a `'` written `'\''`), and bash's `$'…'` when it holds control characters
/// (line breaks, tabs, escapes), so that the word stays on one line and no terminal control
/// is printed raw.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@=,".contains(c))
    {
        return s.to_string();
    }
    if !s.chars().any(char::is_control) {
        return format!("'{}'", s.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `name` for a terminal: control characters escaped (`\n`, `\u{1b}`), the rest as it is.
pub fn printable(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
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
        assert_eq!(timestamp(0), None);
        assert_eq!(
            timestamp(1_700_000_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
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

    #[test]
    fn shell_words_round_trip() {
        for s in [
            "plain",
            "",
            "it's",
            "a\nb",
            "\u{1b}[31m",
            "tab\t\\'x",
            "é\u{85}",
        ] {
            let q = shell_quote(s);
            assert!(!q.contains('\n') && !q.contains('\u{1b}'), "{q}");
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("printf %s {q}"))
                .output()
                .expect("bash");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "{q}");
        }
        assert_eq!(printable("a\nb\u{1b}"), "a\\nb\\u{1b}");
    }
}
