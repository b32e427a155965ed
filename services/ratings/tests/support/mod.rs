//! A real dal and a real ratings service in-process on loopback port 0
//! (the one harness, `fleet_testkit`), and the ratings driver client.

// Test support: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_metrics::Metrics;
use fleet_ratings_client::{
    CallOptions, Dependency, DependencyConfig, InstanceSource, RatingsClient,
};
use fleet_testkit::{TestService, loopback_env};

use fleet_dal::testing::ADMIN_TOKEN;

/// Seed titles the test dal holds (`t00001`…`t00200`).
pub const SEED_TITLES: u32 = 200;

/// A real dal on a fresh data directory, seeded.
pub async fn start_dal() -> TestService {
    fleet_dal::testing::start_seeded(SEED_TITLES, 50, &[]).await
}

/// A ratings service whose dal is at `dal`.
pub async fn start_ratings(dal: SocketAddr) -> TestService {
    start_ratings_on(&dal.to_string()).await
}

/// A ratings service given `DAL_ADDRS=dal_addrs`.
pub async fn start_ratings_on(dal_addrs: &str) -> TestService {
    TestService::start::<fleet_ratings::App>(&loopback_env([("DAL_ADDRS", dal_addrs)])).await
}

/// The ratings service's driver client, pointed at one instance.
pub fn client(ratings: &TestService) -> RatingsClient {
    let instances =
        fleet_rpc::parse_instances(&ratings.addr.to_string(), &semver::Version::new(1, 0, 0))
            .unwrap();
    RatingsClient::new(Dependency::new(
        DependencyConfig::new("ratings", "test", fleet_ratings_client::INTERFACE_MAJOR),
        InstanceSource::Static(instances),
        Metrics::new("test", "0.0.0").grpc_client(),
    ))
}

/// Generous per-call deadline: tests assert behaviour, not speed.
pub fn opts() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(5))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// Adds a fault rule (JSON) on an instance's admin port.
pub async fn add_fault(admin: SocketAddr, rule: &str) {
    fleet_testkit::probe::add_fault(admin, ADMIN_TOKEN, rule).await;
}
