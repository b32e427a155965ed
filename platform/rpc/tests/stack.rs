//! The client stack's judgement against real tonic servers on loopback:
//! what counts against a circuit or an instance, what is retried, and what
//! is forgotten when discovery changes.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use fleet_config::Env;
use fleet_context::RequestContext;
use fleet_metrics::Metrics;
use fleet_rpc::{
    CallOptions, Dependency, DependencyConfig, InstanceSource, Operation, RpcError, Unavailable,
    parse_instances,
};
use http::{HeaderName, HeaderValue};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};

static CHECK: Operation = Operation::new("/grpc.health.v1.Health/Check", "Check", true);

/// How a test server answers `Check`.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Serving,
    /// UNAVAILABLE of its own (the instance is sick).
    Unavailable,
    /// UNAVAILABLE passed up from a dependency of its own, the way every
    /// service maps a failed dependency call (`RpcError::to_status`).
    DeeperUnavailable,
    /// UNAVAILABLE with `grpc-retry-pushback-ms: -1` (do not retry).
    UnavailableNoRetry,
    /// NOT_FOUND.
    NotFound,
    /// RESOURCE_EXHAUSTED from admission control, with this
    /// `grpc-retry-pushback-ms` (none when `None`).
    Overloaded(Option<&'static str>),
}

/// A real gRPC server on port 0 whose answers the test controls, and
/// which records every request's `grpc-previous-rpc-attempts`.
#[derive(Clone)]
struct TestServer {
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl Health for TestServer {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let previous = request
            .metadata()
            .get(fleet_rpc::PREVIOUS_ATTEMPTS_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        self.seen.lock().unwrap().push(previous);
        let answer = *self.answer.lock().unwrap();
        match answer {
            Answer::Serving => Ok(Response::new(HealthCheckResponse {
                status: health_check_response::ServingStatus::Serving as i32,
            })),
            Answer::Unavailable => Err(Status::unavailable("sick")),
            Answer::DeeperUnavailable => Err(RpcError::Unavailable {
                dependency: "dal",
                reason: Unavailable::Transport,
                message: "connection refused".into(),
                retry_after: None,
            }
            .to_status()),
            Answer::UnavailableNoRetry => {
                let mut s = Status::unavailable("overloaded");
                s.metadata_mut()
                    .insert(fleet_rpc::PUSHBACK_HEADER, "-1".parse().unwrap());
                Err(s)
            }
            Answer::NotFound => Err(Status::not_found("no such service")),
            Answer::Overloaded(pushback) => {
                let mut s = Status::resource_exhausted("concurrency limit 20 reached");
                if let Some(ms) = pushback {
                    s.metadata_mut()
                        .insert(fleet_rpc::PUSHBACK_HEADER, ms.parse().unwrap());
                }
                Err(s)
            }
        }
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

struct Running {
    addr: SocketAddr,
    server: TestServer,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    fn set(&self, answer: Answer) {
        *self.server.answer.lock().unwrap() = answer;
    }
    fn requests(&self) -> usize {
        self.server.seen.lock().unwrap().len()
    }
    fn previous_attempts(&self) -> Vec<Option<String>> {
        self.server.seen.lock().unwrap().clone()
    }
}

async fn serve(answer: Answer) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TestServer {
        answer: Arc::new(Mutex::new(answer)),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let svc = HealthServer::new(server.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        server,
        _stop: stop,
    }
}

fn config(major: u64, env: &[(&str, &str)]) -> DependencyConfig {
    DependencyConfig::new("target", "test", major)
        .from_env(&Env::of(env))
        .unwrap()
}

fn dependency(addrs: &[SocketAddr], metrics: &Metrics, env: &[(&str, &str)]) -> Dependency {
    let list: Vec<String> = addrs.iter().map(|a| format!("{a}@1.0.3")).collect();
    let instances = parse_instances(&list.join(","), &semver::Version::new(1, 0, 0)).unwrap();
    Dependency::new(
        config(1, env),
        InstanceSource::Static(instances),
        metrics.grpc_client(),
    )
}

async fn check(dep: &Dependency) -> Result<HealthCheckResponse, RpcError> {
    dep.unary(
        &CHECK,
        HealthCheckRequest {
            service: String::new(),
        },
        CallOptions::timeout(Duration::from_secs(2)),
    )
    .await
}

fn stream(metrics: &Metrics) -> serde_json::Value {
    metrics
        .snapshots()
        .into_iter()
        .find(|s| s["operation"] == "Check")
        .unwrap()
}

/// The value of `fleet_circuit_state` for `target`'s `Check`.
fn circuit_gauge(metrics: &Metrics, target: &str) -> Option<String> {
    let text = metrics.encode();
    let labels = format!(r#"target="{target}",operation="Check"}}"#);
    text.lines()
        .find(|l| l.starts_with("fleet_circuit_state{") && l.contains(&labels))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_owned)
}

fn ejected(snapshot: &serde_json::Value) -> usize {
    snapshot["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["ejected"] == true)
        .count()
}

#[tokio::test]
async fn a_flood_of_caller_mistakes_opens_no_circuit_and_ejects_nobody() {
    let s = serve(Answer::Serving).await;
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(&[s.addr], &metrics, &[]);
    // A pin to a version nothing runs, as a public client could send it.
    let pinned = RequestContext::new().with_propagated(
        HeaderName::from_static("x-version-target"),
        HeaderValue::from_static("1.99"),
    );
    for _ in 0..60 {
        let r = pinned.clone().scope(check(&dep)).await;
        assert!(matches!(r, Err(RpcError::InvalidArgument { .. })), "{r:?}");
    }
    assert_eq!(s.requests(), 0, "an unknown pin reaches no instance");
    // The caller's own spent budget.
    for _ in 0..30 {
        let spent = RequestContext::new().with_budget(Duration::ZERO);
        let r = spent.scope(check(&dep)).await;
        assert!(matches!(r, Err(RpcError::DeadlineExceeded { .. })), "{r:?}");
    }
    // Answers about the data, not the dependency's health.
    s.set(Answer::NotFound);
    for _ in 0..60 {
        assert!(matches!(check(&dep).await, Err(RpcError::NotFound { .. })));
    }
    let snap = stream(&metrics);
    assert_eq!(snap["circuit"], "closed", "{snap}");
    assert_eq!(ejected(&snap), 0, "{snap}");
    s.set(Answer::Serving);
    check(&dep).await.unwrap();
    assert_eq!(circuit_gauge(&metrics, "target").as_deref(), Some("0"));
}

#[tokio::test]
async fn a_failure_from_deeper_down_is_not_retried_and_ejects_no_middle_instance() {
    let (a, b) = (
        serve(Answer::DeeperUnavailable).await,
        serve(Answer::DeeperUnavailable).await,
    );
    let metrics = Metrics::new("test", "1.0.0");
    // A generous budget, so only the classification can stop retries.
    let dep = dependency(
        &[a.addr, b.addr],
        &metrics,
        &[("TARGET_RETRY_BUDGET_PERCENT", "1.0")],
    );
    // The calls fail, so the circuit opens after 20 of them (the
    // operation is failing); count the calls that were sent.
    let mut sent = 0;
    for _ in 0..50 {
        match check(&dep).await {
            Err(RpcError::Unavailable {
                reason: Unavailable::CircuitOpen,
                ..
            }) => {}
            Err(RpcError::Unavailable { .. }) => sent += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, 20);
    assert_eq!(
        a.requests() + b.requests(),
        sent,
        "one attempt per call: the deeper failure is not retried here"
    );
    let snap = stream(&metrics);
    assert_eq!(
        ejected(&snap),
        0,
        "no healthy middle instance ejected: {snap}"
    );
    assert_eq!(snap["retries"], 0);
}

#[tokio::test]
async fn a_retry_goes_to_another_instance_says_so_and_never_to_the_one_that_failed() {
    let (sick, healthy) = (
        serve(Answer::Unavailable).await,
        serve(Answer::Serving).await,
    );
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(
        &[sick.addr, healthy.addr],
        &metrics,
        &[
            ("TARGET_RETRY_BUDGET_PERCENT", "1.0"),
            // Keep the sick one in rotation: this test is about retries.
            ("TARGET_EJECT_AFTER_FAILURES", "1000"),
        ],
    );
    for _ in 0..40 {
        check(&dep).await.unwrap();
    }
    assert!(sick.requests() > 0, "the sick instance was tried");
    assert!(
        sick.previous_attempts().iter().all(Option::is_none),
        "no retry went back to the instance that failed: {:?}",
        sick.previous_attempts()
    );
    let retried: Vec<_> = healthy.previous_attempts().into_iter().flatten().collect();
    assert_eq!(retried.len(), sick.requests(), "each failure retried once");
    assert!(retried.iter().all(|v| v == "1"), "{retried:?}");

    // Alone, a failing instance gets one attempt per call: no retry to it.
    let metrics = Metrics::new("test", "1.0.0");
    let lonely = serve(Answer::Unavailable).await;
    let dep = dependency(
        &[lonely.addr],
        &metrics,
        &[("TARGET_RETRY_BUDGET_PERCENT", "1.0")],
    );
    for _ in 0..10 {
        assert!(check(&dep).await.is_err());
    }
    assert_eq!(lonely.requests(), 10);
}

#[tokio::test]
async fn a_negative_pushback_stops_the_retry() {
    let (a, b) = (
        serve(Answer::UnavailableNoRetry).await,
        serve(Answer::UnavailableNoRetry).await,
    );
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(
        &[a.addr, b.addr],
        &metrics,
        &[("TARGET_RETRY_BUDGET_PERCENT", "1.0")],
    );
    for _ in 0..20 {
        assert!(check(&dep).await.is_err());
    }
    assert_eq!(a.requests() + b.requests(), 20);
}

#[tokio::test]
async fn admission_pushback_opens_no_circuit_ejects_nobody_and_is_not_retried_unasked() {
    let (a, b) = (
        serve(Answer::Overloaded(None)).await,
        serve(Answer::Overloaded(None)).await,
    );
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(
        &[a.addr, b.addr],
        &metrics,
        &[("TARGET_RETRY_BUDGET_PERCENT", "1.0")],
    );
    // Far past the breaker's volume (20) and the ejection count (5): an
    // overloaded instance is pushing back, not failing.
    for _ in 0..60 {
        let r = check(&dep).await;
        assert!(
            matches!(
                r,
                Err(RpcError::Unavailable {
                    reason: Unavailable::Overloaded,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert_eq!(
        a.requests() + b.requests(),
        60,
        "no pushback header: not retried (gRPC A6)"
    );
    let snap = stream(&metrics);
    assert_eq!(snap["circuit"], "closed", "{snap}");
    assert_eq!(ejected(&snap), 0, "{snap}");
    assert_eq!(snap["retries"], 0);
    assert_eq!(circuit_gauge(&metrics, "target").as_deref(), Some("0"));
    // The instances serve again: answered at once, no circuit to wait out.
    a.set(Answer::Serving);
    b.set(Answer::Serving);
    check(&dep).await.unwrap();
}

#[tokio::test]
async fn admission_pushback_is_waited_out_before_retrying_on_another_instance() {
    let (busy, idle) = (
        serve(Answer::Overloaded(Some("300"))).await,
        serve(Answer::Serving).await,
    );
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(
        &[busy.addr, idle.addr],
        &metrics,
        &[("TARGET_RETRY_BUDGET_PERCENT", "1.0")],
    );
    let mut pushed_back = 0;
    // Until the balancer has picked the busy instance a few times (it
    // picks at random between equal loads).
    for _ in 0..200 {
        if pushed_back == 3 {
            break;
        }
        let before = busy.requests();
        let started = std::time::Instant::now();
        check(&dep).await.unwrap();
        if busy.requests() > before {
            pushed_back += 1;
            // A lower bound only (the server asked for 300 ms): a slow
            // machine can make it longer, never shorter.
            assert!(
                started.elapsed() >= Duration::from_millis(300),
                "retried after {:?}, before the pushback",
                started.elapsed()
            );
        }
    }
    assert!(pushed_back > 0, "the busy instance was tried");
    let retried: Vec<_> = idle.previous_attempts().into_iter().flatten().collect();
    assert_eq!(retried.len(), pushed_back, "each refusal retried once");
    assert!(
        busy.previous_attempts().iter().all(Option::is_none),
        "never back to the instance that pushed back"
    );
    assert_eq!(ejected(&stream(&metrics)), 0);
}

#[tokio::test]
async fn a_dead_canary_s_cohort_falls_back_to_the_other_version_but_a_pin_does_not() {
    // The route table sends (nearly) everyone to 1.3, whose only instance
    // is dead: nothing listens on its port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stable = serve(Answer::Serving).await;
    let metrics = Metrics::new("test", "1.0.0");
    let instances = parse_instances(
        &format!("{dead}@1.3.0,{}@1.2.0", stable.addr),
        &semver::Version::new(1, 0, 0),
    )
    .unwrap();
    let table = fleet_rpc::RouteTable {
        service: "target".into(),
        interface: 1,
        weights: [("1.2".to_owned(), 1), ("1.3".to_owned(), 10_000)].into(),
        sticky: false,
    };
    let (_tx, routes) = tokio::sync::watch::channel(Some(Arc::new(table)));
    let dep = Dependency::new(
        config(1, &[("TARGET_RETRY_BUDGET_PERCENT", "1.0")]),
        InstanceSource::Static(instances),
        metrics.grpc_client(),
    )
    .with_routes(routes);
    for i in 0..40 {
        let r = check(&dep).await;
        assert!(r.is_ok(), "call {i}: {r:?}");
    }
    assert_eq!(stable.requests(), 40, "every call answered by 1.2");
    // Retried from the dead canary until it was ejected, then routed to
    // 1.2 directly: the canary's version is not live while ejected.
    let retried = stable.previous_attempts().into_iter().flatten().count();
    assert!((1..=5).contains(&retried), "{retried} retries");
    assert_eq!(ejected(&stream(&metrics)), 1);
    // A pin means that version or nothing.
    let pinned = RequestContext::new().with_propagated(
        HeaderName::from_static("x-version-target"),
        HeaderValue::from_static("1.3"),
    );
    let r = pinned.scope(check(&dep)).await;
    assert!(
        matches!(
            r,
            Err(RpcError::Unavailable {
                reason: Unavailable::Transport,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(stable.requests(), 40);
}

#[tokio::test]
async fn instances_that_leave_discovery_lose_their_channel_and_stream_entry() {
    let (a, b) = (serve(Answer::Serving).await, serve(Answer::Serving).await);
    let metrics = Metrics::new("test", "1.0.0");
    let both = parse_instances(
        &format!("{},{}", a.addr, b.addr),
        &semver::Version::new(1, 0, 0),
    )
    .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(both.clone());
    let dep = Dependency::new(
        config(1, &[]),
        InstanceSource::Watch(rx),
        metrics.grpc_client(),
    );
    while a.requests() == 0 || b.requests() == 0 {
        check(&dep).await.unwrap();
    }
    assert_eq!(dep.channel_count(), 2);
    tx.send(both[..1].to_vec()).unwrap();
    check(&dep).await.unwrap();
    assert_eq!(
        dep.channel_count(),
        1,
        "the channel of the instance that left is gone"
    );
    let listed: Vec<String> = stream(&metrics)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, vec![a.addr.to_string()]);
}

#[tokio::test]
async fn two_interface_majors_of_one_service_have_separate_circuits_and_series() {
    // Nothing listens here: every attempt is refused.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let metrics = Metrics::new("test", "1.0.0");
    let v2 = Dependency::new(
        config(2, &[]),
        InstanceSource::Static(
            parse_instances(&format!("{addr}@2.0.0"), &semver::Version::new(2, 0, 0)).unwrap(),
        ),
        metrics.grpc_client(),
    );
    let live = serve(Answer::Serving).await;
    let v1 = dependency(&[live.addr], &metrics, &[]);
    for _ in 0..25 {
        assert!(check(&v2).await.is_err());
    }
    check(&v1).await.unwrap();
    assert_eq!(circuit_gauge(&metrics, "target.v2").as_deref(), Some("1"));
    assert_eq!(circuit_gauge(&metrics, "target").as_deref(), Some("0"));
}
