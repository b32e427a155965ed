//! The client call path against real gRPC servers on loopback, with faults
//! injected through the servers' own admin API: retries to another
//! instance within the retry budget, ejection, the breaker cutting off a
//! hard-down dependency, the bulkhead refusing at once, deadline
//! propagation, and the `/admin/stream` snapshot.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_config::Env;
use fleet_context::RequestContext;
use fleet_metrics::Metrics;
use fleet_proto::catalog::v2::catalog_server::{Catalog, CatalogServer};
use fleet_proto::catalog::v2::{GetTitleRequest, Title};
use fleet_rpc::{
    CallOptions, Dependency, DependencyConfig, InstanceSource, Operation, RpcError, Unavailable,
    parse_instances,
};
use fleet_server::{ServerConfig, ServiceHost};

// The target is a served method, not gRPC health: fault rules never touch
// health checks, and these tests inject faults.
static CHECK: Operation = Operation::new("/catalog.v2.Catalog/GetTitle", "GetTitle", true);

/// A catalog 2 that knows one answer: enough to be a dependency.
struct Target;

#[tonic::async_trait]
impl Catalog for Target {
    async fn get_title(
        &self,
        request: tonic::Request<GetTitleRequest>,
    ) -> Result<tonic::Response<Title>, tonic::Status> {
        Ok(tonic::Response::new(Title {
            id: request.into_inner().title_id,
            ..Title::default()
        }))
    }
}
const TOKEN: &str = "test-admin-token-0123456789";
const VIEWER: &str = "test-viewer-token-0123456789";

struct Server {
    grpc: SocketAddr,
    admin: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn server() -> Server {
    let env = Env::from_pairs([
        ("READINESS_INTERVAL", "50ms"),
        ("SHUTDOWN_GRACE", "1s"),
        ("ADMIN_TOKEN", TOKEN),
        ("VIEWER_TOKEN", VIEWER),
    ]);
    let config = ServerConfig::from_env(
        &env,
        "target",
        "GRPC_ADDR",
        "127.0.0.1:0",
        "127.0.0.1:0",
        "1.0.0",
        &["1.0"],
    )
    .unwrap();
    let host = ServiceHost::bind(config, Metrics::new("target", "1.0.0"))
        .await
        .unwrap();
    let s = Server {
        grpc: host.main_addr(),
        admin: host.admin_addr(),
        stop: host.shutdown_token(),
    };
    tokio::spawn(host.run_grpc(
        tonic::service::Routes::new(CatalogServer::new(Target)),
        &["catalog.v2.Catalog"],
    ));
    s
}

async fn fault(s: &Server, spec: &str) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/admin/faults", s.admin))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(spec.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

fn dependency(addrs: &[SocketAddr], metrics: &Metrics, env: &[(&str, &str)]) -> Dependency {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let instances = parse_instances(&list.join(","), &semver::Version::new(1, 0, 0)).unwrap();
    let config = DependencyConfig::new("target", "test", 1)
        .from_env(&Env::of(env))
        .unwrap();
    Dependency::new(
        config,
        InstanceSource::Static(instances),
        metrics.grpc_client(),
    )
}

async fn check(dep: &Dependency) -> Result<Title, RpcError> {
    dep.unary(
        &CHECK,
        GetTitleRequest {
            title_id: "t00001".to_owned(),
        },
        CallOptions::timeout(Duration::from_secs(2)),
    )
    .await
}

#[tokio::test]
async fn failed_attempts_retry_elsewhere_within_budget_and_sick_instances_are_ejected() {
    let (sick, healthy) = (server().await, server().await);
    fault(
        &sick,
        r#"{"operation":"GetTitle","action":{"type":"abort","code":"UNAVAILABLE"}}"#,
    )
    .await;
    // The sick instance answers (with errors) faster than the healthy one,
    // so a latency-driven balancer keeps choosing it until it is ejected.
    fault(
        &healthy,
        r#"{"operation":"GetTitle","action":{"type":"delay","ms":10}}"#,
    )
    .await;
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(&[sick.grpc, healthy.grpc], &metrics, &[]);
    let requests = 150;
    let mut ok = 0;
    for _ in 0..requests {
        if check(&dep).await.is_ok() {
            ok += 1;
        }
    }
    let snap = metrics.snapshots();
    let op = snap.iter().find(|s| s["operation"] == "GetTitle").unwrap();
    let retries = op["retries"].as_u64().unwrap();
    let attempts = requests + retries;
    let ratio = attempts as f64 / requests as f64;
    eprintln!("requests {requests} ok {ok} retries {retries} attempts/requests {ratio:.3}");
    assert!(ratio <= 1.1, "attempts/requests = {ratio}");
    // The sick instance is ejected after 5 straight failures; of the calls
    // that landed on it before, retries (always to the other) rescue most.
    assert!(ok >= requests - 6, "only {ok}/{requests} succeeded");
    let sick_state = op["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == sick.grpc.to_string())
        .unwrap()
        .clone();
    assert_eq!(sick_state["ejected"], true, "{sick_state}");
    assert_eq!(op["circuit"], "closed");
}

#[tokio::test]
async fn the_breaker_cuts_off_a_hard_down_dependency() {
    let down = server().await;
    fault(&down, r#"{"action":{"type":"abort","code":"UNAVAILABLE"}}"#).await;
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(&[down.grpc], &metrics, &[("TARGET_BREAKER_SLEEP", "200ms")]);
    let mut first_short_circuit = None;
    for i in 0..40 {
        match check(&dep).await {
            Err(RpcError::Unavailable {
                reason: Unavailable::CircuitOpen,
                retry_after,
                ..
            }) => {
                assert!(retry_after.is_some());
                first_short_circuit.get_or_insert(i);
            }
            Err(RpcError::Unavailable { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        first_short_circuit,
        Some(20),
        "opens after the request volume"
    );
    assert!(metrics.encode().contains("fleet_circuit_state{"));
    // After the sleep window one trial goes through; the dependency has
    // recovered, so the circuit closes.
    reqwest::Client::new()
        .delete(format!("http://{}/admin/faults", down.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    check(&dep).await.unwrap();
    check(&dep).await.unwrap();
    let snap = metrics.snapshots();
    assert_eq!(snap[0]["circuit"], "closed");
}

#[tokio::test]
async fn a_full_bulkhead_refuses_at_once() {
    let slow = server().await;
    fault(&slow, r#"{"action":{"type":"delay","ms":400}}"#).await;
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(&[slow.grpc], &metrics, &[("TARGET_BULKHEAD", "2")]);
    let a = tokio::spawn({
        let dep = dep.clone();
        async move { check(&dep).await }
    });
    let b = tokio::spawn({
        let dep = dep.clone();
        async move { check(&dep).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Refused, not queued: a queued call would have succeeded after the
    // first two.
    let third = check(&dep).await;
    assert!(
        matches!(
            third,
            Err(RpcError::Unavailable {
                reason: Unavailable::BulkheadFull,
                ..
            })
        ),
        "{third:?}"
    );
    assert!(a.await.unwrap().is_ok() && b.await.unwrap().is_ok());
    let snap = metrics.snapshots();
    assert_eq!(snap[0]["rejections"], 1);
}

#[tokio::test]
async fn the_remaining_budget_bounds_the_call_and_is_sent_downstream() {
    let slow = server().await;
    fault(&slow, r#"{"action":{"type":"hang"}}"#).await;
    let metrics = Metrics::new("test", "1.0.0");
    let dep = dependency(&[slow.grpc], &metrics, &[]);
    let cx = RequestContext::new().with_budget(Duration::from_millis(150));
    // The server hangs forever: only the budget can end this call.
    let r = cx.scope(check(&dep)).await;
    assert!(matches!(r, Err(RpcError::DeadlineExceeded { .. })), "{r:?}");
    // A spent budget means no call at all.
    let spent = RequestContext::new().with_budget(Duration::ZERO);
    let r = spent.scope(check(&dep)).await;
    assert!(matches!(r, Err(RpcError::DeadlineExceeded { .. })));
}

#[tokio::test]
async fn fault_admin_needs_the_token_and_rejects_bad_specs() {
    let s = server().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/admin/faults", s.admin);
    let no_token = http.post(&url).body("{}").send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    for bad in [
        "not json",
        r#"{"action":{"type":"delay","ms":-1}}"#,
        r#"{"action":{"type":"abort","code":"NOPE"}}"#,
        r#"{"action":{"type":"hang"},"percent":250}"#,
    ] {
        let r = http
            .post(&url)
            .bearer_auth(TOKEN)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 400 || r.status() == 422,
            "{bad}: {}",
            r.status()
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"]["message"].as_str().is_some());
    }
    let big = format!(
        r#"{{"operation":"{}","action":{{"type":"hang"}}}}"#,
        "x".repeat(5000)
    );
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let listed: serde_json::Value = http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        serde_json::json!([]),
        "bad specs left nothing behind"
    );
}

#[tokio::test]
async fn the_streams_open_only_with_a_token_and_cap_their_subscribers() {
    let s = server().await;
    let http = reqwest::Client::new();
    for path in ["/admin/stream", "/hystrix.stream"] {
        let url = format!("http://{}{path}", s.admin);
        // No token, a wrong one, a token in the wrong place: 401, JSON.
        for req in [
            http.get(&url),
            http.get(&url).bearer_auth("not-the-token-0123456789"),
            http.get(format!("{url}?access_token=not-the-token-0123456789")),
            http.get(&url).header("authorization", TOKEN),
        ] {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{path}");
        }
        // The admin token or the read-only viewer token, as a bearer
        // token or (for the stock Hystrix dashboard) `?access_token=`.
        for req in [
            http.get(&url).bearer_auth(TOKEN),
            http.get(&url).bearer_auth(VIEWER),
            http.get(format!("{url}?access_token={VIEWER}")),
        ] {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/event-stream")
            );
        }
        // The viewer token changes nothing.
        let r = http
            .post(format!("http://{}/admin/faults", s.admin))
            .bearer_auth(VIEWER)
            .header("content-type", "application/json")
            .body(r#"{"action":{"type":"delay","ms":1}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // At most 16 subscribers at once; a slot comes free when one leaves.
        let mut open = Vec::new();
        for _ in 0..fleet_server::hystrix::MAX_CONNECTIONS {
            let r = http.get(&url).bearer_auth(VIEWER).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            open.push(r);
        }
        let r = http.get(&url).bearer_auth(VIEWER).send().await.unwrap();
        assert_eq!(r.status(), 503, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_streams");
        drop(open.pop());
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let r = http.get(&url).bearer_auth(VIEWER).send().await.unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < give_up,
                "{path}: the slot never came free"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn admin_stream_sends_one_second_snapshots() {
    let s = server().await;
    let resp = reqwest::Client::new()
        .get(format!("http://{}/admin/stream", s.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Three ticks: each ends with one `meta` event naming the instance,
    // about a second after the one before.
    let mut resp = resp;
    let mut text = String::new();
    while text.matches("event: meta").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(3), resp.chunk())
            .await
            .expect("a tick within 3 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let metas: Vec<serde_json::Value> = text
        .split("\n\n")
        .filter(|e| e.contains("event: meta"))
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(metas.len(), 3, "{text}");
    for m in &metas {
        assert_eq!(m["service"], "target", "{m}");
        assert_eq!(m["operations"], 0, "no dependency of its own: {m}");
    }
    let times: Vec<u64> = metas
        .iter()
        .map(|m| m["time_ms"].as_u64().unwrap())
        .collect();
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!((500..=2_000).contains(&gap), "ticks {times:?}");
    }
}

/// A TCP proxy to `upstream` whose connections are all closed at once when
/// `cut` is cancelled, as the kernel closes a killed process's sockets: with
/// a FIN, or with a RST when `reset` (unread data, or `SO_LINGER` 0).
async fn cutting_proxy(
    upstream: SocketAddr,
    cut: tokio_util::sync::CancellationToken,
    reset: bool,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut up = tokio::net::TcpStream::connect(upstream).await.unwrap();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    () = cut.cancelled() => {
                        if reset {
                            down.set_zero_linger().unwrap();
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The instance dies with calls in flight on its connection (the game-day
/// "kill one instance under load"): each fails at once as a transport
/// failure — retried on another instance, counted against the instance —
/// and never as a timeout, which no layer retries and the edge answers
/// with 504. Calls written to the connection and calls still queued for it
/// when it closes (hyper cancels those) alike, with a FIN or a RST.
#[tokio::test]
async fn a_connection_closed_under_calls_in_flight_is_a_transport_failure() {
    for reset in [false, true] {
        let target = server().await;
        fault(
            &target,
            r#"{"operation":"GetTitle","action":{"type":"delay","ms":5000}}"#,
        )
        .await;
        let cut = tokio_util::sync::CancellationToken::new();
        let proxy = cutting_proxy(target.grpc, cut.clone(), reset).await;
        let metrics = Metrics::new("test", "1.0.0");
        let dep = dependency(
            &[proxy],
            &metrics,
            &[("TARGET_RETRIES", "0"), ("TARGET_BULKHEAD", "10000")],
        );
        // Connected, and the first calls on their way.
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let dep = dep.clone();
            calls.spawn(async move { check(&dep).await });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // More calls queued behind the cut.
        for _ in 0..200 {
            let dep = dep.clone();
            calls.spawn(async move { check(&dep).await });
        }
        cut.cancel();
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        while let Some(r) = calls.join_next().await {
            let err = r.unwrap().unwrap_err();
            let kind = match &err {
                RpcError::Unavailable {
                    reason: Unavailable::Transport,
                    ..
                } => "transport".to_owned(),
                other => format!("{other:?}"),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        eprintln!("reset {reset}: {kinds:?}");
        assert_eq!(
            kinds.keys().collect::<Vec<_>>(),
            ["transport"],
            "reset {reset}: {kinds:?}"
        );
    }
}
