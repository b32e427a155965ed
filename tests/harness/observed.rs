//! `fleet up --observability` as a child process: the one way the e2e
//! tests that need Prometheus and Jaeger start the system.

use std::path::Path;

use fleet_testkit::FleetUp;

use crate::{bin_dir, free_addr};

/// A running `fleet up --observability` on the embedded backends.
pub struct ObservedFleetUp {
    up: FleetUp,
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
        let up = FleetUp::up(bin_dir().join("fleet"), edge, data)
            .no_dashboard()
            .args(args)
            .args(["--observability", "--prometheus-addr", prometheus_addr])
            .args(["--prometheus-bin", prometheus, "--jaeger-bin", jaeger])
            .args([
                "--jaeger-otlp-addr",
                &free_addr(),
                "--jaeger-ui-addr",
                jaeger_ui,
            ])
            .embedded()
            .ready_when(|line| line.starts_with("jaeger: "))
            .start()
            .await;
        Self { up }
    }

    /// SIGTERM, then it must exit 0 within 60 s.
    ///
    /// # Panics
    /// When it does not.
    pub async fn stop(mut self) {
        self.up.stop().await;
    }
}
