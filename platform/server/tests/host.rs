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
