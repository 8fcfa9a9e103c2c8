//! The annotations and labels kubedisco reads, and their rules, shared by
//! the lean decoders of Services ([`super::service`]) and EndpointSlices
//! ([`super::slice`]).

use std::collections::BTreeMap;

use tracing::warn;

use super::metrics::InvalidWeights;

/// Service annotation: serve this ClusterIP Service's endpoints too.
pub const EXPOSE_ANNOTATION: &str = "kubedisco.io/expose";
/// Service label, the same as [`EXPOSE_ANNOTATION`]: the EndpointSlice
/// controller copies a Service's labels onto its slices, so only the label
/// lets the agent select the slices of exposed Services on the API server.
pub const EXPOSE_LABEL: &str = EXPOSE_ANNOTATION;
/// EndpointSlice label the EndpointSlice controller sets on the slices of
/// headless Services (kube-proxy watches its complement).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Service annotation: weight of endpoints that have none of their own.
pub const DEFAULT_WEIGHT_ANNOTATION: &str = "kubedisco.io/default-weight";
/// EndpointSlice annotation (and Pod label): weight of its endpoints.
pub const WEIGHT_KEY: &str = "kubedisco.io/weight";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Weights are 16-bit so that they fit SRV records unchanged.
pub fn parse_weight(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u16>()
        .map(u32::from)
        .map_err(|_| format!("weight {text:?} is not an integer from 0 to 65535"))
}

/// The weight in annotation `key`; None when absent or invalid. An invalid
/// value is logged and counted under `kind` (the object's kind, as the
/// metric's `source` label names it).
pub(super) fn weight_annotation(
    annotations: Option<&BTreeMap<String, String>>,
    key: &str,
    what: &str,
    kind: &str,
    invalid_weights: &InvalidWeights,
) -> Option<u32> {
    let text = annotations?.get(key)?;
    match parse_weight(text) {
        Ok(weight) => Some(weight),
        Err(error) => {
            warn!(
                object = what,
                annotation = key,
                "ignoring invalid weight: {error}"
            );
            invalid_weights.record(kind);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_must_fit_sixteen_bits() {
        assert_eq!(parse_weight("0"), Ok(0));
        assert_eq!(parse_weight("65535"), Ok(65535));
        assert!(parse_weight("65536").is_err());
        assert!(parse_weight("ten").is_err());
    }
}
