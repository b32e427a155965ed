//! Client-side service discovery and live routing tables.
//!
//! With `CONSUL_HTTP_ADDR` set, a service's driver clients are fed the
//! *passing* instances of each dependency through Consul blocking queries
//! ([`Discovery::dependency`]); registration (the server side: every
//! instance registers itself, deregisters on SIGTERM before it drains) is
//! `fleet-consul`'s [`Registrar`], re-exported here.
//! Route tables come from Consul KV (`fleet/routes/<service>`) the same way.
//!
//! Without Consul (the embedded default), clients use their static address
//! lists and route tables are read from `ROUTES_DIR/<service>.json`, watched
//! for changes.
//!
//! Every Consul call is plain HTTP through `reqwest` ([`ConsulClient`], in
//! `fleet-consul`): see ARCHITECTURE.md for why not `rs-consul`.

#![forbid(unsafe_code)]

mod metrics;
mod routes;
mod watch;

use std::time::Duration;

use fleet_rpc::{Dependency, DependencyConfig, Instance, InstanceSource};

// Registration and the Consul client live in fleet-consul, which servers
// depend on without the client stack; re-exported for the client side.
pub use fleet_consul::{
    CheckKind, ConsulClient, ConsulError, DEFAULT_KV_PREFIX, DiscoveryConfig, HealthCheck, Indexed,
    InstanceInfo, Registrar, Registration, ServiceEntry, SharedRegistrar,
};
pub use metrics::DiscoveryMetrics;
pub use routes::{Previous, RouteStore, RouteStoreError};
pub use watch::{
    FILE_POLL, RouteReceiver, parse_table, to_instances, watch_instances, watch_routes_file,
    watch_routes_kv,
};

/// How long building a client waits for Consul's first answer before it
/// falls back to the static list.
const FIRST_ANSWER: Duration = Duration::from_secs(3);

/// Where a service's driver clients get their instances and route tables.
#[derive(Clone, Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    consul: Option<ConsulClient>,
    metrics: DiscoveryMetrics,
}

impl Discovery {
    /// Discovery as `config` says, reporting into `metrics`.
    ///
    /// # Errors
    /// [`ConsulError::BadAddress`] for an unusable `CONSUL_HTTP_ADDR`.
    pub fn new(
        config: DiscoveryConfig,
        metrics: &fleet_metrics::Metrics,
    ) -> Result<Self, ConsulError> {
        let consul = config
            .consul_addr
            .as_deref()
            .map(ConsulClient::new)
            .transpose()?;
        Ok(Self {
            config,
            consul,
            metrics: DiscoveryMetrics::register(metrics),
        })
    }

    /// The Consul agent, when there is one.
    pub fn consul(&self) -> Option<&ConsulClient> {
        self.consul.as_ref()
    }

    /// The discovery metrics.
    pub fn metrics(&self) -> &DiscoveryMetrics {
        &self.metrics
    }

    /// The instances of `service`: watched in Consul, else `fallback` (the
    /// static list).
    pub async fn instances(
        &self,
        service: &'static str,
        fallback: Vec<Instance>,
    ) -> InstanceSource {
        match &self.consul {
            None => InstanceSource::Static(fallback),
            Some(c) => InstanceSource::Watch(
                watch_instances(
                    c.clone(),
                    service,
                    fallback,
                    self.config.watch_wait,
                    FIRST_ANSWER,
                    self.metrics.clone(),
                )
                .await,
            ),
        }
    }

    /// The live route table of `service`: Consul KV, else the file in
    /// `ROUTES_DIR`, else none.
    pub async fn routes(&self, service: &'static str) -> RouteReceiver {
        match (&self.consul, &self.config.routes_dir) {
            (Some(c), _) => {
                watch_routes_kv(
                    c.clone(),
                    service,
                    format!("{}{service}", self.config.routes_kv_prefix),
                    self.config.watch_wait,
                    FIRST_ANSWER,
                    self.metrics.clone(),
                )
                .await
            }
            (None, Some(dir)) => watch_routes_file(
                service,
                dir.join(format!("{service}.json")),
                self.metrics.clone(),
            ),
            (None, None) => tokio::sync::watch::channel(None).1,
        }
    }

    /// A dependency on `config.name`, fed by discovery (or `fallback`) and
    /// routed by its live table.
    pub async fn dependency(
        &self,
        config: DependencyConfig,
        fallback: Vec<Instance>,
        rpc_metrics: fleet_metrics::RpcMetrics,
    ) -> Dependency {
        let name = config.name;
        let source = self.instances(name, fallback).await;
        let routes = self.routes(name).await;
        Dependency::new(config, source, rpc_metrics).with_routes(routes)
    }
}
