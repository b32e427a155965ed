//! Registration: one instance in its local Consul agent, and out again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::client::{ConsulClient, ConsulError, HealthCheck, Registration};
use crate::config::{CheckKind, DiscoveryConfig};

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
