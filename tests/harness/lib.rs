//! Harness for the end-to-end tests: starts the real service binaries on
//! free loopback ports (through `fleet`'s own supervisor, so the tests run
//! the system exactly as `fleet up` does) and reads what they expose.

#![forbid(unsafe_code)]
// A test-support crate: a panic is how a test reports a broken system.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod rehearse;

use std::path::PathBuf;
use std::time::Duration;

use fleet::topology::{Launcher, Topology, TopologyOptions};

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
}

impl Default for Size {
    fn default() -> Self {
        Self {
            catalog_v1_2: 1,
            catalog_v1_3: 1,
            ratings: 2,
        }
    }
}

/// A running system with its own data directory.
pub struct System {
    /// The processes.
    pub topology: Topology,
    /// Its data (deleted on drop).
    pub data: tempfile::TempDir,
}

/// The admin token every instance of a test system is started with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

impl System {
    /// Starts dal, catalog, ratings and edge binaries on free ports.
    pub async fn start(size: Size) -> Self {
        Self::start_with(size, &[]).await
    }

    /// As [`System::start`], with extra environment for every instance
    /// (e.g. `RATINGS_BREAKER_SLEEP`).
    pub async fn start_with(size: Size, env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let topology = Topology::start(TopologyOptions {
            edge_addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data.path().to_path_buf(),
            dal: 1,
            catalog_v1_2: size.catalog_v1_2,
            catalog_v1_3: size.catalog_v1_3,
            catalog_v2: 0,
            ratings: size.ratings,
            launcher: Launcher::Binaries(bin_dir()),
            admin_token: ADMIN_TOKEN.into(),
            extra_env: [("RUST_LOG", "info"), ("READINESS_INTERVAL", "200ms")]
                .iter()
                .chain(env)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ready_timeout: Duration::from_secs(60),
        })
        .await
        .unwrap_or_else(|e| panic!("system did not start: {e}"));
        Self { topology, data }
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
