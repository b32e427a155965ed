//! The host on real loopback sockets: probes, gRPC health, metrics, drain.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fleet_config::Env;
use fleet_metrics::Metrics;
use fleet_server::{ServerConfig, ServiceHost};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn config() -> ServerConfig {
    ServerConfig::from_env(
        &Env::from_pairs([("READINESS_INTERVAL", "50ms"), ("SHUTDOWN_GRACE", "2s")]),
        "test",
        "GRPC_ADDR",
        "127.0.0.1:0",
        "127.0.0.1:0",
        "1.0.0",
        &["1.0"],
    )
    .unwrap()
}

async fn health(addr: std::net::SocketAddr) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn wait_for(mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 2 s");
}

#[tokio::test]
async fn readiness_drives_probes_and_grpc_health_and_sigterm_drains() {
    let host = ServiceHost::bind(config(), Metrics::new("test", "1.0.0"))
        .await
        .unwrap();
    let (grpc, admin) = (host.main_addr(), host.admin_addr());
    let dep_up = Arc::new(AtomicBool::new(false));
    let flag = dep_up.clone();
    host.readiness().add("dependency", move || {
        let up = flag.load(Ordering::SeqCst);
        async move { if up { Ok(()) } else { Err("down".to_owned()) } }
    });
    let stop = host.shutdown_token();
    let server = tokio::spawn(host.run_grpc(tonic::service::Routes::default(), &[]));
    let http = reqwest::Client::new();
    let readyz = |http: reqwest::Client| async move {
        http.get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    wait_for(async || readyz(http.clone()).await == 503).await;
    assert_eq!(health(grpc).await, ServingStatus::NotServing as i32);
    let healthz = http
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "alive even when not ready");

    dep_up.store(true, Ordering::SeqCst);
    wait_for(async || readyz(http.clone()).await == 200).await;
    wait_for(async || health(grpc).await == ServingStatus::Serving as i32).await;

    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("fleet_rpc_server_requests_total{service=\"test\",version=\"1.0.0\",target=\"test\",operation=\"Check\",code=\"OK\"}"), "{metrics}");

    stop.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        tokio::net::TcpStream::connect(grpc).await.is_err(),
        "listener closed after drain"
    );
}

async fn series(admin: std::net::SocketAddr) -> (usize, String) {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let n = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    (n, text)
}

#[tokio::test]
async fn calls_to_unknown_grpc_methods_add_no_metric_series() {
    let host = ServiceHost::bind(config(), Metrics::new("test", "1.0.0"))
        .await
        .unwrap();
    let (grpc, admin) = (host.main_addr(), host.admin_addr());
    let stop = host.shutdown_token();
    let server = tokio::spawn(host.run_grpc(tonic::service::Routes::default(), &[]));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    let mut junk = async |i: u32| {
        client.ready().await.unwrap();
        let path = format!("/junk{i}.Svc{}/Method{i}", i * 7).parse().unwrap();
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        client
            .unary(tonic::Request::new(()), path, codec)
            .await
            .unwrap_err()
            .code()
    };
    // The first unknown call creates the `other` series.
    assert_eq!(junk(0).await, tonic::Code::Unimplemented);
    let (before, _) = series(admin).await;
    for i in 1..=300 {
        assert_eq!(junk(i).await, tonic::Code::Unimplemented);
    }
    let (after, text) = series(admin).await;
    assert_eq!(before, after, "{text}");
    assert!(!text.contains("Method1"), "{text}");
    assert!(
        text.contains("operation=\"other\",code=\"UNIMPLEMENTED\"} 301"),
        "{text}"
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

#[tokio::test]
async fn fault_rules_never_touch_health_checks() {
    let host = ServiceHost::bind(config(), Metrics::new("test", "1.0.0"))
        .await
        .unwrap();
    let grpc = host.main_addr();
    // A game day delays every call of this instance.
    host.faults()
        .add(
            serde_json::from_value(serde_json::json!({"action": {"type": "delay", "ms": 3000}}))
                .unwrap(),
        )
        .unwrap();
    let stop = host.shutdown_token();
    let server = tokio::spawn(host.run_grpc(tonic::service::Routes::default(), &[]));
    // Health answers (SERVING: no checks registered) well before the
    // injected delay would have let it.
    let status = tokio::time::timeout(Duration::from_millis(2500), health(grpc))
        .await
        .expect("health check was delayed by a fault rule");
    assert_eq!(status, ServingStatus::Serving as i32);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
