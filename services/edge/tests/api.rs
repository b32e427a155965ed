//! The edge on real loopback sockets in front of real catalog, ratings and
//! dal instances, called through its driver client (and raw HTTP where a
//! test must send what no client would).

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fleet_edge_client::{EdgeError, RequestOptions};
use fleet_testkit::probe::metrics;
use serde_json::json;
use support::{System, add_fault, served_calls};

fn opts() -> RequestOptions {
    RequestOptions::default()
}

#[tokio::test]
async fn every_route_works_end_to_end() {
    let sys = System::start(&[]).await;
    let c = sys.client();

    let t = c.get_title("t00001", &opts()).await.unwrap();
    assert_eq!(t.status, 200);
    assert_eq!(t.value.title.id, "t00001");
    assert!(t.value.title.rating.is_some(), "summary joined in");
    assert!(t.value.degraded.is_empty());
    assert!(!t.request_id.is_empty());
    assert!(
        t.served_by.iter().any(|s| s.starts_with("catalog/")),
        "{:?}",
        t.served_by
    );

    // Browse with cursor paging: pages do not overlap and end.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = c
            .list_titles(Some("drama"), Some(7), cursor.as_deref(), &opts())
            .await
            .unwrap()
            .value;
        assert!(page.items.iter().all(|t| t.genre == "drama"));
        seen.extend(page.items.into_iter().map(|t| t.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "paging ends");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "ordered by id, no repeats");
    assert!(seen.len() > 7, "more than one page");

    // Write a rating twice: the second is the same rating, never counted twice.
    let before = c.get_title("t00042", &opts()).await.unwrap().value.title;
    let count_before = before.rating.map_or(0, |r| r.count);
    let first = c
        .rate_title("zz-user", "t00042", 4, &opts())
        .await
        .unwrap()
        .value;
    assert!(first.applied);
    assert_eq!(first.summary.count, count_before + 1);
    let again = c
        .rate_title("zz-user", "t00042", 4, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(again.summary.count, count_before + 1, "not double-counted");
    let mine = c
        .list_ratings("zz-user", None, None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].stars, 4);

    // Progress, then the home page shows it in continue-watching.
    let p = c
        .record_progress("zz-user", "t00042", 1200, &opts())
        .await
        .unwrap()
        .value;
    assert!(p.applied);
    assert_eq!(p.progress.position_s, 1200);
    let home = c.home("zz-user", &opts()).await.unwrap().value;
    assert!(home.degraded.is_empty(), "{:?}", home.degraded);
    let ids: Vec<&str> = home.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["continue_watching", "top_rated", "genre"]);
    let cw = &home.rows[0].items;
    assert_eq!(cw[0].title.id, "t00042");
    assert_eq!(cw[0].position_s, Some(1200));
    assert!(!home.rows[1].items.is_empty(), "top rated has titles");
    assert!(
        home.rows[2].label.contains(&before.genre),
        "{}",
        home.rows[2].label
    );

    let doc = c.openapi(&opts()).await.unwrap();
    assert!(doc["paths"]["/api/v1/users/{user}/home"]["get"].is_object());
    sys.stop().await;
}

/// Sends a raw request and returns (status, headers, parsed JSON body).
async fn raw(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), url);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {url}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, headers, json)
}

#[tokio::test]
async fn bad_input_gets_a_clear_json_error_and_never_reaches_a_backend() {
    let sys = System::start(&[]).await;
    let base = sys.url();
    let calls_before = sys.backend_calls().await;
    let rating = format!("{base}/api/v1/users/u00001/ratings/t00001");
    let progress = format!("{base}/api/v1/users/u00001/progress/t00001");
    let json = Some("application/json");
    let long = "x".repeat(65);
    // (method, url, content type, body, expected status, expected code)
    type Case<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "PUT",
            rating.clone(),
            json,
            b"{\"stars\":".to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            rating.clone(),
            json,
            b"not json".to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            rating.clone(),
            Some("text/plain"),
            b"{\"stars\":3}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "PUT",
            rating.clone(),
            None,
            b"{\"stars\":3}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "PUT",
            rating.clone(),
            json,
            b"{\"stars\":\"five\"}".to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            rating.clone(),
            json,
            b"{\"stars\":0}".to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            rating.clone(),
            json,
            b"{\"stars\":6}".to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            rating.clone(),
            json,
            b"{\"stars\":3,\"extra\":1}".to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            rating.clone(),
            json,
            b"{}".to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            rating.clone(),
            json,
            format!("{{\"stars\":3,\"pad\":\"{}\"}}", "a".repeat(5000)).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "PUT",
            progress.clone(),
            json,
            b"{\"position_s\":-5}".to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            progress.clone(),
            json,
            b"{\"position_s\":86401}".to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            progress.clone(),
            json,
            b"{\"position_s\":1e9}".to_vec(),
            422,
            "unprocessable",
        ),
        (
            "PUT",
            format!("{base}/api/v1/users/{long}/ratings/t00001"),
            json,
            b"{\"stars\":3}".to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            format!("{base}/api/v1/users/u%20x/ratings/t00001"),
            json,
            b"{\"stars\":3}".to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles/{long}"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles/t%00"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles?limit=0"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles?limit=1000000"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles?limit=abc"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles?cursor=%%%"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles?cursor=bm90LWEtdG9rZW4"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles?genre=sci%20fi"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/titles?sort=evil"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/users/u00001/ratings?limit=-1"),
            None,
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            format!("{base}/api/v1/nothing-here"),
            None,
            vec![],
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("{base}/api/v1/titles/t00001"),
            None,
            vec![],
            405,
            "method_not_allowed",
        ),
    ];
    // The forged cursor above is valid base64 but not a token the catalog
    // issued: it reaches the catalog, which refuses it. Count it apart.
    let mut forged_cursor_calls = 0;
    for (method, url, ct, body, status, code) in cases {
        let (got, headers, body) = raw(method, &url, ct, body).await;
        assert_eq!(got, status, "{method} {url}: {body}");
        assert_eq!(body["error"]["code"], code, "{method} {url}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        let rid = body["error"]["request_id"].as_str().unwrap();
        assert!(!rid.is_empty());
        assert_eq!(headers["x-request-id"], rid);
        if url.contains("bm90LWEtdG9rZW4") {
            forged_cursor_calls += 1;
        }
    }
    // Unknown title: a clear 404 after the catalog said so.
    let (got, _, body) = raw("GET", &format!("{base}/api/v1/titles/t99999"), None, vec![]).await;
    assert_eq!(got, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    // Only the forged cursor and the unknown title (its title and summary
    // lookups) reached a backend.
    let reached = sys.backend_calls().await - calls_before;
    assert_eq!(
        reached,
        forged_cursor_calls + 2,
        "malformed requests reached a backend"
    );
    sys.stop().await;
}

#[tokio::test]
async fn the_request_id_and_version_pins_cross_every_hop() {
    let sys = System::start(&[]).await;
    let c = sys.client();
    let o = RequestOptions {
        request_id: Some("rid-abc-123".into()),
        ..RequestOptions::default()
    };
    let r = c.get_title("t00003", &o).await.unwrap();
    assert_eq!(r.request_id, "rid-abc-123");

    for _ in 0..5 {
        let r = c
            .get_title("t00003", &opts().pin("catalog", "1.3"))
            .await
            .unwrap();
        assert!(
            r.served_by.iter().any(|s| s.starts_with("catalog/1.3.0/")),
            "{:?}",
            r.served_by
        );
        let r = c
            .get_title("t00003", &opts().pin("catalog", "1.2"))
            .await
            .unwrap();
        assert!(
            r.served_by.iter().any(|s| s.starts_with("catalog/1.2.4/")),
            "{:?}",
            r.served_by
        );
        assert!(r.value.title.badges.is_empty(), "1.2 has no badges");
    }
    sys.stop().await;
}

#[tokio::test]
async fn without_ratings_titles_degrade_and_writes_get_503_with_retry_after() {
    let mut sys = System::start(&[]).await;
    let c = sys.client();
    sys.ratings.take().unwrap().stop().await;

    let t = c.get_title("t00005", &opts()).await.unwrap().value;
    assert_eq!(t.title.id, "t00005");
    assert_eq!(t.title.rating, None);
    assert_eq!(t.degraded.len(), 1);
    assert_eq!(t.degraded[0].part, "rating");
    assert_eq!(t.degraded[0].fallback, "omitted");

    let page = c
        .list_titles(None, Some(5), None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(page.items.len(), 5);
    assert_eq!(page.degraded[0].part, "rating");

    let home = c.home("u00001", &opts()).await.unwrap().value;
    let parts: Vec<&str> = home.degraded.iter().map(|d| d.part.as_str()).collect();
    assert!(parts.contains(&"continue_watching"), "{parts:?}");
    assert!(parts.contains(&"top_rated"), "{parts:?}");
    let genre = home.rows.iter().find(|r| r.id == "genre").unwrap();
    assert!(!genre.items.is_empty(), "the catalog row still serves");

    match c.rate_title("u00001", "t00005", 3, &opts()).await {
        Err(EdgeError::Api {
            status: 503,
            retry_after: Some(_),
            ..
        }) => {}
        other => panic!("expected 503 with Retry-After, got {other:?}"),
    }
    sys.stop().await;
}

#[tokio::test]
async fn the_home_page_serves_the_last_good_top_rated_row_when_ratings_fail() {
    let sys = System::start(&[]).await;
    let c = sys.client();
    let good = c.home("u00002", &opts()).await.unwrap().value;
    let top = good
        .rows
        .iter()
        .find(|r| r.id == "top_rated")
        .unwrap()
        .clone();
    assert!(!top.items.is_empty());
    let ratings_admin = sys.ratings.as_ref().unwrap().admin;
    add_fault(
        ratings_admin,
        json!({"operation": "TopRated", "action": {"type": "abort", "code": "UNAVAILABLE"}}),
    )
    .await;
    let page = c.home("u00002", &opts()).await.unwrap().value;
    let d = page
        .degraded
        .iter()
        .find(|d| d.part == "top_rated")
        .unwrap();
    assert_eq!(d.fallback, "cached");
    let served = page.rows.iter().find(|r| r.id == "top_rated").unwrap();
    assert_eq!(served.items, top.items);
    sys.stop().await;
}

#[tokio::test]
async fn a_slow_catalog_costs_the_route_budget_and_answers_504() {
    let sys = System::start(&[("EDGE_BUDGET_TITLE", "200ms")]).await;
    for admin in [sys.catalog_v12.admin, sys.catalog_v13.admin] {
        add_fault(
            admin,
            json!({"operation": "GetTitle", "action": {"type": "delay", "ms": 3000}}),
        )
        .await;
    }
    let started = std::time::Instant::now();
    let e = sys.client().get_title("t00001", &opts()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(e.status(), Some(504), "{e:?}");
    assert_eq!(e.code(), Some("deadline_exceeded"));
    // Generous: the point is that nobody waited for the 3 s delay.
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    sys.stop().await;
}

#[tokio::test]
async fn beyond_its_concurrency_limit_the_edge_sheds_with_503_at_once() {
    let sys = System::start(&[("EDGE_MAX_CONCURRENCY", "2")]).await;
    for admin in [sys.catalog_v12.admin, sys.catalog_v13.admin] {
        add_fault(
            admin,
            json!({"operation": "GetTitle", "action": {"type": "delay", "ms": 400}}),
        )
        .await;
    }
    let c = sys.client();
    let calls = (0..8).map(|_| {
        let c = c.clone();
        async move { c.get_title("t00001", &RequestOptions::default()).await }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let shed: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| e.code() == Some("overloaded"))
        .collect();
    assert!((1..=2).contains(&ok), "{results:?}");
    assert_eq!(ok + shed.len(), 8, "{results:?}");
    assert!(shed.iter().all(|e| matches!(
        e,
        EdgeError::Api {
            status: 503,
            retry_after: Some(_),
            ..
        }
    )));
    let text = metrics(sys.edge.admin).await;
    assert!(text.contains("fleet_http_server_shed_total"), "{text}");
    sys.stop().await;
}

#[tokio::test]
async fn only_game_day_clients_can_scope_faults_through_the_edge() {
    let sys = System::start(&[]).await;
    for admin in [sys.catalog_v12.admin, sys.catalog_v13.admin] {
        add_fault(
            admin,
            json!({"header": "gd-7", "action": {"type": "abort", "code": "UNAVAILABLE"}}),
        )
        .await;
    }
    let c = sys.client();
    let refused = |e: EdgeError| match e {
        EdgeError::Api {
            status: 401,
            code,
            message,
            request_id,
            ..
        } if code == "invalid_fault_header" && !request_id.is_empty() => message,
        other => panic!("expected 401 invalid_fault_header, got {other:?}"),
    };
    let before =
        served_calls(sys.catalog_v12.admin).await + served_calls(sys.catalog_v13.admin).await;
    // The bare scope (no signature), a header signed with another key, and
    // a signed header replayed after its expiry: 401, nothing called.
    let plain = opts().header("x-fleet-fault", "gd-7");
    let msg = refused(c.get_title("t00001", &plain).await.unwrap_err());
    assert!(msg.contains("malformed"), "{msg}");
    let other_key =
        fleet_edge_client::fault_signature::GamedayKey::new("some-other-key-0123456789").unwrap();
    let wrong = opts().fault_scope("gd-7", &other_key).unwrap();
    let msg = refused(c.get_title("t00001", &wrong).await.unwrap_err());
    assert!(msg.contains("does not match"), "{msg}");
    let expired = support::gameday_key()
        .sign(
            "gd-7",
            Duration::from_secs(60),
            std::time::SystemTime::now() - Duration::from_secs(120),
        )
        .unwrap();
    let replay = opts().header("x-fleet-fault", expired);
    let msg = refused(c.get_title("t00001", &replay).await.unwrap_err());
    assert!(msg.contains("expired"), "{msg}");
    let after =
        served_calls(sys.catalog_v12.admin).await + served_calls(sys.catalog_v13.admin).await;
    assert_eq!(before, after, "a refused fault header reached the catalog");
    // Signed with the game-day key: the catalog sees the scope and the
    // fault fires.
    let gameday = opts().fault_scope("gd-7", &support::gameday_key()).unwrap();
    let e = c.get_title("t00001", &gameday).await.unwrap_err();
    assert_eq!(e.status(), Some(503), "{e:?}");
    // Requests without the header are untouched.
    assert!(c.get_title("t00001", &opts()).await.is_ok());
    sys.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after() {
    let sys = System::start(&[("EDGE_RATE_LIMIT", "5")]).await;
    let c = sys.client();
    let mut limited = None;
    // The burst is twice the rate: 10 pass at once, then 429.
    for _ in 0..30 {
        if let Err(e) = c.get_title("t00001", &opts()).await {
            limited = Some(e);
            break;
        }
    }
    match limited {
        Some(EdgeError::Api {
            status: 429,
            code,
            retry_after: Some(_),
            ..
        }) => {
            assert_eq!(code, "rate_limited");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    sys.stop().await;
}

#[tokio::test]
async fn the_edge_exposes_route_metrics_and_readiness() {
    let sys = System::start(&[]).await;
    let c = sys.client();
    c.get_title("t00001", &opts()).await.unwrap();
    let _ = c.get_title("t99999", &opts()).await;
    let text = metrics(sys.edge.admin).await;
    assert!(
        text.contains("fleet_http_server_requests_total{service=\"edge\",version=\"1.0.0\",route=\"/api/v1/titles/{id}\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("status=\"404\"} 1"), "{text}");
    assert!(text.contains("fleet_http_server_request_duration_seconds_bucket"));
    assert_eq!(fleet_testkit::probe::readyz(sys.edge.admin).await, 200);
    sys.stop().await;
}
