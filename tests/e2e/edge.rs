//! The edge's promises on the real binaries: the rate limit per client
//! address (exact burst, 429 + Retry-After, honoured), graceful drain of a
//! request in flight, and the deadline budget passed down and enforced on
//! the server side.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use fleet_edge_client::{EdgeClient, RequestOptions};
use fleet_tests::{Size, System, add_fault, scrape, sum_matching};
use serde_json::json;

/// A plain HTTP client whose connections come from `from` (any 127/8
/// address is loopback on Linux): the edge keys its limit on it.
fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .build()
        .unwrap()
}

/// Sends `n` title requests at once; returns their statuses and
/// Retry-After values, and how long it took from the first send to the
/// last answer.
async fn burst(
    c: &reqwest::Client,
    edge: &str,
    n: usize,
) -> (Vec<(u16, Option<u64>, String)>, Duration) {
    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            let url = format!("{edge}/api/v1/titles/t{:05}", 1 + i);
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                let status = r.status().as_u16();
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                (status, after, r.text().await.unwrap())
            })
        })
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap());
    }
    (out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_passes_exactly_its_burst_then_429_until_retry_after_per_address() {
    // 1 request/s per address, burst 2.
    let mut sys = System::start_with(Size::default(), &[("EDGE_RATE_LIMIT", "1")]).await;
    let edge = sys.edge_url();
    let a = client_from([127, 0, 0, 1]);
    let (answers, took) = burst(&a, &edge, 6).await;
    let ok = answers.iter().filter(|(s, ..)| *s == 200).count();
    // One more token per whole second the burst took to send (none on any
    // sane run: six loopback requests).
    let refills = took.as_secs() as usize;
    println!("rate limit 1/s burst 2: {ok} of 6 passed in {took:?}");
    assert!(
        (2..=2 + refills).contains(&ok),
        "exactly the burst passes: {ok} in {took:?}: {answers:?}"
    );
    let mut wait = 0;
    for (status, after, body) in answers.iter().filter(|(s, ..)| *s != 200) {
        assert_eq!(*status, 429, "{body}");
        let after = after.expect("429 carries Retry-After");
        assert!((1..=2).contains(&after), "Retry-After {after}");
        assert!(body.contains("\"code\":\"rate_limited\""), "{body}");
        wait = wait.max(after);
    }

    // Another client address has its own bucket.
    let b = client_from([127, 0, 0, 2]);
    let (other, _) = burst(&b, &edge, 2).await;
    assert!(
        other.iter().all(|(s, ..)| *s == 200),
        "127.0.0.2 is not limited by 127.0.0.1's traffic: {other:?}"
    );

    // Honouring Retry-After is enough to be served again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (again, _) = burst(&a, &edge, 1).await;
    assert_eq!(again[0].0, 200, "after Retry-After: {again:?}");
    sys.topology.stop(Duration::from_secs(10)).await;
}

/// `GetTitle` calls in progress on the catalog instances at `admins`: the
/// request is in flight behind the edge.
async fn titles_in_flight(admins: &[SocketAddr]) -> f64 {
    let mut n = 0.0;
    for a in admins {
        n += sum_matching(
            &scrape(*a).await,
            "fleet_rpc_server_in_flight_requests",
            &["operation=\"GetTitle\""],
        );
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0() {
    // A title budget beyond the 1 s delay: only the drain could end it.
    let mut sys = System::start_with(
        Size::default(),
        &[
            ("SHUTDOWN_GRACE", "10s"),
            ("EDGE_BUDGET_TITLE", "3s"),
            ("CATALOG_REQUEST_TIMEOUT", "3s"),
        ],
    )
    .await;
    for admin in sys.admin_addrs("catalog") {
        add_fault(
            admin,
            json!({"operation": "GetTitle", "action": {"type": "delay", "ms": 1000}}),
        )
        .await;
    }
    let edge_addr = sys.topology.edge_addr().unwrap();
    let admin = sys.admin_addrs("edge")[0];
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let o = RequestOptions::default();
    let in_flight = tokio::spawn(async move { c.get_title("t00003", &o).await });
    let catalogs = sys.admin_addrs("catalog");
    let started = Instant::now();
    while titles_in_flight(&catalogs).await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let edge = sys
        .topology
        .instances_mut()
        .find(|i| i.spec.service == "edge")
        .unwrap();
    edge.terminate().unwrap();
    // Draining: not ready, and the public port takes no new connection.
    let http = reqwest::Client::new();
    let mut saw_unready = false;
    let mut saw_refused = false;
    while !(in_flight.is_finished() || saw_unready && saw_refused) {
        if let Ok(r) = http.get(format!("http://{admin}/readyz")).send().await {
            saw_unready |= r.status() == 503;
        }
        saw_refused |= tokio::net::TcpStream::connect(edge_addr).await.is_err();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answered = in_flight.await.unwrap();
    let title = answered.expect("the request in flight is answered");
    assert_eq!(title.value.title.id, "t00003");
    assert!(saw_unready, "/readyz said 503 while draining");
    assert!(saw_refused, "new connections were refused while draining");
    let status = tokio::time::timeout(Duration::from_secs(15), edge.wait())
        .await
        .expect("exits within its grace")
        .unwrap();
    assert_eq!(status.code(), Some(0), "a clean drain exits 0: {status}");
    sys.topology.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_runs_out_of_grace_and_aborts_requests_does_not_exit_0() {
    // The title budget outlasts the grace period: the drain has to abort.
    let mut sys = System::start_with(
        Size::default(),
        &[
            ("SHUTDOWN_GRACE", "1s"),
            ("EDGE_BUDGET_TITLE", "4s"),
            ("CATALOG_REQUEST_TIMEOUT", "4s"),
        ],
    )
    .await;
    for admin in sys.admin_addrs("catalog") {
        add_fault(
            admin,
            json!({"operation": "GetTitle", "action": {"type": "hang"}}),
        )
        .await;
    }
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let slow = tokio::spawn(async move { c.get_title("t00004", &RequestOptions::default()).await });
    let catalogs = sys.admin_addrs("catalog");
    let started = Instant::now();
    while titles_in_flight(&catalogs).await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let edge = sys
        .topology
        .instances_mut()
        .find(|i| i.spec.service == "edge")
        .unwrap();
    edge.terminate().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), edge.wait())
        .await
        .expect("exits after its grace")
        .unwrap();
    let _ = slow.await;
    assert_ne!(
        status.code(),
        Some(0),
        "requests were aborted at the end of the grace period: {status}"
    );
    sys.topology.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200ms_budget_is_answered_504_after_it_and_every_hop_stops_at_its_deadline() {
    let mut sys = System::start_with(
        Size {
            catalog_v1_2: 1,
            catalog_v1_3: 0,
            ratings: 1,
            dal: 1,
        },
        &[("EDGE_BUDGET_TITLE", "200ms")],
    )
    .await;
    // The dal never answers.
    let dal = sys.admin_addrs("dal")[0];
    add_fault(dal, json!({"action": {"type": "hang"}})).await;
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let started = Instant::now();
    let e = c
        .get_title("t00005", &RequestOptions::default())
        .await
        .expect_err("the budget runs out");
    let took = started.elapsed();
    println!("200 ms budget, hung dal: {e:?} after {took:?}");
    assert_eq!(e.status(), Some(504), "{e:?}");
    // Never before the budget less the two hop margins (5 ms each: the edge
    // gives the catalog 195 ms, the catalog gives the dal 190 ms, and the
    // catalog's DEADLINE_EXCEEDED may be what ends the request); the
    // catalog's own default (1 s) never decided it.
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");

    // The hung server and the hop before it each ended the call themselves
    // at the deadline they were given.
    let deadline_on = async |admin: SocketAddr, op: &str| {
        sum_matching(
            &scrape(admin).await,
            "fleet_rpc_server_requests_total",
            &[&format!("operation=\"{op}"), "code=\"DEADLINE_EXCEEDED\""],
        )
    };
    let catalog = sys.admin_addrs("catalog")[0];
    let waited = Instant::now();
    while deadline_on(dal, "").await < 1.0 || deadline_on(catalog, "GetTitle").await < 1.0 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "no server counted DEADLINE_EXCEEDED: dal {}, catalog {}",
            deadline_on(dal, "").await,
            deadline_on(catalog, "GetTitle").await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sys.topology.stop(Duration::from_secs(10)).await;
}
