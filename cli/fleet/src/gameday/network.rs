//! Network faults through Toxiproxy's HTTP API.
//!
//! A proxy (`cassandra`, `redis`, `consul`, as `fleet up --toxiproxy`
//! creates them, or any other name) gets a *toxic*: `latency` (with
//! jitter), `bandwidth`, `timeout` (data stops; the connection closes after
//! the timeout, or never with 0), `reset_peer` (TCP RST), `slicer` (small
//! packets with delays) — or the proxy is disabled altogether (`down`:
//! connections refused). Each change is recorded in the undo log (the
//! toxic's deletion, the proxy's re-enabling).
//!
//! API (Toxiproxy 2.x): `POST /proxies/{p}/toxics` `{name, type, stream,
//! toxicity, attributes}`; `DELETE /proxies/{p}/toxics/{t}`;
//! `POST /proxies/{p}` `{"enabled": false|true}`; `POST /proxies`
//! `{name, listen, upstream, enabled}` answers the bound `listen` address.

use std::time::Duration;

use serde_json::{Value, json};

/// Why a Toxiproxy call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToxiproxyError {
    /// No answer.
    #[error("toxiproxy at {api}: {message}")]
    Unreachable {
        /// The API base URL.
        api: String,
        /// Why.
        message: String,
    },
    /// It refused.
    #[error("toxiproxy {what} answered {status}: {body}")]
    Refused {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
}

/// A toxic (or `down`), validated.
#[derive(Clone, Debug, PartialEq)]
pub enum NetFault {
    /// Added latency with jitter.
    Latency {
        /// Mean delay.
        latency: Duration,
        /// ± this much.
        jitter: Duration,
    },
    /// Throughput limit, KB/s.
    Bandwidth {
        /// KB/s.
        rate_kbps: u64,
    },
    /// Data stops; close after this long (0 = never).
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// TCP RST after this long.
    ResetPeer {
        /// The delay.
        after: Duration,
    },
    /// Slice data into small packets with a delay between them.
    Slicer {
        /// Mean packet size, bytes.
        average_size: u64,
        /// ± bytes.
        size_variation: u64,
        /// Delay between packets.
        delay: Duration,
    },
    /// The proxy is disabled: connections are refused.
    Down,
}

impl NetFault {
    /// The toxic's type name (`down` for a disabled proxy).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Latency { .. } => "latency",
            Self::Bandwidth { .. } => "bandwidth",
            Self::Timeout { .. } => "timeout",
            Self::ResetPeer { .. } => "reset_peer",
            Self::Slicer { .. } => "slicer",
            Self::Down => "down",
        }
    }

    /// The toxic's attributes (`None` for `down`).
    pub fn attributes(&self) -> Option<Value> {
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Some(match self {
            Self::Latency { latency, jitter } => {
                json!({"latency": ms(latency), "jitter": ms(jitter)})
            }
            Self::Bandwidth { rate_kbps } => json!({"rate": rate_kbps}),
            Self::Timeout { after } => json!({"timeout": ms(after)}),
            Self::ResetPeer { after } => json!({"timeout": ms(after)}),
            Self::Slicer {
                average_size,
                size_variation,
                delay,
            } => json!({
                "average_size": average_size,
                "size_variation": size_variation,
                "delay": u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
            }),
            Self::Down => return None,
        })
    }
}

/// The JSON body that creates `fault` as toxic `name`.
pub fn toxic_body(name: &str, fault: &NetFault, stream: &str, toxicity: f64) -> Option<Value> {
    Some(json!({
        "name": name,
        "type": fault.kind(),
        "stream": stream,
        "toxicity": toxicity,
        "attributes": fault.attributes()?,
    }))
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
    what: &str,
    ok: &[u16],
) -> Result<Value, ToxiproxyError> {
    let mut req = http.request(method, &url).timeout(Duration::from_secs(5));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.map_err(|e| ToxiproxyError::Unreachable {
        api: url.clone(),
        message: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    if !ok.contains(&status) {
        return Err(ToxiproxyError::Refused {
            what: what.to_owned(),
            status,
            body: text,
        });
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Adds a toxic to `proxy`.
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn add_toxic(
    http: &reqwest::Client,
    api: &str,
    proxy: &str,
    body: Value,
) -> Result<Value, ToxiproxyError> {
    call(
        http,
        reqwest::Method::POST,
        format!("{api}/proxies/{proxy}/toxics"),
        Some(body),
        &format!("add toxic on {proxy}"),
        &[200, 201],
    )
    .await
}

/// Removes a toxic (gone already counts as done).
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn remove_toxic(
    http: &reqwest::Client,
    api: &str,
    proxy: &str,
    toxic: &str,
) -> Result<(), ToxiproxyError> {
    call(
        http,
        reqwest::Method::DELETE,
        format!("{api}/proxies/{proxy}/toxics/{toxic}"),
        None,
        &format!("remove toxic {toxic} on {proxy}"),
        &[200, 204, 404],
    )
    .await
    .map(drop)
}

/// Enables or disables a proxy.
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn set_enabled(
    http: &reqwest::Client,
    api: &str,
    proxy: &str,
    enabled: bool,
) -> Result<(), ToxiproxyError> {
    call(
        http,
        reqwest::Method::POST,
        format!("{api}/proxies/{proxy}"),
        Some(json!({"enabled": enabled})),
        &format!("enable={enabled} {proxy}"),
        &[200],
    )
    .await
    .map(drop)
}

/// (Re)creates proxy `name` in front of `upstream`, listening on a free
/// loopback port; returns the address it listens on.
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn create_proxy(
    http: &reqwest::Client,
    api: &str,
    name: &str,
    upstream: &str,
) -> Result<String, ToxiproxyError> {
    call(
        http,
        reqwest::Method::DELETE,
        format!("{api}/proxies/{name}"),
        None,
        &format!("delete proxy {name}"),
        &[200, 204, 404],
    )
    .await?;
    let created = call(
        http,
        reqwest::Method::POST,
        format!("{api}/proxies"),
        Some(json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": true})),
        &format!("create proxy {name}"),
        &[200, 201],
    )
    .await?;
    created
        .get("listen")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ToxiproxyError::Refused {
            what: format!("create proxy {name}"),
            status: 201,
            body: created.to_string(),
        })
}

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

/// `host:port` of a Consul address given as `host:port` or a URL.
fn consul_upstream(addr: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let with_scheme = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let u = reqwest::Url::parse(&with_scheme).context("CONSUL_HTTP_ADDR is not host:port")?;
    anyhow::ensure!(
        u.scheme() == "http",
        "--toxiproxy proxies plain-HTTP Consul only (got {addr})"
    );
    let host = u.host_str().context("CONSUL_HTTP_ADDR has no host")?;
    Ok(format!("{host}:{}", u.port().unwrap_or(8500)))
}

/// For `fleet up --toxiproxy`: proxies in front of the Cassandra nodes,
/// Redis and Consul; returns the rewritten addresses, and writes `{"api",
/// "proxies": {name: {"listen", "upstream"}}}` to `record`.
///
/// # Errors
/// When Toxiproxy cannot be reached or refuses, or an address is
/// unusable.
pub async fn proxy_stores(
    api: &str,
    scylla_nodes: Option<&str>,
    redis_url: Option<&str>,
    consul: Option<&str>,
    record: &std::path::Path,
) -> anyhow::Result<Proxied> {
    use anyhow::Context as _;
    let api = crate::gameday::target::normalize_url(api);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("failed to build an HTTP client")?;
    let mut proxies = serde_json::Map::new();
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
                proxies.insert(name, json!({"listen": listen, "upstream": node}));
                out.push(listen);
            }
            Some(out.join(","))
        }
        None => None,
    };
    let redis = match redis_url {
        Some(url) => {
            let parsed = reqwest::Url::parse(url).context("REDIS_URL is not a URL")?;
            let host = parsed.host_str().context("REDIS_URL has no host")?;
            let upstream = format!("{host}:{}", parsed.port().unwrap_or(6379));
            let listen = create_proxy(&http, &api, "redis", &upstream).await?;
            let (lhost, lport) = listen
                .rsplit_once(':')
                .context("toxiproxy answered an odd listen address")?;
            let mut rewritten = parsed.clone();
            rewritten
                .set_host(Some(lhost))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            rewritten
                .set_port(lport.parse().ok())
                .map_err(|()| anyhow::anyhow!("cannot set the port"))?;
            proxies.insert(
                "redis".into(),
                json!({"listen": listen, "upstream": upstream}),
            );
            Some(rewritten.to_string())
        }
        None => None,
    };
    let consul = match consul {
        Some(addr) => {
            let upstream = consul_upstream(addr)?;
            let listen = create_proxy(&http, &api, "consul", &upstream).await?;
            proxies.insert(
                "consul".into(),
                json!({"listen": listen, "upstream": upstream}),
            );
            Some(listen)
        }
        None => None,
    };
    if proxies.is_empty() {
        println!("fleet: --toxiproxy: no Cassandra, Redis or Consul configured, no store proxied");
    }
    for (name, p) in &proxies {
        println!(
            "fleet: toxiproxy {name}: {} → {}",
            p["listen"].as_str().unwrap_or(""),
            p["upstream"].as_str().unwrap_or("")
        );
    }
    std::fs::write(
        record,
        serde_json::to_vec_pretty(&json!({"api": api, "proxies": proxies}))?,
    )
    .with_context(|| format!("failed to write {}", record.display()))?;
    Ok(Proxied {
        scylla_nodes: nodes,
        redis_url: redis,
        consul,
    })
}

/// Adds the proxies in front of instances to `fleet up`'s record
/// (`run/toxiproxy.json`, written by [`proxy_stores`]), each with its
/// service, and prints them.
///
/// # Errors
/// When the record cannot be read or written.
pub fn record_service_proxies(
    record: &std::path::Path,
    proxies: &[crate::topology::ServiceProxy],
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text =
        std::fs::read(record).with_context(|| format!("failed to read {}", record.display()))?;
    let mut v: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", record.display()))?;
    let map = v
        .get_mut("proxies")
        .and_then(Value::as_object_mut)
        .with_context(|| format!("{} has no proxies", record.display()))?;
    for p in proxies {
        println!("fleet: toxiproxy {}: {} → {}", p.name, p.listen, p.upstream);
        map.insert(
            p.name.clone(),
            json!({"listen": p.listen, "upstream": p.upstream, "service": p.service}),
        );
    }
    std::fs::write(record, serde_json::to_vec_pretty(&v)?)
        .with_context(|| format!("failed to write {}", record.display()))
}

/// The proxies `--proxy NAME` means, out of those Toxiproxy has: `NAME`
/// itself, and every `NAME-…` (`ratings` → `ratings-1`, `ratings-2`;
/// `cassandra` → `cassandra`, `cassandra-2`; `catalog-v13` → its
/// instances). Sorted; empty when none matches.
pub fn matching_proxies<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let prefix = format!("{name}-");
    let mut out: Vec<String> = known
        .into_iter()
        .filter(|k| *k == name || k.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    out.sort();
    out
}

/// The names of every proxy Toxiproxy has (`GET /proxies`).
///
/// # Errors
/// [`ToxiproxyError`].
pub async fn list_proxies(
    http: &reqwest::Client,
    api: &str,
) -> Result<Vec<String>, ToxiproxyError> {
    let all = call(
        http,
        reqwest::Method::GET,
        format!("{api}/proxies"),
        None,
        "list proxies",
        &[200],
    )
    .await?;
    Ok(all
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_means_itself_and_its_numbered_instances_only() {
        let known = [
            "cassandra",
            "cassandra-2",
            "ratings-1",
            "ratings-2",
            "ratingsx-1",
            "catalog-v12-1",
            "catalog-v13-1",
            "redis",
        ];
        assert_eq!(
            matching_proxies("ratings", known),
            ["ratings-1", "ratings-2"]
        );
        assert_eq!(
            matching_proxies("cassandra", known),
            ["cassandra", "cassandra-2"]
        );
        assert_eq!(matching_proxies("catalog-v13", known), ["catalog-v13-1"]);
        assert_eq!(matching_proxies("ratings-2", known), ["ratings-2"]);
        assert!(matching_proxies("consul", known).is_empty());
        assert!(matching_proxies("rat", known).is_empty());
    }

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

    #[test]
    fn toxic_bodies_use_toxiproxys_attribute_names() {
        let b = toxic_body(
            "gd-1",
            &NetFault::Latency {
                latency: Duration::from_millis(200),
                jitter: Duration::from_millis(20),
            },
            "downstream",
            1.0,
        )
        .unwrap();
        assert_eq!(
            b,
            json!({"name": "gd-1", "type": "latency", "stream": "downstream", "toxicity": 1.0,
                   "attributes": {"latency": 200, "jitter": 20}})
        );
        let s = NetFault::Slicer {
            average_size: 64,
            size_variation: 16,
            delay: Duration::from_millis(2),
        };
        assert_eq!(
            s.attributes().unwrap(),
            json!({"average_size": 64, "size_variation": 16, "delay": 2000})
        );
        assert_eq!(
            NetFault::ResetPeer {
                after: Duration::ZERO
            }
            .attributes()
            .unwrap(),
            json!({"timeout": 0})
        );
        assert_eq!(NetFault::Bandwidth { rate_kbps: 10 }.kind(), "bandwidth");
        assert!(toxic_body("x", &NetFault::Down, "upstream", 1.0).is_none());
    }
}
