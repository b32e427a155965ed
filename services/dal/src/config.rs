//! The dal's settings, read once from the environment at start.

use std::path::PathBuf;
use std::time::Duration;

use fleet_config::{ConfigError, Env};
use fleet_seed::SeedConfig;
use fleet_server::ServerConfig;

use crate::cache::CacheConfig;

/// Everything the dal reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listeners, identity, drain timing (`GRPC_ADDR`, `ADMIN_ADDR`, …).
    pub server: ServerConfig,
    /// Where the embedded store keeps its file; `DATA_DIR`, default
    /// `./data/dal`.
    pub data_dir: PathBuf,
    /// Seed the data set on start when the store is empty; `SEED`, default
    /// `true`.
    pub seed: bool,
    /// How much seed data; `SEED_TITLES` (default 1000), `SEED_USERS`
    /// (default 500).
    pub seed_config: SeedConfig,
    /// The in-process cache (`CACHE_*`).
    pub cache: CacheConfig,
}

impl Config {
    /// Reads and validates the settings.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let server = ServerConfig::from_env(
            env,
            "dal",
            "GRPC_ADDR",
            "0.0.0.0:7300",
            "0.0.0.0:9300",
            "1.0.0",
            &["1.0"],
        )?;
        let data_dir = PathBuf::from(env.string("DATA_DIR", "./data/dal"));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("DATA_DIR", "", "must not be empty"));
        }
        let defaults = SeedConfig::default();
        let seed_config = SeedConfig {
            titles: env.number_in("SEED_TITLES", defaults.titles, 1..=99_999)?,
            users: env.number_in("SEED_USERS", defaults.users, 1..=99_999)?,
            seed: defaults.seed,
        };
        let d = CacheConfig::default();
        let cache = CacheConfig {
            capacity: env.number_in("CACHE_CAPACITY", d.capacity, 0..=100_000_000)?,
            title_ttl: env.duration_in(
                "CACHE_TITLE_TTL",
                d.title_ttl,
                Duration::from_millis(1),
                Duration::from_secs(86_400),
            )?,
            summary_ttl: env.duration_in(
                "CACHE_SUMMARY_TTL",
                d.summary_ttl,
                Duration::from_millis(1),
                Duration::from_secs(86_400),
            )?,
            negative_ttl: env.duration_in(
                "CACHE_NEGATIVE_TTL",
                d.negative_ttl,
                Duration::from_millis(1),
                Duration::from_secs(3_600),
            )?,
            jitter: {
                let j: f64 = env.parse("CACHE_TTL_JITTER", d.jitter)?;
                if !(0.0..=0.5).contains(&j) {
                    return Err(ConfigError::invalid(
                        "CACHE_TTL_JITTER",
                        &j.to_string(),
                        "must be between 0 and 0.5",
                    ));
                }
                j
            },
        };
        Ok(Self {
            server,
            data_dir,
            seed: env.bool("SEED", true)?,
            seed_config,
            cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let c = Config::from_env(&Env::from_pairs::<_, &str, &str>([])).unwrap();
        assert!(c.seed);
        assert_eq!(c.seed_config.titles, 1000);
        for (k, v) in [
            ("SEED", "maybe"),
            ("SEED_TITLES", "0"),
            ("CACHE_TTL_JITTER", "2"),
            ("CACHE_TITLE_TTL", "forever"),
            ("GRPC_ADDR", "nowhere"),
            ("SERVICE_VERSION", "2.0.0"),
        ] {
            let e = Config::from_env(&Env::from_pairs([(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{k}: {e}");
        }
    }
}
