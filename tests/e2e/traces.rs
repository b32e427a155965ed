//! Traces in a real Jaeger: `fleet up --observability` starts Jaeger v1.76
//! (built by `scripts/jaeger`) and Prometheus, and points every instance at
//! Jaeger's OTLP receiver. One title request through the edge must come
//! back from Jaeger's query API as one trace whose spans cross edge →
//! catalog → dal, carrying the request id and the version it was routed to.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

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
    let mut child = Command::new(fleet_tests::bin_dir().join("fleet"))
        .args([
            "up",
            "--edge-addr",
            &edge,
            "--dashboard",
            "off",
            "--data-dir",
        ])
        .arg(data.path())
        .args([
            "--catalog-v1-2",
            "1",
            "--catalog-v1-3",
            "0",
            "--catalog-v2",
            "0",
        ])
        .args(["--ratings", "1", "--observability"])
        .args([
            "--prometheus-addr",
            &free_addr(),
            "--prometheus-bin",
            &prometheus,
        ])
        .args(["--jaeger-bin", &jaeger, "--jaeger-otlp-addr", &free_addr()])
        .args(["--jaeger-ui-addr", &ui])
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("SCYLLA_NODES")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("jaeger: ") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "fleet up --observability did not start"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

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

    // Spans are batched (the SDK's default flush interval is 5 s).
    let query = format!(
        "http://{ui}/api/traces?service=edge&lookback=1h&limit=20&tags={}",
        urlencode(&format!("{{\"request_id\":\"{request_id}\"}}"))
    );
    let give_up = Instant::now() + Duration::from_secs(60);
    let (trace, services) = loop {
        let body: Value = http
            .get(&query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        let found = body["data"].as_array().and_then(|t| t.first()).cloned();
        if let Some(trace) = found {
            let services: BTreeSet<String> = trace["processes"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p["serviceName"].as_str().map(str::to_owned))
                .collect();
            if ["edge", "catalog", "dal"]
                .iter()
                .all(|s| services.contains(*s))
            {
                break (trace, services);
            }
        }
        assert!(
            Instant::now() < give_up,
            "no trace with request_id {request_id} across edge, catalog and dal in Jaeger: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("trace {} crosses {services:?}", trace["traceID"]);
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

    kill(
        Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "fleet up exited with {status}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
