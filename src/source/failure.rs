//! Why a watch failed: a reason classified from the error's status code and
//! transport (never from its text), and one line that says what to do.
//!
//! Pure functions of a `watcher::Error`; it reports nothing itself (that is
//! [`super::health`]'s).

use kube::runtime::watcher;

use super::proto::ProtoError;

/// Why a watch failed, for the `reason` label of the API error metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FailureReason {
    Forbidden,
    Unauthorized,
    Unreachable,
    Gone,
    Other,
}

impl FailureReason {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::Unreachable => "unreachable",
            Self::Gone => "gone",
            Self::Other => "other",
        }
    }
}

fn inner_client_error(error: &watcher::Error) -> Option<&kube::Error> {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => Some(e),
        _ => None,
    }
}

pub(super) fn classify(error: &watcher::Error) -> FailureReason {
    let code = match error {
        watcher::Error::WatchError(status) => Some(status.code),
        other => match inner_client_error(other) {
            Some(kube::Error::Api(status)) => Some(status.code),
            // The protobuf watcher reports an undecodable answer as a
            // service error too; the API server did answer.
            Some(kube::Error::Service(inner)) if inner.is::<ProtoError>() => None,
            Some(kube::Error::HyperError(_) | kube::Error::Service(_)) => {
                return FailureReason::Unreachable;
            }
            _ => None,
        },
    };
    match code {
        Some(403) => FailureReason::Forbidden,
        Some(401) => FailureReason::Unauthorized,
        Some(410) => FailureReason::Gone,
        _ => FailureReason::Other,
    }
}

/// One line that names the cause, in words an operator can act on.
pub(super) fn describe(
    error: &watcher::Error,
    reason: FailureReason,
    resource: &str,
    namespace: &Option<String>,
) -> String {
    let scope = match namespace {
        Some(ns) => format!("{resource} in namespace {ns}"),
        None => format!("{resource} in all namespaces"),
    };
    let detail = match error {
        watcher::Error::WatchError(status) => status.message.clone(),
        other => match inner_client_error(other) {
            Some(kube::Error::Api(status)) => status.message.clone(),
            Some(inner) => inner.to_string(),
            None => other.to_string(),
        },
    };
    match reason {
        FailureReason::Forbidden => {
            format!("RBAC forbids list/watch of {scope} (grant get/list/watch): {detail}")
        }
        FailureReason::Unauthorized => {
            format!("the API server rejected our credentials watching {scope}: {detail}")
        }
        FailureReason::Unreachable => {
            format!("API server unreachable while watching {scope}: {detail}")
        }
        FailureReason::Gone => format!("watch of {scope} expired (410 Gone), re-listing"),
        FailureReason::Other => format!("watch of {scope} failed: {detail}"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use kube::core::Status;

    /// What a watcher reports when the API server refuses connections.
    pub(in crate::source) fn unreachable() -> watcher::Error {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        watcher::Error::InitialListFailed(kube::Error::Service(Box::new(refused)))
    }

    fn api_error(code: u16) -> watcher::Error {
        let status = Status::failure("no", "Reason").with_code(code);
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn failures_are_classified_by_code_and_transport_not_by_text() {
        assert_eq!(classify(&unreachable()), FailureReason::Unreachable);
        assert_eq!(classify(&api_error(403)), FailureReason::Forbidden);
        assert_eq!(classify(&api_error(401)), FailureReason::Unauthorized);
        assert_eq!(classify(&api_error(410)), FailureReason::Gone);
        assert_eq!(classify(&api_error(500)), FailureReason::Other);
        // A message that merely mentions 410 is not a 410.
        let text = watcher::Error::WatchError(Box::new(
            Status::failure("proxy said 410 Gone", "Bad").with_code(502),
        ));
        assert_eq!(classify(&text), FailureReason::Other);
        // An answer that would not decode came from a live API server.
        let garbled = watcher::Error::WatchFailed(kube::Error::Service(Box::new(ProtoError(
            "watch event".into(),
        ))));
        assert_eq!(classify(&garbled), FailureReason::Other);
    }
}
