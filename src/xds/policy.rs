//! A Service's balancing policy for xDS clients, from its annotations as
//! the index keeps them ([`crate::index::resilience`]): round robin with no
//! outlier detection unless `kubedisco.io/lb-policy`,
//! `kubedisco.io/hash-header` or a `kubedisco.io/outlier-*` annotation says
//! otherwise. Retries are not served (see the README's limits).

use super::resources::{LbPolicy, Policy};
use crate::index::ServedService;

pub(crate) fn of(service: &ServedService) -> Policy {
    let Some(r) = service.resilience.as_deref() else {
        return Policy::default();
    };
    Policy {
        lb: r.balancing.policy.unwrap_or(LbPolicy::RoundRobin),
        hash_header: r.balancing.hash_header.as_deref().map(str::to_owned),
        outlier: (!r.outlier.is_empty()).then(|| r.outlier.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::index::merge::tests::service;
    use crate::index::objects::Resilience;
    use crate::index::resilience::{Balancing, Outlier, Retry};
    use crate::index::{Change, Index, ServiceKey};

    /// The policy of Service "web" with `resilience`, as the xDS server
    /// reads it: through the index's served view.
    fn served(resilience: Option<Resilience>) -> Policy {
        let index = Index::default();
        let mut svc = service("web");
        svc.resilience = resilience.map(Arc::new);
        index.apply([Change::ApplyService(svc)]);
        let snapshot = index.load();
        of(snapshot
            .services
            .get(&ServiceKey::new("ns", "web"))
            .unwrap())
    }

    #[test]
    fn no_annotation_is_round_robin_without_ejection() {
        assert_eq!(served(None), Policy::default());
        // Retries alone change nothing here.
        let retry_only = Resilience {
            retry: Retry {
                max_attempts: Some(2),
                on: None,
            },
            ..Resilience::default()
        };
        assert_eq!(served(Some(retry_only)), Policy::default());
    }

    #[test]
    fn annotations_become_the_policy() {
        let outlier = Outlier {
            failure_percentage: Some(50),
            interval: Some(Duration::from_secs(1)),
            ..Outlier::default()
        };
        let policy = served(Some(Resilience {
            outlier: outlier.clone(),
            balancing: Balancing {
                policy: Some(LbPolicy::RingHash),
                hash_header: Some("x-user".into()),
            },
            ..Resilience::default()
        }));
        assert_eq!(
            policy,
            Policy {
                lb: LbPolicy::RingHash,
                hash_header: Some("x-user".into()),
                outlier: Some(outlier),
            }
        );
        let least = served(Some(Resilience {
            balancing: Balancing {
                policy: Some(LbPolicy::LeastRequest),
                hash_header: None,
            },
            ..Resilience::default()
        }));
        assert_eq!(least.lb, LbPolicy::LeastRequest);
        assert_eq!(least.outlier, None);
    }
}
