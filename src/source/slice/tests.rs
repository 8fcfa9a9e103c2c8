//! Unit tests of the lean EndpointSlice decoder.

use super::*;

fn slice(value: serde_json::Value) -> Slice {
    serde_json::from_value(value).unwrap()
}

#[test]
fn conditions_default_as_kubernetes_documents() {
    let compact = slice(serde_json::json!({
        "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "7",
                     "labels": {"kubernetes.io/service-name": "web", "other": "x"},
                     "annotations": {"kubedisco.io/weight": "250", "big": "y"},
                     "managedFields": [{"manager": "m", "fieldsV1": {"f:a": {}}}]},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.0.0.1", "10.0.0.99"], "nodeName": "n1", "zone": "z",
             "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "u"},
             "hints": {"forZones": [{"name": "z"}], "forNodes": [{"name": "n1"}]}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}},
            {"addresses": ["not-an-ip"]},
            {"addresses": []}
        ]
    }));
    assert_eq!(compact.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(compact.metadata.labels.as_ref().unwrap().len(), 1);
    assert_eq!(compact.problems.len(), 1);
    let compact = compact.into_object(&InvalidWeights::default()).unwrap();
    assert_eq!(&*compact.key.namespace, "shop");
    assert_eq!(&*compact.key.name, "web-1");
    assert_eq!(compact.service.as_deref(), Some("web"));
    assert_eq!(compact.weight, Some(250));
    assert_eq!(compact.ports[0].protocol, Protocol::Tcp);
    assert_eq!(compact.ports[0].port, Some(8080));
    assert_eq!(compact.endpoints.len(), 2);
    let first = &compact.endpoints[0];
    assert_eq!(first.address.to_string(), "10.0.0.1");
    assert!(first.ready && first.serving && !first.terminating);
    assert_eq!(first.node.as_deref(), Some("n1"));
    assert_eq!(first.zone.as_deref(), Some("z"));
    let target = first.target_ref.as_ref().unwrap();
    assert_eq!(
        (&*target.kind, target.namespace.as_deref(), &*target.name),
        ("Pod", Some("shop"), "web-0")
    );
    assert_eq!(first.hint_zones(), [Arc::<str>::from("z")]);
    assert_eq!(first.hint_nodes(), [Arc::<str>::from("n1")]);
    // Repeating strings are shared with every other holder.
    assert!(Arc::ptr_eq(first.zone.as_ref().unwrap(), &intern("z")));
    let second = &compact.endpoints[1];
    assert!(!second.ready && second.serving && second.terminating);
}

#[test]
fn fqdn_slices_are_ignored_and_bad_ports_and_weights_dropped() {
    let fqdn = slice(serde_json::json!({
        "metadata": {"name": "x"}, "addressType": "FQDN", "endpoints": []
    }));
    assert!(fqdn.into_object(&InvalidWeights::default()).is_none());
    let bad = slice(serde_json::json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "x", "annotations": {"kubedisco.io/weight": "-3"}},
        "addressType": "IPv4",
        "ports": [{"port": 0}, {"port": 70000}, {"protocol": "QUIC", "port": 1}, {"name": null, "protocol": "UDP"}],
        "endpoints": null
    }));
    assert_eq!(bad.problems.len(), 3);
    let invalid_weights = InvalidWeights::default();
    let bad = bad.into_object(&invalid_weights).unwrap();
    assert_eq!(bad.weight, None);
    assert_eq!(invalid_weights.count("endpointslice"), 1);
    assert_eq!(&*bad.key.namespace, "default");
    assert_eq!(bad.ports.len(), 1);
    assert_eq!(
        (
            &*bad.ports[0].name,
            bad.ports[0].port,
            bad.ports[0].protocol
        ),
        ("", None, Protocol::Udp)
    );
    assert!(bad.endpoints.is_empty());
}

/// The same JSON through k8s-openapi's type gives the same fields the
/// lean type keeps (the type kube-runtime used before).
#[test]
fn agrees_with_k8s_openapi_on_what_it_keeps() {
    let value = serde_json::json!({
        "metadata": {"name": "a", "namespace": "n", "resourceVersion": "9", "uid": "u"},
        "addressType": "IPv6",
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns", "port": 53, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["fd00::1"], "hostname": "h", "conditions": {"serving": false}}]
    });
    let full: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(value.clone()).unwrap();
    let lean = slice(value);
    assert_eq!(
        lean.metadata,
        ObjectMeta {
            managed_fields: None,
            ..full.metadata.clone()
        }
    );
    let lean = lean.into_object(&InvalidWeights::default()).unwrap();
    assert_eq!(lean.ports.len(), 2);
    let endpoint = &lean.endpoints[0];
    assert_eq!(endpoint.address.to_string(), "fd00::1");
    assert_eq!(endpoint.hostname.as_deref(), Some("h"));
    assert!(endpoint.ready && !endpoint.serving && !endpoint.terminating);
}
