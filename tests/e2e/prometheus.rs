//! The fleet's Prometheus rules: one source, checked and unit-tested with
//! promtool.
//!
//! `deploy/prometheus/rules/fleet.rules.yml` is what `fleet up
//! --observability` embeds, what compose mounts, and (byte for byte) what
//! Kubernetes ships as the `fleet-prometheus-rules` ConfigMap. promtool
//! (Debian's `prometheus`, installed by `scripts/prometheus`) checks the
//! file and runs its unit tests, `fleet.rules.test.yml`.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_rules_are_one_file_for_fleet_up_compose_and_kubernetes() {
    let source = read("deploy/prometheus/rules/fleet.rules.yml");
    assert_eq!(
        fleet::observability::RULES,
        source,
        "fleet up embeds the source"
    );
    assert_eq!(
        read("k8s/base/prometheus/fleet.rules.yml"),
        source,
        "k8s/base/prometheus/fleet.rules.yml must be a copy of deploy/prometheus/rules/fleet.rules.yml"
    );
    let kustomization = read("k8s/base/kustomization.yaml");
    assert!(
        kustomization.contains("fleet.rules.yml=prometheus/fleet.rules.yml"),
        "the ConfigMap generator ships the copy"
    );
    let compose = read("docker-compose.yml");
    assert!(
        compose.contains(
            "./deploy/prometheus/rules/fleet.rules.yml:/etc/prometheus/rules/fleet.rules.yml:ro"
        ),
        "compose mounts the source"
    );
    let config = read("deploy/prometheus/prometheus.yml");
    assert!(
        config.contains("- /etc/prometheus/rules/fleet.rules.yml"),
        "compose's Prometheus loads it"
    );
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = fleet_testkit::backend("FLEET_TEST_PROMTOOL_BIN") else {
        return;
    };
    let dir = repo().join("deploy/prometheus/rules");
    for args in [
        vec!["check", "rules", "fleet.rules.yml"],
        vec!["test", "rules", "fleet.rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The compose configuration (which names the rule file at its
    // in-container path) parses too.
    let out = Command::new(&promtool)
        .args(["check", "config", "--syntax-only"])
        .arg(repo().join("deploy/prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
