//! A whole system in-process on loopback port 0: a real dal on a temp
//! directory, catalog 1.2 and 1.3, ratings, and the edge in front.

// Test support: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_config::Env;
use fleet_edge_client::EdgeClient;
use fleet_testkit::{TestService, loopback_env};

use fleet_testkit::probe::metrics;

/// The admin token every instance is started with.
pub const TOKEN: &str = "edge-test-token-0123456789";

/// The game-day key the edge is started with (`GAMEDAY_KEY`).
pub const GAMEDAY_KEY: &str = "edge-test-game-day-key-0123456789";

/// The key, for signing fault headers.
pub fn gameday_key() -> fleet_edge_client::fault_signature::GamedayKey {
    fleet_edge_client::fault_signature::GamedayKey::new(GAMEDAY_KEY).unwrap()
}

/// A signed `x-fleet-fault` value for `scope`, valid for a minute.
pub fn signed_fault(scope: &str) -> String {
    gameday_key()
        .sign(scope, Duration::from_secs(60), std::time::SystemTime::now())
        .unwrap()
}

/// Settings every instance here starts with, `extra` on top.
fn env(extra: &[(&str, &str)]) -> Env {
    loopback_env(
        [("ADMIN_TOKEN", TOKEN)]
            .into_iter()
            .chain(extra.iter().copied()),
    )
}

async fn dal() -> TestService {
    fleet_dal::testing::start_seeded(200, 50, &[("ADMIN_TOKEN", TOKEN)]).await
}

async fn catalog(dal: SocketAddr, version: &str) -> TestService {
    let env = env(&[
        ("DAL_ADDRS", &dal.to_string()),
        ("SERVICE_VERSION", version),
    ]);
    TestService::start::<fleet_catalog::App>(&env).await
}

async fn ratings(dal: SocketAddr) -> TestService {
    TestService::start::<fleet_ratings::App>(&env(&[("DAL_ADDRS", &dal.to_string())])).await
}

/// An edge in front of the given catalog and ratings instances.
async fn edge(catalog_addrs: &str, ratings_addrs: &str, extra: &[(&str, &str)]) -> TestService {
    let mut pairs = vec![
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("GAMEDAY_KEY", GAMEDAY_KEY),
        ("CATALOG_ADDRS", catalog_addrs),
        ("RATINGS_ADDRS", ratings_addrs),
        // A down dependency should fail fast in tests.
        ("RATINGS_EJECTION", "50ms"),
    ];
    pairs.extend_from_slice(extra);
    TestService::start::<fleet_edge::App>(&env(&pairs)).await
}

/// How long an instance here may take to report ready.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// The system.
pub struct System {
    pub dal: TestService,
    pub catalog_v12: TestService,
    pub catalog_v13: TestService,
    pub ratings: Option<TestService>,
    pub edge: TestService,
}

impl System {
    /// Starts everything; `edge_env` adds settings to the edge's.
    pub async fn start(edge_env: &[(&str, &str)]) -> Self {
        let dal = dal().await;
        let catalog_v12 = catalog(dal.addr, "1.2.4").await;
        let catalog_v13 = catalog(dal.addr, "1.3.0").await;
        let ratings = ratings(dal.addr).await;
        let catalog_addrs = format!("{}@1.2.4,{}@1.3.0", catalog_v12.addr, catalog_v13.addr);
        let ratings_addrs = ratings.addr.to_string();
        let edge = edge(&catalog_addrs, &ratings_addrs, edge_env).await;
        let sys = Self {
            dal,
            catalog_v12,
            catalog_v13,
            ratings: Some(ratings),
            edge,
        };
        sys.edge.wait_ready(READY_WITHIN).await;
        sys
    }

    /// Another edge in front of this system's catalogs and ratings.
    pub async fn another_edge(&self, extra: &[(&str, &str)]) -> TestService {
        let catalog_addrs = format!(
            "{}@1.2.4,{}@1.3.0",
            self.catalog_v12.addr, self.catalog_v13.addr
        );
        let ratings = self.ratings.as_ref().expect("ratings running");
        let edge = edge(&catalog_addrs, &ratings.addr.to_string(), extra).await;
        edge.wait_ready(READY_WITHIN).await;
        edge
    }

    /// The edge's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.edge.addr)
    }

    /// A driver client for the edge.
    pub fn client(&self) -> EdgeClient {
        EdgeClient::new(&self.url()).unwrap()
    }

    /// Calls the catalog and ratings services served (health checks left
    /// out): what reached a backend.
    pub async fn backend_calls(&self) -> u64 {
        let mut admins = vec![self.catalog_v12.admin, self.catalog_v13.admin];
        if let Some(r) = &self.ratings {
            admins.push(r.admin);
        }
        let mut total = 0;
        for a in admins {
            total += served_calls(a).await;
        }
        total
    }

    /// Stops everything.
    pub async fn stop(self) {
        self.edge.stop().await;
        if let Some(r) = self.ratings {
            r.stop().await;
        }
        self.catalog_v12.stop().await;
        self.catalog_v13.stop().await;
        self.dal.stop().await;
    }
}

/// The number of metric series an instance exposes (sample lines).
pub async fn series_count(admin: SocketAddr) -> usize {
    metrics(admin)
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

/// Real calls an instance served (`fleet_rpc_server_requests_total`
/// without health checks).
pub async fn served_calls(admin: SocketAddr) -> u64 {
    let text = metrics(admin).await;
    text.lines()
        .filter(|l| l.starts_with("fleet_rpc_server_requests_total{"))
        .filter(|l| !l.contains("operation=\"Check\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Adds a fault rule on an instance's admin port; returns its id.
pub async fn add_fault(admin: SocketAddr, spec: serde_json::Value) -> u64 {
    fleet_testkit::probe::add_fault(admin, TOKEN, &spec.to_string()).await
}

/// dal, catalog 1.3.0 and 2.0.0 side by side, ratings, and an edge whose
/// `CATALOG_ADDRS` lists both catalogs: `(backends, edge)`.
pub async fn start_v1_and_v2() -> (Vec<TestService>, TestService) {
    let dal = dal().await;
    let v13 = catalog(dal.addr, "1.3.0").await;
    let v20 = catalog(dal.addr, "2.0.0").await;
    let ratings = ratings(dal.addr).await;
    let catalog_addrs = format!("{}@1.3.0,{}@2.0.0", v13.addr, v20.addr);
    let ratings_addrs = ratings.addr.to_string();
    let edge = edge(&catalog_addrs, &ratings_addrs, &[]).await;
    edge.wait_ready(READY_WITHIN).await;
    (vec![ratings, v13, v20, dal], edge)
}
