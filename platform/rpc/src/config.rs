//! Per-dependency client settings.

use std::time::Duration;

use fleet_config::{ConfigError, Env};
use fleet_resilience::balance::BalanceConfig;
use fleet_resilience::breaker::BreakerConfig;
use fleet_resilience::eject::EjectConfig;
use fleet_resilience::retry::RetryConfig;

use crate::instance::{Instance, parse_instances};
use crate::routing::MajorMinor;
use fleet_config::MutualTls;

/// How a service calls one dependency.
#[derive(Clone, Debug)]
pub struct DependencyConfig {
    /// The remote service's name, e.g. `catalog`.
    pub name: &'static str,
    /// This service's name, sent as `x-fleet-caller`.
    pub caller: &'static str,
    /// The interface major this client speaks; only instances of that major
    /// are eligible.
    pub interface_major: u64,
    /// One network hop: how long to wait for a TCP connection.
    /// `<NAME>_CONNECT_TIMEOUT`, default 50 ms.
    pub connect_timeout: Duration,
    /// The per-call timeout when the caller has no deadline of its own.
    /// `<NAME>_REQUEST_TIMEOUT`, default 1 s.
    pub request_timeout: Duration,
    /// Subtracted from the remaining budget at each hop, so this hop has
    /// time to answer after its callee gives up. `<NAME>_HOP_MARGIN`,
    /// default 5 ms.
    pub hop_margin: Duration,
    /// Most calls in flight to this dependency; beyond it calls are refused
    /// at once. `<NAME>_BULKHEAD`, default 128.
    pub bulkhead: usize,
    /// Circuit breaker per operation (`<NAME>_BREAKER_*`).
    pub breaker: BreakerConfig,
    /// Retries (`<NAME>_RETRIES`, `<NAME>_RETRY_BUDGET_PERCENT`).
    pub retry: RetryConfig,
    /// Balancing: the latency estimate.
    pub balance: BalanceConfig,
    /// Outlier ejection (`<NAME>_EJECT_AFTER_FAILURES`, `<NAME>_EJECTION`,
    /// `<NAME>_MAX_EJECTION_PERCENT`).
    pub eject: EjectConfig,
    /// Only instances of this minor (`<NAME>_PIN=1.3`); overrides pin
    /// headers and the routing table.
    pub pin: Option<MajorMinor>,
    /// Mutual TLS to this dependency (`GRPC_TLS_CA_FILE`,
    /// `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`; see [`MutualTls`]): the
    /// server's certificate must name the dependency. `None`: plaintext.
    pub tls: Option<MutualTls>,
}

impl DependencyConfig {
    /// Defaults for calling `name` from `caller`.
    pub fn new(name: &'static str, caller: &'static str, interface_major: u64) -> Self {
        Self {
            name,
            caller,
            interface_major,
            connect_timeout: Duration::from_millis(50),
            request_timeout: Duration::from_secs(1),
            hop_margin: Duration::from_millis(5),
            bulkhead: 128,
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            balance: BalanceConfig::default(),
            eject: EjectConfig::default(),
            pin: None,
            tls: None,
        }
    }

    /// Overrides the defaults from `<NAME>_CONNECT_TIMEOUT`,
    /// `<NAME>_REQUEST_TIMEOUT`, `<NAME>_HOP_MARGIN`, `<NAME>_BULKHEAD`,
    /// `<NAME>_BREAKER_ENABLED`, `<NAME>_BREAKER_VOLUME`,
    /// `<NAME>_BREAKER_ERROR_PERCENT`, `<NAME>_BREAKER_SLEEP`,
    /// `<NAME>_BREAKER_SLOW_CALL`, `<NAME>_BREAKER_WINDOW`,
    /// `<NAME>_RETRIES`, `<NAME>_RETRY_BUDGET_PERCENT`,
    /// `<NAME>_EJECT_AFTER_FAILURES`, `<NAME>_EJECTION` and
    /// `<NAME>_MAX_EJECTION_PERCENT` (NAME upper-cased), and the shared
    /// `GRPC_TLS_*` files.
    ///
    /// # Errors
    /// [`ConfigError`] for unparsable or absurd values.
    pub fn from_env(mut self, env: &Env) -> Result<Self, ConfigError> {
        let prefix = self.name.to_ascii_uppercase();
        self.connect_timeout = env.duration_in(
            &format!("{prefix}_CONNECT_TIMEOUT"),
            self.connect_timeout,
            Duration::from_millis(1),
            Duration::from_secs(10),
        )?;
        self.request_timeout = env.duration_in(
            &format!("{prefix}_REQUEST_TIMEOUT"),
            self.request_timeout,
            Duration::from_millis(1),
            Duration::from_secs(300),
        )?;
        self.hop_margin = env.duration_in(
            &format!("{prefix}_HOP_MARGIN"),
            self.hop_margin,
            Duration::ZERO,
            Duration::from_secs(1),
        )?;
        let key = |k: &str| format!("{prefix}_{k}");
        self.bulkhead = env.number_in(&key("BULKHEAD"), self.bulkhead, 1..=100_000)?;
        let b = &mut self.breaker;
        b.enabled = env.bool(&key("BREAKER_ENABLED"), b.enabled)?;
        b.request_volume_threshold = env.number_in(
            &key("BREAKER_VOLUME"),
            b.request_volume_threshold,
            1..=1_000_000,
        )?;
        b.error_threshold_percent = env.number_in(
            &key("BREAKER_ERROR_PERCENT"),
            b.error_threshold_percent,
            1.0..=100.0,
        )?;
        b.sleep_window = env.duration_in(
            &key("BREAKER_SLEEP"),
            b.sleep_window,
            Duration::from_millis(10),
            Duration::from_secs(600),
        )?;
        b.slow_call_threshold = env.duration_in(
            &key("BREAKER_SLOW_CALL"),
            b.slow_call_threshold,
            Duration::from_millis(1),
            Duration::from_secs(600),
        )?;
        b.window = env.duration_in(
            &key("BREAKER_WINDOW"),
            b.window,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?;
        b.fast_window = b.fast_window.min(b.window);
        let r = &mut self.retry;
        r.max_retries = env.number_in(&key("RETRIES"), r.max_retries, 0..=5)?;
        r.budget_percent =
            env.number_in(&key("RETRY_BUDGET_PERCENT"), r.budget_percent, 0.0..=1.0)?;
        let l = &mut self.eject;
        l.consecutive_failures = env.number_in(
            &key("EJECT_AFTER_FAILURES"),
            l.consecutive_failures,
            1..=1_000,
        )?;
        l.base_ejection = env.duration_in(
            &key("EJECTION"),
            l.base_ejection,
            Duration::from_millis(10),
            Duration::from_secs(3_600),
        )?;
        l.max_ejection_percent = env.number_in(
            &key("MAX_EJECTION_PERCENT"),
            l.max_ejection_percent,
            0..=100,
        )?;
        if let Some(pin) = env.get(&key("PIN")) {
            let mm = MajorMinor::parse(pin)
                .filter(|mm| mm.major == self.interface_major)
                .ok_or_else(|| {
                    ConfigError::invalid(
                        &key("PIN"),
                        pin,
                        format!(
                            "expected {}.<minor>, e.g. {}.3",
                            self.interface_major, self.interface_major
                        ),
                    )
                })?;
            self.pin = Some(mm);
        }
        self.tls = MutualTls::from_env(env)?;
        if let Some(tls) = &self.tls {
            crate::tls::check(tls)?;
        }
        self.breaker
            .validate()
            .map_err(|e| ConfigError::invalid(&key("BREAKER_*"), "", e))?;
        self.retry
            .validate()
            .map_err(|e| ConfigError::invalid(&key("RETRY_*"), "", e))?;
        Ok(self)
    }

    /// The dependency's static instances, for when no discovery runs:
    /// `<NAME>_ADDRS`, a list `ip:port[@version],…` (`default` when unset;
    /// an instance without a version is taken to run
    /// `<interface major>.0.0`), at least one.
    ///
    /// # Errors
    /// [`ConfigError`] for an unparsable or empty list.
    pub fn instances_from_env(
        &self,
        env: &Env,
        default: &str,
    ) -> Result<Vec<Instance>, ConfigError> {
        let key = format!("{}_ADDRS", self.name.to_ascii_uppercase());
        let raw = env.string(&key, default);
        let default_version = semver::Version::new(self.interface_major, 0, 0);
        let instances = parse_instances(&raw, &default_version)
            .map_err(|e| ConfigError::invalid(&key, &raw, e))?;
        if instances.is_empty() {
            return Err(ConfigError::invalid(
                &key,
                &raw,
                format!("name at least one {} instance", self.name),
            ));
        }
        Ok(instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_instances_come_from_name_addrs() {
        let dal = DependencyConfig::new("dal", "catalog", 1);
        let got = dal
            .instances_from_env(&Env::of(&[]), "127.0.0.1:7300")
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].addr.to_string(), "127.0.0.1:7300");
        assert_eq!(got[0].version, semver::Version::new(1, 0, 0));

        let v2 = DependencyConfig::new("catalog", "edge", 2);
        let got = v2
            .instances_from_env(
                &Env::of(&[("CATALOG_ADDRS", "127.0.0.1:1,127.0.0.1:2@2.1.0")]),
                "127.0.0.1:7100",
            )
            .unwrap();
        assert_eq!(got[0].version, semver::Version::new(2, 0, 0));
        assert_eq!(got[1].version, semver::Version::new(2, 1, 0));
    }

    #[test]
    fn an_empty_or_unparsable_list_names_the_variable() {
        let dal = DependencyConfig::new("dal", "ratings", 1);
        for bad in [",", " , ", "localhost:7300", "127.0.0.1:7300@one"] {
            let e = dal
                .instances_from_env(&Env::of(&[("DAL_ADDRS", bad)]), "127.0.0.1:7300")
                .unwrap_err()
                .to_string();
            assert!(e.contains("DAL_ADDRS"), "{bad:?}: {e}");
        }
    }
}
