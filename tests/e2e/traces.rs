//! Traces in a real Jaeger: `fleet up --observability` starts Jaeger v1.76
//! (built by `scripts/jaeger`) and Prometheus, and points every instance at
//! Jaeger's OTLP receiver. One title request through the edge must come
//! back from Jaeger's query API as one trace whose spans cross edge →
//! catalog → dal, carrying the request id and the version it was routed to;
//! Prometheus must hold that trace's id as an exemplar of the latency
//! histograms; and a user's home page, sent with a fault scope, must carry
//! both (the baggage) on every hop's span.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleet_tests::{free_addr, urlencode};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The string value of a Jaeger span tag.
fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)?
        .get("value")?
        .as_str()
}

#[tokio::test]
async fn one_title_request_is_one_trace_across_edge_catalog_and_dal_in_jaeger() {
    let (Some(jaeger), Some(prometheus)) = (
        fleet_testkit::backend("FLEET_TEST_JAEGER_BIN"),
        fleet_testkit::backend("FLEET_TEST_PROMETHEUS_BIN"),
    ) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let edge = free_addr();
    let ui = free_addr();
    let prometheus_addr = free_addr();
    let up = fleet_tests::ObservedFleetUp::start(
        &[
            "--catalog-v1-2",
            "1",
            "--catalog-v1-3",
            "0",
            "--catalog-v2",
            "0",
            "--ratings",
            "1",
        ],
        &edge,
        &prometheus_addr,
        &ui,
        (&jaeger, &prometheus),
        data.path(),
    )
    .await;

    let request_id = format!("trace-e2e-{}", std::process::id());
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{edge}/api/v1/titles/t00042"))
        .header("x-request-id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let served = r
        .headers()
        .get("x-fleet-served-by")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();

    let trace = wait_for_trace(&http, &ui, &request_id, &["edge", "catalog", "dal"]).await;
    println!("trace {} crosses edge, catalog and dal", trace["traceID"]);
    let spans = trace["spans"].as_array().unwrap();
    // One trace: every span shares its id, and each hop's server span
    // carries the request id.
    assert!(spans.iter().all(|s| s["traceID"] == trace["traceID"]));
    let with_id = spans
        .iter()
        .filter(|s| tag(s, "request_id") == Some(request_id.as_str()))
        .count();
    assert!(with_id >= 3, "request id on {with_id} spans: {spans:#?}");
    // The catalog span names the version it was routed to — the one the
    // edge reported in x-fleet-served-by.
    let catalog_served: Vec<&str> = spans
        .iter()
        .filter_map(|s| tag(s, "served_by"))
        .filter(|v| v.starts_with("catalog/"))
        .collect();
    assert!(
        catalog_served.iter().any(|v| served.contains(v)),
        "catalog spans say {catalog_served:?}, the edge said {served}"
    );
    assert!(
        catalog_served.iter().all(|v| v.starts_with("catalog/1.2.")),
        "{catalog_served:?}"
    );

    // Exemplars link latency to traces: Prometheus (scraping OpenMetrics,
    // exemplar storage on) holds this trace's id as the exemplar of the
    // edge's route histogram and of the catalog's GetTitle histogram.
    let trace_id = format!("{:0>32}", trace["traceID"].as_str().unwrap());
    for (series, labels) in [
        (
            "fleet_http_server_request_duration_seconds_bucket",
            r#"{service="edge",route="/api/v1/titles/{id}"}"#,
        ),
        (
            "fleet_rpc_server_request_duration_seconds_bucket",
            r#"{service="catalog",operation="GetTitle"}"#,
        ),
    ] {
        let found = wait_for_exemplar(&http, &prometheus_addr, series, labels, &trace_id).await;
        println!("exemplar of {series}{labels}: {found}");
    }

    // Baggage crosses every hop: a home page for one user, sent by a
    // game-day client with a fault scope, is one trace whose server span
    // at each of edge, catalog, ratings and dal carries the cohort key
    // (the user) and the fault scope.
    // The game-day key `fleet up` gave the edge signs the fault header.
    let key = fleet_edge_client::fault_signature::GamedayKey::new(
        std::fs::read_to_string(data.path().join("run/gameday-key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let home_id = format!("trace-home-{}", std::process::id());
    let scope = format!("drill-{}", std::process::id());
    let r = http
        .get(format!("http://{edge}/api/v1/users/u00042/home"))
        .header("x-request-id", &home_id)
        .header(
            "x-fleet-fault",
            key.sign(
                &scope,
                Duration::from_secs(60),
                std::time::SystemTime::now(),
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let trace = wait_for_trace(&http, &ui, &home_id, &["edge", "catalog", "ratings", "dal"]).await;
    let processes = trace["processes"].as_object().unwrap();
    let service_of = |span: &Value| {
        processes[span["processID"].as_str().unwrap()]["serviceName"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Server spans: the edge's `http` span and each service's `rpc` span
    // carry the request id.
    let server_spans: Vec<&Value> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| tag(s, "request_id") == Some(home_id.as_str()))
        .collect();
    let mut carrying = BTreeSet::new();
    for span in &server_spans {
        assert_eq!(
            (tag(span, "cohort"), tag(span, "fault_scope")),
            (Some("u00042"), Some(scope.as_str())),
            "{} span {} lacks the baggage: {span:#}",
            service_of(span),
            span["operationName"]
        );
        carrying.insert(service_of(span));
    }
    assert_eq!(
        carrying,
        ["catalog", "dal", "edge", "ratings"]
            .map(str::to_owned)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    println!(
        "home trace {}: {} server spans, baggage on each",
        trace["traceID"],
        server_spans.len()
    );

    up.stop().await;
}

/// The trace whose spans carry `request_id`, once Jaeger has spans of
/// every one of `services` for it (spans are batched: the SDK flushes
/// every 5 s).
async fn wait_for_trace(
    http: &reqwest::Client,
    ui: &str,
    request_id: &str,
    services: &[&str],
) -> Value {
    let query = format!(
        "http://{ui}/api/traces?service=edge&lookback=1h&limit=20&tags={}",
        urlencode(&format!("{{\"request_id\":\"{request_id}\"}}"))
    );
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = http
            .get(&query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if let Some(trace) = body["data"].as_array().and_then(|t| t.first()) {
            let seen: BTreeSet<&str> = trace["processes"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p["serviceName"].as_str())
                .collect();
            if services.iter().all(|s| seen.contains(s)) {
                return trace.clone();
            }
        }
        assert!(
            Instant::now() < give_up,
            "no trace with request_id {request_id} across {services:?} in Jaeger: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (up to 30 s: scrapes are 1 s apart) until Prometheus'
/// `/api/v1/query_exemplars` has an exemplar with `trace_id` on a series of
/// `name` matching `labels`; returns that series' labels.
async fn wait_for_exemplar(
    http: &reqwest::Client,
    prometheus: &str,
    name: &str,
    labels: &str,
    trace_id: &str,
) -> Value {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let url = format!(
            "http://{prometheus}/api/v1/query_exemplars?query={}&start={}&end={}",
            urlencode(&format!("{name}{labels}")),
            now - 600,
            now + 60
        );
        let body: Value = http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        assert_ne!(body["status"], "error", "{url}: {body}");
        let hit = body["data"].as_array().and_then(|series| {
            series.iter().find(|s| {
                s["exemplars"]
                    .as_array()
                    .is_some_and(|ex| ex.iter().any(|e| e["labels"]["trace_id"] == trace_id))
            })
        });
        if let Some(series) = hit {
            return series["seriesLabels"].clone();
        }
        assert!(
            Instant::now() < give_up,
            "no exemplar with trace_id {trace_id} on {name}{labels}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
