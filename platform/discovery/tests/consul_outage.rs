//! A Consul outage: clients keep the last known instances (stale but
//! serving) and say so in `/metrics`. Restarts the test agent
//! (`$FLEET_TEST_BACKENDS_CTL restart consul`), so it is a test binary of its
//! own (cargo runs test binaries one at a time).

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fleet_context::RequestContext;
use fleet_rpc::DependencyConfig;

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_outage_keeps_the_last_known_instances_and_reports_staleness() {
    let Some(consul) = consul_addr() else { return };
    let Some(ctl) = fleet_testkit::backend("FLEET_TEST_BACKENDS_CTL") else {
        return;
    };
    let service = unique("outage");
    let inst = Running::start(&consul, service, "1.0.0", "0s");
    let (discovery, metrics) = discovery(&consul);
    let mut cfg = DependencyConfig::new(service, "test", 1);
    cfg.breaker.enabled = false;
    let dep = discovery
        .dependency(cfg, Vec::new(), metrics.grpc_client())
        .await;
    wait_eligible(&dep, 1).await;
    assert!(!discovery.metrics().is_stale(service));

    let restart = tokio::task::spawn_blocking(move || {
        std::process::Command::new(ctl)
            .args(["restart", "consul"])
            .status()
    });
    let started = Instant::now();
    let mut stale_seen = None;
    let mut calls_while_stale = 0;
    while !restart.is_finished() {
        if discovery.metrics().is_stale(service) {
            stale_seen.get_or_insert(started.elapsed());
            let known = dep.instances().len();
            let served = call(&dep, RequestContext::new()).await;
            // Consul may answer again between the check above and the
            // call: the restarted agent has forgotten the instance (it
            // registers again below), and that answer rightly replaces the
            // last known list. Only a call that failed while the outage
            // lasted, on the list it left, breaks the promise.
            if discovery.metrics().is_stale(service) && dep.instances().len() == 1 {
                assert_eq!(known, 1, "the last known list stays");
                served.expect("served from the stale list");
                calls_while_stale += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = restart.await.unwrap().unwrap();
    assert!(status.success(), "restart consul: {status}");
    let stale_seen = stale_seen.expect("the outage was noticed");
    assert!(calls_while_stale > 0, "no call was made during the outage");
    let text = metrics.encode();
    assert!(
        text.contains(&format!("fleet_discovery_errors_total{{service=\"test-client\",version=\"1.0.0\",target=\"{service}\"}}")),
        "{text}"
    );
    println!(
        "FIGURE consul_outage: stale after {}ms, {calls_while_stale} calls served from the last known list, outage+restart {:?}",
        stale_seen.as_millis(),
        started.elapsed()
    );
    // Consul answers again: staleness clears, and the instance registers
    // itself again (the dev agent forgot it) and stays in the list.
    wait_until(
        "discovery answers again",
        Duration::from_secs(30),
        async || !discovery.metrics().is_stale(service),
    )
    .await;
    let c = fleet_discovery::ConsulClient::new(&consul).unwrap();
    let id = inst.id.clone();
    let back = wait_until(
        "re-registered and passing",
        Duration::from_secs(20),
        async || passing(&c, service).await == [id.clone()],
    )
    .await;
    wait_eligible(&dep, 1).await;
    println!(
        "FIGURE consul_restart_to_reregistered_passing_ms={}",
        back.as_millis()
    );
    inst.stop().await;
}
