//! The Service annotations that tune clients' outlier ejection, retries and
//! balancing (`kubedisco.io/outlier-*`, `kubedisco.io/retry-*`,
//! `kubedisco.io/lb-policy`, `kubedisco.io/hash-header`), read into
//! [`Resilience`]. Each is validated on its own: an invalid one is ignored
//! (the client's default applies for that setting), logged and counted in
//! `kubedisco_invalid_annotations_total`; the valid ones still apply.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::metrics::InvalidWeights;
use crate::duration::parse_duration;
use crate::index::objects::Resilience;
use crate::index::resilience::{LbPolicy, RetryCode};

pub const OUTLIER_CONSECUTIVE_FAILURES: &str = "kubedisco.io/outlier-consecutive-failures";
pub const OUTLIER_FAILURE_PERCENTAGE: &str = "kubedisco.io/outlier-failure-percentage";
pub const OUTLIER_INTERVAL: &str = "kubedisco.io/outlier-interval";
pub const OUTLIER_BASE_EJECTION_TIME: &str = "kubedisco.io/outlier-base-ejection-time";
pub const OUTLIER_MAX_EJECTION_TIME: &str = "kubedisco.io/outlier-max-ejection-time";
pub const OUTLIER_MAX_EJECTION_PERCENT: &str = "kubedisco.io/outlier-max-ejection-percent";
pub const RETRY_MAX_ATTEMPTS: &str = "kubedisco.io/retry-max-attempts";
pub const RETRY_ON: &str = "kubedisco.io/retry-on";
pub const LB_POLICY: &str = "kubedisco.io/lb-policy";
pub const HASH_HEADER: &str = "kubedisco.io/hash-header";

/// Every key above: the lean decoder keeps these annotations and no other
/// of these prefixes (a misspelt key is ignored like any other annotation).
pub const RESILIENCE_ANNOTATIONS: [&str; 10] = [
    OUTLIER_CONSECUTIVE_FAILURES,
    OUTLIER_FAILURE_PERCENTAGE,
    OUTLIER_INTERVAL,
    OUTLIER_BASE_EJECTION_TIME,
    OUTLIER_MAX_EJECTION_TIME,
    OUTLIER_MAX_EJECTION_PERCENT,
    RETRY_MAX_ATTEMPTS,
    RETRY_ON,
    LB_POLICY,
    HASH_HEADER,
];

/// gRPC caps retry policies at 5 attempts; a larger value would be cut
/// silently on one side and not the other.
const MAX_ATTEMPTS: u32 = 5;
/// Longer than any sensible ejection or interval: a day is a typo of a
/// unit, not a setting.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// The resilience settings in `annotations`; None when there is no valid
/// one. `what` names the Service in the log.
pub(super) fn resilience_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    what: &str,
    invalid: &InvalidWeights,
) -> Option<Arc<Resilience>> {
    let annotations = annotations?;
    let mut r = Resilience::default();
    for (key, text) in annotations {
        let outcome = match key.as_str() {
            OUTLIER_CONSECUTIVE_FAILURES => {
                count(text).map(|n| r.outlier.consecutive_failures = Some(n))
            }
            OUTLIER_FAILURE_PERCENTAGE => {
                percent(text).map(|n| r.outlier.failure_percentage = Some(n))
            }
            OUTLIER_INTERVAL => duration(text).map(|d| r.outlier.interval = Some(d)),
            OUTLIER_BASE_EJECTION_TIME => {
                duration(text).map(|d| r.outlier.base_ejection_time = Some(d))
            }
            OUTLIER_MAX_EJECTION_TIME => {
                duration(text).map(|d| r.outlier.max_ejection_time = Some(d))
            }
            OUTLIER_MAX_EJECTION_PERCENT => {
                percent(text).map(|n| r.outlier.max_ejection_percent = Some(n))
            }
            RETRY_MAX_ATTEMPTS => attempts(text).map(|n| r.retry.max_attempts = Some(n)),
            RETRY_ON => codes(text).map(|codes| r.retry.on = Some(codes)),
            LB_POLICY => lb_policy(text).map(|p| r.balancing.policy = Some(p)),
            HASH_HEADER => header(text).map(|h| r.balancing.hash_header = Some(h)),
            _ => continue,
        };
        if let Err(error) = outcome {
            warn!(
                object = what,
                annotation = key.as_str(),
                "ignoring invalid annotation: {error}"
            );
            invalid.record_annotation(key);
        }
    }
    (!r.is_empty()).then(|| Arc::new(r))
}

fn count(text: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number (0 turns the rule off)"))
}

fn percent(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() || d > LONGEST {
        return Err(format!(
            "{text:?} is not a duration above 0 and at most 24h (\"30s\", \"500ms\")"
        ));
    }
    Ok(d)
}

fn attempts(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_ATTEMPTS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of attempts from 1 (no retries) to {MAX_ATTEMPTS}"
        )),
    }
}

fn lb_policy(text: &str) -> Result<LbPolicy, String> {
    LbPolicy::parse(text.trim()).ok_or_else(|| {
        let known: Vec<_> = LbPolicy::ALL.iter().map(|p| p.as_str()).collect();
        format!("{text:?} is not one of {}", known.join(", "))
    })
}

/// A request header name as gRPC metadata has it: lowercase (gRPC lowers
/// keys, so "X-User" is read as "x-user"), token characters only, and not a
/// `-bin` header, whose bytes gRPC never hashes (gRFC A42).
fn header(text: &str) -> Result<Box<str>, String> {
    let name = text.trim().to_ascii_lowercase();
    let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(token) || name.ends_with("-bin") {
        return Err(format!(
            "{text:?} is not a request header name (letters, digits, '-', '_', '.'; not -bin)"
        ));
    }
    Ok(name.into())
}

/// A comma-separated list of gRPC codes, as Envoy's `retry_on` names them.
fn codes(text: &str) -> Result<Box<[RetryCode]>, String> {
    let mut codes = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let code = RetryCode::parse(&name.to_ascii_lowercase()).ok_or_else(|| {
            let known: Vec<_> = RetryCode::ALL.iter().map(|c| c.as_str()).collect();
            format!("{name:?} is not one of {}", known.join(", "))
        })?;
        codes.push(code);
    }
    if codes.is_empty() {
        return Err(format!("{text:?} names no status code"));
    }
    codes.sort();
    codes.dedup();
    Ok(codes.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> (Option<Arc<Resilience>>, InvalidWeights) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let invalid = InvalidWeights::default();
        (
            resilience_annotations(Some(&map), "ns/web", &invalid),
            invalid,
        )
    }

    #[test]
    fn every_annotation_reaches_its_field() {
        let (r, invalid) = parse(&[
            (OUTLIER_CONSECUTIVE_FAILURES, "2"),
            (OUTLIER_FAILURE_PERCENTAGE, "60"),
            (OUTLIER_INTERVAL, "500ms"),
            (OUTLIER_BASE_EJECTION_TIME, "1m"),
            (OUTLIER_MAX_EJECTION_TIME, "10m"),
            (OUTLIER_MAX_EJECTION_PERCENT, " 30 "),
            (RETRY_MAX_ATTEMPTS, "1"),
            (RETRY_ON, "Unavailable, resource-exhausted,unavailable"),
            (LB_POLICY, " ring_hash"),
            (HASH_HEADER, "X-User"),
            ("kubedisco.io/outlier-typo", "3"),
        ]);
        let r = r.unwrap();
        assert_eq!(r.outlier.consecutive_failures, Some(2));
        assert_eq!(r.outlier.failure_percentage, Some(60));
        assert_eq!(r.outlier.interval, Some(Duration::from_millis(500)));
        assert_eq!(r.outlier.base_ejection_time, Some(Duration::from_secs(60)));
        assert_eq!(r.outlier.max_ejection_time, Some(Duration::from_secs(600)));
        assert_eq!(r.outlier.max_ejection_percent, Some(30));
        assert_eq!(r.retry.max_attempts, Some(1));
        assert_eq!(
            r.retry.on.as_deref(),
            Some(&[RetryCode::ResourceExhausted, RetryCode::Unavailable][..])
        );
        assert_eq!(r.balancing.policy, Some(LbPolicy::RingHash));
        assert_eq!(r.balancing.hash_header.as_deref(), Some("x-user"));
        assert_eq!(invalid.annotation_count(RETRY_ON), 0);
        let (r, _) = parse(&[(LB_POLICY, "least_request")]);
        assert_eq!(r.unwrap().balancing.policy, Some(LbPolicy::LeastRequest));
    }

    /// Each invalid value is ignored on its own and counted by key; the
    /// valid ones next to it still apply.
    #[test]
    fn invalid_values_are_ignored_and_counted() {
        let bad = [
            (OUTLIER_CONSECUTIVE_FAILURES, "-1"),
            (OUTLIER_FAILURE_PERCENTAGE, "101"),
            (OUTLIER_INTERVAL, "0s"),
            (OUTLIER_BASE_EJECTION_TIME, "30"),
            (OUTLIER_MAX_EJECTION_TIME, "48h"),
            (OUTLIER_MAX_EJECTION_PERCENT, "half"),
            (RETRY_MAX_ATTEMPTS, "6"),
            (RETRY_ON, "unavailable,5xx"),
            (LB_POLICY, "maglev"),
            (HASH_HEADER, "x-user-bin"),
        ];
        // "30" is 30 seconds by the agent's duration rules: valid.
        let (r, invalid) = parse(&bad);
        let r = r.unwrap();
        assert_eq!(r.outlier.base_ejection_time, Some(Duration::from_secs(30)));
        assert_eq!(
            *r,
            Resilience {
                outlier: crate::index::resilience::Outlier {
                    base_ejection_time: Some(Duration::from_secs(30)),
                    ..Default::default()
                },
                ..Default::default()
            }
        );
        for (key, _) in bad {
            let want = u64::from(key != OUTLIER_BASE_EJECTION_TIME);
            assert_eq!(invalid.annotation_count(key), want, "{key}");
        }
        for text in ["RING_HASH", "random", ""] {
            let (r, invalid) = parse(&[(LB_POLICY, text)]);
            assert!(r.is_none(), "{text:?}");
            assert_eq!(invalid.annotation_count(LB_POLICY), 1);
        }
        for text in ["", "x user", ":path", "x-key-bin"] {
            let (r, invalid) = parse(&[(HASH_HEADER, text)]);
            assert!(r.is_none(), "{text:?}");
            assert_eq!(invalid.annotation_count(HASH_HEADER), 1);
        }
        for text in ["0", "", " , ", "1.5"] {
            let (r, invalid) = parse(&[(RETRY_MAX_ATTEMPTS, text), (RETRY_ON, text)]);
            assert!(r.is_none(), "{text:?}");
            assert_eq!(invalid.annotation_count(RETRY_ON), 1);
        }
    }

    #[test]
    fn no_annotation_is_no_resilience() {
        assert!(parse(&[]).0.is_none());
        assert!(parse(&[("kubedisco.io/default-weight", "5")]).0.is_none());
        let invalid = InvalidWeights::default();
        assert!(resilience_annotations(None, "ns/web", &invalid).is_none());
    }
}
