//! The catalog's settings, read once from the environment at start.

use fleet_config::{ConfigError, Env};
use fleet_dal_client::{DependencyConfig, Instance};
use fleet_server::ServerConfig;

/// The releases this build implements: 1.2 and 1.3 of interface 1
/// (`catalog.v1`), and 2.0 (`catalog.v2`, a breaking interface).
pub const ALLOWED_VERSIONS: [&str; 3] = ["1.2", "1.3", "2.0"];
/// The release run when `SERVICE_VERSION` is unset.
pub const DEFAULT_VERSION: &str = "1.3.0";
/// Where the dal is when `DAL_ADDRS` is unset.
pub const DEFAULT_DAL_ADDRS: &str = "127.0.0.1:7300";

/// Everything the catalog reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listeners, identity, drain timing: `GRPC_ADDR` (default
    /// `0.0.0.0:7100`), `ADMIN_ADDR` (default `0.0.0.0:9100`),
    /// `SERVICE_VERSION` (1.2.x, 1.3.x or 2.0.x, default `1.3.0`), and the rest of
    /// [`ServerConfig`].
    pub server: ServerConfig,
    /// How to call the dal: `DAL_CONNECT_TIMEOUT`, `DAL_REQUEST_TIMEOUT`,
    /// `DAL_HOP_MARGIN`.
    pub dal: DependencyConfig,
    /// The dal instances: `DAL_ADDRS`, a static list
    /// `ip:port[@version],…` (default `127.0.0.1:7300`; an instance without
    /// a version is taken to run 1.0.0).
    pub dal_instances: Vec<Instance>,
}

impl Config {
    /// Reads and validates the settings.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let server = ServerConfig::from_env(
            env,
            crate::SERVICE,
            "GRPC_ADDR",
            "0.0.0.0:7100",
            "0.0.0.0:9100",
            DEFAULT_VERSION,
            &ALLOWED_VERSIONS,
        )?;
        let dal = DependencyConfig::new("dal", crate::SERVICE, fleet_dal_client::INTERFACE_MAJOR)
            .from_env(env)?;
        let dal_instances = dal.instances_from_env(env, DEFAULT_DAL_ADDRS)?;
        Ok(Self {
            server,
            dal,
            dal_instances,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_catalog_1_3_against_a_local_dal() {
        let c = Config::from_env(&Env::of(&[])).unwrap();
        assert_eq!(c.server.identity.version, semver::Version::new(1, 3, 0));
        assert_eq!(c.server.addr.port(), 7100);
        assert_eq!(c.server.admin_addr.port(), 9100);
        assert_eq!(c.dal_instances.len(), 1);
        assert_eq!(c.dal_instances[0].addr.to_string(), "127.0.0.1:7300");
        assert_eq!(c.dal.name, "dal");
        assert_eq!(c.dal.caller, "catalog");
    }

    #[test]
    fn release_1_2_is_allowed() {
        let c = Config::from_env(&Env::of(&[("SERVICE_VERSION", "1.2.4")])).unwrap();
        assert_eq!(c.server.identity.version, semver::Version::new(1, 2, 4));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("SERVICE_VERSION", "1.1.0"),
            ("SERVICE_VERSION", "2.1.0"),
            ("DAL_ADDRS", "localhost:7300"),
            ("DAL_ADDRS", ","),
            ("DAL_REQUEST_TIMEOUT", "forever"),
            ("GRPC_ADDR", "nowhere"),
        ] {
            let e = Config::from_env(&Env::of(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
    }
}
