//! Settings every service reads the same way.

use std::net::SocketAddr;
use std::time::Duration;

use fleet_config::{ConfigError, Env, MutualTls, Secret};
use fleet_consul::DiscoveryConfig;
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
    pub admin_token: Option<Secret>,
    /// TLS on the main HTTP listener (the edge): `TLS_CERT_FILE` and
    /// `TLS_KEY_FILE` (PEM), both or neither. Unset: plaintext.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Mutual TLS on the gRPC listener (`GRPC_TLS_CA_FILE`,
    /// `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`; see [`MutualTls`]):
    /// clients must present a certificate the CA signed. `None`: plaintext.
    pub grpc_tls: Option<MutualTls>,
    /// A read-only token for the live streams (`/admin/stream`,
    /// `/hystrix.stream`), which also take the admin token; `VIEWER_TOKEN`,
    /// at least 16 characters. Unset: only the admin token opens them.
    pub viewer_token: Option<Secret>,
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
    /// Limits of every HTTP listener (the edge's public port and every
    /// admin port): `HTTP_HEADER_READ_TIMEOUT`, `HTTP_MAX_HEADERS`,
    /// `HTTP_MAX_HEAD_BYTES` (see [`HttpLimits`]).
    pub http: HttpLimits,
    /// Transport limits of the gRPC server: `GRPC_MAX_CONCURRENT_STREAMS`,
    /// `GRPC_KEEPALIVE_INTERVAL`, `GRPC_KEEPALIVE_TIMEOUT`,
    /// `GRPC_MAX_RECV_MESSAGE_BYTES`, `GRPC_MAX_SEND_MESSAGE_BYTES`,
    /// `GRPC_MAX_CONNECTIONS` (see [`GrpcLimits`]).
    pub grpc: GrpcLimits,
}

/// What one HTTP client may cost a listener before it has sent a request.
///
/// These are the transport's hard caps, answered by hyper itself (a bare
/// status, no JSON body, connection closed). The edge checks tighter limits
/// of its own first and answers those in its JSON error shape, so a client
/// only meets these caps when it is far over the edge's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Slow-loris protection: an HTTP/1 client that has not sent a whole
    /// request head (request line and headers) this long after starting one
    /// has its connection closed. `HTTP_HEADER_READ_TIMEOUT`, 100ms..=5m,
    /// default 10 s.
    pub header_read_timeout: Duration,
    /// Most headers in one HTTP/1 request; beyond it hyper answers 431 and
    /// closes. `HTTP_MAX_HEADERS`, 8..=1024, default 128.
    pub max_headers: usize,
    /// Largest request head in bytes (HTTP/1: request line and headers;
    /// HTTP/2: the header list); beyond it 431 (HTTP/1, connection closed)
    /// or the stream refused (HTTP/2). `HTTP_MAX_HEAD_BYTES`,
    /// 8192..=1048576, default 65536.
    pub max_head_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_headers: 128,
            max_head_bytes: 64 * 1024,
        }
    }
}

impl HttpLimits {
    /// Reads `HTTP_*` limits.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            header_read_timeout: env.duration_in(
                "HTTP_HEADER_READ_TIMEOUT",
                d.header_read_timeout,
                Duration::from_millis(100),
                Duration::from_secs(300),
            )?,
            max_headers: env.number_in("HTTP_MAX_HEADERS", d.max_headers, 8..=1024)?,
            max_head_bytes: env.number_in(
                "HTTP_MAX_HEAD_BYTES",
                d.max_head_bytes,
                8192..=1_048_576,
            )?,
        })
    }
}

/// What one gRPC client may cost a server: HTTP/2 streams, idle
/// connections, message sizes, connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Most calls in flight on one connection (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`): a client's further calls wait in
    /// the client until one ends. `GRPC_MAX_CONCURRENT_STREAMS`,
    /// 1..=100000, default 1000 (the adaptive limit's default maximum, so
    /// the admission limit, not the transport, refuses work first).
    pub max_concurrent_streams: u32,
    /// How often the server pings an idle connection (HTTP/2 PING);
    /// `GRPC_KEEPALIVE_INTERVAL`, 1s..=1h, default 60 s.
    pub keepalive_interval: Duration,
    /// How long an unanswered ping may wait before the connection is
    /// closed; `GRPC_KEEPALIVE_TIMEOUT`, 1s..=5m, default 20 s.
    pub keepalive_timeout: Duration,
    /// Largest request message (after the 5-byte gRPC frame header); a
    /// larger one is refused with `OUT_OF_RANGE` as soon as its frame
    /// header arrives. `GRPC_MAX_RECV_MESSAGE_BYTES`, 1024..=4194304
    /// (tonic's own ceiling), default 1 MiB.
    pub max_recv_message_bytes: usize,
    /// Largest response message; a larger one ends the call with
    /// `OUT_OF_RANGE` instead of being sent. `GRPC_MAX_SEND_MESSAGE_BYTES`,
    /// 1024..=4194304, default 1 MiB.
    pub max_send_message_bytes: usize,
    /// Most client connections served at once; beyond it the listener
    /// stops accepting until one closes (new clients wait in the kernel's
    /// backlog). `GRPC_MAX_CONNECTIONS`, 1..=100000, default 10000.
    pub max_connections: usize,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 1000,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_recv_message_bytes: 1024 * 1024,
            max_send_message_bytes: 1024 * 1024,
            max_connections: 10_000,
        }
    }
}

/// tonic's own default (and ceiling) for a decoded message.
const TONIC_MAX_MESSAGE: usize = 4 * 1024 * 1024;

impl GrpcLimits {
    /// Reads `GRPC_*` limits.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            max_concurrent_streams: env.number_in(
                "GRPC_MAX_CONCURRENT_STREAMS",
                d.max_concurrent_streams,
                1..=100_000,
            )?,
            keepalive_interval: env.duration_in(
                "GRPC_KEEPALIVE_INTERVAL",
                d.keepalive_interval,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            )?,
            keepalive_timeout: env.duration_in(
                "GRPC_KEEPALIVE_TIMEOUT",
                d.keepalive_timeout,
                Duration::from_secs(1),
                Duration::from_secs(300),
            )?,
            max_recv_message_bytes: env.number_in(
                "GRPC_MAX_RECV_MESSAGE_BYTES",
                d.max_recv_message_bytes,
                1024..=TONIC_MAX_MESSAGE,
            )?,
            max_send_message_bytes: env.number_in(
                "GRPC_MAX_SEND_MESSAGE_BYTES",
                d.max_send_message_bytes,
                1024..=TONIC_MAX_MESSAGE,
            )?,
            max_connections: env.number_in(
                "GRPC_MAX_CONNECTIONS",
                d.max_connections,
                1..=100_000,
            )?,
        })
    }
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
        let admin_token = env.secret("ADMIN_TOKEN", 16)?;
        let viewer_token = env.secret("VIEWER_TOKEN", 16)?;
        let tls = match (env.get("TLS_CERT_FILE"), env.get("TLS_KEY_FILE")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "TLS_KEY_FILE",
                    "",
                    "TLS_CERT_FILE is set: set TLS_KEY_FILE too (or neither)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "TLS_CERT_FILE",
                    "",
                    "TLS_KEY_FILE is set: set TLS_CERT_FILE too (or neither)",
                ));
            }
        };
        let grpc_tls = MutualTls::from_env(env)?;
        if let Some(t) = &grpc_tls {
            crate::tls::check_grpc(t)?;
        }
        let concurrency = concurrency(env)?;
        Ok(Self {
            tls,
            grpc_tls,
            viewer_token,
            concurrency,
            http: HttpLimits::from_env(env)?,
            grpc: GrpcLimits::from_env(env)?,
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
            &Env::of(pairs),
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
        assert_eq!(c.http, HttpLimits::default());
        assert_eq!(c.grpc, GrpcLimits::default());
    }

    #[test]
    fn tokens_are_read_checked_and_never_printed() {
        let admin = "admin-token-0123456789";
        let viewer = "viewer-token-0123456789";
        let c = cfg(&[("ADMIN_TOKEN", admin), ("VIEWER_TOKEN", viewer)]).unwrap();
        assert_eq!(c.admin_token.as_ref().map(|t| t.expose()), Some(admin));
        assert_eq!(c.viewer_token.as_ref().map(|t| t.expose()), Some(viewer));
        let printed = format!("{c:?} {c:#?}");
        assert!(
            !printed.contains(admin) && !printed.contains(viewer),
            "{printed}"
        );
        for key in ["ADMIN_TOKEN", "VIEWER_TOKEN"] {
            let e = cfg(&[(key, "short-tok")]).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains("short-tok"), "{e}");
        }
    }

    #[test]
    fn transport_limits_are_configurable_and_bounded() {
        let c = cfg(&[
            ("HTTP_HEADER_READ_TIMEOUT", "2s"),
            ("HTTP_MAX_HEADERS", "32"),
            ("HTTP_MAX_HEAD_BYTES", "16384"),
            ("GRPC_MAX_CONCURRENT_STREAMS", "8"),
            ("GRPC_KEEPALIVE_INTERVAL", "5s"),
            ("GRPC_KEEPALIVE_TIMEOUT", "2s"),
            ("GRPC_MAX_RECV_MESSAGE_BYTES", "2048"),
            ("GRPC_MAX_SEND_MESSAGE_BYTES", "4096"),
            ("GRPC_MAX_CONNECTIONS", "3"),
        ])
        .unwrap();
        assert_eq!(
            c.http,
            HttpLimits {
                header_read_timeout: Duration::from_secs(2),
                max_headers: 32,
                max_head_bytes: 16384,
            }
        );
        assert_eq!(
            c.grpc,
            GrpcLimits {
                max_concurrent_streams: 8,
                keepalive_interval: Duration::from_secs(5),
                keepalive_timeout: Duration::from_secs(2),
                max_recv_message_bytes: 2048,
                max_send_message_bytes: 4096,
                max_connections: 3,
            }
        );
        for (k, v) in [
            ("HTTP_HEADER_READ_TIMEOUT", "0s"),
            ("HTTP_MAX_HEADERS", "2"),
            ("HTTP_MAX_HEAD_BYTES", "4096"),
            ("GRPC_MAX_CONCURRENT_STREAMS", "0"),
            ("GRPC_KEEPALIVE_INTERVAL", "10ms"),
            ("GRPC_KEEPALIVE_TIMEOUT", "1h"),
            ("GRPC_MAX_RECV_MESSAGE_BYTES", "8388608"),
            ("GRPC_MAX_SEND_MESSAGE_BYTES", "10"),
            ("GRPC_MAX_CONNECTIONS", "0"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
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
