//! Each server describes only itself: gRPC reflection on every service,
//! asked over a real socket, lists exactly the services that server
//! implements (plus health and reflection), and cannot describe another
//! service's package — so `grpcurl list` never invites a call that
//! answers UNIMPLEMENTED. The descriptor set per service comes from
//! fleet-proto's codegen (`fleet_proto::descriptor_set`).
//!
//! (Catches: registering every package's descriptor set on every server —
//! the catalog then also lists dal.v1.DataAccess and ratings.v1.Ratings —
//! or a service name the codegen has no set for — its own service is then
//! missing from the list.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_config::Env;
use fleet_server::App as _;
use fleet_testkit::reflection;

const EVERY_SERVICE: [&str; 4] = [
    "dal.v1.DataAccess",
    "catalog.v1.Catalog",
    "catalog.v2.Catalog",
    "ratings.v1.Ratings",
];

/// An instance running on its own task.
struct Running {
    grpc: SocketAddr,
    stop: Box<dyn FnOnce() + Send>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    _data: Option<tempfile::TempDir>,
}

impl Running {
    async fn stop(self) {
        (self.stop)();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

fn env(extra: &[(&str, &str)]) -> Env {
    let mut pairs = vec![
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("READINESS_INTERVAL", "50ms"),
        ("SHUTDOWN_GRACE", "2s"),
    ];
    pairs.extend_from_slice(extra);
    Env::from_pairs(pairs)
}

async fn dal() -> Running {
    let data = tempfile::tempdir().unwrap();
    let env = env(&[
        ("DATA_DIR", data.path().to_str().unwrap()),
        ("SEED_TITLES", "20"),
        ("SEED_USERS", "5"),
    ]);
    let app = fleet_dal::App::build(fleet_dal::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let (grpc, token) = (app.main_addr(), app.shutdown_token());
    Running {
        grpc,
        stop: Box::new(move || token.cancel()),
        task: tokio::spawn(async move { app.run().await.map_err(|e| e.to_string()) }),
        _data: Some(data),
    }
}

async fn catalog(dal: SocketAddr, version: &str) -> Running {
    let dal = dal.to_string();
    let env = env(&[("SERVICE_VERSION", version), ("DAL_ADDRS", &dal)]);
    let app = fleet_catalog::App::build(fleet_catalog::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let (grpc, token) = (app.main_addr(), app.shutdown_token());
    Running {
        grpc,
        stop: Box::new(move || token.cancel()),
        task: tokio::spawn(async move { app.run().await.map_err(|e| e.to_string()) }),
        _data: None,
    }
}

async fn ratings(dal: SocketAddr) -> Running {
    let dal = dal.to_string();
    let env = env(&[("DAL_ADDRS", &dal)]);
    let app = fleet_ratings::App::build(fleet_ratings::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let (grpc, token) = (app.main_addr(), app.shutdown_token());
    Running {
        grpc,
        stop: Box::new(move || token.cancel()),
        task: tokio::spawn(async move { app.run().await.map_err(|e| e.to_string()) }),
        _data: None,
    }
}

/// Reflection at `addr` lists `own` plus health and reflection, describes
/// `own`, and describes none of the other services.
async fn describes_only(addr: SocketAddr, own: &str) {
    let mut expected = vec![
        own.to_owned(),
        "grpc.health.v1.Health".to_owned(),
        "grpc.reflection.v1.ServerReflection".to_owned(),
    ];
    expected.sort();
    assert_eq!(reflection::list_services(addr).await.unwrap(), expected);
    for service in EVERY_SERVICE {
        assert_eq!(
            reflection::describes(addr, service).await.unwrap(),
            service == own,
            "{own}'s server describing {service}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dal_describes_only_the_dal() {
    let dal = dal().await;
    describes_only(dal.grpc, "dal.v1.DataAccess").await;
    dal.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_1_x_describes_only_catalog_v1() {
    let dal = dal().await;
    let v13 = catalog(dal.grpc, "1.3.0").await;
    describes_only(v13.grpc, "catalog.v1.Catalog").await;
    v13.stop().await;
    dal.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_2_x_describes_only_catalog_v2() {
    let dal = dal().await;
    let v20 = catalog(dal.grpc, "2.0.0").await;
    describes_only(v20.grpc, "catalog.v2.Catalog").await;
    v20.stop().await;
    dal.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_describes_only_ratings() {
    let dal = dal().await;
    let ratings = ratings(dal.grpc).await;
    describes_only(ratings.grpc, "ratings.v1.Ratings").await;
    ratings.stop().await;
    dal.stop().await;
}
