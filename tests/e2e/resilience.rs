//! The resilience patterns on the real binaries, under steady open-loop
//! load: failover when an instance dies, deadline budgets and the circuit
//! breaker when a dependency slows down, bulkhead isolation, and load
//! shedding. Each test prints the figures it measured (`--nocapture`).
//! Every scenario runs on the embedded default (`embedded::…`) and on
//! Cassandra, Redis and Consul (`real::…`).

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleet_edge_client::{EdgeClient, EdgeError, RequestOptions};
use fleet_tests::{Mode, Size, System, add_fault, both_modes, clear_faults, scrape, sum_matching};
use serde_json::json;

/// One request of an open-loop run: when it was due, how long it took from
/// then (the honest response time), and how it ended.
struct Sample<T> {
    due: Duration,
    latency: Duration,
    result: Result<T, EdgeError>,
}

/// Sends `f()` at `rate` per second for `duration`, on the clock (open
/// loop: a slow answer never delays the next send).
async fn open_loop<T, F, Fut>(rate: u32, duration: Duration, f: F) -> Vec<Sample<T>>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<T, EdgeError>> + Send + 'static,
{
    let start = tokio::time::Instant::now();
    let total = u64::from(rate) * duration.as_millis() as u64 / 1000;
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + Duration::from_micros(i * 1_000_000 / u64::from(rate));
        tokio::time::sleep_until(due).await;
        let call = f(i);
        tasks.push(tokio::spawn(async move {
            let result = call.await;
            Sample {
                due: due - start,
                latency: due.elapsed(),
                result,
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn p99<T>(samples: &[Sample<T>]) -> Duration {
    let mut l: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    l.sort();
    l.get((l.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

fn opts() -> RequestOptions {
    RequestOptions::default()
}

fn title(i: u64) -> String {
    format!("t{:05}", 1 + i % 1000)
}

/// The edge's circuit state toward `target`/`operation` (0 closed, 1 open,
/// 2 half-open).
async fn circuit(edge_admin: SocketAddr, target: &str, operation: &str) -> f64 {
    let text = scrape(edge_admin).await;
    sum_matching(
        &text,
        "fleet_circuit_state",
        &[
            &format!("target=\"{target}\""),
            &format!("operation=\"{operation}\""),
        ],
    )
}

/// Polls until the circuit toward `target`/`operation` is in `state`;
/// returns how long that took (None when it never was within `limit`).
async fn wait_circuit(
    edge_admin: SocketAddr,
    target: &str,
    operation: &str,
    state: f64,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if (circuit(edge_admin, target, operation).await - state).abs() < f64::EPSILON {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

both_modes!(
    one_catalog_instance_killed_under_steady_load_costs_under_a_thousandth,
    a_slow_ratings_service_degrades_home_pages_within_budget_and_trips_the_breaker,
    a_hard_down_dependency_is_cut_off_within_a_second_at_100_per_second,
    a_full_bulkhead_toward_ratings_leaves_catalog_calls_alone,
    pushed_past_its_limit_the_edge_sheds_with_503_instead_of_timing_out,
    the_only_canary_killed_at_100_per_second_its_sticky_cohort_falls_back,
    a_dal_outage_is_not_retried_at_every_hop_and_ejects_no_middle_instance,
);

fn edge_admin(sys: &System) -> SocketAddr {
    sys.admin_addrs("edge")[0]
}

async fn one_catalog_instance_killed_under_steady_load_costs_under_a_thousandth(mode: Mode) {
    let size = Size {
        catalog_v1_2: 2,
        catalog_v1_3: 1,
        ratings: 2,
        dal: 1,
    };
    let Some(mut sys) = System::start_in(mode, size, &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let victim = sys
        .topology
        .instances()
        .find(|i| i.spec.service == "catalog")
        .map(|i| i.spec.instance_id.clone())
        .unwrap();
    let load = tokio::spawn(open_loop(100, Duration::from_secs(6), move |i| {
        let c = c.clone();
        async move { c.get_title(&title(i), &opts()).await }
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;
    sys.topology.instance_mut(&victim).unwrap().kill().unwrap();
    let samples = load.await.unwrap();

    let failed: Vec<_> = samples
        .iter()
        .filter_map(|s| s.result.as_ref().err().map(|e| (s.due, e)))
        .collect();
    let success = 1.0 - failed.len() as f64 / samples.len() as f64;
    println!(
        "kill one catalog at 100 req/s: {} requests, success {:.4}, p99 {:?}",
        samples.len(),
        success,
        p99(&samples)
    );
    assert!(success >= 0.999, "success {success}: {failed:?}");
    sys.topology.stop(Duration::from_secs(10)).await;
}

async fn a_slow_ratings_service_degrades_home_pages_within_budget_and_trips_the_breaker(
    mode: Mode,
) {
    let Some(mut sys) =
        System::start_in(mode, Size::default(), &[("RATINGS_BREAKER_SLEEP", "1s")]).await
    else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let edge = edge_admin(&sys);
    let before = scrape(edge).await;

    for admin in sys.admin_addrs("ratings") {
        add_fault(admin, json!({"action": {"type": "delay", "ms": 2000}})).await;
    }
    let cc = c.clone();
    let load = tokio::spawn(open_loop(50, Duration::from_secs(5), move |i| {
        let c = cc.clone();
        async move { c.home(&format!("u{:05}", 1 + i % 500), &opts()).await }
    }));
    let opened = wait_circuit(
        edge,
        "ratings",
        "ContinueWatching",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let samples = load.await.unwrap();
    let time_to_open = opened;

    let ok: Vec<_> = samples
        .iter()
        .filter_map(|s| s.result.as_ref().ok())
        .collect();
    let degraded = ok.iter().filter(|r| !r.value.degraded.is_empty()).count();
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    println!(
        "ratings +2 s: {} home pages, {} ok, {} degraded, p99 {:?}, max {:?}, breaker open after {:?}",
        samples.len(),
        ok.len(),
        degraded,
        p99(&samples),
        slowest,
        time_to_open
    );
    assert_eq!(
        ok.len(),
        samples.len(),
        "every home page answered (degraded)"
    );
    assert_eq!(degraded, ok.len(), "every one says what degraded");
    // The route's budget is 1 s (the ratings rows get half of it); the
    // promise is 1.2 s at most. Nobody waited for the 2 s delay.
    assert!(slowest <= Duration::from_millis(1200), "{slowest:?}");
    assert!(time_to_open.is_some(), "the breaker opened");

    // Attempts per request stayed within the retry budget.
    let after = scrape(edge).await;
    let delta = |name: &str, incl: &[&str]| {
        sum_matching(&after, name, incl) - sum_matching(&before, name, incl)
    };
    let calls = delta("fleet_rpc_client_requests_total", &["target=\"ratings\""]);
    let refused = delta("fleet_rpc_client_refused_total", &["target=\"ratings\""]);
    let retries = delta("fleet_rpc_client_retries_total", &["target=\"ratings\""]);
    let ratio = (calls - refused + retries) / calls;
    println!(
        "ratings +2 s: {calls} calls, {refused} refused by the breaker, {retries} retries, attempts/requests {ratio:.3}"
    );
    assert!(ratio <= 1.1, "attempts/requests {ratio}");

    // Cleared: the half-open trial succeeds and the circuit closes.
    for admin in sys.admin_addrs("ratings") {
        clear_faults(admin).await;
    }
    let cleared = Instant::now();
    let mut closed = false;
    while cleared.elapsed() < Duration::from_secs(10) {
        let _ = c.home("u00001", &opts()).await;
        // Every ratings operation's circuit (the home page calls more than
        // one; each has its own breaker), not only the one watched above.
        let open = sum_matching(
            &scrape(edge).await,
            "fleet_circuit_state",
            &["target=\"ratings\""],
        );
        if open == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "ratings cleared: circuit closed after {:?}",
        cleared.elapsed()
    );
    assert!(
        closed,
        "the breaker closed again after the fault was cleared"
    );
    // Whole home pages again: the circuits are closed, but an instance
    // ejected while slow or an admission median still made of the slow
    // period's cut-off calls can refuse a call for a moment (seen once in
    // CI: one page degraded right after the circuits closed). Bounded by
    // the admission median's window (10 s).
    let whole_after = Instant::now();
    let mut last = Vec::new();
    let whole = loop {
        let home = c.home("u00001", &opts()).await.unwrap().value;
        if home.degraded.is_empty() {
            break true;
        }
        last = home.degraded;
        if whole_after.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "ratings cleared: home pages whole {:?} after the circuits closed",
        whole_after.elapsed()
    );
    assert!(
        whole,
        "still degraded 10 s after the circuits closed: {last:?}"
    );
    sys.topology.stop(Duration::from_secs(10)).await;
}

async fn a_hard_down_dependency_is_cut_off_within_a_second_at_100_per_second(mode: Mode) {
    let Some(mut sys) = System::start_in(mode, Size::default(), &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let edge = edge_admin(&sys);
    for admin in sys.admin_addrs("ratings") {
        add_fault(admin, json!({"operation": "GetSummaries", "action": {"type": "abort", "code": "UNAVAILABLE"}})).await;
    }
    let cc = c.clone();
    let load = tokio::spawn(open_loop(100, Duration::from_secs(3), move |i| {
        let c = cc.clone();
        async move { c.get_title(&title(i), &opts()).await }
    }));
    let opened = wait_circuit(edge, "ratings", "GetSummaries", 1.0, Duration::from_secs(3)).await;
    let samples = load.await.unwrap();
    println!(
        "ratings GetSummaries aborting at 100 req/s: breaker open after {opened:?}; {} titles, p99 {:?}",
        samples.len(),
        p99(&samples)
    );
    assert!(
        samples.iter().all(|s| s.result.is_ok()),
        "titles are served without their summaries"
    );
    let opened = opened.expect("the breaker opened");
    // The pattern table promises 1 s (the poll adds up to 25 ms).
    assert!(opened <= Duration::from_secs(1), "{opened:?}");

    // While the circuit is open the ratings instances serve no more
    // GetSummaries (the 5 s sleep window has no half-open trial in it).
    let summaries_served = |sys: &System| {
        let addrs = sys.admin_addrs("ratings");
        async move {
            let mut n = 0.0;
            for a in addrs {
                n += sum_matching(
                    &scrape(a).await,
                    "fleet_rpc_server_requests_total",
                    &["operation=\"GetSummaries\""],
                );
            }
            n
        }
    };
    if (circuit(edge, "ratings", "GetSummaries").await - 1.0).abs() < f64::EPSILON {
        let before = summaries_served(&sys).await;
        let cc = c.clone();
        let more = open_loop(100, Duration::from_millis(500), move |i| {
            let c = cc.clone();
            async move { c.get_title(&title(i), &opts()).await }
        })
        .await;
        let after = summaries_served(&sys).await;
        println!(
            "circuit open: {} more titles, GetSummaries served meanwhile {}",
            more.len(),
            after - before
        );
        assert!(more.iter().all(|s| s.result.is_ok()));
        assert_eq!(after, before, "an open circuit sends nothing");
    }
    sys.topology.stop(Duration::from_secs(10)).await;
}

async fn a_full_bulkhead_toward_ratings_leaves_catalog_calls_alone(mode: Mode) {
    let Some(mut sys) = System::start_in(mode, Size::default(), &[("RATINGS_BULKHEAD", "4")]).await
    else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let edge = edge_admin(&sys);
    let cc = c.clone();
    let baseline = open_loop(50, Duration::from_secs(2), move |i| {
        let c = cc.clone();
        async move { c.get_title(&title(i), &opts()).await }
    })
    .await;

    // Home pages hang in ContinueWatching until their budget runs out:
    // more than 4 in flight fill the bulkhead toward ratings.
    for admin in sys.admin_addrs("ratings") {
        add_fault(
            admin,
            json!({"operation": "ContinueWatching", "action": {"type": "hang"}}),
        )
        .await;
    }
    let cc = c.clone();
    let flood = tokio::spawn(open_loop(30, Duration::from_secs(4), move |i| {
        let c = cc.clone();
        async move { c.home(&format!("u{:05}", 1 + i % 500), &opts()).await }
    }));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cc = c.clone();
    let during = open_loop(50, Duration::from_secs(2), move |i| {
        let c = cc.clone();
        async move { c.get_title(&title(i), &opts()).await }
    })
    .await;
    flood.await.unwrap();

    println!(
        "titles: p99 {:?} before, {:?} with the ratings bulkhead full",
        p99(&baseline),
        p99(&during)
    );
    let ok_during = during.iter().filter(|s| s.result.is_ok()).count();
    assert!(ok_during > 0, "catalog requests went on during the flood");
    // At most twice the baseline; a floor of 20 ms keeps a 3 ms baseline
    // from turning scheduler noise on a shared machine into a failure.
    let bound = 2 * p99(&baseline).max(Duration::from_millis(20));
    assert!(
        p99(&during) <= bound,
        "p99 {:?} during the flood, {:?} before",
        p99(&during),
        p99(&baseline)
    );
    let text = scrape(edge).await;
    let refused = sum_matching(
        &text,
        "fleet_rpc_client_refused_total",
        &["target=\"ratings\"", "reason=\"bulkhead_full\""],
    );
    assert!(refused > 0.0, "the bulkhead filled");
    let catalog_refused = sum_matching(
        &text,
        "fleet_rpc_client_refused_total",
        &["target=\"catalog\""],
    );
    assert_eq!(catalog_refused, 0.0, "no catalog call was refused");
    for s in &during {
        let r = s.result.as_ref().expect("every title is served");
        for d in &r.value.degraded {
            assert_eq!(
                d.reason, "bulkhead_full",
                "refused at once, never waited: {d:?}"
            );
        }
    }
    sys.topology.stop(Duration::from_secs(10)).await;
}

async fn pushed_past_its_limit_the_edge_sheds_with_503_instead_of_timing_out(mode: Mode) {
    let Some(mut sys) =
        System::start_in(mode, Size::default(), &[("EDGE_MAX_CONCURRENCY", "8")]).await
    else {
        return;
    };
    for admin in sys.admin_addrs("catalog") {
        add_fault(
            admin,
            json!({"operation": "GetTitle", "action": {"type": "delay", "ms": 300}}),
        )
        .await;
    }
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let samples = open_loop(200, Duration::from_secs(2), move |i| {
        let c = c.clone();
        async move { c.get_title(&title(i), &opts()).await }
    })
    .await;
    let ok = samples.iter().filter(|s| s.result.is_ok()).count();
    let shed = samples
        .iter()
        .filter(|s| matches!(&s.result, Err(EdgeError::Api { status: 503, retry_after: Some(_), code, .. }) if code == "overloaded"))
        .count();
    let timed_out = samples
        .iter()
        .filter(|s| matches!(&s.result, Err(e) if e.status() == Some(504)))
        .count();
    println!(
        "200 req/s into a 300 ms catalog with 8 slots: {ok} ok, {shed} shed, {timed_out} timed out, p99 {:?}",
        p99(&samples)
    );
    assert!(ok > 0 && shed > 0, "{ok} ok, {shed} shed");
    assert_eq!(timed_out, 0, "shed, never timed out");
    assert_eq!(ok + shed, samples.len(), "nothing else went wrong");
    sys.topology.stop(Duration::from_secs(10)).await;
}

/// The largest number of `target` instances the edge's `/admin/stream`
/// showed ejected in one tick, polled until `stop` is set.
async fn max_ejected(
    edge_admin: SocketAddr,
    target: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let mut most = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        most = most.max(ejected_now(edge_admin, target).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    most.max(ejected_now(edge_admin, target).await)
}

/// `target`'s instances the edge has ejected now: the first tick of its
/// `/admin/stream` (one `dependency` event per operation; an instance
/// ejected for any operation counts once).
async fn ejected_now(edge_admin: SocketAddr, target: &str) -> usize {
    let mut resp = reqwest::Client::new()
        .get(format!("http://{edge_admin}/admin/stream"))
        .bearer_auth(fleet_tests::ADMIN_TOKEN)
        .send()
        .await
        .expect("stream reachable");
    let mut text = String::new();
    while !text.contains("event: meta") {
        let chunk = tokio::time::timeout(Duration::from_secs(3), resp.chunk())
            .await
            .expect("a tick within 3 s")
            .expect("stream readable")
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut ejected = std::collections::BTreeSet::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: serde_json::Value = serde_json::from_str(data).expect("JSON event");
        if v["dependency"] != target {
            continue;
        }
        for i in v["instances"].as_array().into_iter().flatten() {
            if i["ejected"] == true {
                ejected.insert(i["instance"].to_string());
            }
        }
    }
    ejected.len()
}

/// A sticky 50/50 split of catalog 1.2 and 1.3 with one 1.3 instance: the
/// users of the 1.3 cohort (and the title reads rolled onto 1.3) lose their
/// only instance to `kill -9` under 100 requests/s. Their requests fall
/// back to 1.2 (the route table, not a pin, chose 1.3), so at most a
/// thousandth of all requests is hurt — failed, or degraded.
async fn the_only_canary_killed_at_100_per_second_its_sticky_cohort_falls_back(mode: Mode) {
    let size = Size {
        catalog_v1_2: 2,
        catalog_v1_3: 1,
        ratings: 2,
        dal: 1,
    };
    let Some(mut sys) = System::start_in(mode, size, &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let edge = edge_admin(&sys);
    let applied = |text: &str| {
        sum_matching(
            text,
            "fleet_route_updates_total",
            &["target=\"catalog\"", "outcome=\"applied\""],
        )
    };
    let before = applied(&scrape(edge).await);
    sys.route_store()
        .set(&fleet_rpc::RouteTable {
            service: "catalog".into(),
            interface: 1,
            weights: [("1.2".to_owned(), 50), ("1.3".to_owned(), 50)].into(),
            sticky: true,
        })
        .await
        .unwrap();
    let started = Instant::now();
    while applied(&scrape(edge).await) <= before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sticky table was never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let canary = sys
        .topology
        .instances()
        .find(|i| i.spec.service == "catalog" && i.spec.version.starts_with("1.3"))
        .map(|i| i.spec.instance_id.clone())
        .unwrap();

    // 100 requests/s: 1 in 10 is a home page (the user routes, which
    // carry the sticky cohort key), the rest title reads (routed by a
    // roll). Each answer is reduced to the catalog hops that served it
    // and what, if anything, degraded.
    let cc = c.clone();
    let load = tokio::spawn(open_loop(100, Duration::from_secs(6), move |i| {
        let c = cc.clone();
        async move {
            if i % 10 == 0 {
                let r = c.home(&format!("u{:05}", 1 + i % 500), &opts()).await?;
                let degraded: Vec<String> =
                    r.value.degraded.iter().map(|d| format!("{d:?}")).collect();
                Ok((true, r.served_by, degraded))
            } else {
                let r = c.get_title(&title(i), &opts()).await?;
                let degraded: Vec<String> =
                    r.value.degraded.iter().map(|d| format!("{d:?}")).collect();
                Ok((false, r.served_by, degraded))
            }
        }
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Duration::from_secs(2);
    sys.topology.instance_mut(&canary).unwrap().kill().unwrap();
    let samples = load.await.unwrap();

    let on_canary = |s: &Sample<(bool, Vec<String>, Vec<String>)>, home: bool| {
        s.result.as_ref().is_ok_and(|(is_home, served_by, _)| {
            *is_home == home && served_by.iter().any(|h| h.starts_with("catalog/1.3"))
        })
    };
    let count = |home: bool, after: bool| {
        samples
            .iter()
            .filter(|s| {
                if after {
                    s.due > killed_at + Duration::from_millis(500)
                } else {
                    s.due < killed_at
                }
            })
            .filter(|s| on_canary(s, home))
            .count()
    };
    let (homes_before, titles_before) = (count(true, false), count(false, false));
    let canary_after = count(true, true) + count(false, true);
    // Hurt: an error, or a degraded part the catalog serves. A title's
    // `rating` part comes from the ratings service alone (seen in CI in
    // real mode: a few ratings reads over their budget on a cold Cassandra,
    // before the kill), and so does a home page's `continue_watching` when
    // it is the only row degraded (the catalog's batch feeds the top-rated
    // row too, so a catalog failure degrades both; seen in CI on a loaded
    // machine: one progress read over its budget). They say nothing about
    // the catalog canary: counted and printed apart.
    let ratings_only =
        |d: &String| d.contains("part: \"rating\"") || d.contains("part: \"continue_watching\"");
    let hurt: Vec<_> = samples
        .iter()
        .filter_map(|s| match &s.result {
            Err(e) => Some((s.due, e.to_string())),
            Ok((_, _, degraded)) if degraded.iter().any(|d| !ratings_only(d)) => {
                Some((s.due, format!("degraded: {degraded:?}")))
            }
            Ok(_) => None,
        })
        .collect();
    let rating_omitted = samples
        .iter()
        .filter(|s| {
            s.result.as_ref().is_ok_and(|(_, _, degraded)| {
                !degraded.is_empty() && degraded.iter().all(ratings_only)
            })
        })
        .count();
    let success = 1.0 - hurt.len() as f64 / samples.len() as f64;
    println!(
        "{mode:?}: kill -9 of the only 1.3 canary at 100 req/s (10 % home pages, sticky \
         50/50): {} requests, served by 1.3 before the kill: {homes_before} home pages and \
         {titles_before} titles; {canary_after} after; success {success:.4}, p99 {:?}; \
         {rating_omitted} answers missing only the ratings service's part",
        samples.len(),
        p99(&samples)
    );
    assert!(
        homes_before > 0 && titles_before > 0,
        "the 1.3 cohort and share were on the canary"
    );
    assert_eq!(canary_after, 0, "nothing is served by a dead instance");
    assert!(
        success >= 0.999,
        "success {success}; the first of {} hurt: {:?}",
        hurt.len(),
        &hurt[..hurt.len().min(10)]
    );
    sys.topology.stop(Duration::from_secs(10)).await;
}

/// Every dal answers UNAVAILABLE (its store is gone). The ratings service
/// passes that up as a failure from deeper down: the edge retries nothing
/// (ratings is fine), so the calls reaching the dal stay within 1.1 per
/// edge request, and no catalog or ratings instance — all healthy — is
/// ejected by the edge.
async fn a_dal_outage_is_not_retried_at_every_hop_and_ejects_no_middle_instance(mode: Mode) {
    let size = Size {
        catalog_v1_2: 2,
        catalog_v1_3: 0,
        ratings: 2,
        dal: 1,
    };
    let Some(mut sys) = System::start_in(mode, size, &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let edge = edge_admin(&sys);
    let dal_list = |text: &str| {
        sum_matching(
            text,
            "fleet_rpc_server_requests_total",
            &["operation=\"ListRatingsByUser\""],
        )
    };
    for admin in sys.admin_addrs("dal") {
        add_fault(
            admin,
            json!({"action": {"type": "abort", "code": "UNAVAILABLE"}}),
        )
        .await;
    }
    let mut before = 0.0;
    for admin in sys.admin_addrs("dal") {
        before += dal_list(&scrape(admin).await);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch_catalog = tokio::spawn(max_ejected(edge, "catalog", stop.clone()));
    let watch_ratings = tokio::spawn(max_ejected(edge, "ratings", stop.clone()));

    let cc = c.clone();
    let lists = tokio::spawn(open_loop(50, Duration::from_secs(4), move |i| {
        let c = cc.clone();
        async move {
            c.list_ratings(&format!("u{:05}", 1 + i % 500), Some(5), None, &opts())
                .await
        }
    }));
    let cc = c.clone();
    let titles = open_loop(50, Duration::from_secs(4), move |i| {
        let c = cc.clone();
        async move { c.get_title(&title(i), &opts()).await }
    })
    .await;
    let lists = lists.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (catalog_ejected, ratings_ejected) =
        (watch_catalog.await.unwrap(), watch_ratings.await.unwrap());

    let mut after = 0.0;
    for admin in sys.admin_addrs("dal") {
        after += dal_list(&scrape(admin).await);
    }
    let attempts = after - before;
    let requests = lists.len() as f64;
    let ratio = attempts / requests;
    let answered_503 = lists
        .iter()
        .filter(|s| matches!(&s.result, Err(e) if e.status() == Some(503)))
        .count();
    println!(
        "{mode:?}: dal down: {requests} user-rating lists at the edge, {attempts} attempts at \
         the dal ({ratio:.3} per edge request), {answered_503} answered 503, list p99 {:?}; \
         {} title reads, p99 {:?}; ejected at the edge: catalog {catalog_ejected}, ratings \
         {ratings_ejected}",
        p99(&lists),
        titles.len(),
        p99(&titles)
    );
    assert!(attempts > 0.0, "the dal was asked");
    assert!(ratio <= 1.1, "attempts at the dal per edge request {ratio}");
    assert_eq!(catalog_ejected, 0, "no healthy catalog instance ejected");
    assert_eq!(ratings_ejected, 0, "no healthy ratings instance ejected");
    assert!(
        lists.iter().all(|s| s.result.is_err()),
        "no list can be answered without the dal"
    );
    sys.topology.stop(Duration::from_secs(10)).await;
}
