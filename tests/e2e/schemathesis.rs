//! Schemathesis, a property-based API tester nobody here wrote, against
//! `fleet up`'s edge: it reads `/api/v1/openapi.json`, generates valid and
//! invalid requests for every operation (examples, coverage, fuzzing, and
//! stateful sequences along the document's links) and checks every answer
//! with all its checks — documented status codes, response schemas,
//! content types, headers, no 5xx, invalid data rejected, valid data
//! accepted. The document must tell the truth and the edge must keep it.
//!
//! Bounded by `FLEET_TEST_SCHEMATHESIS_MAX_TIME` (seconds, default 90);
//! set it higher for a longer run. `FLEET_TEST_SCHEMATHESIS_SEED` replays
//! a run.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleet_tests::free_addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fleet_testkit::FleetUp;
use tokio::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts `fleet up` on the embedded default (every instance on free
/// loopback ports, the edge on `edge`) and waits until it is ready.
async fn fleet_up(data: &Path, edge: &str) -> FleetUp {
    FleetUp::up(fleet_tests::bin_dir().join("fleet"), edge, data)
        .no_dashboard()
        .instances(1, 1, 1, 1)
        .embedded()
        .start()
        .await
}

/// `scripts/schemathesis`: installs the pinned version once; prints `st`.
fn schemathesis() -> PathBuf {
    let out = std::process::Command::new(repo().join("scripts/schemathesis"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/schemathesis runs");
    assert!(out.status.success(), "scripts/schemathesis failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

#[tokio::test]
async fn schemathesis_finds_no_failure_in_the_edge_api() {
    let st = schemathesis();
    let data = tempfile::tempdir().unwrap();
    let edge = free_addr();
    let mut up = fleet_up(&data.path().join("fleet"), &edge).await;

    let max_time =
        std::env::var("FLEET_TEST_SCHEMATHESIS_MAX_TIME").unwrap_or_else(|_| "90".into());
    let report = data.path().join("schemathesis.json");
    let mut cmd = Command::new(&st);
    cmd.arg("--no-color")
        .arg("--config-file")
        .arg(repo().join("tests/e2e/schemathesis.toml"))
        .args(["run", &format!("http://{edge}/api/v1/openapi.json")])
        .args(["--checks", "all", "--mode", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-time", &max_time])
        .args(["--request-timeout", "10"])
        .args(["--report", "json", "--report-json-path"])
        .arg(&report)
        .args(["--report-dir"])
        .arg(data.path().join("reports"))
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("FLEET_TEST_SCHEMATHESIS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let max_secs: u64 = max_time.parse().expect("a whole number of seconds");
    // The run stops itself at --max-time; the rest is set-up and shrinking.
    let status = tokio::time::timeout(Duration::from_secs(max_secs + 300), cmd.status())
        .await
        .expect("schemathesis finished")
        .unwrap();

    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("a JSON report")).unwrap();
    eprintln!(
        "schemathesis {}: {} test cases, {} with failures; phases {}",
        r["schemathesis_version"],
        r["test_cases"]["generated"],
        r["test_cases"]["with_failures"],
        r["phases"]
    );
    assert_eq!(r["failures"], serde_json::json!([]), "failures: {r:#}");
    assert_eq!(r["errors"], serde_json::json!([]), "errors: {r:#}");
    assert!(status.success(), "schemathesis exited with {status}");
    // It really tested every operation, with every phase, stateful links
    // included (a document without usable links skips that phase).
    assert_eq!(r["operations"]["tested"], 7, "{:#}", r["operations"]);
    for phase in ["examples", "coverage", "fuzzing", "stateful"] {
        assert_eq!(
            r["phases"][phase]["status"], "success",
            "{phase}: {:#}",
            r["phases"]
        );
    }
    // At least ten cases per operation (a count, not a speed: the run
    // stops at --max-time, far past this on any machine).
    assert!(
        r["test_cases"]["generated"].as_u64().unwrap() >= 70,
        "too few test cases to mean anything: {:#}",
        r["test_cases"]
    );

    // SIGTERM, as a user's Ctrl-C: `fleet up` stops every instance it
    // started.
    up.stop().await;
}
