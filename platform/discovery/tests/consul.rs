//! Discovery and version-aware routing against a real Consul agent
//! (`scripts/backends up consul` → `FLEET_TEST_CONSUL_HTTP_ADDR`).
//!
//! Every instance is a real `ServiceHost` on loopback (gRPC health +
//! reflection, admin port with `/readyz`), registered by the host itself;
//! clients are real `Dependency`s fed by `Discovery`. Calls go to
//! `grpc.health.v1.Health/Check`; `x-fleet-served-by` says which instance
//! (and version) answered. Each test uses service names of its own, so tests
//! share the agent without seeing each other. Figures are printed as
//! `FIGURE …` lines.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_context::RequestContext;
use fleet_discovery::ConsulClient;

mod support;
use support::*;

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_register_with_identity_and_deregister_on_sigterm_before_draining() {
    let Some(consul) = consul_addr() else { return };
    let c = ConsulClient::new(&consul).unwrap();
    let service = unique("reg");
    let inst = Running::start(&consul, service, "1.3.2", "1s");
    let id = inst.id.clone();
    let t = wait_until(
        "registered and passing",
        Duration::from_secs(10),
        async || passing(&c, service).await == [id.clone()],
    )
    .await;
    println!("FIGURE registration_to_passing_ms={}", t.as_millis());
    let entry = c
        .health_service(service, true, None, Duration::ZERO)
        .await
        .unwrap()
        .value
        .remove(0);
    assert_eq!(entry.port, inst.addr.port());
    assert_eq!(entry.address, "127.0.0.1");
    assert_eq!(entry.meta["version"], "1.3.2");
    assert_eq!(entry.meta["interface"], "1");
    assert_eq!(entry.meta["zone"], "test-zone");
    assert!(entry.meta["admin_port"].parse::<u16>().unwrap() > 0);
    assert!(
        entry.tags.contains(&"v1.3.2".to_owned()),
        "{:?}",
        entry.tags
    );
    assert_eq!(entry.health, "passing");

    // SIGTERM: gone from Consul while the instance is still draining
    // (DRAIN_DELAY 1 s), i.e. before its listener closes.
    let shutdown = inst.shutdown.clone();
    let started = Instant::now();
    shutdown.cancel();
    let gone = wait_until("deregistered", Duration::from_secs(5), async || {
        c.health_service(service, false, None, Duration::ZERO)
            .await
            .unwrap()
            .value
            .is_empty()
    })
    .await;
    assert!(
        gone < Duration::from_millis(900),
        "deregistered after {gone:?}, not before draining"
    );
    println!("FIGURE sigterm_to_deregistered_ms={}", gone.as_millis());
    inst.stop().await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "drain delay honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_drops_out_through_its_failing_check() {
    let Some(consul) = consul_addr() else { return };
    let c = ConsulClient::new(&consul).unwrap();
    let service = unique("crash");
    let a = Running::start(&consul, service, "1.0.0", "0s");
    let b = Running::start(&consul, service, "1.0.0", "0s");
    let dep = client(&consul, service, 1).await;
    wait_eligible(&dep, 2).await;
    let crashed = b.id.clone();
    b.crash();
    let t = wait_until(
        "crashed instance leaves the client",
        Duration::from_secs(10),
        async || dep.instances().iter().all(|i| i.id.as_str() != crashed),
    )
    .await;
    println!("FIGURE crash_to_removed_from_client_ms={}", t.as_millis());
    // Still registered (critical) until DeregisterCriticalServiceAfter.
    let all = c
        .health_service(service, false, None, Duration::ZERO)
        .await
        .unwrap()
        .value;
    let row = all
        .iter()
        .find(|e| e.id == crashed)
        .expect("still registered");
    assert_eq!(row.health, "critical");
    for _ in 0..50 {
        let who = call(&dep, RequestContext::new()).await.unwrap();
        assert!(who.ends_with(&a.id), "{who}");
    }
    a.stop().await;
    // The crashed one is deregistered by Consul after a minute; tidy up.
    c.deregister(&crashed).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_takes_traffic_within_2s_and_a_removed_one_gets_none() {
    let Some(consul) = consul_addr() else { return };
    let c = ConsulClient::new(&consul).unwrap();
    let service = unique("join");
    let a = Running::start(&consul, service, "1.0.0", "500ms");
    let dep = client(&consul, service, 1).await;
    wait_eligible(&dep, 1).await;

    // Steady traffic; each call's start time and who served it.
    let log: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (dep, log, stop) = (dep.clone(), log.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                match call(&dep, RequestContext::new()).await {
                    Ok(who) => log.lock().unwrap().push((at, who)),
                    Err(_) => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failures
        }));
    }

    let b_started = Instant::now();
    let b = Running::start(&consul, service, "1.0.0", "500ms");
    let b_id = b.id.clone();
    wait_until(
        "new instance passing",
        Duration::from_secs(10),
        async || passing(&c, service).await.contains(&b_id),
    )
    .await;
    let took = wait_until(
        "new instance takes traffic",
        Duration::from_secs(5),
        async || log.lock().unwrap().iter().any(|(_, w)| w.ends_with(&b_id)),
    )
    .await;
    println!(
        "FIGURE passing_to_first_request_ms={} (check seen passing by polling every 10 ms); start_to_first_request_ms={}",
        took.as_millis(),
        b_started.elapsed().as_millis()
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // Remove b gracefully; once the watch has fired, no new call goes to it.
    let watcher = dep.clone();
    let b_gone = b_id.clone();
    let fired = tokio::spawn(async move {
        loop {
            if watcher.instances().iter().all(|i| i.id.as_str() != b_gone) {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let stopping = Instant::now();
    let b_stop = tokio::spawn(b.stop());
    let fired_at = fired.await.unwrap();
    println!(
        "FIGURE sigterm_to_watch_fired_ms={}",
        (fired_at - stopping).as_millis()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for l in load {
        failures += l.await.unwrap();
    }
    b_stop.await.unwrap();
    let log = log.lock().unwrap().clone();
    let late: Vec<_> = log
        .iter()
        .filter(|(at, w)| w.ends_with(&b_id) && *at > fired_at)
        .collect();
    assert!(
        late.is_empty(),
        "{} calls went to b after the watch fired",
        late.len()
    );
    assert_eq!(failures, 0, "no call failed while instances came and went");
    println!("FIGURE join_leave_calls={} failures={failures}", log.len());
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_clients_never_reach_2x_and_v2_clients_only_reach_2x() {
    let Some(consul) = consul_addr() else { return };
    let service = unique("major");
    let v1 = Running::start(&consul, service, "1.3.0", "0s");
    let v2 = Running::start(&consul, service, "2.0.0", "0s");
    let c1 = client(&consul, service, 1).await;
    let c2 = client(&consul, service, 2).await;
    wait_eligible(&c1, 1).await;
    wait_eligible(&c2, 1).await;
    let s1 = spread(&c1, 1000).await;
    let s2 = spread(&c2, 1000).await;
    assert_eq!(s1, BTreeMap::from([("1.3".to_owned(), 1000)]));
    assert_eq!(s2, BTreeMap::from([("2.0".to_owned(), 1000)]));
    v1.stop().await;
    v2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_table_splits_10000_requests_within_3_percent() {
    let Some(consul) = consul_addr() else { return };
    let service = unique("split");
    store(&consul)
        .set(&table(service, &[("1.2", 90), ("1.3", 10)], false))
        .await
        .unwrap();
    let a = Running::start(&consul, service, "1.2.4", "0s");
    let b = Running::start(&consul, service, "1.3.0", "0s");
    let dep = client(&consul, service, 1).await;
    wait_eligible(&dep, 2).await;
    assert!(dep.route_table().is_some());
    let s = spread(&dep, 10_000).await;
    let to_13 = s.get("1.3").copied().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let share = to_13 as f64 / 10_000.0 * 100.0;
    println!("FIGURE split_90_10: 1.3 got {to_13}/10000 = {share:.2}% (target 10 ± 3)");
    assert!((7.0..=13.0).contains(&share), "{s:?}");
    assert_eq!(s.values().sum::<usize>(), 10_000);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pin_header_wins_and_cohorts_stay_on_one_version() {
    let Some(consul) = consul_addr() else { return };
    let service = unique("cohort");
    store(&consul)
        .set(&table(service, &[("1.2", 50), ("1.3", 50)], true))
        .await
        .unwrap();
    let a = Running::start(&consul, service, "1.2.4", "0s");
    let b = Running::start(&consul, service, "1.3.0", "0s");
    let dep = client(&consul, service, 1).await;
    wait_eligible(&dep, 2).await;

    let header = http::HeaderName::from_bytes(format!("x-version-{service}").as_bytes()).unwrap();
    for _ in 0..200 {
        let cx = RequestContext::new()
            .with_cohort_key("u00001")
            .with_propagated(header.clone(), http::HeaderValue::from_static("1.3"));
        assert_eq!(minor_of(&call(&dep, cx).await.unwrap()), "1.3");
        let cx = RequestContext::new()
            .with_propagated(header.clone(), http::HeaderValue::from_static("1.2"));
        assert_eq!(minor_of(&call(&dep, cx).await.unwrap()), "1.2");
    }

    let mut per_version: BTreeMap<String, usize> = BTreeMap::new();
    for u in 0..200 {
        let user = format!("u{u:05}");
        let first = minor_of(
            &call(&dep, RequestContext::new().with_cohort_key(user.clone()))
                .await
                .unwrap(),
        );
        for _ in 0..20 {
            let again = call(&dep, RequestContext::new().with_cohort_key(user.clone()))
                .await
                .unwrap();
            assert_eq!(minor_of(&again), first, "{user} moved");
        }
        *per_version.entry(first).or_default() += 1;
    }
    println!(
        "FIGURE cohorts_50_50: users per version {per_version:?} (200 users × 21 calls, none moved)"
    );
    assert!(per_version.len() == 2 && per_version.values().all(|n| *n >= 60));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_set_takes_effect_and_rollback_restores_the_old_split_within_5s() {
    let Some(consul) = consul_addr() else { return };
    let service = unique("rollback");
    let routes = store(&consul);
    let old = table(service, &[("1.2", 90), ("1.3", 10)], false);
    routes.set(&old).await.unwrap();
    let a = Running::start(&consul, service, "1.2.4", "0s");
    let b = Running::start(&consul, service, "1.3.0", "0s");
    let dep = client(&consul, service, 1).await;
    wait_eligible(&dep, 2).await;

    let new = table(service, &[("1.3", 100)], false);
    let t0 = Instant::now();
    routes.set(&new).await.unwrap();
    wait_until("new table applied", Duration::from_secs(5), async || {
        dep.route_table().as_deref() == Some(&new)
    })
    .await;
    let applied = t0.elapsed();
    let s = spread(&dep, 1000).await;
    assert_eq!(s, BTreeMap::from([("1.3".to_owned(), 1000)]));
    println!("FIGURE route_set_to_applied_ms={}", applied.as_millis());

    // An invalid table is rejected whole; the last good one stays.
    ConsulClient::new(&consul)
        .unwrap()
        .kv_put(
            &format!("fleet/routes/{service}"),
            br#"{"service":"x","interface":1,"weights":{"1.2":0}}"#,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dep.route_table().as_deref(), Some(&new));
    routes.set(&new).await.unwrap();

    let t1 = Instant::now();
    let restored = routes.rollback(service).await.unwrap();
    assert_eq!(restored, Some(old.clone()));
    wait_until("rollback applied", Duration::from_secs(5), async || {
        dep.route_table().as_deref() == Some(&old)
    })
    .await;
    let back = t1.elapsed();
    let s = spread(&dep, 2000).await;
    let share = s.get("1.3").copied().unwrap_or(0) as f64 / 20.0;
    println!(
        "FIGURE rollback_to_applied_ms={} (old split back: 1.3 share {share:.1}% of 2000)",
        back.as_millis()
    );
    assert!(back < Duration::from_secs(5));
    assert!((7.0..=13.0).contains(&share), "{s:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shift_from_1_2_to_1_3_under_steady_load_fails_no_request() {
    let Some(consul) = consul_addr() else { return };
    let service = unique("shift");
    let routes = store(&consul);
    routes
        .set(&table(service, &[("1.2", 100), ("1.3", 0)], false))
        .await
        .unwrap();
    let old = [
        Running::start(&consul, service, "1.2.4", "300ms"),
        Running::start(&consul, service, "1.2.4", "300ms"),
    ];
    let dep = client(&consul, service, 1).await;
    wait_eligible(&dep, 2).await;

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let by_version: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (dep, ok, failed, by_version, stop) = (
            dep.clone(),
            ok.clone(),
            failed.clone(),
            by_version.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match call(&dep, RequestContext::new()).await {
                    Ok(who) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        *by_version
                            .lock()
                            .unwrap()
                            .entry(minor_of(&who))
                            .or_default() += 1;
                    }
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    let started = Instant::now();
    // Deploy 1.3 beside 1.2 (no traffic yet: weight 0).
    let new = [
        Running::start(&consul, service, "1.3.0", "300ms"),
        Running::start(&consul, service, "1.3.0", "300ms"),
    ];
    wait_eligible(&dep, 4).await;
    // Shift in steps.
    for (w12, w13) in [(90, 10), (75, 25), (50, 50), (25, 75), (0, 100)] {
        routes
            .set(&table(service, &[("1.2", w12), ("1.3", w13)], false))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Retire 1.2: SIGTERM (deregister, then drain) under load.
    for inst in old {
        inst.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "FIGURE shift_1_2_to_1_3: {ok} requests in {:?}, {} failed, by version {:?}",
        started.elapsed(),
        failed.len(),
        by_version.lock().unwrap()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 1000);
    assert_eq!(dep.instances().len(), 2);
    assert!(dep.instances().iter().all(|i| i.version.minor == 3));
    for inst in new {
        inst.stop().await;
    }
}
