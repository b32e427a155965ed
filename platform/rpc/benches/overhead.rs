//! Per-call cost of the resilience stack: the same unary gRPC call to the
//! same in-process server, once through a bare tonic client on one channel
//! (the baseline) and once through `Dependency::unary` (deadline and
//! metadata propagation, bulkhead, breaker, balancer with ejection, retry
//! budget, metrics). Both in one run, so the ratio is what to read.
//!
//! `cargo bench -p fleet-rpc --bench overhead`

// A bench reports a broken setup by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fleet_metrics::Metrics;
use fleet_rpc::{CallOptions, Dependency, DependencyConfig, InstanceSource, Operation};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

static CHECK: Operation = Operation::new("/grpc.health.v1.Health/Check", "Check", true);

async fn server() -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(server());
    // Channels and clients spawn their connection tasks on this runtime.
    let _guard = rt.enter();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let bare = HealthClient::new(channel);
    let dep = {
        let instances =
            fleet_rpc::parse_instances(&addr.to_string(), &semver::Version::new(1, 0, 0)).unwrap();
        Dependency::new(
            DependencyConfig::new("target", "bench", 1),
            InstanceSource::Static(instances),
            Metrics::new("bench", "0.0.0").grpc_client(),
        )
    };
    let req = || HealthCheckRequest {
        service: String::new(),
    };
    // Warm both paths (connections up, breaker state created).
    rt.block_on(async {
        bare.clone().check(req()).await.unwrap();
        dep.unary::<_, tonic_health::pb::HealthCheckResponse>(
            &CHECK,
            req(),
            CallOptions::timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    });

    let mut g = c.benchmark_group("unary_call");
    g.bench_function("bare_tonic", |b| {
        b.to_async(&rt).iter(|| {
            let mut client = bare.clone();
            async move { client.check(req()).await.unwrap() }
        });
    });
    g.bench_function("resilience_stack", |b| {
        b.to_async(&rt).iter(|| {
            let dep = dep.clone();
            async move {
                dep.unary::<_, tonic_health::pb::HealthCheckResponse>(
                    &CHECK,
                    req(),
                    CallOptions::timeout(Duration::from_secs(2)),
                )
                .await
                .unwrap()
            }
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = overhead
}
criterion_main!(benches);
