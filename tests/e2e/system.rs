//! The real binaries on loopback, started exactly as `fleet up` starts them,
//! driven through the edge's driver client.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fleet_edge_client::{EdgeClient, RequestOptions};
use fleet_tests::{Size, System};

fn opts() -> RequestOptions {
    RequestOptions::default()
}

#[tokio::test]
async fn the_whole_system_serves_every_route_and_stops_cleanly() {
    let mut sys = System::start(Size::default()).await;
    let c = EdgeClient::new(&sys.edge_url()).unwrap();

    let t = c.get_title("t00010", &opts()).await.unwrap();
    assert_eq!(t.value.title.id, "t00010");
    assert!(t.value.degraded.is_empty(), "{:?}", t.value.degraded);
    let page = c
        .list_titles(Some("comedy"), Some(3), None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(page.items.len(), 3);
    let next = c
        .list_titles(
            Some("comedy"),
            Some(3),
            page.next_cursor.as_deref(),
            &opts(),
        )
        .await
        .unwrap()
        .value;
    assert!(next.items[0].id > page.items[2].id, "the cursor moves on");

    let rated = c
        .rate_title("e2e-user", "t00010", 5, &opts())
        .await
        .unwrap()
        .value;
    assert!(rated.applied);
    let p = c
        .record_progress("e2e-user", "t00010", 300, &opts())
        .await
        .unwrap()
        .value;
    assert!(p.applied);
    let home = c.home("e2e-user", &opts()).await.unwrap().value;
    assert!(home.degraded.is_empty(), "{:?}", home.degraded);
    assert_eq!(home.rows[0].items[0].title.id, "t00010");
    let mine = c
        .list_ratings("e2e-user", None, None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(mine.items[0].stars, 5);

    // Both catalog releases serve side by side; a pin picks one.
    for (pin, version) in [("1.2", "1.2.4"), ("1.3", "1.3.0")] {
        let r = c
            .get_title("t00011", &opts().pin("catalog", pin))
            .await
            .unwrap();
        let served: Vec<&str> = r
            .served_by
            .iter()
            .filter_map(|s| s.strip_prefix("catalog/"))
            .collect();
        assert!(
            served.iter().all(|s| s.starts_with(version)) && !served.is_empty(),
            "pin {pin}: {served:?}"
        );
        let page = c
            .list_titles(None, Some(100), None, &opts().pin("catalog", pin))
            .await
            .unwrap()
            .value;
        let badged = page.items.iter().filter(|t| !t.badges.is_empty()).count();
        assert_eq!(badged > 0, pin == "1.3", "only 1.3 adds badges ({badged})");
    }
    assert!(sys.served_calls("dal").await > 0);

    // SIGTERM drains every instance: each exits 0 within its grace period.
    for (id, status, killed) in sys.topology.stop(Duration::from_secs(10)).await {
        assert!(!killed, "{id} had to be killed ({status})");
        assert!(status.contains("exit status: 0"), "{id}: {status}");
    }
}

#[tokio::test]
async fn losing_a_ratings_instance_costs_no_request() {
    let mut sys = System::start(Size::default()).await;
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    // Ordinary traffic first: it earns the retry budget (retries are at
    // most 10% of requests) that failing over will spend.
    for _ in 0..80 {
        c.list_ratings("u00001", Some(1), None, &opts())
            .await
            .unwrap();
    }
    let victim = sys
        .topology
        .instances()
        .find(|i| i.spec.service == "ratings")
        .map(|i| i.spec.instance_id.clone())
        .unwrap();
    sys.topology.instance_mut(&victim).unwrap().kill().unwrap();

    // Every write still succeeds: retried on the other instance, and the
    // dead one is ejected.
    for n in 0..40u32 {
        let title = format!("t{:05}", 100 + n);
        let r = c.rate_title("e2e-kill", &title, 1 + n % 5, &opts()).await;
        assert!(r.is_ok(), "write {n} failed: {r:?}");
    }
    let mine = c
        .list_ratings("e2e-kill", Some(100), None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(mine.items.len(), 40, "every acknowledged write is stored");
    sys.topology.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_request_id_and_trace_reach_every_hop_and_every_log_line_names_them() {
    let mut sys = System::start_with(
        Size::default(),
        &[("RUST_LOG", "info,fleet_server::grpc_context=debug")],
    )
    .await;
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let o = RequestOptions {
        request_id: Some("e2e-trace-req-1".into()),
        ..RequestOptions::default()
    }
    .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"));
    let r = c.get_title("t00042", &o).await.unwrap();
    assert_eq!(r.request_id, "e2e-trace-req-1");
    sys.topology.stop(Duration::from_secs(10)).await;

    // The catalog and the dal behind it served this request in the same
    // trace, and said so in their logs.
    let logs = sys.data.path().join("logs");
    for service in ["catalog", "dal"] {
        let mut found = false;
        for entry in std::fs::read_dir(&logs).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with(service) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            found |= text
                .lines()
                .any(|l| l.contains("\"request_id\":\"e2e-trace-req-1\"") && l.contains(trace));
        }
        assert!(
            found,
            "no {service} log line names the request and its trace"
        );
    }
}
