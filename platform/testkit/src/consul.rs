//! A Consul dev agent of one test's own, started from the binary
//! `scripts/backends` built (`FLEET_TEST_CONSUL_BIN`) with the same
//! settings it uses: loopback only, every port free, everything in memory.
//! (Every test system registers services named `catalog`, `ratings`, …, so
//! two systems on one agent would discover each other.)

// Test support: a panic is how a test reports a broken agent.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `consul agent -dev`; killed on drop.
pub struct ConsulAgent {
    child: Child,
    http: SocketAddr,
}

fn free_port() -> u16 {
    crate::net::closed_port().port()
}

impl ConsulAgent {
    /// Starts an agent with its state and log under `dir`, and waits until
    /// it has elected itself leader.
    ///
    /// # Panics
    /// When it cannot start or has no leader within 60 s.
    pub async fn start(bin: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let http = free_port();
        let config = format!(
            r#"node_name = "fleet-test"
datacenter = "dc1"
bind_addr = "127.0.0.1"
advertise_addr = "127.0.0.1"
advertise_addr_wan = "127.0.0.1"
client_addr = "127.0.0.1"
disable_update_check = true
log_level = "WARN"
ports {{
  http = {http}
  https = -1
  dns = {dns}
  serf_lan = {lan}
  serf_wan = {wan}
  server = {server}
  grpc = {grpc}
  grpc_tls = -1
}}
"#,
            dns = free_port(),
            lan = free_port(),
            wan = free_port(),
            server = free_port(),
            grpc = free_port(),
        );
        let hcl = dir.join("consul.hcl");
        std::fs::write(&hcl, config).unwrap();
        let log = std::fs::File::create(dir.join("consul.log")).unwrap();
        let child = Command::new(bin)
            .args(["agent", "-dev", "-config-file"])
            .arg(&hcl)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut agent = Self {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
        };
        let started = Instant::now();
        let url = format!("http://{}/v1/status/leader", agent.http);
        loop {
            if let Some(status) = agent.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("consul.log")).unwrap_or_default();
                panic!("consul exited during start-up ({status}):\n{log}");
            }
            if let Ok(r) = reqwest::get(&url).await
                && let Ok(leader) = r.text().await
                && leader.trim().trim_matches('"').contains(':')
            {
                return agent;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "consul had no leader within 60 s (log: {})",
                dir.join("consul.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The agent's HTTP address (`CONSUL_HTTP_ADDR`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Instance ids of `service` whose checks all pass.
    pub async fn passing(&self, service: &str) -> Vec<String> {
        let url = format!(
            "http://{}/v1/health/service/{service}?passing=true",
            self.http
        );
        let Ok(resp) = reqwest::get(&url).await else {
            return Vec::new();
        };
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        body.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["Service"]["ID"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until exactly `n` instances of `service` pass their checks.
    ///
    /// # Panics
    /// When they do not within `limit`.
    pub async fn wait_passing(&self, service: &str, n: usize, limit: Duration) {
        let started = Instant::now();
        loop {
            let ids = self.passing(service).await;
            if ids.len() == n {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "{service}: {} passing in Consul after {limit:?}, expected {n}: {ids:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
