//! Priority tiers from topology: which endpoints this agent's clients should
//! prefer, and when to spill over to the rest.
//!
//! Per Service, in this order:
//!
//! 1. **Hints**, when every usable endpoint carries them (kube-proxy's
//!    all-or-nothing rule): `hints.forZones` containing our zone is tier 0,
//!    the rest tier 1; if no endpoint is hinted for our zone, hints are
//!    ignored (kube-proxy falls back to all endpoints). With
//!    `PreferSameNode` and complete `hints.forNodes`, our node comes first.
//! 2. **`spec.trafficDistribution`** otherwise, from the endpoints' own
//!    `nodeName`/`zone`: `PreferSameNode` → same node, same zone, rest;
//!    `PreferSameZone` and `PreferClose` → same zone, rest.
//! 3. **The agent's default** (`--default-topology`) for Services that ask
//!    for nothing: `none` (one tier, as kube-proxy) or `zone`.
//!
//! Then Envoy's panic rule: a tier whose usable share of weight (ready
//! weight over all listed weight, not-ready endpoints included) is below
//! the panic threshold is merged with the next one, until the group is
//! healthy enough or no tier is left. Weight-0 (drained) endpoints count in
//! neither share and always come last, in a tier of their own.
//!
//! Index state, computed when a Service is merged: owns [`Locality`] and
//! the tier rules. It sees one Service's endpoints at a time, never the
//! writer or a snapshot; picking within a tier is `crate::balance`'s job.

use std::sync::Arc;

/// What the agent does for Services that set no topology preference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultTopology {
    /// One tier: every endpoint equal (kube-proxy's default).
    #[default]
    None,
    /// Prefer endpoints in the agent's zone.
    Zone,
}

/// Where this agent runs, and how it tiers.
#[derive(Clone, Debug)]
pub struct Locality {
    pub node: Option<Arc<str>>,
    pub zone: Option<Arc<str>>,
    pub default_topology: DefaultTopology,
    /// Usable share below which a tier spills into the next (0.0–1.0).
    pub panic_threshold: f64,
}

impl Default for Locality {
    fn default() -> Self {
        Self {
            node: None,
            zone: None,
            default_topology: DefaultTopology::None,
            panic_threshold: 0.5,
        }
    }
}

/// What tiering needs to know of one endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TierInput<'a> {
    pub(crate) node: Option<&'a str>,
    pub(crate) zone: Option<&'a str>,
    pub(crate) hint_zones: &'a [Arc<str>],
    pub(crate) hint_nodes: &'a [Arc<str>],
    pub(crate) weight: u32,
    /// Served (ready, or the terminating fallback); the others only count
    /// toward the panic rule's denominator.
    pub(crate) usable: bool,
}

fn contains(list: &[Arc<str>], item: Option<&str>) -> bool {
    item.is_some_and(|item| list.iter().any(|x| &**x == item))
}

/// Raw tiers before the panic rule: lower is closer.
fn raw_tiers(
    inputs: &[TierInput<'_>],
    traffic_distribution: Option<&str>,
    here: &Locality,
) -> Vec<u32> {
    let usable = || inputs.iter().filter(|e| e.usable);
    let node = here.node.as_deref();
    let zone = here.zone.as_deref();
    let prefer_node = traffic_distribution == Some("PreferSameNode");

    let zone_hints = usable().next().is_some() && usable().all(|e| !e.hint_zones.is_empty());
    if zone_hints && usable().any(|e| contains(e.hint_zones, zone)) {
        let node_hints = prefer_node && usable().all(|e| !e.hint_nodes.is_empty());
        let node_hints = node_hints && usable().any(|e| contains(e.hint_nodes, node));
        return inputs
            .iter()
            .map(|e| {
                let in_zone = contains(e.hint_zones, zone);
                match (node_hints, contains(e.hint_nodes, node), in_zone) {
                    (true, true, _) => 0,
                    (true, false, true) => 1,
                    (true, false, false) => 2,
                    (false, _, true) => 0,
                    (false, _, false) => 1,
                }
            })
            .collect();
    }
    let same_node = |e: &TierInput<'_>| node.is_some() && e.node == node;
    let same_zone = |e: &TierInput<'_>| zone.is_some() && e.zone == zone;
    match traffic_distribution {
        Some("PreferSameNode") => inputs
            .iter()
            .map(|e| {
                if same_node(e) {
                    0
                } else if same_zone(e) {
                    1
                } else {
                    2
                }
            })
            .collect(),
        Some("PreferSameZone" | "PreferClose") => {
            inputs.iter().map(|e| u32::from(!same_zone(e))).collect()
        }
        _ => match here.default_topology {
            DefaultTopology::None => vec![0; inputs.len()],
            DefaultTopology::Zone => inputs.iter().map(|e| u32::from(!same_zone(e))).collect(),
        },
    }
}

/// The priority of every input (meaningful for usable ones; 0 for others):
/// tiers renumbered from 0, merged by the panic rule, drained last.
pub(crate) fn assign_priorities(
    inputs: &[TierInput<'_>],
    traffic_distribution: Option<&str>,
    here: &Locality,
) -> Vec<u32> {
    let raw = raw_tiers(inputs, traffic_distribution, here);
    // Tiers that hold at least one usable, weighted endpoint, in order.
    let mut tiers: Vec<u32> = inputs
        .iter()
        .zip(&raw)
        .filter(|(e, _)| e.usable && e.weight > 0)
        .map(|(_, t)| *t)
        .collect();
    tiers.sort_unstable();
    tiers.dedup();

    // Panic rule: group consecutive tiers until the group is healthy.
    let health = |members: &[u32]| {
        let (mut ready, mut total) = (0u64, 0u64);
        for (e, t) in inputs.iter().zip(&raw) {
            if e.weight > 0 && members.contains(t) {
                total += u64::from(e.weight);
                if e.usable {
                    ready += u64::from(e.weight);
                }
            }
        }
        if total == 0 {
            0.0
        } else {
            ready as f64 / total as f64
        }
    };
    let mut group_of_tier: Vec<(u32, u32)> = Vec::new();
    let mut group = 0;
    let mut i = 0;
    while i < tiers.len() {
        let mut members = vec![tiers[i]];
        i += 1;
        while health(&members) < here.panic_threshold && i < tiers.len() {
            members.push(tiers[i]);
            i += 1;
        }
        group_of_tier.extend(members.into_iter().map(|t| (t, group)));
        group += 1;
    }
    let drained_priority = group;
    inputs
        .iter()
        .zip(&raw)
        .map(|(e, t)| {
            if !e.usable {
                0
            } else if e.weight == 0 {
                drained_priority
            } else {
                group_of_tier
                    .iter()
                    .find(|(tier, _)| tier == t)
                    .map_or(0, |(_, g)| *g)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here(default_topology: DefaultTopology) -> Locality {
        Locality {
            node: Some("node-a".into()),
            zone: Some("zone-a".into()),
            default_topology,
            panic_threshold: 0.5,
        }
    }

    struct Ep {
        node: &'static str,
        zone: &'static str,
        hints: Vec<Arc<str>>,
        node_hints: Vec<Arc<str>>,
        weight: u32,
        usable: bool,
    }

    fn ep(node: &'static str, zone: &'static str) -> Ep {
        Ep {
            node,
            zone,
            hints: vec![],
            node_hints: vec![],
            weight: 100,
            usable: true,
        }
    }

    fn priorities(eps: &[Ep], td: Option<&str>, here: &Locality) -> Vec<u32> {
        let inputs: Vec<TierInput<'_>> = eps
            .iter()
            .map(|e| TierInput {
                node: Some(e.node),
                zone: Some(e.zone),
                hint_zones: &e.hints,
                hint_nodes: &e.node_hints,
                weight: e.weight,
                usable: e.usable,
            })
            .collect();
        assign_priorities(&inputs, td, here)
    }

    #[test]
    fn without_a_preference_everything_is_one_tier() {
        let eps = [ep("node-a", "zone-a"), ep("node-b", "zone-b")];
        assert_eq!(priorities(&eps, None, &here(DefaultTopology::None)), [0, 0]);
        assert_eq!(priorities(&eps, None, &here(DefaultTopology::Zone)), [0, 1]);
    }

    #[test]
    fn each_traffic_distribution_value() {
        let eps = [
            ep("node-a", "zone-a"),
            ep("node-x", "zone-a"),
            ep("node-b", "zone-b"),
        ];
        let h = here(DefaultTopology::None);
        assert_eq!(priorities(&eps, Some("PreferSameNode"), &h), [0, 1, 2]);
        assert_eq!(priorities(&eps, Some("PreferSameZone"), &h), [0, 0, 1]);
        assert_eq!(priorities(&eps, Some("PreferClose"), &h), [0, 0, 1]);
        assert_eq!(priorities(&eps, Some("SomethingNew"), &h), [0, 0, 0]);
    }

    #[test]
    fn hints_are_all_or_nothing() {
        let mut a = ep("node-b", "zone-b");
        a.hints = vec!["zone-a".into()];
        let mut b = ep("node-a", "zone-a");
        b.hints = vec!["zone-b".into()];
        let c = ep("node-c", "zone-c"); // no hints
        let h = here(DefaultTopology::None);
        // One endpoint without hints: hints ignored, trafficDistribution used.
        assert_eq!(priorities(&[a, b, c], Some("PreferClose"), &h), [1, 0, 1]);

        let mut a = ep("node-b", "zone-b");
        a.hints = vec!["zone-a".into()];
        let mut b = ep("node-a", "zone-a");
        b.hints = vec!["zone-b".into()];
        // All hinted: the hint wins over the endpoint's own zone.
        assert_eq!(priorities(&[a, b], Some("PreferClose"), &h), [0, 1]);

        let mut a = ep("node-a", "zone-a");
        a.hints = vec!["zone-b".into()];
        // Nothing hinted for our zone: hints ignored.
        assert_eq!(priorities(&[a], Some("PreferClose"), &h), [0]);
    }

    #[test]
    fn unhealthy_tiers_spill_into_the_next() {
        let h = here(DefaultTopology::Zone);
        // Zone a: one ready of three (33% < 50%): merged with zone b.
        let mut eps = vec![
            ep("n1", "zone-a"),
            ep("n2", "zone-a"),
            ep("n3", "zone-a"),
            ep("n4", "zone-b"),
        ];
        eps[1].usable = false;
        eps[2].usable = false;
        assert_eq!(priorities(&eps, None, &h), [0, 0, 0, 0]);
        // Two of three ready (67%): zone a stays preferred.
        eps[1].usable = true;
        assert_eq!(priorities(&eps, None, &h), [0, 0, 0, 1]);
        // Threshold 0: strict failover, never merged.
        eps[1].usable = false;
        let strict = Locality {
            panic_threshold: 0.0,
            ..h
        };
        assert_eq!(priorities(&eps, None, &strict), [0, 0, 0, 1]);
    }

    #[test]
    fn no_usable_endpoint_in_our_zone_means_the_next_tier_is_first() {
        let h = here(DefaultTopology::Zone);
        let mut eps = vec![ep("n1", "zone-a"), ep("n2", "zone-b")];
        eps[0].usable = false;
        assert_eq!(priorities(&eps, None, &h)[1], 0);
    }

    #[test]
    fn drained_endpoints_come_last() {
        let h = here(DefaultTopology::Zone);
        let mut eps = vec![ep("n1", "zone-a"), ep("n2", "zone-b"), ep("n3", "zone-a")];
        eps[2].weight = 0;
        assert_eq!(priorities(&eps, None, &h), [0, 1, 2]);
    }
}
