//! Harness for the end-to-end tests: starts the real service binaries on
//! free loopback ports (through `fleet-supervisor`, the library behind
//! `fleet up`, so the tests run the system exactly as `fleet up` does) and
//! reads what they expose.
//!
//! A system runs in one of two [`Mode`]s: on the embedded default, or on
//! the real backends of `scripts/backends` — the shared Cassandra (a
//! keyspace of its own) and Redis (a key prefix of its own), and a Consul
//! dev agent of its own started from the same binary (every system
//! registers services named `catalog`, `ratings`, …, so two systems on one
//! agent would discover each other). Missing real backends follow the one
//! skip policy (`fleet_testkit`).

#![forbid(unsafe_code)]
// A test-support crate: a panic is how a test reports a broken system.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod observed;
pub mod rehearse;

pub use observed::ObservedFleetUp;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet_discovery::{ConsulClient, RouteStore};
use fleet_supervisor::{Backends, Launcher, Topology, TopologyOptions};
use fleet_testkit::unique_name;

pub use fleet_testkit::ConsulAgent;

pub use fleet_testkit::free_addr;

/// Percent-encodes everything but RFC 3986's unreserved characters (for
/// query strings of Jaeger's and Prometheus' HTTP APIs).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The directory cargo put this workspace's binaries in (the test binary
/// lives in its `deps/` subdirectory).
///
/// # Panics
/// When the service binaries are missing: run `cargo build --workspace
/// --bins` first (the test script does).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf();
    for bin in ["edge", "catalog", "ratings", "dal", "fleet"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests (scripts/test does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// How big a system to start.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// catalog 1.2.x instances.
    pub catalog_v1_2: u32,
    /// catalog 1.3.x instances.
    pub catalog_v1_3: u32,
    /// ratings instances.
    pub ratings: u32,
    /// dal instances.
    pub dal: u32,
}

impl Default for Size {
    fn default() -> Self {
        Self {
            catalog_v1_2: 1,
            catalog_v1_3: 1,
            ratings: 2,
            dal: 1,
        }
    }
}

/// What a test system runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// redb, the in-process cache, static address lists, route files.
    Embedded,
    /// Cassandra, Redis and Consul from `scripts/backends`.
    Real,
}

/// Generates `embedded::<name>` and `real::<name>` tests, each calling the
/// scenario `<name>(Mode)`. Scenarios listed after `; embedded only:` get
/// only the embedded test: their real-backend run does not hold yet (each
/// is named, with what fails, in the file that lists it).
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)? ; embedded only: $($only:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Mode::Embedded).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $only() {
                    super::$only($crate::Mode::Embedded).await;
                }
            )*
        }
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Mode::Real).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::both_modes!($($name),* ; embedded only: );
    };
}

/// At most this many systems run at once in one test binary
/// (`FLEET_E2E_SYSTEMS`, default 2): each is six or more processes, and
/// the machine has two cores; the scenarios measure latencies. A system on
/// the real backends runs alone: beside the shared Cassandra (itself busy
/// with every keyspace) a second system left the first one's requests
/// missing their budgets on a 2-core machine.
static SYSTEMS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static SYSTEMS_INIT: std::sync::Once = std::sync::Once::new();
static SYSTEMS_MAX: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

async fn system_permit(mode: Mode) -> tokio::sync::SemaphorePermit<'static> {
    SYSTEMS_INIT.call_once(|| {
        let n = std::env::var("FLEET_E2E_SYSTEMS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(2);
        SYSTEMS_MAX.store(n, Ordering::Relaxed);
        SYSTEMS.add_permits(n as usize);
    });
    let n = match mode {
        Mode::Embedded => 1,
        Mode::Real => SYSTEMS_MAX.load(Ordering::Relaxed),
    };
    SYSTEMS
        .acquire_many(n)
        .await
        .expect("semaphore never closed")
}

/// A running system with its own data directory.
pub struct System {
    /// The processes (declared first: stopped before the agent below).
    pub topology: Topology,
    /// Its data (deleted on drop).
    pub data: tempfile::TempDir,
    /// What it runs on.
    pub mode: Mode,
    /// The backends every instance was given.
    pub backends: Backends,
    /// Real mode: this system's own Consul agent.
    pub consul: Option<ConsulAgent>,
    _permit: tokio::sync::SemaphorePermit<'static>,
}

/// The admin token every instance of a test system is started with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
/// The edge's game-day key in every e2e system (signs `x-fleet-fault`).
pub const GAMEDAY_KEY: &str = "e2e-gameday-key-0123456789";

impl System {
    /// Starts dal, catalog, ratings and edge binaries on free ports, on
    /// the embedded default.
    pub async fn start(size: Size) -> Self {
        Self::start_with(size, &[]).await
    }

    /// As [`System::start`], with extra environment for every instance
    /// (e.g. `RATINGS_BREAKER_SLEEP`).
    pub async fn start_with(size: Size, env: &[(&str, &str)]) -> Self {
        Self::start_in(Mode::Embedded, size, env)
            .await
            .expect("the embedded default needs no backend")
    }

    /// Starts a system in `mode`; `None` when the real backends are
    /// missing here (the test was reported skipped; in CI it failed).
    /// Real mode waits until Consul lists every instance as passing.
    pub async fn start_in(mode: Mode, size: Size, env: &[(&str, &str)]) -> Option<Self> {
        let permit = system_permit(mode).await;
        let data = tempfile::tempdir().expect("tempdir");
        let routes_dir = data.path().join("routes");
        std::fs::create_dir_all(&routes_dir).unwrap();
        let (backends, consul) = match mode {
            Mode::Embedded => (Backends::default(), None),
            Mode::Real => {
                let nodes = fleet_testkit::backend("FLEET_TEST_SCYLLA_NODES")?;
                let redis = fleet_testkit::backend("FLEET_TEST_REDIS_URL")?;
                let bin = fleet_testkit::backend("FLEET_TEST_CONSUL_BIN")?;
                let agent = ConsulAgent::start(&bin, &data.path().join("consul")).await;
                let backends = Backends {
                    scylla_nodes: Some(nodes),
                    scylla_keyspace: Some(unique_name("e2e")),
                    redis_url: Some(redis),
                    redis_key_prefix: Some(format!("{}:", unique_name("e2e"))),
                    consul: Some(agent.http_addr().to_string()),
                    routes_kv_prefix: Some("fleet/routes/".into()),
                    service_proxies: None,
                };
                (backends, Some(agent))
            }
        };
        let ready_timeout = match mode {
            Mode::Embedded => Duration::from_secs(60),
            // A fresh keyspace: the dal migrates and seeds it first.
            Mode::Real => Duration::from_secs(300),
        };
        let topology = Topology::start(TopologyOptions {
            edge_addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data.path().to_path_buf(),
            dal: size.dal,
            catalog_v1_2: size.catalog_v1_2,
            catalog_v1_3: size.catalog_v1_3,
            catalog_v2: 0,
            ratings: size.ratings,
            launcher: Launcher::Binaries(bin_dir()),
            admin_token: ADMIN_TOKEN.into(),
            gameday_key: Some(GAMEDAY_KEY.into()),
            backends: backends.clone(),
            extra_env: [
                ("RUST_LOG", "info"),
                ("READINESS_INTERVAL", "200ms"),
                ("ROUTES_DIR", routes_dir.to_str().unwrap()),
            ]
            .iter()
            .chain(env)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            ready_timeout,
        })
        .await
        .unwrap_or_else(|e| panic!("system did not start ({mode:?}): {e}"));
        let sys = Self {
            topology,
            data,
            mode,
            backends,
            consul,
            _permit: permit,
        };
        if let Some(agent) = &sys.consul {
            for service in ["dal", "catalog", "ratings", "edge"] {
                let n = sys.admin_addrs(service).len();
                agent
                    .wait_passing(service, n, Duration::from_secs(30))
                    .await;
            }
        }
        Some(sys)
    }

    /// Where this system's route tables are: its `ROUTES_DIR`, or its
    /// Consul agent's KV.
    pub fn route_store(&self) -> RouteStore {
        match (&self.consul, &self.backends.routes_kv_prefix) {
            (Some(agent), Some(prefix)) => RouteStore::Consul {
                client: ConsulClient::new(&agent.http_addr().to_string()).unwrap(),
                prefix: prefix.clone(),
            },
            _ => RouteStore::Dir(self.data.path().join("routes")),
        }
    }

    /// The edge's base URL.
    pub fn edge_url(&self) -> String {
        format!(
            "http://{}",
            self.topology.edge_addr().expect("edge running")
        )
    }

    /// Admin addresses of every instance of `service`.
    pub fn admin_addrs(&self, service: &str) -> Vec<std::net::SocketAddr> {
        self.topology
            .instances()
            .filter(|c| c.spec.service == service)
            .map(|c| c.bound.admin_addr)
            .collect()
    }

    /// Sum of `fleet_rpc_server_requests_total` over every instance of
    /// `service`, leaving out health checks: how many real calls it served.
    pub async fn served_calls(&self, service: &str) -> u64 {
        let mut total = 0;
        for addr in self.admin_addrs(service) {
            let text = reqwest::get(format!("http://{addr}/metrics"))
                .await
                .expect("scrape")
                .text()
                .await
                .expect("metrics body");
            total += sum_counter(
                &text,
                "fleet_rpc_server_requests_total",
                &["operation=\"Check\""],
            );
        }
        total
    }
}

/// The Prometheus text of the instance whose admin port is `admin`.
pub async fn scrape(admin: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics body")
}

/// Adds a fault rule (`/admin/faults`) on an instance; returns its id.
pub async fn add_fault(admin: std::net::SocketAddr, spec: serde_json::Value) -> u64 {
    let resp = reqwest::Client::new()
        .post(format!("http://{admin}/admin/faults"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&spec)
        .send()
        .await
        .expect("fault admin reachable");
    assert_eq!(resp.status(), 201, "fault refused: {:?}", resp.text().await);
    let body: serde_json::Value = resp.json().await.expect("fault id");
    body["id"].as_u64().expect("fault id")
}

/// Removes every fault rule of an instance.
pub async fn clear_faults(admin: std::net::SocketAddr) {
    let resp = reqwest::Client::new()
        .delete(format!("http://{admin}/admin/faults"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("fault admin reachable");
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// Sums the samples of `name` whose labels contain every one of
/// `include`.
pub fn sum_matching(text: &str, name: &str, include: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{'))
        .filter(|l| include.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sums the samples of `name` in a Prometheus text exposition, skipping
/// series whose labels contain any of `exclude`.
pub fn sum_counter(text: &str, name: &str, exclude: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{'))
        .filter(|l| !exclude.iter().any(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_with_exclusions() {
        let text = "# HELP x\nfleet_rpc_server_requests_total{operation=\"GetTitle\",code=\"OK\"} 3\nfleet_rpc_server_requests_total{operation=\"Check\",code=\"OK\"} 7\nfleet_rpc_server_requests_total_other{a=\"b\"} 9\n";
        assert_eq!(
            sum_counter(
                text,
                "fleet_rpc_server_requests_total",
                &["operation=\"Check\""]
            ),
            3
        );
    }
}
