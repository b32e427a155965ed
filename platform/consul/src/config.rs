//! Discovery settings, read once at start.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use fleet_config::{ConfigError, Env};

/// Which health check Consul runs against an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET http://<addr>:<admin port>/readyz` (the default).
    Http,
    /// `grpc.health.v1` on the main port (gRPC services only).
    Grpc,
}

/// How an instance finds others and is found (cheap to clone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The local Consul agent; `CONSUL_HTTP_ADDR` (`host:port` or
    /// `http://host:port`). Unset: the embedded default (static address
    /// lists, route tables from files).
    pub consul_addr: Option<String>,
    /// The check Consul runs; `CONSUL_CHECK` (`http` or `grpc`), default
    /// `http`.
    pub check: CheckKind,
    /// How often Consul runs it; `CONSUL_CHECK_INTERVAL`, default 1 s.
    pub check_interval: Duration,
    /// How long a failing instance stays registered before Consul removes
    /// it; `CONSUL_DEREGISTER_AFTER`, default 1 min (Consul's minimum).
    pub deregister_after: Duration,
    /// Longest wait of one blocking query; `CONSUL_WATCH_WAIT`, default 30 s.
    pub watch_wait: Duration,
    /// The address registered for this instance; `ADVERTISE_ADDR`. Unset:
    /// the bound address, or the host name's address when bound to
    /// `0.0.0.0`.
    pub advertise_ip: Option<IpAddr>,
    /// Where the route tables are without Consul: `<dir>/<service>.json`;
    /// `ROUTES_DIR`. Unset (and no Consul): no routing table.
    pub routes_dir: Option<PathBuf>,
    /// Where the route tables are in Consul KV: `<prefix><service>`;
    /// `ROUTES_KV_PREFIX`, default `fleet/routes/`.
    pub routes_kv_prefix: String,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            consul_addr: None,
            check: CheckKind::Http,
            check_interval: Duration::from_secs(1),
            deregister_after: Duration::from_secs(60),
            watch_wait: Duration::from_secs(30),
            advertise_ip: None,
            routes_dir: None,
            routes_kv_prefix: DEFAULT_KV_PREFIX.to_owned(),
        }
    }
}

/// The KV prefix the deploy files seed (`fleet/routes/<service>`).
pub const DEFAULT_KV_PREFIX: &str = "fleet/routes/";

impl DiscoveryConfig {
    /// Reads `CONSUL_HTTP_ADDR`, `CONSUL_CHECK`, `CONSUL_CHECK_INTERVAL`,
    /// `CONSUL_DEREGISTER_AFTER`, `CONSUL_WATCH_WAIT`, `ADVERTISE_ADDR`,
    /// `ROUTES_DIR` and `ROUTES_KV_PREFIX`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Self::default();
        let consul_addr = env
            .get("CONSUL_HTTP_ADDR")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if let Some(a) = &consul_addr {
            crate::ConsulClient::new(a)
                .map_err(|e| ConfigError::invalid("CONSUL_HTTP_ADDR", a, e))?;
        }
        let check = match env.string("CONSUL_CHECK", "http").as_str() {
            "http" => CheckKind::Http,
            "grpc" => CheckKind::Grpc,
            other => {
                return Err(ConfigError::invalid(
                    "CONSUL_CHECK",
                    other,
                    "expected http or grpc",
                ));
            }
        };
        let routes_kv_prefix = env.string("ROUTES_KV_PREFIX", DEFAULT_KV_PREFIX);
        if !routes_kv_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/.".contains(&b))
        {
            return Err(ConfigError::invalid(
                "ROUTES_KV_PREFIX",
                &routes_kv_prefix,
                "use letters, digits, '-', '_', '.' and '/'",
            ));
        }
        Ok(Self {
            consul_addr,
            check,
            check_interval: env.duration_in(
                "CONSUL_CHECK_INTERVAL",
                d.check_interval,
                Duration::from_secs(1),
                Duration::from_secs(60),
            )?,
            deregister_after: env.duration_in(
                "CONSUL_DEREGISTER_AFTER",
                d.deregister_after,
                Duration::from_secs(60),
                Duration::from_secs(86_400),
            )?,
            watch_wait: env.duration_in(
                "CONSUL_WATCH_WAIT",
                d.watch_wait,
                Duration::from_secs(1),
                Duration::from_secs(300),
            )?,
            advertise_ip: env.parse_opt("ADVERTISE_ADDR")?,
            routes_dir: env.get("ROUTES_DIR").map(PathBuf::from),
            routes_kv_prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_default() {
        let c = DiscoveryConfig::from_env(&Env::of(&[])).unwrap();
        assert_eq!(c, DiscoveryConfig::default());
        assert!(c.consul_addr.is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("CONSUL_HTTP_ADDR", "https://x:1"),
            ("CONSUL_CHECK", "tcp"),
            ("CONSUL_CHECK_INTERVAL", "10ms"),
            ("CONSUL_DEREGISTER_AFTER", "5s"),
            ("ADVERTISE_ADDR", "somewhere"),
            ("ROUTES_KV_PREFIX", "a b"),
        ] {
            let e = DiscoveryConfig::from_env(&Env::of(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
    }
}
