//! [`ConsulClient`]: the handful of Consul HTTP API calls the system makes.
//!
//! Agent registration and deregistration, health queries and KV reads as
//! blocking queries (`index` + `wait`), KV writes, and the service catalog.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A Consul call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// `CONSUL_HTTP_ADDR` is not an address.
    #[error("bad Consul address {0:?} (expected host:port or http://host:port)")]
    BadAddress(String),
    /// The agent could not be reached or did not answer in time.
    #[error("Consul at {addr} unreachable")]
    Transport {
        /// The agent's address.
        addr: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered with an error status.
    #[error("Consul answered {status} to {what}: {body}")]
    Status {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// The agent's message (truncated).
        body: String,
    },
    /// The answer could not be read.
    #[error("unreadable Consul answer to {what}: {message}")]
    Decode {
        /// What was asked.
        what: String,
        /// Why.
        message: String,
    },
}

/// One result of a blocking query: the value and the index to wait on next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed<T> {
    /// The value.
    pub value: T,
    /// `X-Consul-Index`: pass it back to block until something changes.
    pub index: u64,
}

/// A Consul agent's HTTP API (cheap to clone).
#[derive(Clone, Debug)]
pub struct ConsulClient {
    http: reqwest::Client,
    base: String,
}

/// A health check Consul runs against an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    /// `GET` this URL (e.g. the admin port's `/readyz`); 2xx is passing.
    Http(String),
    /// `grpc.health.v1` at this `host:port`.
    Grpc(String),
}

/// What an instance registers with its local agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Service name, e.g. `catalog`.
    pub name: String,
    /// Unique instance id.
    pub id: String,
    /// Address other instances use.
    pub address: String,
    /// gRPC (or the edge's HTTP) port.
    pub port: u16,
    /// Metadata: `version`, `interface`, `zone`, `admin_port`.
    pub meta: BTreeMap<String, String>,
    /// Tags, e.g. `v1.3.0`, `interface-1`.
    pub tags: Vec<String>,
    /// The health check.
    pub check: HealthCheck,
    /// How often the check runs.
    pub check_interval: Duration,
    /// How long a critical check may stay critical before Consul removes
    /// the instance (a crashed instance drops out; at least one minute).
    pub deregister_after: Duration,
}

/// One instance as the health endpoint reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Instance id.
    pub id: String,
    /// Service name.
    pub service: String,
    /// Address (the service's own, else its node's).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Aggregate health: `passing`, `warning` or `critical` (the worst of
    /// its checks).
    pub health: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterBody<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    tags: &'a [String],
    address: &'a str,
    port: u16,
    meta: &'a BTreeMap<String, String>,
    check: CheckBody,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckBody {
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(rename = "GRPC", skip_serializing_if = "Option::is_none")]
    grpc: Option<String>,
    interval: String,
    timeout: String,
    deregister_critical_service_after: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthRow {
    node: NodeRow,
    service: ServiceRow,
    #[serde(default)]
    checks: Vec<CheckRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeRow {
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceRow {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckRow {
    status: String,
}

fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

impl ConsulClient {
    /// A client of the agent at `addr` (`host:port` or `http://host:port`,
    /// as `CONSUL_HTTP_ADDR` is written).
    ///
    /// # Errors
    /// [`ConsulError::BadAddress`].
    pub fn new(addr: &str) -> Result<Self, ConsulError> {
        let addr = addr.trim().trim_end_matches('/');
        let base = if addr.starts_with("http://") {
            addr.to_owned()
        } else if addr.contains("://") {
            // TLS to the agent is not supported (the workspace's reqwest
            // has no TLS stack): agents are local or on a private network.
            return Err(ConsulError::BadAddress(addr.to_owned()));
        } else {
            format!("http://{addr}")
        };
        let host = base.trim_start_matches("http://");
        if host.is_empty() || host.contains('/') || !host.contains(':') {
            return Err(ConsulError::BadAddress(addr.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|source| ConsulError::Transport {
                addr: base.clone(),
                source,
            })?;
        Ok(Self { http, base })
    }

    /// The agent's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn transport(&self, source: reqwest::Error) -> ConsulError {
        ConsulError::Transport {
            addr: self.base.clone(),
            source,
        }
    }

    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ConsulError> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(resp);
        }
        let mut body = resp.text().await.unwrap_or_default();
        body.truncate(300);
        Err(ConsulError::Status {
            what: what.to_owned(),
            status: status.as_u16(),
            body,
        })
    }

    /// Registers an instance with the agent (`PUT /v1/agent/service/register`);
    /// registering the same id again replaces it.
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn register(&self, r: &Registration) -> Result<(), ConsulError> {
        let (http, grpc) = match &r.check {
            HealthCheck::Http(url) => (Some(url.clone()), None),
            HealthCheck::Grpc(addr) => (None, Some(addr.clone())),
        };
        let body = RegisterBody {
            id: &r.id,
            name: &r.name,
            tags: &r.tags,
            address: &r.address,
            port: r.port,
            meta: &r.meta,
            check: CheckBody {
                http,
                grpc,
                interval: go_duration(r.check_interval),
                timeout: go_duration(r.check_interval.min(Duration::from_secs(2))),
                deregister_critical_service_after: go_duration(r.deregister_after),
            },
        };
        let req = self
            .http
            .put(format!("{}/v1/agent/service/register", self.base))
            .timeout(Duration::from_secs(5))
            .json(&body);
        let what = format!("register {}", r.id);
        let resp = self.send(&what, req).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(ConsulError::Status {
                what,
                status: 404,
                body: String::new(),
            });
        }
        Ok(())
    }

    /// Removes an instance (`PUT /v1/agent/service/deregister/<id>`).
    /// Removing an unknown id is not an error.
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn deregister(&self, id: &str) -> Result<(), ConsulError> {
        let req = self
            .http
            .put(format!("{}/v1/agent/service/deregister/{id}", self.base))
            .timeout(Duration::from_secs(5));
        self.send(&format!("deregister {id}"), req).await?;
        Ok(())
    }

    /// Whether the agent knows instance `id` (`GET /v1/agent/service/<id>`).
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn agent_has_service(&self, id: &str) -> Result<bool, ConsulError> {
        let req = self
            .http
            .get(format!("{}/v1/agent/service/{id}", self.base))
            .timeout(Duration::from_secs(5));
        let resp = self.send(&format!("agent service {id}"), req).await?;
        Ok(resp.status() != reqwest::StatusCode::NOT_FOUND)
    }

    /// Instances of `service` (`GET /v1/health/service/<service>`): only
    /// those whose checks all pass when `passing_only`. With `index`, a
    /// blocking query: answers when something changes or after `wait`.
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn health_service(
        &self,
        service: &str,
        passing_only: bool,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<Indexed<Vec<ServiceEntry>>, ConsulError> {
        let mut url = format!("{}/v1/health/service/{service}?stale", self.base);
        if passing_only {
            url.push_str("&passing=true");
        }
        if let Some(i) = index {
            url.push_str(&format!("&index={i}&wait={}", go_duration(wait)));
        }
        let what = format!("health of {service}");
        let resp = self
            .send(&what, self.http.get(url).timeout(blocking_timeout(wait)))
            .await?;
        let index = consul_index(&resp);
        let rows: Vec<HealthRow> = resp.json().await.map_err(|e| ConsulError::Decode {
            what,
            message: e.to_string(),
        })?;
        let value = rows
            .into_iter()
            .map(|row| {
                let health = worst(row.checks.iter().map(|c| c.status.as_str()));
                ServiceEntry {
                    id: row.service.id,
                    service: row.service.service,
                    address: if row.service.address.is_empty() {
                        row.node.address
                    } else {
                        row.service.address
                    },
                    port: row.service.port,
                    meta: row.service.meta.unwrap_or_default(),
                    tags: row.service.tags.unwrap_or_default(),
                    health: health.to_owned(),
                }
            })
            .collect();
        Ok(Indexed { value, index })
    }

    /// The names of every registered service (`GET /v1/catalog/services`).
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn services(&self) -> Result<Vec<String>, ConsulError> {
        let what = "the service catalog".to_owned();
        let resp = self
            .send(
                &what,
                self.http
                    .get(format!("{}/v1/catalog/services", self.base))
                    .timeout(Duration::from_secs(5)),
            )
            .await?;
        let map: BTreeMap<String, serde_json::Value> =
            resp.json().await.map_err(|e| ConsulError::Decode {
                what,
                message: e.to_string(),
            })?;
        Ok(map.into_keys().collect())
    }

    /// The raw value of `key` (`None` when absent). With `index`, a
    /// blocking query.
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn kv_get(
        &self,
        key: &str,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<Indexed<Option<Vec<u8>>>, ConsulError> {
        let mut url = format!("{}/v1/kv/{key}?raw", self.base);
        if let Some(i) = index {
            url.push_str(&format!("&index={i}&wait={}", go_duration(wait)));
        }
        let what = format!("key {key}");
        let resp = self
            .send(&what, self.http.get(url).timeout(blocking_timeout(wait)))
            .await?;
        let index = consul_index(&resp);
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Indexed { value: None, index });
        }
        let bytes = resp.bytes().await.map_err(|e| ConsulError::Decode {
            what,
            message: e.to_string(),
        })?;
        Ok(Indexed {
            value: Some(bytes.to_vec()),
            index,
        })
    }

    /// Writes `value` at `key` only if the key does not exist yet (Consul's
    /// check-and-set with index 0, so two writers cannot both create it).
    /// Returns whether it was written.
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn kv_create(&self, key: &str, value: &[u8]) -> Result<bool, ConsulError> {
        let what = format!("create {key}");
        let resp = self
            .send(
                &what,
                self.http
                    .put(format!("{}/v1/kv/{key}?cas=0", self.base))
                    .timeout(Duration::from_secs(5))
                    .body(value.to_vec()),
            )
            .await?;
        let ok = resp.text().await.map_err(|e| self.transport(e))?;
        match ok.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ConsulError::Status {
                what,
                status: 200,
                body: ok,
            }),
        }
    }

    /// Deletes `key` (absent already: nothing to do).
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn kv_delete(&self, key: &str) -> Result<(), ConsulError> {
        let what = format!("delete {key}");
        let resp = self
            .send(
                &what,
                self.http
                    .delete(format!("{}/v1/kv/{key}", self.base))
                    .timeout(Duration::from_secs(5)),
            )
            .await?;
        let ok = resp.text().await.map_err(|e| self.transport(e))?;
        if ok.trim() != "true" {
            return Err(ConsulError::Status {
                what,
                status: 200,
                body: ok,
            });
        }
        Ok(())
    }

    /// Writes `value` at `key`.
    ///
    /// # Errors
    /// [`ConsulError`].
    pub async fn kv_put(&self, key: &str, value: &[u8]) -> Result<(), ConsulError> {
        let what = format!("write {key}");
        let resp = self
            .send(
                &what,
                self.http
                    .put(format!("{}/v1/kv/{key}", self.base))
                    .timeout(Duration::from_secs(5))
                    .body(value.to_vec()),
            )
            .await?;
        let ok = resp.text().await.map_err(|e| self.transport(e))?;
        if ok.trim() != "true" {
            return Err(ConsulError::Status {
                what,
                status: 200,
                body: ok,
            });
        }
        Ok(())
    }
}

/// A blocking query may take `wait` plus Consul's jitter (`wait / 16`).
fn blocking_timeout(wait: Duration) -> Duration {
    wait + wait / 16 + Duration::from_secs(5)
}

fn consul_index(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The worst of some check statuses (no checks: passing).
fn worst<'a>(statuses: impl Iterator<Item = &'a str>) -> &'static str {
    let mut out = "passing";
    for s in statuses {
        match s {
            "critical" => return "critical",
            "warning" => out = "warning",
            "passing" => {}
            _ => out = "warning",
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_consul_writes_them() {
        assert_eq!(
            ConsulClient::new("127.0.0.1:8500").unwrap().base_url(),
            "http://127.0.0.1:8500"
        );
        assert_eq!(
            ConsulClient::new("http://consul:8500/").unwrap().base_url(),
            "http://consul:8500"
        );
        for bad in ["", "https://consul:8501", "consul", "http://a:1/x"] {
            assert!(ConsulClient::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn health_is_the_worst_check() {
        assert_eq!(worst(["passing", "passing"].into_iter()), "passing");
        assert_eq!(worst(["passing", "warning"].into_iter()), "warning");
        assert_eq!(worst(["warning", "critical"].into_iter()), "critical");
        assert_eq!(worst(std::iter::empty()), "passing");
    }
}
