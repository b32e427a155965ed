//! Compose's Grafana dashboard: generated from the one list of panels
//! (`deploy/grafana/panels.json`, `scripts/grafana-dashboard`), and every
//! panel's query runs on a real Prometheus — Debian's, started by `fleet up
//! --observability` and scraping every instance — naming only metrics the
//! fleet exports or the rules record, with data after some traffic.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleet_tests::{free_addr, urlencode};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn panels() -> Vec<Value> {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/panels.json")).unwrap(),
    )
    .unwrap();
    spec["panels"].as_array().unwrap().clone()
}

#[test]
fn the_dashboard_is_what_the_panel_list_generates() {
    let out = std::process::Command::new(repo().join("scripts/grafana-dashboard"))
        .arg("--stdout")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let file =
        std::fs::read_to_string(repo().join("deploy/grafana/dashboards/fleet-overview.json"))
            .unwrap();
    assert!(
        generated == file,
        "deploy/grafana/dashboards/fleet-overview.json is not generated from deploy/grafana/panels.json: run scripts/grafana-dashboard"
    );
    let dashboard: Value = serde_json::from_str(&file).unwrap();
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    let list = panels();
    assert_eq!(titles.len(), list.len());
    for (t, p) in titles.iter().zip(&list) {
        assert_eq!(*t, p["title"]);
    }
    // Compose provisions the generated file.
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    assert!(compose.contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"));
}

/// Metric names a PromQL expression reads: identifiers that are not
/// functions, keywords, label names or strings. Good enough for our panels:
/// every `fleet…` identifier and `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    // Drop quoted strings (label values, label_replace arguments).
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            unquoted.push(c);
        }
    }
    rest = &unquoted;
    for token in rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if token.starts_with("fleet") || token == "up" {
            names.insert(token.to_owned());
        }
    }
    names
}

#[test]
fn metric_names_are_read_out_of_an_expression() {
    assert_eq!(
        metric_names(
            r#"label_replace(fleet:edge_errors:ratio_rate5m, "window", "5m", "", "") or sum by (job) (up{job="fleet_x"})"#
        ),
        ["fleet:edge_errors:ratio_rate5m", "up"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
}

/// Family names an instance declares on `/metrics` (`# TYPE name kind`),
/// with the sample names a histogram family adds.
fn declared(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

#[tokio::test]
async fn every_panel_query_runs_on_a_real_prometheus_scraping_fleet_up() {
    let (Some(jaeger), Some(prometheus)) = (
        fleet_testkit::backend("FLEET_TEST_JAEGER_BIN"),
        fleet_testkit::backend("FLEET_TEST_PROMETHEUS_BIN"),
    ) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let edge = free_addr();
    let prom = free_addr();
    let up = fleet_tests::ObservedFleetUp::start(
        &[],
        &edge,
        &prom,
        &free_addr(),
        (&jaeger, &prometheus),
        data.path(),
    )
    .await;

    // Traffic for a while: titles and home pages; in the middle, every
    // catalog and ratings call fails for a few seconds (abort UNAVAILABLE
    // on every instance), so errors, retries, open circuits and refusals
    // happen too and every panel has something to draw.
    let registry: Value = serde_json::from_str(
        &std::fs::read_to_string(data.path().join("run/registry.json")).unwrap(),
    )
    .unwrap();
    let token = std::fs::read_to_string(data.path().join("run/admin-token")).unwrap();
    let token = token.trim();
    let faulted: Vec<String> = registry
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["service"] == "catalog" || e["service"] == "ratings")
        .map(|e| e["admin_addr"].as_str().unwrap().to_owned())
        .collect();
    assert!(!faulted.is_empty(), "{registry}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (mut served, mut failed) = (0, 0);
    let mut phase = 0;
    while started.elapsed() < Duration::from_secs(17) {
        // 0–4 s healthy; 5–8 s every call aborted (errors, retries, open
        // circuits, refusals); 9–12 s every call 800 ms slow, beyond the
        // 500 ms title budget (admission refuses what cannot finish in
        // time); then healthy again.
        let next = match started.elapsed().as_secs() {
            0..=4 => 0,
            5..=8 => 1,
            9..=12 => 2,
            _ => 3,
        };
        if next != phase {
            let rule = match next {
                1 => Some(serde_json::json!({"action": {"type": "abort", "code": "UNAVAILABLE"}})),
                2 => Some(serde_json::json!({"action": {"type": "delay", "ms": 800}})),
                _ => None,
            };
            for admin in &faulted {
                let url = format!("http://{admin}/admin/faults");
                let r = http.delete(&url).bearer_auth(token).send().await.unwrap();
                assert!(r.status().is_success(), "{url}: {}", r.status());
                if let Some(rule) = &rule {
                    let r = http
                        .post(&url)
                        .json(rule)
                        .bearer_auth(token)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{url}: {}", r.status());
                }
            }
            phase = next;
        }
        // Enough calls per operation for the breakers' request volume
        // threshold: 4 of each route at once, back to back.
        let mut batch = tokio::task::JoinSet::new();
        for i in 0..8 {
            let path = if i % 2 == 0 {
                "/api/v1/titles/t00007"
            } else {
                "/api/v1/users/u00007/home"
            };
            let req = http.get(format!("http://{edge}{path}"));
            batch.spawn(async move { req.send().await.unwrap().status().is_success() });
        }
        while let Some(ok) = batch.join_next().await {
            if ok.unwrap() {
                served += 1;
            } else {
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("traffic: {served} answered 2xx, {failed} not");
    assert!(served > 0 && failed > 0, "{served} ok, {failed} failed");

    // What the fleet exports: every instance's declared families, the
    // recorded series, and Prometheus' own `up`.
    let mut admins = Vec::new();
    collect_admin_addrs(&registry, &mut admins);
    assert!(admins.len() >= 5, "{registry}");
    let mut known: BTreeSet<String> = BTreeSet::from(["up".to_owned()]);
    for admin in &admins {
        let text = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        known.extend(declared(&text));
    }
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/rules/fleet.rules.yml")).unwrap();
    known.extend(
        rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- record: "))
            .map(str::to_owned),
    );

    let give_up = Instant::now() + Duration::from_secs(60);
    for panel in panels() {
        let title = panel["title"].as_str().unwrap();
        let expr = panel["expr"].as_str().unwrap();
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: reads no metric");
        // A family with no series yet is not on /metrics: it must at least
        // be one the code registers (a typo or a renamed metric fails).
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !known.contains(*n) && !registered_in_source(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{title}: {unknown:?} is neither exported by any instance, registered in the code, nor recorded by a rule"
        );
        let rare = panel["rare"].as_bool().unwrap_or(false);
        loop {
            let body: Value = http
                .get(format!(
                    "http://{prom}/api/v1/query?query={}",
                    urlencode(expr)
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["status"], "success", "{title}: {expr}: {body}");
            let series = body["data"]["result"].as_array().map_or(0, Vec::len);
            // Every panel draws something after this traffic, but for the
            // rare events' (an admission refusal).
            if series > 0 || rare {
                println!("{title}: {series} series");
                break;
            }
            assert!(
                Instant::now() < give_up,
                "{title}: no data after {served} requests: {expr}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    up.stop().await;
}

/// True when `name` (`fleet_<stem>[_total]`) is registered by the code:
/// `"<stem>"` is a string literal in a `.rs` file under `platform/` or
/// `services/` (how `Metrics::register` names families).
fn registered_in_source(name: &str) -> bool {
    let Some(stem) = name.strip_prefix("fleet_") else {
        return false;
    };
    let stem = stem.strip_suffix("_total").unwrap_or(stem);
    let needle = format!("\"{stem}\"");
    let mut dirs = vec![repo().join("platform"), repo().join("services")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&needle))
            {
                return true;
            }
        }
    }
    false
}

fn collect_admin_addrs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(addr) = map.get("admin_addr").and_then(Value::as_str) {
                out.push(addr.to_owned());
            }
            map.values().for_each(|x| collect_admin_addrs(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| collect_admin_addrs(x, out)),
        _ => {}
    }
}
