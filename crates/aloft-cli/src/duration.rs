//! Human durations on the command line (`30s`, `15m`, `24h`, `7d`, `1h30m`)
//! and human ages in tables (`5m ago`).

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts, where the
/// unit is `s`, `m`, `h`, `d` or `w`, e.g. `30s`, `15m`, `24h`, `7d`, `1h30m`.
///
/// A bare number is refused: `--stale 24` is more likely a mistake than
/// 24 seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration: use e.g. 30s, 15m, 24h or 7d".into());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number, e.g. 30s, 15m, 24h or 7d"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        if rest.starts_with(['.', ',']) {
            return Err(format!(
                "invalid duration {text:?}: no fractions; combine whole units instead, e.g. 1h30m or 90s"
            ));
        }
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit after {number} (s, m, h, d or w)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use s, m, h, d or w)"
                ));
            }
        };
        total = number
            .checked_mul(scale)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
    }
    Ok(Duration::from_secs(total))
}

/// Unix seconds as a UTC date and time, `2026-11-29 14:05:00`.
pub fn utc_text(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Renders a span of seconds compactly with its largest unit: `45s`, `5m`, `3h`, `2d`.
pub fn compact(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Describes unix time `at` relative to `now`: `5m ago`, `in 3d`, `just now`,
/// or `never` for 0 (the wire's "never" value).
pub fn age(now: u64, at: u64) -> String {
    if at == 0 {
        return "never".into();
    }
    if at > now {
        format!("in {}", compact(at - now))
    } else if now - at < 2 {
        "just now".into()
    } else {
        format!("{} ago", compact(now - at))
    }
}

/// The local clock as unix seconds (0 if it is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_units() {
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        assert_eq!(parse_duration("2w").unwrap().as_secs(), 1_209_600);
        assert_eq!(parse_duration("0s").unwrap().as_secs(), 0);
        assert_eq!(parse_duration(" 5m ").unwrap().as_secs(), 300);
    }

    #[test]
    fn parses_combined_parts() {
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("1d2h3m4s").unwrap().as_secs(), 93_784);
    }

    #[test]
    fn refuses_bad_input() {
        for (bad, why) in [
            ("", "empty"),
            ("24", "missing unit"),
            ("h", "expected a number"),
            ("5x", "unknown unit"),
            ("5 m", "missing unit"),
            ("-5m", "expected a number"),
            ("5min", "unknown unit"),
            ("1h30", "missing unit"),
            ("1.5h", "no fractions"),
            ("99999999999999999999s", "too large"),
            ("999999999999999999d", "too large"),
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_text(1_795_961_100), "2026-11-29 14:05:00");
        assert_eq!(utc_text(4_107_542_399), "2100-02-28 23:59:59");
        assert_eq!(utc_text(4_107_542_400), "2100-03-01 00:00:00");
    }

    #[test]
    fn ages_read_naturally() {
        let now = 1_000_000;
        assert_eq!(age(now, 0), "never");
        assert_eq!(age(now, now), "just now");
        assert_eq!(age(now, now - 45), "45s ago");
        assert_eq!(age(now, now - 300), "5m ago");
        assert_eq!(age(now, now - 3 * 3600 - 5), "3h ago");
        assert_eq!(age(now, now - 2 * 86_400), "2d ago");
        assert_eq!(age(now, now + 30 * 86_400), "in 30d");
    }
}
