//! The dal's settings, read once from the environment at start.

use std::path::PathBuf;
use std::time::Duration;

use fleet_config::{ConfigError, Env};
use fleet_seed::SeedConfig;
use fleet_server::ServerConfig;
use scylla::statement::{Consistency, SerialConsistency};

use crate::cache::{CacheConfig, RedisConfig};
use crate::store::CqlConfig;
use crate::store::cql::Secret;

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
    /// Cache sizes and lifetimes (`CACHE_*`), for either cache.
    pub cache: CacheConfig,
    /// Cassandra/Scylla instead of the embedded store: set when
    /// `SCYLLA_NODES` is (see [`CqlConfig`] for the other `SCYLLA_*`).
    pub cql: Option<CqlConfig>,
    /// Redis instead of the in-process cache: set when `REDIS_URL` is (see
    /// [`RedisConfig`] for the other `REDIS_*`).
    pub redis: Option<RedisConfig>,
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
            cql: cql_config(env)?,
            redis: redis_config(env)?,
        })
    }
}

/// `host:port` with a non-empty host and a non-zero port (IPv6 in
/// brackets: `[::1]:9042`).
fn host_port(key: &str, v: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::invalid(key, v, format!("{why} (expected host:port,…)"));
    let (host, port) = v.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return Err(bad("bad host"));
    }
    Ok(())
}

fn consistency(env: &Env, key: &str, default: Consistency) -> Result<Consistency, ConfigError> {
    let Some(v) = env.get(key) else {
        return Ok(default);
    };
    Ok(match v.to_ascii_uppercase().replace('-', "_").as_str() {
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" if key == "SCYLLA_WRITE_CONSISTENCY" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => {
            return Err(ConfigError::invalid(
                key,
                v,
                "expected ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, LOCAL_ONE \
                 (or EACH_QUORUM for writes)",
            ));
        }
    })
}

fn cql_config(env: &Env) -> Result<Option<CqlConfig>, ConfigError> {
    let nodes = env.list("SCYLLA_NODES");
    if nodes.is_empty() {
        return Ok(None);
    }
    for n in &nodes {
        host_port("SCYLLA_NODES", n)?;
    }
    let mut c = CqlConfig::new(nodes);
    c.keyspace = env
        .string("SCYLLA_KEYSPACE", &c.keyspace)
        .to_ascii_lowercase();
    let ks = c.keyspace.as_bytes();
    if ks.is_empty()
        || ks.len() > 48
        || !ks[0].is_ascii_lowercase()
        || !ks
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
    {
        return Err(ConfigError::invalid(
            "SCYLLA_KEYSPACE",
            &c.keyspace,
            "expected a letter then up to 47 letters, digits or '_'",
        ));
    }
    c.datacenter = env.get("SCYLLA_DATACENTER").map(str::to_owned);
    if let Some(dc) = &c.datacenter
        && (dc.len() > 64
            || !dc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        return Err(ConfigError::invalid(
            "SCYLLA_DATACENTER",
            dc,
            "expected a datacenter name (letters, digits, '-', '_', '.')",
        ));
    }
    c.credentials = match (env.get("SCYLLA_USERNAME"), env.get("SCYLLA_PASSWORD")) {
        (None, None) => None,
        (Some(u), Some(p)) => Some((u.to_owned(), Secret(p.to_owned()))),
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                key: "SCYLLA_PASSWORD".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                key: "SCYLLA_USERNAME".into(),
            });
        }
    };
    c.replication_factor = match env.get("SCYLLA_REPLICATION_FACTOR") {
        None => None,
        Some(_) => Some(env.number_in("SCYLLA_REPLICATION_FACTOR", 3, 1..=9)?),
    };
    c.read_consistency = consistency(env, "SCYLLA_READ_CONSISTENCY", c.read_consistency)?;
    c.write_consistency = consistency(env, "SCYLLA_WRITE_CONSISTENCY", c.write_consistency)?;
    c.serial_consistency = match env.get("SCYLLA_SERIAL_CONSISTENCY") {
        None => c.serial_consistency,
        Some(v) => match v.to_ascii_uppercase().replace('-', "_").as_str() {
            "SERIAL" => SerialConsistency::Serial,
            "LOCAL_SERIAL" => SerialConsistency::LocalSerial,
            _ => {
                return Err(ConfigError::invalid(
                    "SCYLLA_SERIAL_CONSISTENCY",
                    v,
                    "expected SERIAL or LOCAL_SERIAL",
                ));
            }
        },
    };
    c.connect_timeout = env.duration_in(
        "SCYLLA_CONNECT_TIMEOUT",
        c.connect_timeout,
        Duration::from_millis(10),
        Duration::from_secs(60),
    )?;
    c.request_timeout = env.duration_in(
        "SCYLLA_REQUEST_TIMEOUT",
        c.request_timeout,
        Duration::from_millis(10),
        Duration::from_secs(300),
    )?;
    c.migrate_on_start = env.bool("SCYLLA_MIGRATE_ON_START", c.migrate_on_start)?;
    Ok(Some(c))
}

fn redis_config(env: &Env) -> Result<Option<RedisConfig>, ConfigError> {
    let Some(url) = env.get("REDIS_URL") else {
        return Ok(None);
    };
    let shown = crate::cache::redact_url(url);
    let parsed = redis::parse_redis_url(url)
        .filter(|u| matches!(u.scheme(), "redis" | "redis+unix" | "unix"))
        .ok_or_else(|| {
            ConfigError::invalid(
                "REDIS_URL",
                &shown,
                "expected redis://[user:password@]host:port[/db]",
            )
        })?;
    if parsed.scheme() == "redis" && parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid("REDIS_URL", &shown, "no host"));
    }
    let mut r = RedisConfig::new(url);
    r.timeout = env.duration_in(
        "REDIS_TIMEOUT",
        r.timeout,
        Duration::from_millis(1),
        Duration::from_secs(5),
    )?;
    r.connect_timeout = env.duration_in(
        "REDIS_CONNECT_TIMEOUT",
        r.connect_timeout,
        Duration::from_millis(1),
        Duration::from_secs(10),
    )?;
    r.key_prefix = env.string("REDIS_KEY_PREFIX", &r.key_prefix);
    if r.key_prefix.is_empty()
        || r.key_prefix.len() > 64
        || r.key_prefix
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(ConfigError::invalid(
            "REDIS_KEY_PREFIX",
            &r.key_prefix,
            "expected 1 to 64 printable characters without spaces",
        ));
    }
    Ok(Some(r))
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
        assert!(c.cql.is_none() && c.redis.is_none(), "embedded by default");
    }

    #[test]
    fn cassandra_settings_are_validated() {
        let env = |pairs: &[(&str, &str)]| {
            Env::from_pairs(
                [("SCYLLA_NODES", "10.0.0.1:9042, cass-2:9042,[::1]:19042")]
                    .into_iter()
                    .chain(pairs.iter().copied()),
            )
        };
        let c = Config::from_env(&env(&[])).unwrap().cql.unwrap();
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.keyspace, "fleet");
        assert_eq!(c.read_consistency, Consistency::LocalQuorum);
        assert_eq!(c.write_consistency, Consistency::LocalQuorum);
        assert_eq!(c.serial_consistency, SerialConsistency::LocalSerial);
        assert_eq!(c.replication_factor, None);
        let c = Config::from_env(&env(&[
            ("SCYLLA_KEYSPACE", "Fleet_Test"),
            ("SCYLLA_DATACENTER", "eu-west-1"),
            ("SCYLLA_READ_CONSISTENCY", "local_one"),
            ("SCYLLA_WRITE_CONSISTENCY", "EACH_QUORUM"),
            ("SCYLLA_SERIAL_CONSISTENCY", "serial"),
            ("SCYLLA_REPLICATION_FACTOR", "3"),
            ("SCYLLA_USERNAME", "fleet"),
            ("SCYLLA_PASSWORD", "hunter2"),
        ]))
        .unwrap()
        .cql
        .unwrap();
        assert_eq!(c.keyspace, "fleet_test");
        assert_eq!(c.datacenter.as_deref(), Some("eu-west-1"));
        assert_eq!(c.read_consistency, Consistency::LocalOne);
        assert_eq!(c.write_consistency, Consistency::EachQuorum);
        assert_eq!(c.serial_consistency, SerialConsistency::Serial);
        assert_eq!(c.replication_factor, Some(3));
        assert!(!format!("{c:?}").contains("hunter2"));
        for (k, v) in [
            ("SCYLLA_NODES", "cassandra"),
            ("SCYLLA_NODES", "cassandra:0"),
            ("SCYLLA_NODES", ":9042"),
            ("SCYLLA_NODES", "a b:9042"),
            ("SCYLLA_KEYSPACE", "1fleet"),
            ("SCYLLA_KEYSPACE", "fleet; DROP"),
            ("SCYLLA_DATACENTER", "dc'1"),
            ("SCYLLA_READ_CONSISTENCY", "EACH_QUORUM"),
            ("SCYLLA_READ_CONSISTENCY", "SOME"),
            ("SCYLLA_SERIAL_CONSISTENCY", "QUORUM"),
            ("SCYLLA_REPLICATION_FACTOR", "0"),
            ("SCYLLA_REQUEST_TIMEOUT", "forever"),
            ("SCYLLA_MIGRATE_ON_START", "perhaps"),
            ("SCYLLA_USERNAME", "only-a-user"),
        ] {
            let e = Config::from_env(&env(&[(k, v)])).unwrap_err();
            let shown = e.to_string();
            assert!(
                shown.contains(k) || (k == "SCYLLA_USERNAME" && shown.contains("SCYLLA_PASSWORD")),
                "{k}={v}: {e}"
            );
        }
    }

    #[test]
    fn redis_settings_are_validated() {
        let c = Config::from_env(&Env::from_pairs([("REDIS_URL", "redis://127.0.0.1:6379")]))
            .unwrap()
            .redis
            .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(50));
        assert_eq!(c.key_prefix, "fleet:dal:v1:");
        for (k, v) in [
            ("REDIS_URL", "http://cache:6379"),
            ("REDIS_URL", "cache:6379"),
            ("REDIS_TIMEOUT", "0ms"),
            ("REDIS_KEY_PREFIX", "has space"),
        ] {
            let env = Env::from_pairs([("REDIS_URL", "redis://cache:6379"), (k, v)]);
            let e = Config::from_env(&env).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
        let e = Config::from_env(&Env::from_pairs([(
            "REDIS_URL",
            "rediss://u:hunter2@cache:6379",
        )]))
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
