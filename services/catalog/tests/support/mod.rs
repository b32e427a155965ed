//! A real dal and a real catalog in-process on loopback port 0 (the one
//! harness, `fleet_testkit`), and the catalog's driver client.

// Test support: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_catalog_client::{
    CallOptions, CatalogClient, Dependency, DependencyConfig, InstanceSource,
};
use fleet_metrics::Metrics;
use fleet_testkit::{TestService, loopback_env};

use fleet_dal::testing::ADMIN_TOKEN;

/// Seed titles the test dal holds (`t00001`…`t00200`).
pub const SEED_TITLES: u32 = 200;

/// A real dal on a fresh data directory, seeded.
pub async fn start_dal() -> TestService {
    fleet_dal::testing::start_seeded(SEED_TITLES, 50, &[]).await
}

/// A catalog of release `version` whose dal is at `dal`.
pub async fn start_catalog(dal: SocketAddr, version: &str) -> TestService {
    start_catalog_on(&dal.to_string(), version).await
}

/// A catalog of release `version` given `DAL_ADDRS=dal_addrs`.
pub async fn start_catalog_on(dal_addrs: &str, version: &str) -> TestService {
    let env = loopback_env([("SERVICE_VERSION", version), ("DAL_ADDRS", dal_addrs)]);
    TestService::start::<fleet_catalog::App>(&env).await
}

/// The catalog's driver client, pointed at one instance.
pub fn client(catalog: &TestService) -> CatalogClient {
    let instances =
        fleet_rpc::parse_instances(&catalog.addr.to_string(), &semver::Version::new(1, 3, 0))
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

/// Adds a fault rule (JSON) on an instance's admin port.
pub async fn add_fault(admin: SocketAddr, rule: &str) {
    fleet_testkit::probe::add_fault(admin, ADMIN_TOKEN, rule).await;
}
