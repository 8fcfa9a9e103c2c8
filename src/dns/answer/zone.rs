//! The served zone: its name, the TTL of its answers, which namespaces the
//! agent knows (`--namespaces`) and how pod names are answered
//! (`--pod-records`), pre-split for matching a query's labels.
//!
//! Owns: whether a name lies in the zone, and where the zone's name starts
//! inside a question (the SOA's owner). May not touch: the snapshot or the
//! response.

use crate::dns::wire::Query;

/// `<dashed ip>.<ns>.pod.<zone>` records (`--pod-records`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PodRecords {
    /// A/AAAA echoing the address in the name, whatever it is, as CoreDNS's
    /// `pods insecure` (kubeadm's default).
    #[default]
    Insecure,
    /// No pod names: NXDOMAIN.
    Disabled,
}

/// The served zone, pre-split for matching.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase labels, e.g. `["cluster", "local"]`.
    labels: Vec<Vec<u8>>,
    /// Dotted lowercase name without a trailing dot.
    pub(crate) name: String,
    pub(crate) ttl: u32,
    /// The namespaces the agent watches (`--namespaces`), lowercase; None
    /// for all. Names under `<ns>.svc` of another namespace are not the
    /// agent's to deny: they go to the cluster's DNS.
    namespaces: Option<Vec<Vec<u8>>>,
    pub(crate) pod_records: PodRecords,
}

impl Zone {
    pub fn new(name: &str, ttl: u32) -> Self {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        Self {
            labels: name.split('.').map(|l| l.as_bytes().to_vec()).collect(),
            name,
            ttl,
            namespaces: None,
            pod_records: PodRecords::default(),
        }
    }

    /// Only these namespaces' Services are known (empty: all).
    pub fn watching(mut self, namespaces: &[String]) -> Self {
        self.namespaces = (!namespaces.is_empty()).then(|| {
            namespaces
                .iter()
                .map(|n| n.to_ascii_lowercase().into_bytes())
                .collect()
        });
        self
    }

    pub fn with_pod_records(mut self, pod_records: PodRecords) -> Self {
        self.pod_records = pod_records;
        self
    }

    /// Whether the agent knows every Service of `namespace` (any case).
    pub(crate) fn knows_namespace(&self, namespace: &[u8]) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|watched| watched.iter().any(|n| n.eq_ignore_ascii_case(namespace)))
    }

    /// Whether the dotted `name` (any case, trailing dot or not) lies in
    /// the zone.
    pub(crate) fn contains(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').as_bytes();
        let zone = self.name.as_bytes();
        name.len() >= zone.len()
            && name[name.len() - zone.len()..].eq_ignore_ascii_case(zone)
            && (name.len() == zone.len() || name[name.len() - zone.len() - 1] == b'.')
    }

    /// How many leading labels of the query lie below the zone, or None when
    /// the name is outside it.
    pub(super) fn relative_len(&self, query: &Query<'_>) -> Option<usize> {
        let zone_len = self.labels.len();
        if query.label_count < zone_len {
            return None;
        }
        let inside = self
            .labels
            .iter()
            .rev()
            .enumerate()
            .all(|(i, label)| query.label_from_end(i).eq_ignore_ascii_case(label));
        inside.then(|| query.label_count - zone_len)
    }

    /// Where the zone's name starts in the packet of a query for a name
    /// inside it (for one outside, it is meaningless).
    pub(super) fn offset_in(&self, query: &Query<'_>) -> u16 {
        query.suffix_offset(query.label_count - self.labels.len())
    }
}
