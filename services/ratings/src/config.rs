//! The ratings service's settings, read once from the environment at start.

use fleet_config::{ConfigError, Env};
use fleet_dal_client::{DependencyConfig, Instance};
use fleet_server::ServerConfig;

/// The feature releases of interface 1 this build implements.
pub const ALLOWED_VERSIONS: [&str; 1] = ["1.0"];
/// The release run when `SERVICE_VERSION` is unset.
pub const DEFAULT_VERSION: &str = "1.0.0";
/// Where the dal is when `DAL_ADDRS` is unset.
pub const DEFAULT_DAL_ADDRS: &str = "127.0.0.1:7300";
/// Fewest ratings a title needs to appear in "top rated" by default.
pub const DEFAULT_TOP_RATED_MIN_COUNT: u64 = 1;

/// Everything the ratings service reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listeners, identity, drain timing: `GRPC_ADDR` (default
    /// `0.0.0.0:7200`), `ADMIN_ADDR` (default `0.0.0.0:9200`),
    /// `SERVICE_VERSION` (1.0.x, default `1.0.0`), and the rest of
    /// [`ServerConfig`].
    pub server: ServerConfig,
    /// How to call the dal: `DAL_CONNECT_TIMEOUT`, `DAL_REQUEST_TIMEOUT`,
    /// `DAL_HOP_MARGIN`.
    pub dal: DependencyConfig,
    /// The dal instances: `DAL_ADDRS`, a static list
    /// `ip:port[@version],…` (default `127.0.0.1:7300`; an instance without
    /// a version is taken to run 1.0.0).
    pub dal_instances: Vec<Instance>,
    /// Titles with fewer ratings are left out of "top rated", so one
    /// enthusiastic vote does not top the chart; `TOP_RATED_MIN_COUNT`,
    /// 1..=1000000, default 1.
    pub top_rated_min_count: u64,
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
            "0.0.0.0:7200",
            "0.0.0.0:9200",
            DEFAULT_VERSION,
            &ALLOWED_VERSIONS,
        )?;
        let dal = DependencyConfig::new("dal", crate::SERVICE, fleet_dal_client::INTERFACE_MAJOR)
            .from_env(env)?;
        let dal_instances = dal.instances_from_env(env, DEFAULT_DAL_ADDRS)?;
        let top_rated_min_count = env.number_in(
            "TOP_RATED_MIN_COUNT",
            DEFAULT_TOP_RATED_MIN_COUNT,
            1..=1_000_000,
        )?;
        Ok(Self {
            server,
            dal,
            dal_instances,
            top_rated_min_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_ratings_1_0_against_a_local_dal() {
        let c = Config::from_env(&Env::of(&[])).unwrap();
        assert_eq!(c.server.identity.version, semver::Version::new(1, 0, 0));
        assert_eq!(c.server.addr.port(), 7200);
        assert_eq!(c.server.admin_addr.port(), 9200);
        assert_eq!(c.dal_instances.len(), 1);
        assert_eq!(c.dal_instances[0].addr.to_string(), "127.0.0.1:7300");
        assert_eq!(c.dal.caller, "ratings");
        assert_eq!(c.top_rated_min_count, 1);
    }

    #[test]
    fn several_dal_instances_are_accepted() {
        let c = Config::from_env(&Env::of(&[(
            "DAL_ADDRS",
            "127.0.0.1:7301,127.0.0.1:7302@1.0.3",
        )]))
        .unwrap();
        assert_eq!(c.dal_instances.len(), 2);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("SERVICE_VERSION", "1.3.0"),
            ("DAL_ADDRS", "dal:7300"),
            ("DAL_ADDRS", " , "),
            ("DAL_CONNECT_TIMEOUT", "0s"),
            ("TOP_RATED_MIN_COUNT", "0"),
            ("ADMIN_ADDR", "nowhere"),
        ] {
            let e = Config::from_env(&Env::of(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
    }
}
