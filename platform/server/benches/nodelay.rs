//! Regression benchmark for `TCP_NODELAY` on accepted sockets.
//!
//! The same tonic health service and the same axum route, once served
//! through [`fleet_server::listen`] (what every service uses) and once
//! through a plain listener with the kernel default (Nagle on). With Nagle,
//! a response's second small write waits for the ACK of the first, which
//! the client delays (~40 ms on Linux). Both variants run in one process
//! and one run, so the ratio is what to read; `nagle_*` should be slower by
//! orders of magnitude, `nodelay_*` close to a loopback round trip. If the
//! two ever converge, a listener lost its `TCP_NODELAY`.
//!
//! `cargo bench -p fleet-server --bench nodelay` (one sequential call at a
//! time on one connection, and 32 concurrent calls multiplexed on it).

// A bench reports a broken setup by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn grpc_server(nodelay: bool) -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = tonic::transport::Server::builder().add_service(health);
    if nodelay {
        tokio::spawn(router.serve_with_incoming(fleet_server::listen::grpc_incoming(listener)));
    } else {
        tokio::spawn(
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }
    addr
}

async fn http_server(nodelay: bool) -> SocketAddr {
    // A body of the size of a title's JSON (≈270 bytes).
    let body = "x".repeat(270);
    let app = axum::Router::new().route(
        "/t",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if nodelay {
        let listener = fleet_server::listen::http_listener(listener);
        tokio::spawn(async move { axum::serve(listener, app).await });
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    addr
}

fn nodelay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("one_connection");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, on) in [("nodelay", true), ("nagle", false)] {
        let addr = rt.block_on(grpc_server(on));
        // tonic's client sets TCP_NODELAY itself: only the server differs.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let client = HealthClient::new(channel);
        rt.block_on(client.clone().check(HealthCheckRequest::default()))
            .unwrap();
        g.bench_function(format!("{name}_grpc_unary"), |b| {
            b.to_async(&rt).iter(|| {
                let mut client = client.clone();
                async move { client.check(HealthCheckRequest::default()).await.unwrap() }
            });
        });
        // 32 calls in flight on the one HTTP/2 connection, as a busy
        // caller has them: responses to different streams leave in
        // separate small writes, which is where Nagle holds them back.
        g.bench_function(format!("{name}_grpc_32_concurrent"), |b| {
            b.to_async(&rt).iter(|| {
                let client = client.clone();
                async move {
                    let calls = (0..32).map(|_| {
                        let mut client = client.clone();
                        async move { client.check(HealthCheckRequest::default()).await }
                    });
                    for answer in futures::future::join_all(calls).await {
                        answer.unwrap();
                    }
                }
            });
        });

        let addr = rt.block_on(http_server(on));
        // One keep-alive connection; reqwest sets TCP_NODELAY on its side.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let url = format!("http://{addr}/t");
        rt.block_on(http.get(&url).send()).unwrap();
        g.bench_function(format!("{name}_http_get"), |b| {
            b.to_async(&rt).iter(|| {
                let http = http.clone();
                let url = url.clone();
                async move { http.get(url).send().await.unwrap().bytes().await.unwrap() }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, nodelay);
criterion_main!(benches);
