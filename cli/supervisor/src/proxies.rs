//! `fleet up --toxiproxy`: Toxiproxy proxies in front of the stores and
//! Consul, and the record of every proxy (`run/toxiproxy.json`) that
//! game days read to find them.
//!
//! The proxies in front of gRPC instances are the topology's
//! ([`crate::Topology::service_proxies`]); they are added to the same
//! record with [`record_service_proxies`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::topology::ServiceProxy;
use crate::toxiproxy::{ToxiproxyError, create_proxy, normalize_url};

/// The addresses `fleet up --toxiproxy` hands the instances instead of
/// the real ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxied {
    /// `SCYLLA_NODES` through the `cassandra…` proxies.
    pub scylla_nodes: Option<String>,
    /// `REDIS_URL` through the `redis` proxy.
    pub redis_url: Option<String>,
    /// `CONSUL_HTTP_ADDR` through the `consul` proxy.
    pub consul: Option<String>,
}

/// One proxy in front of a store or Consul.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreProxy {
    /// Its name (`cassandra`, `cassandra-2`, `redis`, `consul`).
    pub name: String,
    /// Where it listens.
    pub listen: String,
    /// What it forwards to.
    pub upstream: String,
}

/// Why the proxies could not be set up or recorded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No HTTP client could be built.
    #[error("failed to build an HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// Toxiproxy could not be reached or refused.
    #[error(transparent)]
    Toxiproxy(#[from] ToxiproxyError),
    /// A store or Consul address cannot be proxied.
    #[error("{0}")]
    Address(String),
    /// The record could not be read, parsed or written.
    #[error("{message}")]
    Record {
        /// What went wrong, naming the file.
        message: String,
        /// Why.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ProxyError {
    /// `failed to write <path>` and the like: `what` with `{}` for the path.
    fn record(
        what: &str,
        path: &Path,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Record {
            message: what.replace("{}", &path.display().to_string()),
            source,
        }
    }
}

/// `host:port` of a Consul address given as `host:port` or a URL.
fn consul_upstream(addr: &str) -> Result<String, ProxyError> {
    let with_scheme = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let u = reqwest::Url::parse(&with_scheme)
        .map_err(|e| ProxyError::Address(format!("CONSUL_HTTP_ADDR is not host:port: {e}")))?;
    if u.scheme() != "http" {
        return Err(ProxyError::Address(format!(
            "--toxiproxy proxies plain-HTTP Consul only (got {addr})"
        )));
    }
    let host = u
        .host_str()
        .ok_or_else(|| ProxyError::Address("CONSUL_HTTP_ADDR has no host".into()))?;
    Ok(format!("{host}:{}", u.port().unwrap_or(8500)))
}

/// Proxies in front of the Cassandra nodes, Redis and Consul (each one
/// given); returns the rewritten addresses and the proxies (sorted by
/// name), and writes `{"api", "proxies": {name: {"listen", "upstream"}}}`
/// to `record`.
///
/// # Errors
/// [`ProxyError`] when Toxiproxy cannot be reached or refuses, an address
/// is unusable, or the record cannot be written.
pub async fn proxy_stores(
    api: &str,
    scylla_nodes: Option<&str>,
    redis_url: Option<&str>,
    consul: Option<&str>,
    record: &Path,
) -> Result<(Proxied, Vec<StoreProxy>), ProxyError> {
    let api = normalize_url(api);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(ProxyError::HttpClient)?;
    let mut proxies = BTreeMap::new();
    let nodes = match scylla_nodes {
        Some(list) => {
            let mut out = Vec::new();
            for (i, node) in list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .enumerate()
            {
                let name = if i == 0 {
                    "cassandra".to_owned()
                } else {
                    format!("cassandra-{}", i + 1)
                };
                let listen = create_proxy(&http, &api, &name, node).await?;
                proxies.insert(name, (listen.clone(), node.to_owned()));
                out.push(listen);
            }
            Some(out.join(","))
        }
        None => None,
    };
    let redis = match redis_url {
        Some(url) => {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| ProxyError::Address(format!("REDIS_URL is not a URL: {e}")))?;
            let host = parsed
                .host_str()
                .ok_or_else(|| ProxyError::Address("REDIS_URL has no host".into()))?;
            let upstream = format!("{host}:{}", parsed.port().unwrap_or(6379));
            let listen = create_proxy(&http, &api, "redis", &upstream).await?;
            let (lhost, lport) = listen.rsplit_once(':').ok_or_else(|| {
                ProxyError::Address("toxiproxy answered an odd listen address".into())
            })?;
            let mut rewritten = parsed.clone();
            rewritten
                .set_host(Some(lhost))
                .map_err(|e| ProxyError::Address(e.to_string()))?;
            rewritten
                .set_port(lport.parse().ok())
                .map_err(|()| ProxyError::Address("cannot set the port".into()))?;
            proxies.insert("redis".into(), (listen, upstream));
            Some(rewritten.to_string())
        }
        None => None,
    };
    let consul = match consul {
        Some(addr) => {
            let upstream = consul_upstream(addr)?;
            let listen = create_proxy(&http, &api, "consul", &upstream).await?;
            proxies.insert("consul".into(), (listen.clone(), upstream));
            Some(listen)
        }
        None => None,
    };
    let proxies: Vec<StoreProxy> = proxies
        .into_iter()
        .map(|(name, (listen, upstream))| StoreProxy {
            name,
            listen,
            upstream,
        })
        .collect();
    let listed: serde_json::Map<String, Value> = proxies
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                json!({"listen": p.listen, "upstream": p.upstream}),
            )
        })
        .collect();
    let text = serde_json::to_vec_pretty(&json!({"api": api, "proxies": listed}))
        .map_err(|e| ProxyError::record("failed to write {}", record, Some(e.into())))?;
    std::fs::write(record, text)
        .map_err(|e| ProxyError::record("failed to write {}", record, Some(e.into())))?;
    Ok((
        Proxied {
            scylla_nodes: nodes,
            redis_url: redis,
            consul,
        },
        proxies,
    ))
}

/// Adds the proxies in front of instances to `fleet up`'s record
/// (`run/toxiproxy.json`, written by [`proxy_stores`]), each with its
/// service.
///
/// # Errors
/// [`ProxyError::Record`] when the record cannot be read or written.
pub fn record_service_proxies(record: &Path, proxies: &[ServiceProxy]) -> Result<(), ProxyError> {
    let text = std::fs::read(record)
        .map_err(|e| ProxyError::record("failed to read {}", record, Some(e.into())))?;
    let mut v: Value = serde_json::from_slice(&text)
        .map_err(|e| ProxyError::record("{} is not JSON", record, Some(e.into())))?;
    let map = v
        .get_mut("proxies")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ProxyError::record("{} has no proxies", record, None))?;
    for p in proxies {
        map.insert(
            p.name.clone(),
            json!({"listen": p.listen, "upstream": p.upstream, "service": p.service}),
        );
    }
    let text = serde_json::to_vec_pretty(&v)
        .map_err(|e| ProxyError::record("failed to write {}", record, Some(e.into())))?;
    std::fs::write(record, text)
        .map_err(|e| ProxyError::record("failed to write {}", record, Some(e.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_addresses_become_proxy_upstreams() {
        assert_eq!(consul_upstream("127.0.0.1:8500").unwrap(), "127.0.0.1:8500");
        assert_eq!(
            consul_upstream("http://consul.local:18500").unwrap(),
            "consul.local:18500"
        );
        assert_eq!(consul_upstream("localhost").unwrap(), "localhost:8500");
        assert!(consul_upstream("https://127.0.0.1:8501").is_err());
    }
}
