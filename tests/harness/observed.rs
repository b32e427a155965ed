//! `fleet up --observability` as a child process: the one way the e2e
//! tests that need Prometheus and Jaeger start the system.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{bin_dir, free_addr};

/// A running `fleet up --observability` on the embedded backends.
pub struct ObservedFleetUp {
    child: Child,
}

impl ObservedFleetUp {
    /// Starts `fleet up --observability` with the edge on `edge`,
    /// Prometheus on `prometheus_addr`, Jaeger's UI on `jaeger_ui` and its
    /// data in `data`, plus `args` (instance counts); returns once it
    /// printed its `jaeger:` line (everything is up). The real backends a
    /// CI environment names are left out: this is the embedded system.
    ///
    /// # Panics
    /// When it does not start within 120 s.
    pub async fn start(
        args: &[&str],
        edge: &str,
        prometheus_addr: &str,
        jaeger_ui: &str,
        bins: (&str, &str),
        data: &Path,
    ) -> Self {
        let (jaeger, prometheus) = bins;
        let mut child = Command::new(bin_dir().join("fleet"))
            .args([
                "up",
                "--edge-addr",
                edge,
                "--dashboard",
                "off",
                "--data-dir",
            ])
            .arg(data)
            .args(args)
            .args(["--observability", "--prometheus-addr", prometheus_addr])
            .args(["--prometheus-bin", prometheus, "--jaeger-bin", jaeger])
            .args([
                "--jaeger-otlp-addr",
                &free_addr(),
                "--jaeger-ui-addr",
                jaeger_ui,
            ])
            .env_remove("CONSUL_HTTP_ADDR")
            .env_remove("SCYLLA_NODES")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("fleet up spawns");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("jaeger: ") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "fleet up --observability did not start"
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child }
    }

    /// SIGTERM, then it must exit 0 within 60 s.
    ///
    /// # Panics
    /// When it does not.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("still running");
        kill(
            Pid::from_raw(i32::try_from(pid).expect("a pid")),
            Signal::SIGTERM,
        )
        .expect("signal fleet up");
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("fleet up stops within 60 s")
            .expect("wait for fleet up");
        assert!(status.success(), "fleet up exited with {status}");
    }
}
