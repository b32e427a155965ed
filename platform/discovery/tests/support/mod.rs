//! Shared by the Consul test binaries: instances on runtimes of their own,
//! discovery-fed clients, calls that report who served them.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_config::Env;
use fleet_context::RequestContext;
use fleet_discovery::{ConsulClient, Discovery, DiscoveryConfig, RouteStore};
use fleet_metrics::Metrics;
use fleet_rpc::{CallOptions, Dependency, DependencyConfig, Operation, RouteTable};
use fleet_server::{ServerConfig, ServiceHost};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

pub static CHECK: Operation = Operation::new("/grpc.health.v1.Health/Check", "Check", true);

/// The agent, or `None` (the test skips): the one skip policy
/// (`fleet_testkit`; a failure when `CI` is set).
pub fn consul_addr() -> Option<String> {
    fleet_testkit::backend("FLEET_TEST_CONSUL_HTTP_ADDR")
}

pub fn unique(prefix: &str) -> &'static str {
    let n = uuid_like();
    Box::leak(format!("{prefix}-{n}").into_boxed_str())
}

pub fn uuid_like() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{}", t & 0xff_ffff, N.fetch_add(1, Ordering::Relaxed))
}

/// One instance running on a runtime (and thread) of its own, so it can be
/// stopped gracefully (SIGTERM path) or crashed (runtime torn down: no
/// deregistration, listeners gone).
pub struct Running {
    /// Instance id.
    pub id: String,
    /// gRPC address.
    pub addr: SocketAddr,
    /// Its shutdown (SIGTERM) token.
    pub shutdown: CancellationToken,
    crash: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(consul: &str, service: &'static str, version: &str, drain_delay: &str) -> Self {
        let id = format!("{service}-{version}-{}", uuid_like());
        let v = semver::Version::parse(version).unwrap();
        let allowed: &'static [&'static str] =
            Box::leak(Box::new([
                Box::leak(format!("{}.{}", v.major, v.minor).into_boxed_str()) as &str,
            ]));
        let config = ServerConfig::from_env(
            &Env::from_pairs([
                ("SERVICE_VERSION", version),
                ("INSTANCE_ID", id.as_str()),
                ("ZONE", "test-zone"),
                ("CONSUL_HTTP_ADDR", consul),
                ("READINESS_INTERVAL", "100ms"),
                ("DRAIN_DELAY", drain_delay),
                ("SHUTDOWN_GRACE", "2s"),
            ]),
            service,
            "GRPC_ADDR",
            "127.0.0.1:0",
            "127.0.0.1:0",
            version,
            allowed,
        )
        .unwrap();
        let version = version.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let host = ServiceHost::bind(config, Metrics::new(service, &version))
                    .await
                    .unwrap();
                ready_tx
                    .send((host.main_addr(), host.shutdown_token()))
                    .unwrap();
                let routes = tonic::service::Routes::default();
                tokio::select! {
                    r = host.run_grpc(routes, &[]) => r.unwrap(),
                    _ = crash_rx => {}
                }
            });
            // Whatever still runs (admin server, registration) dies here.
            runtime.shutdown_background();
        });
        let (addr, shutdown) = ready_rx.recv().unwrap();
        Self {
            id,
            addr,
            shutdown,
            crash: Some(crash_tx),
            thread: Some(thread),
        }
    }

    /// SIGTERM: deregister, drain, stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let thread = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap()
            .expect("instance drained and stopped");
    }

    /// A crash: everything stops at once, nothing deregisters.
    pub fn crash(mut self) {
        let _ = self.crash.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.crash.take() {
            let _ = c.send(());
        }
    }
}

pub fn discovery(consul: &str) -> (Discovery, Metrics) {
    let metrics = Metrics::new("test-client", "1.0.0");
    let config = DiscoveryConfig {
        consul_addr: Some(consul.to_owned()),
        watch_wait: Duration::from_secs(10),
        ..DiscoveryConfig::default()
    };
    (Discovery::new(config, &metrics).unwrap(), metrics)
}

pub async fn client(consul: &str, service: &'static str, major: u64) -> Dependency {
    let (d, m) = discovery(consul);
    let mut cfg = DependencyConfig::new(service, "test", major);
    cfg.request_timeout = Duration::from_secs(2);
    cfg.breaker.enabled = false;
    d.dependency(cfg, Vec::new(), m.grpc_client()).await
}

/// Calls once; returns the served-by `service/version/instance`.
pub async fn call(dep: &Dependency, cx: RequestContext) -> Result<String, fleet_rpc::RpcError> {
    let cx = cx.with_served_by_collector();
    let inner = cx.clone();
    let r: Result<HealthCheckResponse, _> = inner
        .scope(dep.unary(
            &CHECK,
            HealthCheckRequest {
                service: String::new(),
            },
            CallOptions::default(),
        ))
        .await;
    r?;
    Ok(cx.served_by().last().cloned().unwrap_or_default())
}

pub fn version_of(served_by: &str) -> String {
    served_by.split('/').nth(1).unwrap_or_default().to_owned()
}

pub fn minor_of(served_by: &str) -> String {
    let v = version_of(served_by);
    let mut p = v.split('.');
    format!("{}.{}", p.next().unwrap_or(""), p.next().unwrap_or(""))
}

pub async fn wait_until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within {limit:?}");
}

pub async fn passing(c: &ConsulClient, service: &str) -> Vec<String> {
    c.health_service(service, true, None, Duration::ZERO)
        .await
        .unwrap()
        .value
        .into_iter()
        .map(|e| e.id)
        .collect()
}

pub async fn wait_eligible(dep: &Dependency, n: usize) {
    wait_until(
        "instances discovered",
        Duration::from_secs(10),
        async || dep.instances().len() == n,
    )
    .await;
}

pub fn table(service: &str, weights: &[(&str, u32)], sticky: bool) -> RouteTable {
    RouteTable {
        service: service.to_owned(),
        interface: 1,
        weights: weights.iter().map(|(v, w)| ((*v).to_owned(), *w)).collect(),
        sticky,
    }
}

pub fn store(consul: &str) -> RouteStore {
    RouteStore::Consul {
        client: ConsulClient::new(consul).unwrap(),
        prefix: fleet_discovery::DEFAULT_KV_PREFIX.to_owned(),
    }
}

/// Sends `n` calls (16 at a time) and counts them by major.minor.
pub async fn spread(dep: &Dependency, n: usize) -> BTreeMap<String, usize> {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (dep, counts, next) = (dep.clone(), counts.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                let who = call(&dep, RequestContext::new()).await.unwrap();
                *counts.lock().unwrap().entry(minor_of(&who)).or_insert(0) += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(counts).unwrap().into_inner().unwrap()
}
