//! Human durations: `250ms`, `90s`, `5m`, `1h30m`, `2d` — in scenario files
//! and on the command line alike.
use std::time::Duration;

/// Parses a duration made of `<number><unit>` parts, units `ms`, `s`, `m`,
/// `h`, `d`, largest first, each at most once (`1h30m`, not `30m1h`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration such as '250ms', '90s', '5m', '1h30m' or '2d'";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("'{text}' is empty; {expected}"));
    }
    let mut total = Duration::ZERO;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "'{text}' has no number before '{rest}'; {expected}"
            ));
        }
        let (number, after) = rest.split_at(digits);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("'{number}' in '{text}' is too large"))?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let (rank, scale) = match unit {
            "d" => (4, Duration::from_secs(86_400)),
            "h" => (3, Duration::from_secs(3600)),
            "m" => (2, Duration::from_secs(60)),
            "s" => (1, Duration::from_secs(1)),
            "ms" => (0, Duration::from_millis(1)),
            "" => {
                return Err(format!(
                    "'{text}' needs a unit after '{number}'; {expected}"
                ));
            }
            other => return Err(format!("'{other}' in '{text}' is not a unit; {expected}")),
        };
        if rank >= last_rank {
            return Err(format!("'{text}' repeats or misorders units; {expected}"));
        }
        last_rank = rank;
        let part = scale
            .checked_mul(
                u32::try_from(value).map_err(|_| format!("'{number}' in '{text}' is too large"))?,
            )
            .ok_or_else(|| format!("'{text}' is too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("'{text}' is too long"))?;
        rest = after;
    }
    if total > MAX {
        return Err(format!(
            "'{text}' is longer than any run; expected at most '{}'",
            format(MAX)
        ));
    }
    Ok(total)
}

/// The longest duration anything in a scenario may have: a year.
pub const MAX: Duration = Duration::from_secs(365 * 86_400);

/// Formats a duration the way [`parse`] reads it.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("1m30s500ms"), Ok(Duration::from_millis(90_500)));
    }

    #[test]
    fn refuses_beyond_a_year() {
        assert_eq!(parse("365d"), Ok(MAX));
        assert_eq!(
            parse("4294967295d").unwrap_err(),
            "'4294967295d' is longer than any run; expected at most '365d'"
        );
        assert!(parse("366d").is_err());
    }

    #[test]
    fn refuses_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("90", "needs a unit"),
            ("5x", "not a unit"),
            ("m5", "no number"),
            ("30m1h", "misorders"),
            ("1h1h", "repeats"),
            ("99999999999999999999s", "too large"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [0, 1, 999, 1000, 90_500, 5_400_000, 90_061_001] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
