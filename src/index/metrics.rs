//! The index's series: what it serves and whether it is synced. The index
//! keeps the [`IndexGauges`] current and registers them here; the agent
//! composes them with the other components' metrics.

use prometheus_client::registry::Registry;

use super::IndexGauges;

impl IndexGauges {
    pub fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        registry.register(
            "services",
            "Services served from the index",
            gauges.services.clone(),
        );
        registry.register(
            "endpoints",
            "Usable endpoints over all served Services",
            gauges.endpoints.clone(),
        );
        registry.register(
            "synced",
            "1 once every source has completed its first full list",
            gauges.synced.clone(),
        );
        registry.register(
            "service_revisions",
            "Changes of a Service's served state",
            gauges.revisions.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last completed full list (initial or re-list)",
            gauges.last_sync_timestamp.clone(),
        );
        gauges
    }
}
