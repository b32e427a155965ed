//! The deployment rehearsal in CI (`scripts/rehearse`, see
//! `fleet_tests::rehearse`): `docker-compose.yml` and both Kubernetes
//! overlays pass its static checks and come up as local processes against
//! the real backends, answering through their public door; and each kind of
//! mismatch it exists to catch, planted in the real definitions, fails it:
//! a variable the code never reads, a port that does not match, a
//! dependency cycle or impossible condition, a one-off job that exits
//! non-zero.
//!
//! Dynamic runs need `FLEET_TEST_SCYLLA_NODES` and `FLEET_TEST_REDIS_URL`
//! (`scripts/backends`) and the built binaries; without the backends they
//! fail under `CI=true` and skip loudly otherwise.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fleet_tests::rehearse::{Plan, run, source};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One dynamic rehearsal at a time: each runs a dozen processes.
static DYNAMIC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn backends_present() -> bool {
    let present = std::env::var_os("FLEET_TEST_SCYLLA_NODES").is_some()
        && std::env::var_os("FLEET_TEST_REDIS_URL").is_some();
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "FLEET_TEST_SCYLLA_NODES / FLEET_TEST_REDIS_URL unset under CI=true"
        );
        eprintln!("SKIPPED: no backends (source the env file of `scripts/backends up`)");
    }
    present
}

fn compose_model() -> Value {
    source::compose_model(&repo()).unwrap()
}

fn overlay(name: &str) -> Vec<Value> {
    source::overlay_objects(&repo(), name).unwrap()
}

fn k8s(name: &str, objects: &[Value], files: &Path) -> Plan {
    source::k8s_plan(&repo(), name, objects, files)
}

/// Runs a plan; returns the failure, if any.
async fn rehearse(plan: &Plan) -> Result<(), String> {
    let _one = DYNAMIC.lock().await;
    let work = tempfile::tempdir().unwrap();
    let (opts, consul) = run::prepare(&repo(), work.path(), &fleet_tests::bin_dir())?;
    let outcome = run::run(plan, &opts).await.map(|_| ()).map_err(|(_, e)| e);
    drop(consul);
    if outcome.is_err() {
        let kept = work.keep();
        eprintln!("rehearsal work directory kept at {}", kept.display());
    }
    outcome
}

/// The container spec of Kubernetes object `kind/name`.
fn container<'a>(objects: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    let o = objects
        .iter_mut()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    &mut o["spec"]["template"]["spec"]["containers"][0]
}

fn assert_finding(findings: &[String], needle: &str) {
    assert!(
        findings.iter().any(|f| f.contains(needle)),
        "expected a finding containing {needle:?}, got {findings:#?}"
    );
}

#[test]
fn compose_and_every_overlay_pass_the_static_checks() {
    let files = tempfile::tempdir().unwrap();
    let compose = source::compose_plan(&repo(), &compose_model());
    assert!(compose.units.len() > 15, "{} units", compose.units.len());
    assert_eq!(compose.check(), Vec::<String>::new(), "compose");
    for name in ["local", "production"] {
        let plan = k8s(name, &overlay(name), files.path());
        assert!(!plan.policies.is_empty(), "{name}: NetworkPolicies read");
        assert_eq!(plan.check(), Vec::<String>::new(), "k8s/{name}");
    }
}

/// Rehearsals take turns: each picks free loopback ports up front (bind
/// to port 0, release, hand to a process), and two running at once can be
/// handed the same port (seen: `dal-1 … Address already in use`).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn compose_comes_up_and_answers_through_its_published_port() {
    if !backends_present() {
        return;
    }
    let _turn = TURN.lock().await;
    let plan = source::compose_plan(&repo(), &compose_model());
    rehearse(&plan).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn both_kubernetes_overlays_come_up_and_answer_through_the_ingress() {
    if !backends_present() {
        return;
    }
    let _turn = TURN.lock().await;
    let files = tempfile::tempdir().unwrap();
    for name in ["local", "production"] {
        let plan = k8s(name, &overlay(name), files.path());
        rehearse(&plan)
            .await
            .unwrap_or_else(|e| panic!("k8s/{name}: {e}"));
    }
}

#[test]
fn a_variable_the_code_never_reads_fails_the_rehearsal() {
    // compose: a misspelt keyspace setting on one dal instance.
    let mut model = compose_model();
    let env = model["services"]["dal-1"]["environment"]
        .as_object_mut()
        .unwrap();
    let v = env.remove("SCYLLA_KEYSPACE").unwrap();
    env.insert("SCYLLA_KEYSPCE".into(), v);
    let findings = source::compose_plan(&repo(), &model).check();
    assert_finding(
        &findings,
        "dal-1: sets SCYLLA_KEYSPCE, which dal never reads",
    );

    // Kubernetes: a setting of one service given to another.
    let files = tempfile::tempdir().unwrap();
    let mut objects = overlay("local");
    let c = container(&mut objects, "Deployment", "edge");
    c["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "SCYLLA_NODES", "value": "scylla-0.scylla.fleet-stores.svc:9042"}));
    let findings = k8s("local", &objects, files.path()).check();
    assert_finding(
        &findings,
        "edge-0: sets SCYLLA_NODES, which edge never reads",
    );

    // A value the service refuses is a finding too (it would exit 64).
    let mut objects = overlay("local");
    let c = container(&mut objects, "Deployment", "ratings");
    for e in c["env"].as_array_mut().unwrap() {
        if e["name"] == "SERVICE_VERSION" {
            e["value"] = json!("one");
        }
    }
    let findings = k8s("local", &objects, files.path()).check();
    assert_finding(
        &findings,
        "ratings-0: ratings refuses its configuration: SERVICE_VERSION",
    );
}

#[test]
fn a_port_mismatch_fails_the_rehearsal() {
    // compose: the health check probes another port than the admin port.
    let mut model = compose_model();
    let test = &mut model["services"]["dal-1"]["healthcheck"]["test"];
    let last = test.as_array().unwrap().len() - 1;
    test[last] = json!("http://127.0.0.1:9301/readyz");
    // … and a service is told Consul listens where it does not.
    model["services"]["catalog-v1-3-1"]["environment"]["CONSUL_HTTP_ADDR"] =
        json!("http://consul:8501");
    let findings = source::compose_plan(&repo(), &model).check();
    assert_finding(
        &findings,
        "dal-1: readiness check on port 9301, but the admin port is 9300",
    );
    assert_finding(
        &findings,
        "catalog-v1-3-1: CONSUL_HTTP_ADDR: consul:8501: consul does not listen on 8501",
    );

    // Kubernetes: the NetworkPolicy lets the dal reach Scylla on a wrong
    // port, and the scrape annotation names a port /metrics is not on.
    let files = tempfile::tempdir().unwrap();
    let mut objects = overlay("production");
    let dal_policy = objects
        .iter_mut()
        .find(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == "dal")
        .unwrap();
    for rule in dal_policy["spec"]["egress"].as_array_mut().unwrap() {
        for p in rule["ports"].as_array_mut().unwrap() {
            if p["port"] == 9042 {
                p["port"] = json!(9043);
            }
        }
    }
    let catalog = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "catalog-v1-2")
        .unwrap();
    catalog["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = json!("9101");
    let findings = k8s("production", &objects, files.path()).check();
    assert_finding(&findings, "dal-0 → scylla-0:9042 (SCYLLA_NODES=");
    assert_finding(&findings, "is not allowed: no egress rule of");
    assert_finding(
        &findings,
        "catalog-v1-2-0: prometheus.io/port is Some(\"9101\"), but /metrics is on the admin port 9100",
    );
}

#[test]
fn dependency_cycles_and_conditions_that_cannot_hold_fail_the_rehearsal() {
    let mut model = compose_model();
    // The migration waits for a dal instance, which waits for the seed,
    // which waits for the migration.
    model["services"]["dal-migrate"]["depends_on"]["dal-1"] =
        json!({"condition": "service_healthy", "required": true});
    // A one-off job waited for as if it stayed up.
    model["services"]["ratings-1"]["depends_on"]["routes-seed"] =
        json!({"condition": "service_healthy", "required": true});
    let findings = source::compose_plan(&repo(), &model).check();
    assert_finding(&findings, "depends_on cycle:");
    assert_finding(&findings, "dal-migrate → dal-1");
    assert_finding(
        &findings,
        "ratings-1 waits for routes-seed to be healthy, but routes-seed has no health check",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_off_job_that_exits_non_zero_fails_the_rehearsal() {
    if !backends_present() {
        return;
    }
    let _turn = TURN.lock().await;
    let mut model = compose_model();
    model["services"]["dal-migrate"]["command"] = json!(["migrat"]);
    model["services"]["dal-migrate"]["restart"] = json!("on-failure:1");
    let plan = source::compose_plan(&repo(), &model);
    assert_eq!(
        plan.check(),
        Vec::<String>::new(),
        "the argument is only wrong at run time"
    );
    let e = rehearse(&plan).await.unwrap_err();
    assert!(e.contains("one-off job dal-migrate exited"), "{e}");
    assert!(
        e.contains("(2 attempts)"),
        "restart: on-failure:1 is honoured: {e}"
    );
}
