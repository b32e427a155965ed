//! The edge under input a hostile or careless client controls: version
//! pins, paths, methods, forwarded-for headers — and a slow optional
//! dependency. Real services on loopback port 0.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fleet_edge_client::{EdgeError, RequestOptions};
use fleet_testkit::probe::{metrics, readyz_rounds};
use serde_json::json;
use support::{System, add_fault, series_count, served_calls};

/// Sum of a metric family's samples whose line contains every `filter`.
fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every circuit the edge has, and whether any is not closed.
fn open_circuits(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("fleet_circuit_state{"))
        .filter(|l| !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_flood_of_unknown_version_pins_is_refused_and_costs_everyone_else_nothing() {
    let sys = System::start(&[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/titles/t00001", sys.url());
    let client_calls = |text: &str| metric_sum(text, "fleet_rpc_client_requests_total", &[]);

    // The flood alone: every made-up pin refused with 400, and not one
    // call leaves the edge.
    let before = client_calls(&metrics(sys.edge.admin).await);
    let bad = ["1.99", "9.9", "banana", "1", "1.3.0.0", "2.7"];
    for i in 0..300 {
        let pin = bad[i % bad.len()];
        let header = if i % 2 == 0 {
            "x-version-catalog"
        } else {
            "x-version-ratings"
        };
        let r = http.get(&url).header(header, pin).send().await.unwrap();
        assert_eq!(r.status(), 400, "{header}: {pin}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unknown_version", "{body}");
        assert!(!body["error"]["request_id"].as_str().unwrap().is_empty());
    }
    let after = client_calls(&metrics(sys.edge.admin).await);
    assert_eq!(before, after, "an unknown pin reached a backend");

    // The flood beside ordinary users: every user request succeeds, and
    // known pins are honoured.
    let attacker = {
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..300 {
                let r = http
                    .get(&url)
                    .header("x-version-catalog", format!("1.{}", 50 + i))
                    .send()
                    .await
                    .unwrap();
                refused += usize::from(r.status() == 400);
            }
            refused
        })
    };
    let c = sys.client();
    for i in 0..100 {
        let pin = ["1.2", "1.3"][i % 2];
        let r = c
            .get_title("t00002", &RequestOptions::default().pin("catalog", pin))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let served = format!("catalog/{pin}.");
        assert!(
            r.served_by.iter().any(|s| s.starts_with(&served)),
            "{:?}",
            r.served_by
        );
        c.get_title("t00003", &RequestOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(attacker.await.unwrap(), 300);
    let text = metrics(sys.edge.admin).await;
    assert_eq!(open_circuits(&text), Vec::<String>::new());
    sys.stop().await;
}

#[tokio::test]
async fn internal_pins_count_only_with_the_game_day_credential() {
    let sys = System::start(&[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/titles/t00004", sys.url());
    // From a public client the pin is dropped: the catalog reaches its dal.
    for _ in 0..10 {
        let r = http
            .get(&url)
            .header("x-version-dal", "1.9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A game-day client's pin goes through: no dal 1.9 exists, so the
    // catalog cannot serve.
    let r = http
        .get(&url)
        .header("x-version-dal", "1.9")
        .header("x-fleet-fault", support::signed_fault("pins"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200, "the game-day pin was not passed on");
    sys.stop().await;
}

#[tokio::test]
async fn junk_paths_and_methods_add_no_metric_series() {
    let sys = System::start(&[]).await;
    let http = reqwest::Client::new();
    let base = sys.url();
    let junk = |i: u32| {
        let method = reqwest::Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
        let path = format!("/x{:x}/{}", i.wrapping_mul(2_654_435_761), i);
        (method, path)
    };
    // Once of each kind first: the `other` series exist from here on.
    let (m, p) = junk(0);
    http.request(m.clone(), format!("{base}{p}"))
        .send()
        .await
        .unwrap();
    http.request(m, format!("{base}/api/v1/titles/t00001"))
        .send()
        .await
        .unwrap();
    http.get(format!("{base}{p}")).send().await.unwrap();
    let before = series_count(sys.edge.admin).await;
    for i in 1..=300 {
        let (m, p) = junk(i);
        let r = match i % 3 {
            0 => http.request(m, format!("{base}{p}")),
            1 => http.request(m, format!("{base}/api/v1/titles/t{i:05}")),
            _ => http.get(format!("{base}{p}")),
        };
        let status = r.send().await.unwrap().status();
        assert!(status == 404 || status == 405, "{i}: {status}");
    }
    let after = series_count(sys.edge.admin).await;
    assert_eq!(before, after, "junk added series");
    let text = metrics(sys.edge.admin).await;
    assert!(!text.contains("JUNK"), "a junk method became a label");
    assert!(!text.contains("/x"), "a junk path became a label");
    assert!(
        text.contains("route=\"other\",method=\"other\",status=\"404\"} 101"),
        "{text}"
    );
    sys.stop().await;
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let sys = System::start(&[
        ("EDGE_RATE_LIMIT", "1"),
        ("EDGE_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let untrusting = sys.another_edge(&[("EDGE_RATE_LIMIT", "1")]).await;
    let http = reqwest::Client::new();
    let get = |edge: std::net::SocketAddr, client: String| {
        http.get(format!("http://{edge}/api/v1/openapi.json"))
            .header("x-forwarded-for", client)
            .send()
    };
    // Behind a trusted proxy, ten clients each get their own burst of 2.
    for i in 0..10 {
        for _ in 0..2 {
            let r = get(sys.edge.addr, format!("203.0.113.{i}")).await.unwrap();
            assert_eq!(r.status(), 200, "client {i}");
        }
    }
    // …and one client cannot go on past its own.
    let mut limited = 0;
    for _ in 0..10 {
        let r = get(sys.edge.addr, "203.0.113.0".into()).await.unwrap();
        limited += usize::from(r.status() == 429);
    }
    assert!(limited > 0, "one forwarded client was never limited");
    // Without trust the header is ignored: every request is the peer's.
    let mut limited = 0;
    for i in 0..10 {
        let r = get(untrusting.addr, format!("198.51.100.{i}"))
            .await
            .unwrap();
        limited += usize::from(r.status() == 429);
    }
    assert!(limited > 0, "a forged X-Forwarded-For dodged the limit");
    untrusting.stop().await;
    sys.stop().await;
}

#[tokio::test]
async fn a_3s_ratings_delay_leaves_every_edge_ready() {
    let sys = System::start(&[]).await;
    let second = sys.another_edge(&[]).await;
    let ratings = sys.ratings.as_ref().unwrap();
    // Every ratings call, health checks included if they were not exempt.
    add_fault(
        ratings.admin,
        json!({"action": {"type": "delay", "ms": 3000}}),
    )
    .await;
    // The delay is felt: a write (no fallback) runs out of its 1 s budget.
    match sys
        .client()
        .rate_title("u00001", "t00001", 4, &RequestOptions::default())
        .await
    {
        Err(EdgeError::Api { status: 504, .. }) => {}
        other => panic!("expected 504 from the delayed ratings, got {other:?}"),
    }
    // Readiness is re-evaluated several times, and every answer is ready.
    for edge in [sys.edge.admin, second.admin] {
        let (status, start) = readyz_rounds(edge).await;
        assert_eq!(status, 200);
        loop {
            let (status, rounds) = readyz_rounds(edge).await;
            assert_eq!(
                status, 200,
                "edge {edge} turned unready after {rounds} rounds"
            );
            if rounds >= start + 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Titles still serve, the ratings part degraded.
    let t = sys
        .client()
        .get_title("t00001", &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(t.status, 200);
    second.stop().await;
    sys.stop().await;
}

#[tokio::test]
async fn a_request_whose_budget_is_below_the_routes_median_is_refused_at_once() {
    let sys = System::start(&[]).await;
    for admin in [sys.catalog_v12.admin, sys.catalog_v13.admin] {
        add_fault(
            admin,
            json!({"operation": "GetTitle", "action": {"type": "delay", "ms": 200}}),
        )
        .await;
    }
    let c = sys.client();
    // The route's median becomes ≥ 200 ms.
    for _ in 0..12 {
        c.get_title("t00001", &RequestOptions::default())
            .await
            .unwrap();
    }
    // A game-day delay at the edge leaves ~100 ms of the 500 ms budget.
    add_fault(
        sys.edge.admin,
        json!({"operation": "GET /api/v1/titles/{id}", "action": {"type": "delay", "ms": 400}}),
    )
    .await;
    let served_before =
        served_calls(sys.catalog_v12.admin).await + served_calls(sys.catalog_v13.admin).await;
    match c.get_title("t00001", &RequestOptions::default()).await {
        Err(EdgeError::Api {
            status: 503,
            code,
            retry_after: Some(_),
            ..
        }) => assert_eq!(code, "overloaded"),
        other => panic!("expected 503 overloaded, got {other:?}"),
    }
    let served_after =
        served_calls(sys.catalog_v12.admin).await + served_calls(sys.catalog_v13.admin).await;
    assert_eq!(
        served_before, served_after,
        "the hopeless request reached the catalog"
    );
    let text = metrics(sys.edge.admin).await;
    assert!(
        text.contains("fleet_admission_refused_total{service=\"edge\",version=\"1.0.0\",operation=\"/api/v1/titles/{id}\",reason=\"budget\"} 1"),
        "{text}"
    );
    sys.stop().await;
}

#[tokio::test]
async fn a_grpc_server_refuses_calls_whose_budget_is_below_the_methods_median() {
    use fleet_proto::catalog::v1::GetTitleRequest;
    use fleet_proto::catalog::v1::catalog_client::CatalogClient;

    let sys = System::start(&[]).await;
    let catalog = &sys.catalog_v13;
    add_fault(
        catalog.admin,
        json!({"operation": "GetTitle", "action": {"type": "delay", "ms": 200}}),
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", catalog.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = CatalogClient::new(channel);
    let call = |timeout: Duration| {
        let mut req = tonic::Request::new(GetTitleRequest {
            id: "t00001".into(),
        });
        req.set_timeout(timeout);
        req
    };
    for _ in 0..12 {
        client
            .get_title(call(Duration::from_secs(5)))
            .await
            .unwrap();
    }
    let status = client
        .get_title(call(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("pushback sent")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback >= 200, "pushback {pushback} ms is the median");
    // A call with enough budget is still served.
    client
        .get_title(call(Duration::from_secs(5)))
        .await
        .unwrap();
    let text = metrics(catalog.admin).await;
    assert!(
        text.contains("operation=\"GetTitle\",reason=\"budget\"} 1"),
        "{text}"
    );
    sys.stop().await;
}
