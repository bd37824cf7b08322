//! Durations on the command line: a number of seconds (`3600`, `0.5`) or numbers with
//! units run together, as Go and JuiceFS write them (`90s`, `15m`, `1h30m`, `7d`), so
//! a flag copied from a JuiceFS command line means the same here.

use std::time::Duration;

/// Parses a duration (see the module documentation).
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("'{s}' is not a duration: give seconds (3600) or a number with a unit, ms, s, m, h or d (90m, 1h30m, 7d)")
    };
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(bad())
        };
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if t.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn seconds_and_go_style_units() {
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn nonsense_is_refused_with_the_forms_that_work() {
        for bad in ["", "-5", "h", "5x", "1h30", "abc", "NaN"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("90m"), "{bad}: {e}");
        }
    }
}
