//! Starting a real dal and a real catalog in-process on loopback port 0.

// Test support: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_catalog_client::{
    CallOptions, CatalogClient, Dependency, DependencyConfig, InstanceSource,
};
use fleet_config::Env;
use fleet_metrics::Metrics;
use fleet_server::entry::BoxError;
use tokio_util::sync::CancellationToken;

/// The admin token the test dal is started with (fault rules).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Seed titles the test dal holds (`t00001`…`t00200`).
pub const SEED_TITLES: u32 = 200;

/// An app running on its own task.
pub struct Running {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), BoxError>>,
    _data: Option<tempfile::TempDir>,
}

impl Running {
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

/// A real dal on a fresh data directory, seeded.
pub async fn start_dal() -> Running {
    let data = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("DATA_DIR", data.path().to_str().unwrap()),
        ("SEED", "true"),
        ("SEED_TITLES", &SEED_TITLES.to_string()),
        ("SEED_USERS", "50"),
        ("READINESS_INTERVAL", "50ms"),
        ("SHUTDOWN_GRACE", "2s"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
    ]);
    let app = fleet_dal::App::build(fleet_dal::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let (grpc, admin, stop) = (app.grpc_addr(), app.admin_addr(), app.shutdown_token());
    let task = tokio::spawn(app.run());
    Running {
        grpc,
        admin,
        stop,
        task,
        _data: Some(data),
    }
}

/// A catalog of release `version` whose dal is at `dal`.
pub async fn start_catalog(dal: SocketAddr, version: &str) -> Running {
    start_catalog_on(&dal.to_string(), version).await
}

/// A catalog of release `version` given `DAL_ADDRS=dal_addrs`.
pub async fn start_catalog_on(dal_addrs: &str, version: &str) -> Running {
    let env = Env::from_pairs([
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("SERVICE_VERSION", version),
        ("DAL_ADDRS", dal_addrs),
        ("READINESS_INTERVAL", "50ms"),
        ("SHUTDOWN_GRACE", "2s"),
    ]);
    let app = fleet_catalog::App::build(fleet_catalog::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let (grpc, admin, stop) = (app.grpc_addr(), app.admin_addr(), app.shutdown_token());
    let task = tokio::spawn(app.run());
    Running {
        grpc,
        admin,
        stop,
        task,
        _data: None,
    }
}

/// The catalog's driver client, pointed at one instance.
pub fn client(catalog: &Running) -> CatalogClient {
    let instances =
        fleet_rpc::parse_instances(&catalog.grpc.to_string(), &semver::Version::new(1, 3, 0))
            .unwrap();
    CatalogClient::new(Dependency::new(
        DependencyConfig::new("catalog", "test", fleet_catalog_client::INTERFACE_MAJOR),
        InstanceSource::Static(instances),
        Metrics::new("test", "0.0.0").grpc_client(),
    ))
}

/// Generous per-call deadline: tests assert behaviour, not speed.
pub fn opts() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(5))
}

/// A loopback address nothing listens on.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The admin port's `/readyz` status code.
pub async fn readyz(admin: SocketAddr) -> u16 {
    reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `f` until it holds (at most 5 s).
pub async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..250 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not reached within 5 s");
}

/// `/readyz`: its status and how many rounds of checks have run so far
/// (so a test can tell readiness was re-evaluated, not just cached).
pub async fn readyz_rounds(admin: SocketAddr) -> (u16, u64) {
    let r = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let rounds = body
        .split_once("\"rounds\":")
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no rounds in {body}"));
    (status, rounds)
}

/// Asserts `/readyz` answers 200 through at least `n` more rounds of
/// checks.
pub async fn stays_ready(admin: SocketAddr, n: u64) {
    let (status, start) = readyz_rounds(admin).await;
    assert_eq!(status, 200, "ready to begin with");
    loop {
        let (status, rounds) = readyz_rounds(admin).await;
        assert_eq!(status, 200, "turned unready after {rounds} rounds");
        if rounds >= start + n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback listener that accepts connections and never answers: a dal
/// hung beyond any probe's timeout, gRPC health included (which a fault
/// rule never delays). Dropping the handle's task closes it.
pub async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

/// Adds a fault rule (JSON) on an instance's admin port.
pub async fn add_fault(admin: SocketAddr, rule: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://{admin}/admin/faults"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(rule.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "fault refused: {:?}", r.text().await);
}
