//! Shared by the dal's integration tests: which store a test runs on, a
//! dal on it started through the one harness (`fleet_testkit`), a driver
//! client for it, a Redis of the test's own.
//!
//! Real servers come from `scripts/backends up` through the `FLEET_TEST_*`
//! variables. A missing one fails the test when `CI` is set and skips it
//! loudly otherwise (`fleet_testkit`, the one skip policy).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fleet_config::Env;
use fleet_dal::{App, Config};
use fleet_dal_client::{CallOptions, DalClient, Dependency, DependencyConfig, InstanceSource};
use fleet_metrics::Metrics;
use fleet_testkit::{TestService, loopback_env};

use fleet_testkit::unique_name;

/// Which store a suite test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// redb under a temporary `DATA_DIR`.
    Embedded,
    /// The real Cassandra of `FLEET_TEST_SCYLLA_NODES`, in a keyspace of
    /// the test's own.
    Cassandra,
}

/// The environment of one dal test: the store's settings (and the temp
/// dir that holds an embedded store).
pub struct StoreEnv {
    pub backend: Backend,
    pub pairs: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl StoreEnv {
    /// `None` (skip) when the backend's server is not available here.
    pub fn new(backend: Backend, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut pairs = vec![
            (
                "DATA_DIR".to_owned(),
                dir.path().to_str().unwrap().to_owned(),
            ),
            ("SEED_TITLES".to_owned(), "120".to_owned()),
            ("SEED_USERS".to_owned(), "30".to_owned()),
        ];
        if backend == Backend::Cassandra {
            let nodes = fleet_testkit::backend("FLEET_TEST_SCYLLA_NODES")?;
            pairs.push(("SCYLLA_NODES".into(), nodes));
            pairs.push((
                "SCYLLA_KEYSPACE".into(),
                unique_name(&format!("t_{}", short(test))),
            ));
        }
        Some(Self {
            backend,
            pairs,
            dir,
        })
    }

    /// Adds (or replaces) a setting.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_owned(), value.into()));
        self
    }

    /// The settings as a dal `Env`, listeners on port 0.
    pub fn env(&self) -> Env {
        // These tests fire bursts of up to 216 concurrent writes to check
        // the data, not overload: the adaptive concurrency limit (tested in
        // fleet-server and fleet-resilience) stays above them.
        let limits = [
            ("CONCURRENCY_LIMIT_INITIAL", "512"),
            ("CONCURRENCY_LIMIT_MIN", "512"),
        ];
        loopback_env(
            limits
                .into_iter()
                .chain(self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
    }

    /// The parsed configuration.
    pub fn config(&self) -> Config {
        Config::from_env(&self.env()).unwrap()
    }

    /// A dal on this store, ready to serve (seeded).
    pub async fn start(&self) -> TestService {
        let dal = TestService::start::<App>(&self.env()).await;
        dal.wait_ready(Duration::from_secs(120)).await;
        dal
    }

    /// Runs `dal <cmd>` as the one-off admin process does; its exit code
    /// printed as `ExitCode` debug text.
    pub fn admin(&self, cmd: &str) -> String {
        format!("{:?}", fleet_dal::main_with_args(self.env(), ["dal", cmd]))
    }

    /// The store the configuration selects, opened as `dal repair` opens
    /// it.
    pub async fn open_store(&self) -> fleet_dal::store::SharedStore {
        let config = self.config();
        fleet_dal::app::open_store(&config, &Metrics::new("dal", "1.0.0"))
            .await
            .unwrap()
    }
}

/// A test name cut to what fits in a keyspace name.
fn short(test: &str) -> String {
    test.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Exit code text of success, to compare with [`StoreEnv::admin`].
pub fn exit_ok() -> String {
    format!("{:?}", std::process::ExitCode::SUCCESS)
}

/// A driver client for one dal instance (or several).
pub fn client(addrs: &[SocketAddr]) -> DalClient {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let instances =
        fleet_rpc::parse_instances(&list.join(","), &semver::Version::new(1, 0, 0)).unwrap();
    let mut config = DependencyConfig::new("dal", "test", 1);
    config.request_timeout = Duration::from_secs(10);
    // The concurrency tests send a few hundred calls at once.
    config.bulkhead = 1024;
    DalClient::new(Dependency::new(
        config,
        InstanceSource::Static(instances),
        Metrics::new("test", "1.0.0").grpc_client(),
    ))
}

/// Generous per-call options for functional tests.
pub fn opts() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(10))
}

/// A throwaway `redis-server` of the test's own (so killing it disturbs
/// nobody), on a free loopback port.
pub struct OwnRedis {
    pub port: u16,
    bin: String,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    /// `None` (skip) when `FLEET_TEST_REDIS_SERVER` is not set.
    pub fn start() -> Option<Self> {
        let bin = fleet_testkit::backend("FLEET_TEST_REDIS_SERVER")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Self {
            port,
            bin,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        Some(r)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.path().to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: Redis vanishes mid-conversation.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A plain connection for poking at the cache from the outside.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `dir` as text.
pub fn path_str(dir: &Path) -> String {
    dir.to_str().unwrap().to_owned()
}
