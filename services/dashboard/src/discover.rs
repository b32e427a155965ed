//! Where the instances are: the registry `fleet up` writes, or Consul.

use std::path::PathBuf;
use std::time::Duration;

use fleet_discovery::ConsulClient;

/// One instance the dashboard reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Instance {
    /// Service name.
    pub service: String,
    /// Version.
    pub version: String,
    /// Instance id.
    pub instance_id: String,
    /// Admin address `host:port` (where `/hystrix.stream` is).
    pub admin_addr: String,
    /// Restarts counted by whoever supervises it, when it says.
    pub restarts: Option<u64>,
}

/// Finding the instances failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The registry file could not be read.
    #[error("failed to read the registry {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The registry file is not a list of instances.
    #[error("{path} is not a fleet registry")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Consul could not be asked.
    #[error("failed to ask Consul for instances")]
    Consul(#[from] fleet_discovery::ConsulError),
}

/// Where instances are listed.
#[derive(Clone, Debug)]
pub enum Source {
    /// `fleet up`'s `run/registry.json`.
    Registry(PathBuf),
    /// Every service registered in Consul with an `admin_port` in its meta.
    Consul(ConsulClient),
}

#[derive(serde::Deserialize)]
struct RegistryEntry {
    service: String,
    version: String,
    instance_id: String,
    admin_addr: String,
    #[serde(default)]
    restarts: Option<u64>,
}

impl Source {
    /// Describes the source for logs and the page.
    pub fn describe(&self) -> String {
        match self {
            Self::Registry(p) => p.display().to_string(),
            Self::Consul(c) => format!("Consul at {}", c.base_url()),
        }
    }

    /// The instances listed now, sorted.
    ///
    /// # Errors
    /// [`DiscoverError`] when the source cannot be read.
    pub async fn instances(&self) -> Result<Vec<Instance>, DiscoverError> {
        let mut out = match self {
            Self::Registry(path) => {
                let shown = path.display().to_string();
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| DiscoverError::Read {
                        path: shown.clone(),
                        source,
                    })?;
                let entries: Vec<RegistryEntry> =
                    serde_json::from_slice(&bytes).map_err(|source| DiscoverError::Parse {
                        path: shown,
                        source,
                    })?;
                entries
                    .into_iter()
                    .map(|e| Instance {
                        service: e.service,
                        version: e.version,
                        instance_id: e.instance_id,
                        admin_addr: e.admin_addr,
                        restarts: e.restarts,
                    })
                    .collect()
            }
            Self::Consul(client) => {
                let mut out = Vec::new();
                for service in client.services().await? {
                    let entries = client
                        .health_service(&service, false, None, Duration::ZERO)
                        .await?
                        .value;
                    for e in entries {
                        let Some(port) = e.meta.get("admin_port") else {
                            continue;
                        };
                        out.push(Instance {
                            service: e.service.clone(),
                            version: e.meta.get("version").cloned().unwrap_or_default(),
                            instance_id: e.id.clone(),
                            admin_addr: format!("{}:{port}", e.address),
                            restarts: None,
                        });
                    }
                }
                out
            }
        };
        out.sort();
        Ok(out)
    }
}
