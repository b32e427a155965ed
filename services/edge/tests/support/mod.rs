//! A whole system in-process on loopback port 0: a real dal on a temp
//! directory, catalog 1.2 and 1.3, ratings, and the edge in front.

// Test support: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_config::Env;
use fleet_edge_client::EdgeClient;
use fleet_server::entry::BoxError;
use tokio_util::sync::CancellationToken;

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

/// An app running on its own task.
pub struct Running {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), BoxError>>,
    _data: Option<tempfile::TempDir>,
}

impl Running {
    /// Runs an app built on port 0 on its own task.
    fn spawn(
        addr: SocketAddr,
        admin: SocketAddr,
        stop: CancellationToken,
        run: impl Future<Output = Result<(), BoxError>> + Send + 'static,
        data: Option<tempfile::TempDir>,
    ) -> Self {
        Self {
            addr,
            admin,
            stop,
            task: tokio::spawn(run),
            _data: data,
        }
    }

    /// Drains and stops the app; it must stop cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stopped within the grace period")
            .expect("task did not panic");
        assert!(result.is_ok(), "{result:?}");
    }
}

fn common(extra: &[(&str, &str)]) -> Env {
    let mut env = Env::from_pairs([
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("ADMIN_TOKEN", TOKEN),
        ("READINESS_INTERVAL", "50ms"),
        ("SHUTDOWN_GRACE", "2s"),
    ]);
    for (k, v) in extra {
        env = env.with(*k, *v);
    }
    env
}

async fn dal() -> Running {
    let data = tempfile::tempdir().unwrap();
    let env = common(&[
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("DATA_DIR", data.path().to_str().unwrap()),
        ("SEED", "true"),
        ("SEED_TITLES", "200"),
        ("SEED_USERS", "50"),
    ]);
    let app = fleet_dal::App::build(fleet_dal::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    Running::spawn(
        app.grpc_addr(),
        app.admin_addr(),
        app.shutdown_token(),
        app.run(),
        Some(data),
    )
}

async fn catalog(dal: SocketAddr, version: &str) -> Running {
    let env = common(&[
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("DAL_ADDRS", &dal.to_string()),
        ("SERVICE_VERSION", version),
    ]);
    let app = fleet_catalog::App::build(fleet_catalog::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    Running::spawn(
        app.grpc_addr(),
        app.admin_addr(),
        app.shutdown_token(),
        app.run(),
        None,
    )
}

async fn ratings(dal: SocketAddr) -> Running {
    let env = common(&[
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("DAL_ADDRS", &dal.to_string()),
    ]);
    let app = fleet_ratings::App::build(fleet_ratings::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    Running::spawn(
        app.grpc_addr(),
        app.admin_addr(),
        app.shutdown_token(),
        app.run(),
        None,
    )
}

/// An edge in front of the given catalog and ratings instances.
async fn edge(catalog_addrs: &str, ratings_addrs: &str, extra: &[(&str, &str)]) -> Running {
    let mut pairs = vec![
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("GAMEDAY_KEY", GAMEDAY_KEY),
        ("CATALOG_ADDRS", catalog_addrs),
        ("RATINGS_ADDRS", ratings_addrs),
        // A down dependency should fail fast in tests.
        ("RATINGS_EJECTION", "50ms"),
    ];
    pairs.extend_from_slice(extra);
    let env = common(&pairs);
    let app = fleet_edge::App::build(fleet_edge::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    Running::spawn(
        app.http_addr(),
        app.admin_addr(),
        app.shutdown_token(),
        app.run(),
        None,
    )
}

/// The system.
pub struct System {
    pub dal: Running,
    pub catalog_v12: Running,
    pub catalog_v13: Running,
    pub ratings: Option<Running>,
    pub edge: Running,
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
        sys.wait_ready(sys.edge.admin).await;
        sys
    }

    /// Another edge in front of this system's catalogs and ratings.
    pub async fn another_edge(&self, extra: &[(&str, &str)]) -> Running {
        let catalog_addrs = format!(
            "{}@1.2.4,{}@1.3.0",
            self.catalog_v12.addr, self.catalog_v13.addr
        );
        let ratings = self.ratings.as_ref().expect("ratings running");
        let edge = edge(&catalog_addrs, &ratings.addr.to_string(), extra).await;
        self.wait_ready(edge.admin).await;
        edge
    }

    /// Waits until the instance behind `admin` reports ready.
    pub async fn wait_ready(&self, admin: SocketAddr) {
        for _ in 0..250 {
            if readyz(admin).await == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{admin} not ready within 5 s");
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

/// `/readyz` status.
pub async fn readyz(admin: SocketAddr) -> u16 {
    match reqwest::get(format!("http://{admin}/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// `/readyz`: status and the number of readiness rounds run so far.
pub async fn readyz_rounds(admin: SocketAddr) -> (u16, u64) {
    let r = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (status, body["rounds"].as_u64().unwrap())
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

/// The Prometheus text of an instance.
pub async fn metrics(admin: SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Adds a fault rule on an instance's admin port; returns its id.
pub async fn add_fault(admin: SocketAddr, spec: serde_json::Value) -> u64 {
    let resp = reqwest::Client::new()
        .post(format!("http://{admin}/admin/faults"))
        .bearer_auth(TOKEN)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap()
}

/// dal, catalog 1.3.0 and 2.0.0 side by side, ratings, and an edge whose
/// `CATALOG_ADDRS` lists both catalogs: `(backends, edge)`.
pub async fn start_v1_and_v2() -> (Vec<Running>, Running) {
    let dal = dal().await;
    let v13 = catalog(dal.addr, "1.3.0").await;
    let v20 = catalog(dal.addr, "2.0.0").await;
    let ratings = ratings(dal.addr).await;
    let catalog_addrs = format!("{}@1.3.0,{}@2.0.0", v13.addr, v20.addr);
    let ratings_addrs = ratings.addr.to_string();
    let edge = edge(&catalog_addrs, &ratings_addrs, &[]).await;
    for _ in 0..250 {
        if readyz(edge.admin).await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (vec![ratings, v13, v20, dal], edge)
}
