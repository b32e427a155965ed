//! Settings every service reads the same way.

use std::net::SocketAddr;
use std::time::Duration;

use fleet_config::{ConfigError, Env};
use fleet_discovery::DiscoveryConfig;
use fleet_resilience::adaptive::AdaptiveConfig;

/// Who this instance is: what discovery, metrics and logs call it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The service name, e.g. `catalog`.
    pub service: &'static str,
    /// The version this instance runs (Interface.Feature.Bugfix).
    pub version: semver::Version,
    /// Unique per instance; `INSTANCE_ID`, default `<service>-<random>`.
    pub instance_id: String,
    /// Availability zone; `ZONE`, default `local`.
    pub zone: String,
}

impl Identity {
    /// `service/version/instance`, as sent in `x-fleet-served-by`.
    pub fn served_by(&self) -> String {
        format!("{}/{}/{}", self.service, self.version, self.instance_id)
    }
}

/// What a [`crate::ServiceHost`] needs: addresses, identity, drain timing.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This instance's identity.
    pub identity: Identity,
    /// The main listener (gRPC, or HTTP for the edge).
    pub addr: SocketAddr,
    /// The admin HTTP listener; `ADMIN_ADDR`.
    pub admin_addr: SocketAddr,
    /// Longest wait for in-flight requests at shutdown; `SHUTDOWN_GRACE`,
    /// default 10 s.
    pub shutdown_grace: Duration,
    /// Time between reporting not-ready and closing the listener, so load
    /// balancers stop sending first; `DRAIN_DELAY`, default 0 s.
    pub drain_delay: Duration,
    /// Token the admin port requires for changes (faults, routes);
    /// `ADMIN_TOKEN`. Unset: changes are refused.
    pub admin_token: Option<String>,
    /// How often readiness checks run; `READINESS_INTERVAL`, default 1 s.
    pub readiness_interval: Duration,
    /// Consul registration and discovery, route tables (`CONSUL_HTTP_ADDR`,
    /// `ROUTES_DIR`, …; see [`DiscoveryConfig`]).
    pub discovery: DiscoveryConfig,
    /// The adaptive (Gradient2) concurrency limit in front of the handlers:
    /// `CONCURRENCY_LIMIT_INITIAL` (default 100, so a cold instance takes a
    /// normal burst before it has measured anything), `CONCURRENCY_LIMIT_MIN`
    /// (default 20, Netflix's), `CONCURRENCY_LIMIT_MAX` (default 1000), each
    /// 1..=100000 with min ≤ initial ≤ max; the rest of
    /// [`AdaptiveConfig`] keeps Netflix's defaults.
    pub concurrency: AdaptiveConfig,
}

impl ServerConfig {
    /// Reads the common settings. `addr_key` names the main listener's
    /// variable (`GRPC_ADDR` or `HTTP_ADDR`); `default_version` is used when
    /// `SERVICE_VERSION` is unset, and `allowed_versions` (majors.minors this
    /// build implements, e.g. `["1.2", "1.3"]`) bounds what it may be set to.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad variable.
    pub fn from_env(
        env: &Env,
        service: &'static str,
        addr_key: &str,
        default_addr: &str,
        default_admin_addr: &str,
        default_version: &str,
        allowed_versions: &[&str],
    ) -> Result<Self, ConfigError> {
        let version_str = env.string("SERVICE_VERSION", default_version);
        let version = semver::Version::parse(&version_str).map_err(|e| {
            ConfigError::invalid(
                "SERVICE_VERSION",
                &version_str,
                format!("{e} (expected Interface.Feature.Bugfix, e.g. 1.3.0)"),
            )
        })?;
        let major_minor = format!("{}.{}", version.major, version.minor);
        if !allowed_versions.contains(&major_minor.as_str()) {
            return Err(ConfigError::invalid(
                "SERVICE_VERSION",
                &version_str,
                format!(
                    "this build of {service} implements {}",
                    allowed_versions.join(", ")
                ),
            ));
        }
        let instance_id = env.get("INSTANCE_ID").map_or_else(
            || {
                format!(
                    "{service}-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )
            },
            str::to_owned,
        );
        if instance_id.len() > 64
            || !instance_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(ConfigError::invalid(
                "INSTANCE_ID",
                &instance_id,
                "use at most 64 letters, digits, '-', '_' or '.'",
            ));
        }
        let zone = env.string("ZONE", "local");
        let admin_token = env.get("ADMIN_TOKEN").map(str::to_owned);
        if let Some(t) = &admin_token
            && t.len() < 16
        {
            return Err(ConfigError::invalid(
                "ADMIN_TOKEN",
                "<redacted>",
                "must be at least 16 characters",
            ));
        }
        let concurrency = concurrency(env)?;
        Ok(Self {
            concurrency,
            identity: Identity {
                service,
                version,
                instance_id,
                zone,
            },
            addr: env.socket_addr(addr_key, default_addr)?,
            admin_addr: env.socket_addr("ADMIN_ADDR", default_admin_addr)?,
            shutdown_grace: env.duration_in(
                "SHUTDOWN_GRACE",
                Duration::from_secs(10),
                Duration::ZERO,
                Duration::from_secs(300),
            )?,
            drain_delay: env.duration_in(
                "DRAIN_DELAY",
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_secs(60),
            )?,
            admin_token,
            readiness_interval: env.duration_in(
                "READINESS_INTERVAL",
                Duration::from_secs(1),
                Duration::from_millis(50),
                Duration::from_secs(60),
            )?,
            discovery: DiscoveryConfig::from_env(env)?,
        })
    }
}

/// `CONCURRENCY_LIMIT_*` (see [`ServerConfig::concurrency`]).
fn concurrency(env: &Env) -> Result<AdaptiveConfig, ConfigError> {
    let min: usize = env.number_in("CONCURRENCY_LIMIT_MIN", 20, 1..=100_000)?;
    let max: usize = env.number_in("CONCURRENCY_LIMIT_MAX", 1000, 1..=100_000)?;
    if min > max {
        return Err(ConfigError::invalid(
            "CONCURRENCY_LIMIT_MIN",
            &min.to_string(),
            format!("must not exceed CONCURRENCY_LIMIT_MAX ({max})"),
        ));
    }
    let initial: usize = env.number_in(
        "CONCURRENCY_LIMIT_INITIAL",
        100.clamp(min, max),
        1..=100_000,
    )?;
    if !(min..=max).contains(&initial) {
        return Err(ConfigError::invalid(
            "CONCURRENCY_LIMIT_INITIAL",
            &initial.to_string(),
            format!("must be within CONCURRENCY_LIMIT_MIN..=CONCURRENCY_LIMIT_MAX ({min}..={max})"),
        ));
    }
    Ok(AdaptiveConfig {
        initial_limit: initial,
        min_limit: min,
        max_limit: max,
        ..AdaptiveConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_env(
            &Env::from_pairs(pairs.iter().copied()),
            "catalog",
            "GRPC_ADDR",
            "127.0.0.1:0",
            "127.0.0.1:0",
            "1.3.0",
            &["1.2", "1.3"],
        )
    }

    #[test]
    fn defaults_are_usable() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.identity.version, semver::Version::new(1, 3, 0));
        assert!(c.identity.instance_id.starts_with("catalog-"));
        assert_eq!(c.identity.zone, "local");
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn versions_outside_the_build_are_refused() {
        let e = cfg(&[("SERVICE_VERSION", "2.0.0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("implements 1.2, 1.3"), "{e}");
        assert!(cfg(&[("SERVICE_VERSION", "1.2")]).is_err());
        assert_eq!(
            cfg(&[("SERVICE_VERSION", "1.2.7")])
                .unwrap()
                .identity
                .version,
            semver::Version::new(1, 2, 7)
        );
    }

    #[test]
    fn hostile_values_are_refused() {
        assert!(cfg(&[("INSTANCE_ID", "a b")]).is_err());
        assert!(cfg(&[("ADMIN_TOKEN", "short")]).is_err());
        assert!(cfg(&[("SHUTDOWN_GRACE", "1y")]).is_err());
        assert!(cfg(&[("GRPC_ADDR", "nowhere")]).is_err());
        for (k, v) in [
            ("CONCURRENCY_LIMIT_MIN", "0"),
            ("CONCURRENCY_LIMIT_MIN", "2000"),
            ("CONCURRENCY_LIMIT_INITIAL", "5"),
            ("CONCURRENCY_LIMIT_MAX", "many"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn the_concurrency_limit_is_configurable() {
        let c = cfg(&[]).unwrap().concurrency;
        assert_eq!((c.initial_limit, c.min_limit, c.max_limit), (100, 20, 1000));
        let c = cfg(&[("CONCURRENCY_LIMIT_MAX", "50")]).unwrap().concurrency;
        assert_eq!((c.initial_limit, c.min_limit, c.max_limit), (50, 20, 50));
    }
}
