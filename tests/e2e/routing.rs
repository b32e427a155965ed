//! Versioned routing through the real edge: weight shifts step by step
//! (each step's share of traffic measured once the edge says it applied the
//! table), an invalid table rejected whole, a rollback; on Consul, the
//! tables come from KV and a catalog whose health check fails is taken out
//! of rotation by Consul alone.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleet_edge_client::{EdgeClient, RequestOptions};
use fleet_rpc::RouteTable;
use fleet_tests::{Mode, Size, System, both_modes, scrape, sum_matching};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

both_modes!(a_weight_shift_moves_each_steps_share_and_rollback_restores_it);

/// Requests per measured step: the share of a 50 % version then has a
/// standard deviation of 1.6 points, so ±5 points is over 3 sigma.
const PER_STEP: usize = 1000;

fn table(weights: &[(&str, u32)]) -> RouteTable {
    RouteTable {
        service: "catalog".into(),
        interface: 1,
        weights: weights.iter().map(|(v, w)| ((*v).to_owned(), *w)).collect(),
        sticky: false,
    }
}

/// The edge's count of catalog route tables applied or rejected.
async fn route_updates(edge_admin: SocketAddr, outcome: &str) -> f64 {
    sum_matching(
        &scrape(edge_admin).await,
        "fleet_route_updates_total",
        &["target=\"catalog\"", &format!("outcome=\"{outcome}\"")],
    )
}

/// Waits until the edge's `outcome` count exceeds `before`.
async fn wait_update(edge_admin: SocketAddr, outcome: &str, before: f64) {
    let started = Instant::now();
    while route_updates(edge_admin, outcome).await <= before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the edge never counted the table as {outcome}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Shares (percent) of catalog minors serving `n` title requests, 8 at a
/// time.
async fn shares(c: &EdgeClient, n: usize) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut next = 0usize;
    while next < n {
        let batch: Vec<_> = (next..(next + 8).min(n))
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    let id = format!("t{:05}", 1 + i % 1000);
                    c.get_title(&id, &RequestOptions::default()).await
                })
            })
            .collect();
        next += batch.len();
        for t in batch {
            let r = t.await.unwrap().expect("every title is served");
            let catalog: Vec<&String> = r
                .served_by
                .iter()
                .filter(|s| s.starts_with("catalog/"))
                .collect();
            assert_eq!(catalog.len(), 1, "one catalog answer: {:?}", r.served_by);
            let version = catalog[0].split('/').nth(1).unwrap();
            let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
            *counts.entry(minor).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, v as f64 * 100.0 / n as f64))
        .collect()
}

fn assert_share(shares: &BTreeMap<String, f64>, minor: &str, expected: f64, step: &str) {
    let got = shares.get(minor).copied().unwrap_or(0.0);
    assert!(
        (got - expected).abs() <= 5.0,
        "{step}: {minor} served {got:.1} %, expected {expected} % ± 5: {shares:?}"
    );
}

async fn a_weight_shift_moves_each_steps_share_and_rollback_restores_it(mode: Mode) {
    let size = Size {
        catalog_v1_2: 1,
        catalog_v1_3: 1,
        ratings: 1,
        dal: 1,
    };
    let Some(mut sys) = System::start_in(mode, size, &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let edge = sys.admin_addrs("edge")[0];
    let store = sys.route_store();

    for weights in [
        vec![("1.2", 100)],
        vec![("1.2", 75), ("1.3", 25)],
        vec![("1.2", 50), ("1.3", 50)],
        vec![("1.2", 10), ("1.3", 90)],
        vec![("1.3", 100)],
    ] {
        let before = route_updates(edge, "applied").await;
        store.set(&table(&weights)).await.unwrap();
        wait_update(edge, "applied", before).await;
        let s = shares(&c, PER_STEP).await;
        let step = format!("{mode:?} step {weights:?}");
        println!("{step}: {s:?}");
        let w13 = weights
            .iter()
            .find(|(v, _)| *v == "1.3")
            .map_or(0.0, |(_, w)| f64::from(*w));
        assert_share(&s, "1.3", w13, &step);
        assert_share(&s, "1.2", 100.0 - w13, &step);
    }

    // An invalid table (weights summing to nothing) is rejected whole; the
    // last good one (all on 1.3) stays in force.
    let before = route_updates(edge, "rejected").await;
    let bad = br#"{"service":"catalog","interface":1,"weights":{"1.2":0},"sticky":false}"#;
    match &store {
        fleet_discovery::RouteStore::Dir(dir) => {
            std::fs::write(dir.join("catalog.json"), bad).unwrap();
        }
        fleet_discovery::RouteStore::Consul { client, prefix } => {
            client
                .kv_put(&format!("{prefix}catalog"), bad)
                .await
                .unwrap();
        }
    }
    wait_update(edge, "rejected", before).await;
    let s = shares(&c, 300).await;
    assert_share(&s, "1.3", 100.0, "after an invalid table");

    // A good table over the invalid one, then a rollback: the table in
    // force before the invalid write (10/90) is back, live.
    let before = route_updates(edge, "applied").await;
    store.set(&table(&[("1.2", 100)])).await.unwrap();
    wait_update(edge, "applied", before).await;
    let before = route_updates(edge, "applied").await;
    let restored = store.rollback("catalog").await.unwrap();
    assert_eq!(restored, Some(table(&[("1.2", 10), ("1.3", 90)])));
    wait_update(edge, "applied", before).await;
    let s = shares(&c, PER_STEP).await;
    assert_share(&s, "1.3", 90.0, "after the rollback");
    sys.topology.stop(Duration::from_secs(10)).await;
}

/// On Consul only: a catalog that stops answering its health check is
/// dropped from the edge's instances by Consul (no request needed to find
/// out), gets no traffic, and takes traffic again once it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_failing_its_consul_check_is_taken_out_of_rotation_and_back() {
    let size = Size {
        catalog_v1_2: 2,
        catalog_v1_3: 0,
        ratings: 1,
        dal: 1,
    };
    let Some(mut sys) = System::start_in(Mode::Real, size, &[]).await else {
        return;
    };
    let agent = sys.consul.as_ref().unwrap();
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let edge = sys.admin_addrs("edge")[0];
    let known = async || {
        sum_matching(
            &scrape(edge).await,
            "fleet_discovery_instances",
            &["target=\"catalog\""],
        )
    };
    assert_eq!(known().await, 2.0);
    let victim = sys
        .topology
        .instances()
        .find(|i| i.spec.service == "catalog")
        .map(|i| (i.spec.instance_id.clone(), i.pid))
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(victim.1).unwrap());

    // Frozen: its listeners accept, nothing answers, its check times out.
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    agent
        .wait_passing("catalog", 1, Duration::from_secs(15))
        .await;
    while known().await != 1.0 {
        assert!(
            frozen.elapsed() < Duration::from_secs(20),
            "the edge kept it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let detected = frozen.elapsed();
    for i in 0..200u32 {
        let r = c
            .get_title(&format!("t{:05}", 1 + i), &RequestOptions::default())
            .await
            .expect("served by the healthy instance");
        assert!(
            !r.served_by.iter().any(|s| s.ends_with(&victim.0)),
            "the failing instance got traffic: {:?}",
            r.served_by
        );
    }

    kill(pid, Signal::SIGCONT).unwrap();
    agent
        .wait_passing("catalog", 2, Duration::from_secs(15))
        .await;
    while known().await != 2.0 {
        assert!(
            frozen.elapsed() < Duration::from_secs(40),
            "never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut back = 0;
    for i in 0..200u32 {
        let r = c
            .get_title(&format!("t{:05}", 1 + i), &RequestOptions::default())
            .await
            .unwrap();
        back += usize::from(r.served_by.iter().any(|s| s.ends_with(&victim.0)));
    }
    println!("consul failover: out of rotation after {detected:?}; back: {back} of 200 requests");
    assert!(back > 0, "the recovered instance takes traffic again");
    sys.topology.stop(Duration::from_secs(10)).await;
}
