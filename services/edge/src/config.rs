//! The edge's settings, read once from the environment at start.

use std::time::Duration;

use fleet_config::{ConfigError, Env};
use fleet_edge_client::fault_signature::GamedayKey;
use fleet_rpc::{DependencyConfig, Instance};
use fleet_server::{HttpLimits, ServerConfig};

use crate::stack::rate_limit::TrustedProxies;

/// The releases this build implements.
pub const ALLOWED_VERSIONS: [&str; 1] = ["1.0"];
/// The release run when `SERVICE_VERSION` is unset.
pub const DEFAULT_VERSION: &str = "1.0.0";
/// Where the catalog is when `CATALOG_ADDRS` is unset.
pub const DEFAULT_CATALOG_ADDRS: &str = "127.0.0.1:7100";
/// Where the ratings service is when `RATINGS_ADDRS` is unset.
pub const DEFAULT_RATINGS_ADDRS: &str = "127.0.0.1:7200";

/// The total time budget of each route: the edge answers 504 when it runs
/// out, and every downstream hop gets what is left of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// `GET /titles/{id}`; `EDGE_BUDGET_TITLE`, default 500 ms.
    pub title: Duration,
    /// `GET /titles`; `EDGE_BUDGET_BROWSE`, default 800 ms.
    pub browse: Duration,
    /// `GET /users/{user}/home` (a fan-out); `EDGE_BUDGET_HOME`, default
    /// 1 s.
    pub home: Duration,
    /// Writes (`PUT` ratings and progress) and `GET /users/{user}/ratings`;
    /// `EDGE_BUDGET_USER`, default 1 s.
    pub user: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            title: Duration::from_millis(500),
            browse: Duration::from_millis(800),
            home: Duration::from_secs(1),
            user: Duration::from_secs(1),
        }
    }
}

/// Limits on what one request may be, each answered with its status and
/// the JSON error shape. Each is below the transport's hard cap
/// (`HTTP_MAX_HEADERS`, `HTTP_MAX_HEAD_BYTES`, where hyper answers a bare
/// 431), so a client over them gets the JSON answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request target (path and query) in bytes; beyond it 414
    /// `uri_too_long`. `EDGE_MAX_URL_BYTES`, 256..=65536, default 8192
    /// (a longest cursor is 1400).
    pub max_url_bytes: usize,
    /// Most request headers; beyond it 431 `header_fields_too_large`.
    /// `EDGE_MAX_HEADERS`, 8..=1024 and below `HTTP_MAX_HEADERS`,
    /// default 64.
    pub max_headers: usize,
    /// Most bytes of header names and values together; beyond it 431
    /// `header_fields_too_large`. `EDGE_MAX_HEADER_BYTES`, 1024..=1048576,
    /// with the URL limit below `HTTP_MAX_HEAD_BYTES`; default 16384.
    pub max_header_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON body (`{"a":1}` is
    /// 1); deeper is 400 `invalid_argument` before the body is parsed
    /// (serde_json's own recursion limit is 128). `EDGE_MAX_JSON_DEPTH`,
    /// 1..=128, default 32.
    pub max_json_depth: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_url_bytes: 8192,
            max_headers: 64,
            max_header_bytes: 16 * 1024,
            max_json_depth: crate::extract::DEFAULT_MAX_JSON_DEPTH,
        }
    }
}

impl RequestLimits {
    /// Reads `EDGE_MAX_URL_BYTES`, `EDGE_MAX_HEADERS`,
    /// `EDGE_MAX_HEADER_BYTES`, `EDGE_MAX_JSON_DEPTH`, checked against the
    /// transport's caps.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad variable.
    pub fn from_env(env: &Env, transport: &HttpLimits) -> Result<Self, ConfigError> {
        let d = Self::default();
        let limits = Self {
            max_url_bytes: env.number_in("EDGE_MAX_URL_BYTES", d.max_url_bytes, 256..=65_536)?,
            max_headers: env.number_in("EDGE_MAX_HEADERS", d.max_headers, 8..=1024)?,
            max_header_bytes: env.number_in(
                "EDGE_MAX_HEADER_BYTES",
                d.max_header_bytes,
                1024..=1_048_576,
            )?,
            max_json_depth: env.number_in("EDGE_MAX_JSON_DEPTH", d.max_json_depth, 1..=128)?,
        };
        if limits.max_headers >= transport.max_headers {
            return Err(ConfigError::invalid(
                "EDGE_MAX_HEADERS",
                &limits.max_headers.to_string(),
                format!(
                    "must be below HTTP_MAX_HEADERS ({}), or clients get the transport's bare 431",
                    transport.max_headers
                ),
            ));
        }
        if limits.max_url_bytes + limits.max_header_bytes >= transport.max_head_bytes {
            return Err(ConfigError::invalid(
                "EDGE_MAX_HEADER_BYTES",
                &limits.max_header_bytes.to_string(),
                format!(
                    "with EDGE_MAX_URL_BYTES ({}) must stay below HTTP_MAX_HEAD_BYTES ({})",
                    limits.max_url_bytes, transport.max_head_bytes
                ),
            ));
        }
        Ok(limits)
    }
}

/// Everything the edge reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listeners, identity, drain timing: `HTTP_ADDR` (default
    /// `0.0.0.0:8080`), `ADMIN_ADDR` (default `0.0.0.0:9080`),
    /// `SERVICE_VERSION` (1.0.x), `ADMIN_TOKEN` (the admin API's; it never
    /// travels through the edge's public port), and the rest of
    /// [`ServerConfig`].
    pub server: ServerConfig,
    /// The game-day key (`GAMEDAY_KEY`, at least 16 bytes): a request's
    /// `x-fleet-fault` header must be signed with it (HMAC-SHA256, see
    /// [`fleet_edge_client::fault_signature`]) to scope faults and pin
    /// internal versions. Unset: no request is a game-day request, and a
    /// request carrying `x-fleet-fault` is refused with 401.
    pub gameday_key: Option<GamedayKey>,
    /// How to call the catalog: `CATALOG_CONNECT_TIMEOUT`,
    /// `CATALOG_REQUEST_TIMEOUT`, `CATALOG_HOP_MARGIN`, `CATALOG_BULKHEAD`,
    /// `CATALOG_BREAKER_*`, `CATALOG_RETRIES`, `CATALOG_PIN`, ….
    pub catalog: DependencyConfig,
    /// How to call catalog 2.x (`/api/v2/`): the catalog's settings with
    /// interface major 2.
    pub catalog_v2: DependencyConfig,
    /// The catalog instances (every version; each client keeps its major):
    /// `CATALOG_ADDRS`, `ip:port[@version],…`
    /// (default `127.0.0.1:7100`; no version means 1.0.0).
    pub catalog_instances: Vec<Instance>,
    /// How to call the ratings service (`RATINGS_*`, as for the catalog).
    pub ratings: DependencyConfig,
    /// The ratings instances: `RATINGS_ADDRS` (default `127.0.0.1:7200`).
    pub ratings_instances: Vec<Instance>,
    /// Per-route deadline budgets (`EDGE_BUDGET_*`, 10 ms..=60 s).
    pub budgets: Budgets,
    /// Most requests served at once; beyond it the edge answers 503 with
    /// `Retry-After` at once instead of queueing; `EDGE_MAX_CONCURRENCY`,
    /// 1..=100000, default 1024.
    pub max_concurrency: usize,
    /// Requests per second each client address may make (token bucket with
    /// a burst of twice that); beyond it, 429 with `Retry-After`;
    /// `EDGE_RATE_LIMIT`, 0 (off)..=1000000, default 0.
    pub rate_limit: u32,
    /// Largest request body accepted (413): a declared `Content-Length`
    /// over it is refused on any route before routing, a streamed JSON body
    /// as soon as it passes it; `EDGE_MAX_BODY`, default 4096 bytes
    /// (64..=1048576).
    pub max_body: usize,
    /// The request limits the edge answers in its JSON error shape before
    /// anything else reads the request (see [`RequestLimits`]).
    pub limits: RequestLimits,
    /// Most client addresses the rate limiter keeps a bucket for (beyond
    /// it, the least valuable buckets are dropped);
    /// `EDGE_RATE_LIMIT_MAX_CLIENTS`, 1..=10000000, default 100000.
    pub rate_limit_max_clients: u64,
    /// Reverse proxies whose `X-Forwarded-For` names the client the rate
    /// limiter keys on: `EDGE_TRUSTED_PROXIES`, comma-separated addresses
    /// or CIDR blocks (`10.0.0.0/8,::1`); default none (the peer address
    /// is the client, the header is ignored).
    pub trusted_proxies: TrustedProxies,
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
            "HTTP_ADDR",
            "0.0.0.0:8080",
            "0.0.0.0:9080",
            DEFAULT_VERSION,
            &ALLOWED_VERSIONS,
        )?;
        let catalog = DependencyConfig::new(
            "catalog",
            crate::SERVICE,
            fleet_catalog_client::INTERFACE_MAJOR,
        )
        .from_env(env)?;
        // Catalog 2.x: the same settings and instances, interface major 2
        // (a `CATALOG_PIN` names a 1.x minor, so it does not apply).
        let mut catalog_v2 = catalog.clone();
        catalog_v2.interface_major = fleet_catalog_client::v2::INTERFACE_MAJOR;
        catalog_v2.pin = None;
        let ratings = DependencyConfig::new(
            "ratings",
            crate::SERVICE,
            fleet_ratings_client::INTERFACE_MAJOR,
        )
        .from_env(env)?;
        let catalog_instances = catalog.instances_from_env(env, DEFAULT_CATALOG_ADDRS)?;
        let ratings_instances = ratings.instances_from_env(env, DEFAULT_RATINGS_ADDRS)?;
        let budget = |key: &str, default: Duration| {
            env.duration_in(
                key,
                default,
                Duration::from_millis(10),
                Duration::from_secs(60),
            )
        };
        let d = Budgets::default();
        let budgets = Budgets {
            title: budget("EDGE_BUDGET_TITLE", d.title)?,
            browse: budget("EDGE_BUDGET_BROWSE", d.browse)?,
            home: budget("EDGE_BUDGET_HOME", d.home)?,
            user: budget("EDGE_BUDGET_USER", d.user)?,
        };
        let limits = RequestLimits::from_env(env, &server.http)?;
        let gameday_key = env
            .get("GAMEDAY_KEY")
            .map(|k| {
                GamedayKey::new(k).map_err(|e| ConfigError::invalid("GAMEDAY_KEY", "<redacted>", e))
            })
            .transpose()?;
        Ok(Self {
            gameday_key,
            limits,
            server,
            catalog,
            catalog_v2,
            catalog_instances,
            ratings,
            ratings_instances,
            budgets,
            max_concurrency: env.number_in("EDGE_MAX_CONCURRENCY", 1024, 1..=100_000)?,
            rate_limit: env.number_in("EDGE_RATE_LIMIT", 0, 0..=1_000_000)?,
            max_body: env.number_in("EDGE_MAX_BODY", 4096, 64..=1_048_576)?,
            rate_limit_max_clients: env.number_in(
                "EDGE_RATE_LIMIT_MAX_CLIENTS",
                100_000,
                1..=10_000_000,
            )?,
            trusted_proxies: {
                let raw = env.string("EDGE_TRUSTED_PROXIES", "");
                TrustedProxies::parse(&raw)
                    .map_err(|e| ConfigError::invalid("EDGE_TRUSTED_PROXIES", &raw, e))?
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_game_day_key_is_optional_and_never_weak_or_echoed() {
        assert!(
            Config::from_env(&Env::of(&[]))
                .unwrap()
                .gameday_key
                .is_none()
        );
        let c = Config::from_env(&Env::of(&[("GAMEDAY_KEY", "a-key-of-sixteen-or-more")])).unwrap();
        assert!(c.gameday_key.is_some());
        let e = Config::from_env(&Env::of(&[("GAMEDAY_KEY", "short-secret")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("GAMEDAY_KEY") && !text.contains("short-secret"),
            "{text}"
        );
    }

    #[test]
    fn defaults_serve_on_8080_against_local_services() {
        let c = Config::from_env(&Env::of(&[])).unwrap();
        assert_eq!(c.server.addr.port(), 8080);
        assert_eq!(c.server.admin_addr.port(), 9080);
        assert_eq!(c.catalog_instances[0].addr.to_string(), "127.0.0.1:7100");
        assert_eq!(c.ratings_instances[0].addr.to_string(), "127.0.0.1:7200");
        assert_eq!(c.budgets, Budgets::default());
        assert_eq!(c.max_body, 4096);
        assert_eq!(c.limits, RequestLimits::default());
        assert_eq!(c.catalog.caller, "edge");
    }

    #[test]
    fn budgets_and_limits_are_configurable() {
        let c = Config::from_env(&Env::of(&[
            ("EDGE_BUDGET_HOME", "250ms"),
            ("EDGE_MAX_CONCURRENCY", "8"),
            ("EDGE_RATE_LIMIT", "100"),
            ("CATALOG_ADDRS", "127.0.0.1:1@1.2.4,127.0.0.1:2@1.3.0"),
            ("EDGE_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
            ("EDGE_RATE_LIMIT_MAX_CLIENTS", "500"),
            ("EDGE_MAX_URL_BYTES", "1024"),
            ("EDGE_MAX_HEADERS", "20"),
            ("EDGE_MAX_HEADER_BYTES", "2048"),
            ("EDGE_MAX_JSON_DEPTH", "8"),
        ]))
        .unwrap();
        assert_eq!(
            c.limits,
            RequestLimits {
                max_url_bytes: 1024,
                max_headers: 20,
                max_header_bytes: 2048,
                max_json_depth: 8,
            }
        );
        assert_eq!(c.rate_limit_max_clients, 500);
        assert!(c.trusted_proxies.contains("10.9.8.7".parse().unwrap()));
        assert!(c.trusted_proxies.contains("::1".parse().unwrap()));
        assert!(!c.trusted_proxies.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(c.budgets.home, Duration::from_millis(250));
        assert_eq!(c.max_concurrency, 8);
        assert_eq!(c.rate_limit, 100);
        assert_eq!(c.catalog_instances.len(), 2);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("HTTP_ADDR", "nowhere"),
            ("SERVICE_VERSION", "2.0.0"),
            ("CATALOG_ADDRS", "localhost:7100"),
            ("RATINGS_ADDRS", ","),
            ("EDGE_BUDGET_TITLE", "1ms"),
            ("EDGE_BUDGET_HOME", "forever"),
            ("EDGE_MAX_CONCURRENCY", "0"),
            ("EDGE_MAX_BODY", "10"),
            ("EDGE_RATE_LIMIT", "-1"),
            ("CATALOG_PIN", "2.0"),
            ("EDGE_TRUSTED_PROXIES", "10.0.0.0/40"),
            ("EDGE_TRUSTED_PROXIES", "proxy.local"),
            ("EDGE_RATE_LIMIT_MAX_CLIENTS", "0"),
            ("EDGE_MAX_URL_BYTES", "10"),
            ("EDGE_MAX_HEADERS", "500"),
            ("EDGE_MAX_HEADER_BYTES", "65536"),
            ("EDGE_MAX_JSON_DEPTH", "0"),
            ("EDGE_MAX_JSON_DEPTH", "129"),
        ] {
            let e = Config::from_env(&Env::of(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
    }
}
