//! Helpers the index's unit tests share.

use super::Index;
use super::objects::ServiceKey;

pub(crate) fn key(name: &str) -> ServiceKey {
    ServiceKey::new("ns", name)
}

pub(crate) fn ips(index: &Index, name: &str) -> Vec<String> {
    index
        .load()
        .get("ns", name)
        .map(|s| s.endpoints.iter().map(|e| e.ip().to_string()).collect())
        .unwrap_or_default()
}
