//! Strict parsing of paths and query strings: unknown or repeated
//! parameters and malformed names are a 400 that says what was wrong, not a
//! silently ignored typo.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::ApiError;
use crate::index::ServiceKey;

/// The `{namespace}/{name}` of a route about one Service, both checked to
/// be DNS labels. A path axum cannot decode (say `%FF`, not UTF-8) is the
/// same JSON 400 as a bad name, not axum's plain-text rejection.
pub struct ServicePath(pub ServiceKey);

impl<S: Send + Sync> FromRequestParts<S> for ServicePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((namespace, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
            })?;
        validate_name("namespace", &namespace)?;
        validate_name("service name", &name)?;
        Ok(Self(ServiceKey::new(&namespace, &name)))
    }
}

/// Parses `raw` and rejects parameters outside `allowed` or given twice.
pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut params = BTreeMap::new();
    let Some(raw) = raw else {
        return Ok(params);
    };
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        if !allowed.contains(&key.as_ref()) {
            return Err(ApiError::bad_request(if allowed.is_empty() {
                format!("unknown query parameter {key:?}: this route takes none")
            } else {
                format!(
                    "unknown query parameter {key:?}; this route takes: {}",
                    allowed.join(", ")
                )
            }));
        }
        if params.insert(key.to_string(), value.to_string()).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter {key:?} is given more than once"
            )));
        }
    }
    Ok(params)
}

/// Namespaces and Service names are DNS labels ([`crate::names`]): a bad
/// one is a 400 that says so, instead of "not found".
pub fn validate_name(what: &str, name: &str) -> Result<(), ApiError> {
    crate::names::check_dns_label(what, name).map_err(ApiError::bad_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_repeated_parameters_are_rejected() {
        assert!(parse(Some("index=1&wait=5s"), &["index", "wait"]).is_ok());
        let error = parse(Some("indx=1"), &["index", "wait"]).unwrap_err();
        assert!(error.message.contains("indx"), "{}", error.message);
        let error = parse(Some("index=1&index=2"), &["index"]).unwrap_err();
        assert!(error.message.contains("more than once"));
        assert!(
            parse(Some("x"), &[])
                .unwrap_err()
                .message
                .contains("takes none")
        );
    }

    #[test]
    fn names_must_be_dns_labels() {
        assert!(validate_name("namespace", "shop-1").is_ok());
        for bad in ["", "Shop", "a_b", "-a", "a-", &"a".repeat(64), "a.b"] {
            assert!(validate_name("namespace", bad).is_err(), "{bad:?}");
        }
    }
}
