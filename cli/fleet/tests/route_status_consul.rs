//! `fleet route set|rollback` and `fleet status` against a real Consul
//! agent (`scripts/backends up consul` → `FLEET_TEST_CONSUL_HTTP_ADDR`):
//! a table set with the CLI reaches a watching client, a rollback restores
//! the old one within 5 s, and status lists instances with version, zone
//! and health.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser as _;
use fleet_discovery::{ConsulClient, Discovery, DiscoveryConfig, HealthCheck, Registration};

fn consul_addr() -> Option<String> {
    fleet_testkit::backend("FLEET_TEST_CONSUL_HTTP_ADDR")
}

fn unique(prefix: &str) -> &'static str {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        & 0xff_ffff;
    Box::leak(format!("{prefix}-{n:x}").into_boxed_str())
}

async fn fleet(args: &[&str]) {
    let cli =
        fleet::Cli::try_parse_from(std::iter::once("fleet").chain(args.iter().copied())).unwrap();
    match cli.command {
        fleet::Command::Route(a) => fleet::route::run(a).await.unwrap(),
        fleet::Command::Status(a) => fleet::status::run(a).await.unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_set_reaches_clients_and_rollback_restores_the_old_table_within_5s() {
    let Some(consul) = consul_addr() else { return };
    let service = unique("cli");
    let metrics = fleet_metrics::Metrics::new("test", "1.0.0");
    let discovery = Discovery::new(
        DiscoveryConfig {
            consul_addr: Some(consul.clone()),
            ..DiscoveryConfig::default()
        },
        &metrics,
    )
    .unwrap();
    let mut rx = discovery.routes(service).await;
    assert!(rx.borrow_and_update().is_none());

    let c = consul.as_str();
    fleet(&[
        "route",
        "set",
        "--service",
        service,
        "--consul",
        c,
        "--weights",
        "1.2=90,1.3=10",
    ])
    .await;
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let weights = |rx: &tokio::sync::watch::Receiver<_>| -> BTreeMap<String, u32> {
        let t: &Option<std::sync::Arc<fleet_rpc::RouteTable>> = &rx.borrow();
        t.as_ref().unwrap().weights.clone()
    };
    assert_eq!(weights(&rx)["1.3"], 10);

    let t0 = Instant::now();
    fleet(&[
        "route",
        "set",
        "--service",
        service,
        "--consul",
        c,
        "--weights",
        "1.3=100",
    ])
    .await;
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let set_ms = t0.elapsed().as_millis();
    assert_eq!(weights(&rx), BTreeMap::from([("1.3".to_owned(), 100)]));

    // Invalid: refused by the CLI before anything is written.
    let cli = fleet::Cli::try_parse_from([
        "fleet",
        "route",
        "set",
        "--service",
        service,
        "--consul",
        c,
        "--weights",
        "1.2=0",
    ])
    .unwrap();
    let fleet::Command::Route(a) = cli.command else {
        panic!()
    };
    assert!(fleet::route::run(a).await.is_err());

    let t1 = Instant::now();
    fleet(&["route", "rollback", "--service", service, "--consul", c]).await;
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let rollback_ms = t1.elapsed().as_millis();
    assert_eq!(weights(&rx)["1.2"], 90);
    assert_eq!(weights(&rx)["1.3"], 10);
    fleet(&["route", "show", "--service", service, "--consul", c]).await;
    println!("FIGURE cli_route_set_to_client_ms={set_ms} cli_rollback_to_client_ms={rollback_ms}");
}

#[tokio::test]
async fn status_lists_instances_with_version_zone_and_health() {
    let Some(consul) = consul_addr() else { return };
    let client = ConsulClient::new(&consul).unwrap();
    let service = unique("status");
    let id = format!("{service}-1");
    client
        .register(&Registration {
            name: service.to_owned(),
            id: id.clone(),
            address: "127.0.0.1".into(),
            port: 9,
            meta: BTreeMap::from([
                ("version".to_owned(), "1.3.0".to_owned()),
                ("zone".to_owned(), "z9".to_owned()),
            ]),
            tags: vec![],
            // Nothing listens there: the check goes critical.
            check: HealthCheck::Http("http://127.0.0.1:9/readyz".into()),
            check_interval: Duration::from_secs(1),
            deregister_after: Duration::from_secs(60),
        })
        .await
        .unwrap();
    let rows = fleet::status::from_consul(&consul).await.unwrap();
    let row = rows.iter().find(|r| r.instance_id == id).expect("listed");
    assert_eq!(row.service, service);
    assert_eq!(row.version, "1.3.0");
    assert_eq!(row.zone, "z9");
    assert_eq!(row.health, "critical");
    fleet(&["status", "--consul", &consul]).await;
    client.deregister(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_the_first_set_restores_no_table_and_clients_see_none() {
    let Some(consul) = consul_addr() else { return };
    let service = unique("none");
    let metrics = fleet_metrics::Metrics::new("test", "1.0.0");
    let discovery = Discovery::new(
        DiscoveryConfig {
            consul_addr: Some(consul.clone()),
            ..DiscoveryConfig::default()
        },
        &metrics,
    )
    .unwrap();
    let mut rx = discovery.routes(service).await;
    assert!(rx.borrow_and_update().is_none(), "no table to begin with");
    let c = consul.as_str();
    fleet(&[
        "route",
        "set",
        "--service",
        service,
        "--consul",
        c,
        "--weights",
        "1.3=100",
    ])
    .await;
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(rx.borrow_and_update().is_some());

    fleet(&["route", "rollback", "--service", service, "--consul", c]).await;
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        rx.borrow_and_update().is_none(),
        "back to every eligible version"
    );
    let store = fleet_discovery::RouteStore::Consul {
        client: ConsulClient::new(c).unwrap(),
        prefix: fleet_discovery::DEFAULT_KV_PREFIX.to_owned(),
    };
    assert_eq!(store.show(service).await.unwrap(), None);
    // And forward again: the rolled-back table is the previous now.
    fleet(&["route", "rollback", "--service", service, "--consul", c]).await;
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let weights = rx.borrow().as_ref().map(|t| t.weights.clone());
    assert_eq!(weights, Some(BTreeMap::from([("1.3".to_owned(), 100)])));
}
