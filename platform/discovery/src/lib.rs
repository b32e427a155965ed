//! Service discovery and live routing tables.
//!
//! With `CONSUL_HTTP_ADDR` set, every instance registers itself with its
//! local Consul agent ([`Registrar`]: name, unique id, address, gRPC port,
//! admin port, version, interface major, zone, and a health check against
//! its own `/readyz` or gRPC health, with `DeregisterCriticalServiceAfter`
//! so a crashed instance drops out), deregisters on SIGTERM before it
//! drains, and its driver clients are fed the *passing* instances of each
//! dependency through Consul blocking queries ([`Discovery::dependency`]).
//! Route tables come from Consul KV (`fleet/routes/<service>`) the same way.
//!
//! Without Consul (the embedded default), clients use their static address
//! lists and route tables are read from `ROUTES_DIR/<service>.json`, watched
//! for changes.
//!
//! Every Consul call is plain HTTP through `reqwest` ([`ConsulClient`]):
//! see ARCHITECTURE.md for why not `rs-consul`.

#![forbid(unsafe_code)]

mod config;
mod consul;
mod metrics;
mod routes;
mod watch;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use fleet_rpc::{Dependency, DependencyConfig, Instance, InstanceSource};

pub use config::{CheckKind, DEFAULT_KV_PREFIX, DiscoveryConfig};
pub use consul::{ConsulClient, ConsulError, HealthCheck, Indexed, Registration, ServiceEntry};
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

/// Who is registering: what [`Registrar::new`] needs to know of an instance.
#[derive(Clone, Debug)]
pub struct InstanceInfo<'a> {
    /// Service name.
    pub service: &'a str,
    /// Unique instance id.
    pub instance_id: &'a str,
    /// Version it runs.
    pub version: &'a semver::Version,
    /// Zone.
    pub zone: &'a str,
    /// Bound main (gRPC / HTTP) address.
    pub main_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// Whether the main port speaks gRPC (a gRPC check is possible).
    pub grpc: bool,
}

/// Registers one instance with Consul and removes it again.
#[derive(Clone, Debug)]
pub struct Registrar {
    client: ConsulClient,
    registration: Registration,
}

impl Registrar {
    /// The registration of `info` under `config` (`None` without Consul).
    ///
    /// # Errors
    /// [`ConsulError::BadAddress`].
    pub async fn new(
        config: &DiscoveryConfig,
        info: &InstanceInfo<'_>,
    ) -> Result<Option<Self>, ConsulError> {
        let Some(addr) = &config.consul_addr else {
            return Ok(None);
        };
        let client = ConsulClient::new(addr)?;
        let ip = advertise_ip(config.advertise_ip, info.main_addr.ip()).await;
        let admin_port = info.admin_addr.port();
        let check = match (config.check, info.grpc) {
            (CheckKind::Grpc, true) => {
                HealthCheck::Grpc(SocketAddr::new(ip, info.main_addr.port()).to_string())
            }
            _ => HealthCheck::Http(format!("http://{}/readyz", SocketAddr::new(ip, admin_port))),
        };
        let interface = info.version.major.to_string();
        let meta = BTreeMap::from([
            ("version".to_owned(), info.version.to_string()),
            ("interface".to_owned(), interface.clone()),
            ("zone".to_owned(), info.zone.to_owned()),
            ("admin_port".to_owned(), admin_port.to_string()),
            ("instance_id".to_owned(), info.instance_id.to_owned()),
        ]);
        let tags = vec![
            format!("v{}", info.version),
            format!("interface-{interface}"),
            format!("zone-{}", info.zone),
        ];
        Ok(Some(Self {
            client,
            registration: Registration {
                name: info.service.to_owned(),
                id: info.instance_id.to_owned(),
                address: ip.to_string(),
                port: info.main_addr.port(),
                meta,
                tags,
                check,
                check_interval: config.check_interval,
                deregister_after: config.deregister_after,
            },
        }))
    }

    /// What is registered.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Registers, retrying with backoff until it succeeds or `attempts` run
    /// out.
    ///
    /// # Errors
    /// The last [`ConsulError`].
    pub async fn register(&self, attempts: u32) -> Result<(), ConsulError> {
        let mut backoff = Duration::from_millis(200);
        let mut n = 0;
        loop {
            match self.client.register(&self.registration).await {
                Ok(()) => {
                    tracing::info!(instance_id = %self.registration.id, address = %self.registration.address, port = self.registration.port, "registered in Consul");
                    return Ok(());
                }
                Err(e) if n + 1 >= attempts => return Err(e),
                Err(error) => {
                    tracing::warn!(%error, "Consul registration failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    n += 1;
                }
            }
        }
    }

    /// Keeps the registration in place: every `every`, asks the agent
    /// whether it still knows this instance and registers it again if not
    /// (an agent that lost its state, e.g. restarted in dev mode). Runs
    /// until dropped.
    pub async fn keep_registered(&self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.client.agent_has_service(&self.registration.id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(instance_id = %self.registration.id, "Consul lost this instance; registering again");
                    if let Err(error) = self.client.register(&self.registration).await {
                        tracing::warn!(%error, "Consul registration failed");
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot ask Consul about this instance");
                }
            }
        }
    }

    /// Deregisters (callers stop sending new requests once their watch
    /// fires).
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn deregister(&self) -> Result<(), ConsulError> {
        self.client.deregister(&self.registration.id).await?;
        tracing::info!(instance_id = %self.registration.id, "deregistered from Consul");
        Ok(())
    }
}

/// The address to register: `ADVERTISE_ADDR`, else the bound one, else
/// (bound to 0.0.0.0) the host name's address, else loopback.
async fn advertise_ip(configured: Option<IpAddr>, bound: IpAddr) -> IpAddr {
    if let Some(ip) = configured {
        return ip;
    }
    if !bound.is_unspecified() {
        return bound;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host = host.trim();
    if !host.is_empty()
        && let Ok(mut addrs) = tokio::net::lookup_host((host, 0)).await
        && let Some(a) = addrs.find(|a| a.is_ipv4() && !a.ip().is_loopback())
    {
        return a.ip();
    }
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// Shared handle to a registrar.
pub type SharedRegistrar = Arc<Registrar>;
