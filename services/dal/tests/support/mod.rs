//! Shared by the dal's integration tests: which backends run here, a dal
//! started in-process on port 0, a driver client for it.
//!
//! Real servers come from `scripts/backends up` through the `FLEET_TEST_*`
//! variables. A missing one fails the test when `CI` is set and skips it
//! loudly otherwise (`fleet_testkit`, the one skip policy).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fleet_config::Env;
use fleet_dal::{App, Config};
use fleet_dal_client::{CallOptions, DalClient, Dependency, DependencyConfig, InstanceSource};
use fleet_metrics::Metrics;

/// The value of a `FLEET_TEST_*` variable, or `None` (the caller skips);
/// the decision is the workspace's one skip policy (`fleet_testkit`).
pub fn backend_var(var: &str, _test: &str) -> Option<String> {
    fleet_testkit::backend(var)
}

/// Which store a suite test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// redb under a temporary `DATA_DIR`.
    Embedded,
    /// The real Cassandra of `FLEET_TEST_SCYLLA_NODES`, in a keyspace of
    /// the test's own.
    Cassandra,
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run) uses: for keyspaces and Redis
/// key prefixes.
pub fn unique(label: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    format!("t_{label}_{}_{t}_{n}", std::process::id())
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
            let nodes = backend_var("FLEET_TEST_SCYLLA_NODES", test)?;
            pairs.push(("SCYLLA_NODES".into(), nodes));
            pairs.push(("SCYLLA_KEYSPACE".into(), unique(&short(test))));
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
        let mut pairs = vec![
            ("GRPC_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("ADMIN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("READINESS_INTERVAL".to_owned(), "50ms".to_owned()),
            ("SHUTDOWN_GRACE".to_owned(), "2s".to_owned()),
            // These tests fire bursts of up to 216 concurrent writes to
            // check the data, not overload: the adaptive concurrency limit
            // (tested in fleet-server and fleet-resilience) stays above them.
            ("CONCURRENCY_LIMIT_INITIAL".to_owned(), "512".to_owned()),
            ("CONCURRENCY_LIMIT_MIN".to_owned(), "512".to_owned()),
        ];
        pairs.extend(self.pairs.iter().cloned());
        Env::from_pairs(pairs)
    }

    /// The parsed configuration.
    pub fn config(&self) -> Config {
        Config::from_env(&self.env()).unwrap()
    }

    /// A dal on this store, ready to serve (seeded).
    pub async fn start(&self) -> Running {
        let r = Running::start(self.config()).await;
        r.wait_ready(Duration::from_secs(120)).await;
        r
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

/// A dal served in-process.
pub struct Running {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Builds and runs a dal; does not wait for readiness.
    pub async fn start(config: Config) -> Self {
        let app = App::build(config).await.unwrap();
        let (grpc, admin, stop) = (app.grpc_addr(), app.admin_addr(), app.shutdown_token());
        let task = tokio::spawn(async move { app.run().await.unwrap() });
        Self {
            grpc,
            admin,
            stop,
            task,
        }
    }

    /// `/readyz` status code.
    pub async fn readyz(&self) -> (u16, String) {
        let r = reqwest::Client::new()
            .get(format!("http://{}/readyz", self.admin))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Waits for `/readyz` 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let (code, body) = self.readyz().await;
            if code == 200 {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "dal not ready after {limit:?}: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Prometheus text of the admin port.
    pub async fn metrics(&self) -> String {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Drains and stops it.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The sum of every sample of `family` whose labels contain all of
/// `labels` (e.g. `["cache=\"titles\"", "result=\"hit\""]`).
pub fn metric_sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
    pub fn start(test: &str) -> Option<Self> {
        let bin = backend_var("FLEET_TEST_REDIS_SERVER", test)?;
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
