//! A small index with every kind of field a snapshot carries, for the
//! tests of this module.

use super::coverage::Coverage;
use crate::index::merge::tests::{endpoint, service, slice};
use crate::index::objects::{Protocol, Resilience, ServicePort, TargetRef, TopologyHints};
use crate::index::resilience::RetryCode;
use crate::index::{Change, Contents, Index};

/// An agent watching everything, Pod weights included.
pub(crate) fn everything() -> Coverage {
    Coverage {
        source: "kubernetes".into(),
        namespaces: vec![],
        pod_weights: true,
    }
}

pub(crate) fn sample_index() -> Index {
    let index = Index::default();
    let mut svc = service("web");
    svc.ports.push(ServicePort {
        name: "http".into(),
        port: 80,
        protocol: Protocol::Tcp,
        target_port: Some("8080".into()),
    });
    svc.traffic_distribution = Some("PreferClose".into());
    let mut resilience = Resilience::default();
    resilience.outlier.consecutive_failures = Some(2);
    resilience.outlier.base_ejection_time = Some(std::time::Duration::from_millis(1500));
    resilience.retry.on = Some([RetryCode::Unavailable].into());
    resilience.balancing.policy = Some(crate::index::resilience::LbPolicy::RingHash);
    resilience.balancing.hash_header = Some("x-user".into());
    svc.resilience = Some(std::sync::Arc::new(resilience));
    let mut terminating = endpoint("10.0.0.2");
    terminating.ready = false;
    terminating.terminating = true;
    terminating.zone = Some("zone-a".into());
    terminating.target_ref = Some(TargetRef {
        kind: "Pod".into(),
        namespace: Some("ns".into()),
        name: "web-1".into(),
    });
    terminating.hints = TopologyHints::boxed(["zone-a".into()].into(), Box::default());
    let mut weighted = slice("a", "web", 8080, vec![endpoint("10.0.0.1"), terminating]);
    weighted.weight = Some(7);
    index.apply([
        Change::ApplyService(svc),
        Change::ApplySlice(weighted),
        Change::SetPodWeight(("ns".into(), "web-1".into()), Some(300)),
    ]);
    index
}

pub(crate) fn sorted(mut contents: Contents) -> Contents {
    contents.services.sort_by(|a, b| a.key.cmp(&b.key));
    contents.slices.sort_by(|a, b| a.key.cmp(&b.key));
    contents.pod_weights.sort();
    contents
}
