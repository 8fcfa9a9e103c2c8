//! A Service's outlier-ejection, retry and balancing settings, from its
//! `kubedisco.io/outlier-*`, `kubedisco.io/retry-*`, `kubedisco.io/lb-policy`
//! and `kubedisco.io/hash-header` annotations.
//!
//! One parsed, validated form on [`super::ServiceObject`], for every reader:
//! the HTTP API hands it to the Go clients (which apply it over their own
//! defaults), and the xDS server turns it into Envoy's outlier detection
//! and retry policy. The names follow gRFC A50 and Envoy, so each setting
//! maps to one field on both sides. A field is None when its annotation is
//! absent or was invalid: the client's own default applies.

use std::time::Duration;

use serde::{Serialize, Serializer};

/// The per-Service overrides; never all None on a Service (no annotation
/// means no `Resilience` at all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resilience {
    #[serde(skip_serializing_if = "Outlier::is_empty")]
    pub outlier: Outlier,
    #[serde(skip_serializing_if = "Retry::is_empty")]
    pub retry: Retry,
    /// Kept with the other per-Service client settings so that it reaches
    /// every reader (served view, API, warm start) the same way; only the
    /// xDS server applies it (kdgrpc balances by the agent's weights).
    #[serde(skip_serializing_if = "Balancing::is_empty")]
    pub balancing: Balancing,
}

impl Resilience {
    pub fn is_empty(&self) -> bool {
        self.outlier.is_empty() && self.retry.is_empty() && self.balancing.is_empty()
    }
}

/// How an xDS client spreads calls over the endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Balancing {
    /// `lb-policy`; None: round robin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<LbPolicy>,
    /// `hash-header`: the request header ring_hash hashes (lowercase, as
    /// gRPC metadata keys are). Without it gRPC hashes a random number per
    /// call: no affinity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_header: Option<Box<str>>,
}

impl Balancing {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `kubedisco.io/lb-policy`, named as Envoy's and gRPC's policies are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    RingHash,
    LeastRequest,
}

impl LbPolicy {
    pub const ALL: [LbPolicy; 3] = [Self::RoundRobin, Self::RingHash, Self::LeastRequest];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::RingHash => "ring_hash",
            Self::LeastRequest => "least_request",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl Serialize for LbPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Outlier ejection (gRFC A50; Envoy's `outlier_detection`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outlier {
    /// `outlier-consecutive-failures`: failures in a row that eject an
    /// endpoint; 0 turns the rule off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// `outlier-failure-percentage`: the share of failed calls in an
    /// interval above which an endpoint is ejected, 0-100; 0 turns the
    /// rule off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<u32>,
    /// `outlier-interval`: how often failure percentages are judged.
    #[serde(serialize_with = "seconds", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// `outlier-base-ejection-time`: the first ejection's length (the n-th
    /// in a row lasts n times as long).
    #[serde(serialize_with = "seconds", skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// `outlier-max-ejection-time`: the cap on one ejection.
    #[serde(serialize_with = "seconds", skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    /// `outlier-max-ejection-percent`: the share of endpoints that may be
    /// ejected at once, 0-100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

impl Outlier {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Retries on another endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// `retry-max-attempts`: tries per call, the first one included, 1-5
    /// (1: no retries; 5 is gRPC's own cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// `retry-on`: the gRPC status codes that are retried, sorted, no
    /// duplicates, never empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<Box<[RetryCode]>>,
}

impl Retry {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A gRPC status code that may be retried, named as Envoy's `retry_on`
/// names it for gRPC (`resource-exhausted`); these five are the codes
/// Envoy can retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetryCode {
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
}

impl RetryCode {
    pub const ALL: [RetryCode; 5] = [
        Self::Cancelled,
        Self::DeadlineExceeded,
        Self::Internal,
        Self::ResourceExhausted,
        Self::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::Internal => "internal",
            Self::ResourceExhausted => "resource-exhausted",
            Self::Unavailable => "unavailable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }
}

impl Serialize for RetryCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A duration as decimal seconds with an `s` ("30s", "0.25s"): the form
/// gRPC service configs and Envoy's JSON take, which Go's
/// `time.ParseDuration` reads too.
pub fn format_seconds(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        return format!("{}s", duration.as_secs());
    }
    let fraction = format!("{nanos:09}");
    format!("{}.{}s", duration.as_secs(), fraction.trim_end_matches('0'))
}

fn seconds<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_str(&format_seconds(*duration)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_decimal_seconds() {
        assert_eq!(format_seconds(Duration::from_secs(30)), "30s");
        assert_eq!(format_seconds(Duration::from_millis(250)), "0.25s");
        assert_eq!(
            format_seconds(Duration::from_nanos(1_000_000_001)),
            "1.000000001s"
        );
    }

    #[test]
    fn serializes_only_what_is_set() {
        let resilience = Resilience {
            outlier: Outlier {
                consecutive_failures: Some(2),
                base_ejection_time: Some(Duration::from_millis(1500)),
                ..Outlier::default()
            },
            ..Resilience::default()
        };
        assert_eq!(
            serde_json::to_value(&resilience).unwrap(),
            serde_json::json!({"outlier": {"consecutiveFailures": 2, "baseEjectionTime": "1.5s"}})
        );
        let retry = Resilience {
            retry: Retry {
                max_attempts: Some(1),
                on: Some([RetryCode::Unavailable, RetryCode::ResourceExhausted].into()),
            },
            ..Resilience::default()
        };
        assert_eq!(
            serde_json::to_value(&retry).unwrap(),
            serde_json::json!({"retry": {"maxAttempts": 1, "on": ["unavailable", "resource-exhausted"]}})
        );
        let ring = Resilience {
            balancing: Balancing {
                policy: Some(LbPolicy::RingHash),
                hash_header: Some("x-user".into()),
            },
            ..Resilience::default()
        };
        assert!(!ring.is_empty());
        assert_eq!(
            serde_json::to_value(&ring).unwrap(),
            serde_json::json!({"balancing": {"policy": "ring_hash", "hashHeader": "x-user"}})
        );
    }
}
