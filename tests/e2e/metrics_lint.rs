//! Every service's `/metrics` passes `promtool check metrics`, Prometheus'
//! own linter: every family has HELP text and a type that matches its
//! samples, counters end in `_total`, units are base units.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;

use fleet_edge_client::{EdgeClient, RequestOptions};
use fleet_tests::{Size, System, scrape};
use tokio::io::AsyncWriteExt;

/// promtool: `FLEET_TEST_PROMTOOL_BIN` (scripts/test, from scripts/prometheus), or
/// `promtool` on PATH; otherwise the one skip policy (a failure in CI).
fn promtool() -> Option<String> {
    if let Ok(p) = std::env::var("FLEET_TEST_PROMTOOL_BIN")
        && !p.trim().is_empty()
    {
        return Some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if on_path.is_none() {
        fleet_testkit::skip(
            "promtool is not installed (scripts/prometheus installs Debian's prometheus package)",
        );
    }
    on_path.map(|p| p.display().to_string())
}

/// `promtool check metrics` on `text`: its findings (empty when clean).
async fn lint(promtool: &str, text: &str) -> String {
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || !findings.trim().is_empty(),
        "promtool failed without saying why: {}",
        out.status
    );
    findings
}

#[tokio::test]
async fn every_services_metrics_pass_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let sys = System::start(Size::default()).await;
    // Traffic through every hop, successes and client errors, so every
    // family the services record has samples to lint (promtool checks
    // only families with samples).
    let edge = EdgeClient::new(&sys.edge_url()).unwrap();
    let o = RequestOptions::default();
    edge.get_title("t00001", &o).await.unwrap();
    edge.list_titles(Some("drama"), Some(5), None, &o)
        .await
        .unwrap();
    edge.home("u00001", &o).await.unwrap();
    edge.rate_title("u00001", "t00002", 4, &o).await.unwrap();
    edge.record_progress("u00001", "t00002", 60, &o)
        .await
        .unwrap();
    edge.get_title("t99999", &o).await.unwrap_err();

    let mut report = Vec::new();
    for service in ["edge", "catalog", "ratings", "dal"] {
        let addrs = sys.admin_addrs(service);
        assert!(!addrs.is_empty(), "{service} runs");
        for admin in addrs {
            let text = scrape(admin).await;
            // The scrape holds the families we just exercised.
            assert!(text.contains("_total{"), "{service} {admin}: {text}");
            let findings = lint(&promtool, &text).await;
            if !findings.trim().is_empty() {
                report.push(format!("{service} ({admin}):\n{findings}"));
            }
        }
    }
    assert!(
        report.is_empty(),
        "promtool check metrics:\n{}",
        report.join("\n")
    );
}
