//! What discovery says about itself in `/metrics`.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

type Labels = Vec<(String, String)>;

/// Discovery and routing families (cheap to clone).
///
/// * `fleet_discovery_instances{target}` — healthy instances known now;
/// * `fleet_discovery_stale{target}` — 1 while Consul cannot be reached and
///   the last known list is served (stale but serving), else 0;
/// * `fleet_discovery_last_sync_timestamp_seconds{target}` — when Consul
///   last answered (Unix time; its age is the staleness);
/// * `fleet_discovery_errors_total{target}` — failed queries;
/// * `fleet_route_updates_total{target,outcome}` — route tables applied or
///   rejected.
#[derive(Clone, Debug, Default)]
pub struct DiscoveryMetrics {
    instances: Family<Labels, Gauge>,
    stale: Family<Labels, Gauge>,
    last_sync: Family<Labels, Gauge>,
    errors: Family<Labels, Counter>,
    routes: Family<Labels, Counter>,
}

fn target(t: &str) -> Labels {
    vec![("target".to_owned(), t.to_owned())]
}

impl DiscoveryMetrics {
    /// Creates the families and registers them in `metrics`.
    pub fn register(metrics: &fleet_metrics::Metrics) -> Self {
        let this = Self::default();
        metrics.register(
            "discovery_instances",
            "Healthy instances of a dependency known from discovery",
            this.instances.clone(),
        );
        metrics.register(
            "discovery_stale",
            "1 while discovery is unreachable and the last known instances are used",
            this.stale.clone(),
        );
        metrics.register(
            "discovery_last_sync_timestamp_seconds",
            "Unix time discovery last answered for a dependency",
            this.last_sync.clone(),
        );
        metrics.register(
            "discovery_errors",
            "Failed discovery queries",
            this.errors.clone(),
        );
        metrics.register(
            "route_updates",
            "Route tables applied or rejected (invalid tables are rejected whole)",
            this.routes.clone(),
        );
        this
    }

    /// Discovery answered with `count` healthy instances of `t`.
    pub fn synced(&self, t: &str, count: usize) {
        let l = target(t);
        self.instances
            .get_or_create(&l)
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.stale.get_or_create(&l).set(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.last_sync.get_or_create(&l).set(now);
    }

    /// A query about `t` failed; the last known list stays in use.
    pub fn failed(&self, t: &str) {
        let l = target(t);
        self.errors.get_or_create(&l).inc();
        self.stale.get_or_create(&l).set(1);
    }

    /// Whether `t` is being served from a stale list.
    pub fn is_stale(&self, t: &str) -> bool {
        self.stale.get_or_create(&target(t)).get() == 1
    }

    /// A route table for `t` was applied (`true`) or rejected.
    pub fn route_update(&self, t: &str, applied: bool) {
        let mut l = target(t);
        l.push((
            "outcome".to_owned(),
            if applied { "applied" } else { "rejected" }.to_owned(),
        ));
        self.routes.get_or_create(&l).inc();
    }
}
