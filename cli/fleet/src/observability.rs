//! `fleet up --observability`: a real Prometheus beside the fleet.
//!
//! Debian's `prometheus` (or `--prometheus-bin`) scrapes every instance's
//! admin `/metrics` once a second. It finds them through file-based service
//! discovery: `run/prometheus/targets.json`, written from the registry (one
//! target group per instance, `job` = the service, `fleet_instance` = the
//! instance id) and rewritten whenever the registry is. It evaluates the
//! fleet's recording and alerting rules — `deploy/prometheus/rules/
//! fleet.rules.yml`, compiled into this binary, the same file compose mounts
//! and Kubernetes ships as a ConfigMap. Its TSDB lives in `<data>/prometheus`,
//! its log in `<data>/logs/prometheus.log`.
//!
//! Beside it, Jaeger v1.76 (`scripts/jaeger` builds it): OTLP/gRPC in (every
//! instance gets `OTEL_EXPORTER_OTLP_ENDPOINT`), in-memory storage, its UI
//! and query API on `--jaeger-ui-addr`. Both URLs go to
//! `run/observability.json` (`fleet gameday probe prometheus` reads it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use fleet_supervisor::RegistryEntry;
use fleet_supervisor::signal::{self, Signal};

/// The fleet's Prometheus rules (one source for every deployment).
pub const RULES: &str = include_str!("../../../deploy/prometheus/rules/fleet.rules.yml");

/// Where `fleet up` records the URLs of what `--observability` started.
pub const RECORD: &str = "observability.json";

/// How long Prometheus may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Prometheus (stopped on drop at the latest).
#[derive(Debug)]
pub struct Prometheus {
    child: tokio::process::Child,
    url: String,
    targets: PathBuf,
}

/// The Prometheus configuration: scrape everything the targets file lists,
/// evaluate the rules file. JSON is YAML, so serde_json writes it.
pub fn config(targets: &Path, rules: &Path) -> serde_json::Value {
    json!({
        "global": {
            "scrape_interval": "1s",
            "scrape_timeout": "900ms",
            "evaluation_interval": "5s",
        },
        "rule_files": [rules.display().to_string()],
        "scrape_configs": [{
            "job_name": "fleet",
            "metrics_path": "/metrics",
            "file_sd_configs": [{
                "files": [targets.display().to_string()],
                "refresh_interval": "5s",
            }],
        }],
    })
}

/// File-SD target groups for the registry: one per instance, scraped on
/// its admin address, labelled with its service (as `job`), version and
/// instance id.
pub fn targets(registry: &[RegistryEntry]) -> serde_json::Value {
    registry
        .iter()
        .map(|e| {
            json!({
                "targets": [e.admin_addr],
                "labels": {
                    "job": e.service,
                    "fleet_instance": e.instance_id,
                    "fleet_version": e.version,
                    "zone": e.zone,
                },
            })
        })
        .collect()
}

/// Writes `value` to `path` atomically (Prometheus watches the file and
/// must never read half of it).
fn write_atomically(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("failed to write {}", path.display()))
}

impl Prometheus {
    /// Writes the configuration, rules and targets under `run/prometheus`,
    /// starts `bin` listening on `addr`, and waits until it is ready.
    ///
    /// # Errors
    /// When `addr` has port 0 (nobody could find it), a file cannot be
    /// written, the program cannot be started, or it exits or is not ready
    /// within a minute (the error carries the end of its log).
    pub async fn start(
        bin: &Path,
        addr: SocketAddr,
        data_dir: &Path,
        registry: &[RegistryEntry],
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            addr.port() != 0,
            "--prometheus-addr needs a fixed port (got {addr})"
        );
        let dir = data_dir.join("run/prometheus");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let tsdb = data_dir.join("prometheus");
        let logs = data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("failed to create {}", logs.display()))?;
        let rules = dir.join("fleet.rules.yml");
        std::fs::write(&rules, RULES)
            .with_context(|| format!("failed to write {}", rules.display()))?;
        let targets_path = dir.join("targets.json");
        write_atomically(&targets_path, &targets(registry))?;
        let config_path = dir.join("prometheus.yml");
        write_atomically(&config_path, &config(&targets_path, &rules))?;

        let log_path = logs.join("prometheus.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let child = tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg("--storage.tsdb.retention.time=2d")
            // The latency histograms' trace-id exemplars (scraped as
            // OpenMetrics) are kept and answer /api/v1/query_exemplars.
            .arg("--enable-feature=exemplar-storage")
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "failed to start {} (Debian's `prometheus`; scripts/prometheus installs it, --prometheus-bin points elsewhere)",
                    bin.display()
                )
            })?;
        let mut this = Self {
            child,
            url: format!("http://{addr}"),
            targets: targets_path,
        };
        this.wait_ready(&log_path).await?;
        Ok(this)
    }

    async fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let give_up = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "prometheus exited with {status} before it was ready:\n{}",
                    tail(log)
                );
            }
            if let Ok(r) = http.get(format!("{}/-/ready", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= give_up {
                anyhow::bail!(
                    "prometheus was not ready within {}s:\n{}",
                    READY_TIMEOUT.as_secs(),
                    tail(log)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Rewrites the targets file from the registry (Prometheus picks the
    /// change up by itself).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn update_targets(&self, registry: &[RegistryEntry]) -> anyhow::Result<()> {
        write_atomically(&self.targets, &targets(registry))
    }

    /// SIGTERM (Prometheus flushes its head block), SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = signal::send(pid, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Where a running Jaeger listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JaegerAddrs {
    /// OTLP/gRPC receiver (what `OTEL_EXPORTER_OTLP_ENDPOINT` names).
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP receiver.
    pub otlp_http: SocketAddr,
    /// The query service's HTTP API and UI.
    pub query_http: SocketAddr,
    /// The query service's gRPC API.
    pub query_grpc: SocketAddr,
    /// The collector's health check extension.
    pub health: SocketAddr,
}

/// Jaeger v2's configuration (an OpenTelemetry collector configuration):
/// OTLP in, in-memory storage, the query service on `query_http`; the
/// collector's own metrics off (they would bind port 8888). JSON is YAML.
pub fn jaeger_config(a: &JaegerAddrs) -> serde_json::Value {
    json!({
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                },
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {"level": "none"},
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "healthcheckv2": {"use_v2": true, "http": {"endpoint": a.health.to_string()}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": a.query_http.to_string()},
                "grpc": {"endpoint": a.query_grpc.to_string()},
            },
            "jaeger_storage": {
                "backends": {"memstore": {"memory": {"max_traces": 100_000}}},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": a.otlp_grpc.to_string()},
                    "http": {"endpoint": a.otlp_http.to_string()},
                },
            },
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    })
}

/// A free loopback port (bound and released; the child binds it next).
fn free_loopback() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr()?)
}

/// A running Jaeger (stopped on drop at the latest).
#[derive(Debug)]
pub struct Jaeger {
    child: tokio::process::Child,
    addrs: JaegerAddrs,
}

impl Jaeger {
    /// Starts `bin` with its OTLP/gRPC receiver on `otlp` and its UI/API on
    /// `ui` (other ports free ones), and waits until its query API answers.
    ///
    /// # Errors
    /// When an address has port 0, the configuration cannot be written,
    /// the program cannot start, or it exits or is not ready within a
    /// minute (the error carries the end of its log).
    pub async fn start(
        bin: &Path,
        otlp: SocketAddr,
        ui: SocketAddr,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            otlp.port() != 0 && ui.port() != 0,
            "--jaeger-otlp-addr and --jaeger-ui-addr need fixed ports"
        );
        let addrs = JaegerAddrs {
            otlp_grpc: otlp,
            otlp_http: free_loopback()?,
            query_http: ui,
            query_grpc: free_loopback()?,
            health: free_loopback()?,
        };
        let dir = data_dir.join("run/jaeger");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let config = dir.join("jaeger.yaml");
        write_atomically(&config, &jaeger_config(&addrs))?;
        let logs = data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("failed to create {}", logs.display()))?;
        let log_path = logs.join("jaeger.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "failed to start {} (Jaeger v1.76; scripts/jaeger builds it, --jaeger-bin points elsewhere)",
                    bin.display()
                )
            })?;
        let mut this = Self { child, addrs };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let give_up = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = this.child.try_wait()? {
                anyhow::bail!(
                    "jaeger exited with {status} before it was ready:\n{}",
                    tail(&log_path)
                );
            }
            if let Ok(r) = http
                .get(format!("{}/api/services", this.ui_url()))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(this);
            }
            if tokio::time::Instant::now() >= give_up {
                anyhow::bail!(
                    "jaeger was not ready within {}s:\n{}",
                    READY_TIMEOUT.as_secs(),
                    tail(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What every instance gets as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.addrs.otlp_grpc)
    }

    /// The UI and query API base URL.
    pub fn ui_url(&self) -> String {
        format!("http://{}", self.addrs.query_http)
    }

    /// SIGTERM (it flushes nothing to disk: in-memory storage), SIGKILL
    /// after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = signal::send(pid, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Records what `--observability` started in `run/observability.json`.
///
/// # Errors
/// When the file cannot be written.
pub fn record(
    data_dir: &Path,
    prometheus: &Prometheus,
    jaeger: Option<&Jaeger>,
) -> anyhow::Result<()> {
    let mut v = json!({"prometheus": prometheus.url()});
    if let Some(j) = jaeger {
        v["jaeger"] = json!(j.ui_url());
        v["otlp_endpoint"] = json!(j.otlp_endpoint());
    }
    write_atomically(&data_dir.join("run").join(RECORD), &v)
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut last: Vec<&str> = text.lines().rev().take(20).collect();
    last.reverse();
    last.join("\n")
}

/// The Prometheus URL `fleet up --observability` recorded in `data_dir`.
pub fn recorded_url(data_dir: &Path) -> Option<String> {
    let text = std::fs::read(data_dir.join("run").join(RECORD)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v.get("prometheus")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn targets_label_each_instance_with_its_service_as_the_job() {
        let reg = vec![RegistryEntry {
            service: "catalog".into(),
            version: "1.3.0".into(),
            instance_id: "catalog-v13-1".into(),
            addr: "127.0.0.1:7001".into(),
            admin_addr: "127.0.0.1:7002".into(),
            pid: 1,
            zone: "z1".into(),
        }];
        let t = targets(&reg);
        assert_eq!(t[0]["targets"][0], "127.0.0.1:7002");
        assert_eq!(t[0]["labels"]["job"], "catalog");
        assert_eq!(t[0]["labels"]["fleet_instance"], "catalog-v13-1");
        assert_eq!(t[0]["labels"]["fleet_version"], "1.3.0");
    }

    #[test]
    fn the_config_scrapes_the_targets_file_and_loads_the_rules() {
        let c = config(Path::new("/d/targets.json"), Path::new("/d/rules.yml"));
        assert_eq!(c["rule_files"][0], "/d/rules.yml");
        assert_eq!(
            c["scrape_configs"][0]["file_sd_configs"][0]["files"][0],
            "/d/targets.json"
        );
        assert!(RULES.contains("FleetCircuitOpen"));
    }

    #[test]
    fn jaeger_listens_where_it_is_told_and_stores_in_memory() {
        let a = JaegerAddrs {
            otlp_grpc: "127.0.0.1:4317".parse().unwrap(),
            otlp_http: "127.0.0.1:4318".parse().unwrap(),
            query_http: "127.0.0.1:16686".parse().unwrap(),
            query_grpc: "127.0.0.1:16685".parse().unwrap(),
            health: "127.0.0.1:13133".parse().unwrap(),
        };
        let c = jaeger_config(&a);
        assert_eq!(
            c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
            "127.0.0.1:4317"
        );
        assert_eq!(
            c["extensions"]["jaeger_query"]["http"]["endpoint"],
            "127.0.0.1:16686"
        );
        assert_eq!(
            c["exporters"]["jaeger_storage_exporter"]["trace_storage"],
            c["extensions"]["jaeger_query"]["storage"]["traces"]
        );
    }
}
