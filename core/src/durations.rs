//! Durations as operators write them (`30d`, `12h`, `90m`, `45s`, `1h30m`, `none`) and as
//! strongbox prints them, in milliseconds: one parser and one printer for the CLI and the
//! coordinators, so a policy reads back the way it was set.
//!
//! Invariants: parsing never overflows (too long is an error); printing then parsing gives the
//! same number of milliseconds for whole seconds.

pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// Parses a duration: a number and a unit (`30d`, `12h`, `90m`, `45s`), or several (`1h30m`);
/// `none` and `0` are 0. Into milliseconds.
pub fn parse(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") || s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err("an empty duration: write e.g. 30d, 12h, 90m, 45s (or none)".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => SECOND_MS,
            'm' => MINUTE_MS,
            'h' => HOUR_MS,
            'd' => DAY_MS,
            _ => return Err(format!("{s:?}: use a number and s, m, h or d, e.g. 30d")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?}: a unit needs a number before it, e.g. 30d"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("{s:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "{s:?}: the number needs a unit (s, m, h or d), e.g. {s}d"
        ));
    }
    Ok(total)
}

/// A duration as the coordinators write it: `30d`, `24h`, `1h30m`, `45s`, `0` (days only from
/// two days up, so one day reads `24h`; under a second in `ms`).
pub fn format(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    let mut out = String::new();
    let mut rest = ms / SECOND_MS;
    let day = if ms >= 2 * DAY_MS { 86_400 } else { u64::MAX };
    for (unit, secs) in [("d", day), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= secs {
            out.push_str(&format!("{}{unit}", rest / secs));
            rest %= secs;
        }
    }
    if out.is_empty() {
        format!("{ms}ms")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse("30d"), Ok(30 * DAY_MS));
        assert_eq!(parse("12h"), Ok(12 * HOUR_MS));
        assert_eq!(parse("90m"), Ok(90 * MINUTE_MS));
        assert_eq!(parse("45s"), Ok(45 * SECOND_MS));
        assert_eq!(parse("1h30m"), Ok(90 * MINUTE_MS));
        assert_eq!(parse(" 2d12h "), Ok(60 * HOUR_MS));
        assert_eq!(parse("none"), Ok(0));
        assert_eq!(parse("NONE"), Ok(0));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("0s"), Ok(0));
        for bad in [
            "",
            "30",
            "d",
            "3x",
            "1.5h",
            "-1h",
            "h30",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("999999999999999d").is_err(), "overflow");
    }

    #[test]
    fn durations_format_like_the_coordinators() {
        assert_eq!(format(0), "0");
        assert_eq!(format(500), "500ms");
        assert_eq!(format(45 * SECOND_MS), "45s");
        assert_eq!(format(90 * MINUTE_MS), "1h30m");
        assert_eq!(format(HOUR_MS), "1h");
        assert_eq!(format(DAY_MS), "24h");
        assert_eq!(format(30 * DAY_MS), "30d");
        assert_eq!(format(2 * DAY_MS + HOUR_MS), "2d1h");
        for ms in [
            SECOND_MS,
            59 * SECOND_MS,
            HOUR_MS + SECOND_MS,
            DAY_MS,
            400 * DAY_MS,
        ] {
            assert_eq!(parse(&format(ms)), Ok(ms));
        }
    }
}
