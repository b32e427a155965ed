//! The skip policy as a test binary sees it: this file runs itself again
//! as a child process (filtered to `child_needing_a_backend`) with and
//! without `CI`, and reads what the child's harness printed.

// A test reports a broken policy by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const CHILD: &str = "FLEET_TESTKIT_POLICY_CHILD";
const VAR: &str = "FLEET_TESTKIT_POLICY_BACKEND";

/// Only does something when started by the tests below.
#[test]
fn child_needing_a_backend() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let Some(value) = fleet_testkit::backend(VAR) else {
        return;
    };
    assert_eq!(value, "127.0.0.1:1");
}

fn run_child(ci: Option<&str>, backend: Option<&str>, log: &std::path::Path) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_needing_a_backend", "--exact", "--test-threads", "1"])
        .env(CHILD, "1")
        .env(fleet_testkit::SKIP_LOG_VAR, log)
        .env_remove("CI")
        .env_remove(VAR);
    if let Some(ci) = ci {
        cmd.env("CI", ci);
    }
    if let Some(b) = backend {
        cmd.env(VAR, b);
    }
    cmd.output().unwrap()
}

#[test]
fn outside_ci_a_missing_backend_skips_loudly_and_is_logged() {
    let dir = tempfile_dir();
    let log = dir.join("skips");
    for ci in [None, Some("")] {
        let out = run_child(ci, None, &log);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "CI={ci:?}: {stdout}{stderr}");
        // Printed although the harness captures test output.
        assert!(
            stderr.contains(
                "SKIPPED policy::child_needing_a_backend: FLEET_TESTKIT_POLICY_BACKEND is not set"
            ),
            "CI={ci:?}: {stderr}"
        );
    }
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(
        lines
            .lines()
            .all(|l| l.starts_with("policy::child_needing_a_backend\t")),
        "{lines}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn with_any_non_empty_ci_a_missing_backend_fails_and_nothing_is_skipped() {
    let dir = tempfile_dir();
    let log = dir.join("skips");
    for ci in ["true", "1", "yes"] {
        let out = run_child(Some(ci), None, &log);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "CI={ci} must fail: {stdout}");
        assert!(stdout.contains("CI is set"), "CI={ci}: {stdout}");
    }
    assert!(!log.exists(), "a failure is not a skip");
    // With the backend there, CI runs the test.
    let out = run_child(Some("true"), Some("127.0.0.1:1"), &log);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!log.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("fleet-testkit-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
