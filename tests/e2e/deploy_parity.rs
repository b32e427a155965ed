//! The three ways to run the system describe the same system: `fleet up`,
//! `docker-compose.yml` and every Kubernetes overlay under `k8s/overlays/`
//! agree on the services, their versions and instance counts, the
//! environment variable names each service is given, and its ports.
//!
//! Each topology is read from its real source, fresh on every run:
//!
//! * `fleet up`: its own defaults (parsed by its own command line) and the
//!   real `fleet_supervisor::Topology`, started against stand-in programs that
//!   record nothing but what the topology hands them (the environment is read
//!   back from each instance's spec);
//! * compose: `docker compose config --format json` (anchors merged,
//!   defaults interpolated) with the Docker Compose binary that
//!   `scripts/validate-deploy` installs;
//! * Kubernetes: `kustomize build` of each overlay with the kustomize that
//!   `scripts/validate-deploy` installs.
//!
//! Deliberate differences are spelled out here: compose and Kubernetes run
//! two dal instances on a shared Scylla, where `fleet up`'s embedded store
//! belongs to a single dal; compose gives the static address lists
//! (`*_ADDRS`, fixed IPs) as the fallback until Consul answers, Kubernetes
//! discovers through Consul only (Service IPs are not fixed there); the
//! production overlay may add settings (consistency levels) to the local
//! one's and run more replicas (two edges).

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser as _;
use serde_json::Value;

/// (service, version) → number of instances.
type Counts = BTreeMap<(String, String), u64>;
/// service → environment variable names.
type EnvNames = BTreeMap<String, BTreeSet<String>>;
/// service → (main port, admin port).
type Ports = BTreeMap<String, (u16, u16)>;

/// One topology, reduced to what must agree.
#[derive(Debug, Default)]
struct Shape {
    counts: Counts,
    env: EnvNames,
    ports: Ports,
}

const SERVICES: [&str; 4] = ["edge", "catalog", "ratings", "dal"];
/// Settings only compose gives: the static lists, which need fixed IPs.
const COMPOSE_ONLY_ENV: [&str; 3] = ["DAL_ADDRS", "CATALOG_ADDRS", "RATINGS_ADDRS"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("FLEET_CACHE_DIR").map_or_else(
        || PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/fleet"),
        PathBuf::from,
    );
    cache.join("tools")
}

/// Runs a tool that `scripts/validate-deploy` installs; a missing tool is a
/// failure with the fix in the message, never a skip. Anything on stderr
/// fails too: Docker Compose reports some invalid projects there and still
/// exits 0.
fn run_tool(tool: &Path, args: &[&str]) -> String {
    assert!(
        tool.exists(),
        "{} is not installed: run scripts/validate-deploy (it installs the deploy tools \
         under $FLEET_CACHE_DIR/tools) before this test",
        tool.display()
    );
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", tool.display()));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{} {args:?} failed ({}):\n{}",
        tool.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} is not host:port"))
}

fn main_addr_key(service: &str) -> &'static str {
    if service == "edge" {
        "HTTP_ADDR"
    } else {
        "GRPC_ADDR"
    }
}

/// A YAML/JSON scalar as a string (numbers and strings alike).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The default ports each service listens on, from the services' own
/// configuration code.
fn default_ports() -> Ports {
    let empty = fleet_config::Env::from_pairs(std::iter::empty::<(String, String)>());
    let catalog = fleet_catalog::Config::from_env(&empty).expect("catalog defaults are valid");
    let ratings = fleet_ratings::Config::from_env(&empty).expect("ratings defaults are valid");
    let dal = fleet_dal::Config::from_env(&empty).expect("dal defaults are valid");
    let edge = fleet_edge::Config::from_env(&empty).expect("edge defaults are valid");
    BTreeMap::from([
        (
            "edge".to_owned(),
            (edge.server.addr.port(), edge.server.admin_addr.port()),
        ),
        (
            "catalog".to_owned(),
            (catalog.server.addr.port(), catalog.server.admin_addr.port()),
        ),
        (
            "ratings".to_owned(),
            (ratings.server.addr.port(), ratings.server.admin_addr.port()),
        ),
        (
            "dal".to_owned(),
            (dal.server.addr.port(), dal.server.admin_addr.port()),
        ),
    ])
}

// ------------------------------------------------------------------ fleet up

/// A stand-in for every service: prints the `listening` line the
/// supervisor waits for (admin port = the fake readiness server) and idles
/// until stopped.
fn write_stand_ins(dir: &Path, admin: SocketAddr) {
    use std::os::unix::fs::PermissionsExt as _;
    for service in SERVICES {
        let path = dir.join(service);
        let script = format!(
            "#!/bin/sh\n\
             echo '{{\"message\":\"listening\",\"addr\":\"127.0.0.1:9\",\"admin_addr\":\"{admin}\"}}'\n\
             exec sleep 120\n"
        );
        std::fs::write(&path, script).expect("write stand-in");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// Answers every request with 200 (the stand-ins' `/readyz`).
async fn always_ready() -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0_u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

async fn fleet_up_shape() -> Shape {
    let cli =
        fleet::Cli::try_parse_from(["fleet", "up"]).expect("`fleet up` parses with its defaults");
    let fleet::Command::Up(args) = cli.command else {
        panic!("`fleet up` did not parse as the up command");
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    write_stand_ins(&bin, always_ready().await);

    let mut topo = fleet_supervisor::Topology::start(fleet_supervisor::TopologyOptions {
        edge_addr: args.edge_addr,
        data_dir: tmp.path().join("data"),
        dal: args.dal,
        catalog_v1_2: args.catalog_v1_2,
        catalog_v1_3: args.catalog_v1_3,
        catalog_v2: args.catalog_v2,
        ratings: args.ratings,
        launcher: fleet_supervisor::Launcher::Binaries(bin),
        admin_token: "parity-admin-token-0123456789".into(),
        gameday_key: Some("parity-gameday-key-0123456789".into()),
        backends: fleet_supervisor::Backends::default(),
        extra_env: Vec::new(),
        ready_timeout: Duration::from_secs(20),
    })
    .await
    .expect("the fleet up topology starts (with stand-in programs)");

    let mut shape = Shape {
        ports: default_ports(),
        ..Shape::default()
    };
    for child in topo.instances() {
        let s = &child.spec;
        *shape
            .counts
            .entry((s.service.clone(), s.version.clone()))
            .or_default() += 1;
        shape
            .env
            .entry(s.service.clone())
            .or_default()
            .extend(s.env.iter().map(|(k, _)| k.clone()));
        let version = s
            .env
            .iter()
            .find(|(k, _)| k == "SERVICE_VERSION")
            .map(|(_, v)| v);
        assert_eq!(
            version,
            Some(&s.version),
            "{}: SERVICE_VERSION",
            s.instance_id
        );
    }
    topo.stop(Duration::from_secs(2)).await;
    shape
}

// ------------------------------------------------------------------ compose

/// The resolved compose model.
fn compose_model() -> Value {
    let compose = tools_dir().join("venv/bin/docker-compose");
    let json = run_tool(
        &compose,
        &[
            "--env-file",
            "/dev/null",
            "--profile",
            "*",
            "-f",
            "docker-compose.yml",
            "config",
            "--format",
            "json",
        ],
    );
    serde_json::from_str(&json).expect("docker compose config prints JSON")
}

/// Long-running instances of our services: built from this tree's
/// Dockerfile (`fleet/<service>:<version>`), with no one-off command.
fn compose_instances(model: &Value) -> Vec<(String, &Value)> {
    let services = model["services"].as_object().expect("services");
    services
        .iter()
        .filter(|(_, s)| {
            s["image"].as_str().is_some_and(|i| i.starts_with("fleet/")) && s["command"].is_null()
        })
        .map(|(name, s)| (name.clone(), s))
        .collect()
}

fn compose_shape(model: &Value) -> Shape {
    let mut shape = Shape::default();
    for (name, s) in compose_instances(model) {
        let image = s["image"].as_str().unwrap_or_default();
        let (repo, tag) = image
            .split_once(':')
            .unwrap_or_else(|| panic!("{name}: untagged image {image}"));
        let service = repo.trim_start_matches("fleet/").to_owned();
        let env = s["environment"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no environment"));
        let version = env.get("SERVICE_VERSION").map(scalar).unwrap_or_default();
        assert_eq!(
            tag, version,
            "compose {name}: image tag and SERVICE_VERSION differ"
        );
        assert_eq!(
            s["build"]["args"]["SERVICE_VERSION"].as_str(),
            Some(version.as_str()),
            "compose {name}: the image's version label (build arg) and SERVICE_VERSION differ"
        );
        *shape.counts.entry((service.clone(), version)).or_default() += 1;
        shape
            .env
            .entry(service.clone())
            .or_default()
            .extend(env.keys().cloned());
        let main = port_of(&scalar(&env[main_addr_key(&service)]));
        let admin = port_of(&scalar(&env["ADMIN_ADDR"]));
        let prev = shape.ports.insert(service.clone(), (main, admin));
        assert!(
            prev.is_none_or(|p| p == (main, admin)),
            "compose {name}: ports differ between instances of {service}"
        );
    }
    shape
}

// ------------------------------------------------------------------ k8s

fn overlays() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("k8s/overlays"))
        .expect("k8s/overlays")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("kustomization.yaml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 2,
        "expected a local and a production overlay, found {names:?}"
    );
    names
}

fn render_overlay(name: &str) -> Vec<Value> {
    let kustomize = tools_dir().join("bin/kustomize");
    let yaml = run_tool(&kustomize, &["build", &format!("k8s/overlays/{name}")]);
    serde_saphyr::from_multiple::<Value>(&yaml)
        .unwrap_or_else(|e| panic!("kustomize output of {name} is not YAML: {e}"))
}

fn k8s_shape(overlay: &str, objects: &[Value]) -> Shape {
    let mut shape = Shape::default();
    let of_kind = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    let hpa_min: BTreeMap<String, u64> = of_kind("HorizontalPodAutoscaler")
        .map(|h| {
            (
                scalar(&h["spec"]["scaleTargetRef"]["name"]),
                h["spec"]["minReplicas"].as_u64().unwrap_or(1),
            )
        })
        .collect();
    for d in of_kind("Deployment") {
        let name = scalar(&d["metadata"]["name"]);
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let service = scalar(&labels["app.kubernetes.io/name"]);
        if !SERVICES.contains(&service.as_str()) {
            continue;
        }
        let container = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == service.as_str()))
            .unwrap_or_else(|| panic!("{overlay} {name}: no container named {service}"));
        let env: BTreeMap<String, String> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    scalar(&e["name"]),
                    e.get("value").map(scalar).unwrap_or_default(),
                )
            })
            .collect();
        let version = env.get("SERVICE_VERSION").cloned().unwrap_or_default();
        assert_eq!(
            scalar(&labels["app.kubernetes.io/version"]),
            version,
            "{overlay} {name}: version label and SERVICE_VERSION differ"
        );
        let image = scalar(&container["image"]);
        assert!(
            image.ends_with(&format!("/{service}:{version}"))
                || image == format!("fleet/{service}:{version}"),
            "{overlay} {name}: image {image} is not {service}:{version}"
        );
        let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
        if let Some(min) = hpa_min.get(&name) {
            assert_eq!(
                *min, replicas,
                "{overlay} {name}: HPA minReplicas differs from replicas"
            );
        }
        *shape.counts.entry((service.clone(), version)).or_default() += replicas;
        shape
            .env
            .entry(service.clone())
            .or_default()
            .extend(env.keys().cloned());
        let main = port_of(&env[main_addr_key(&service)]);
        let admin = port_of(&env["ADMIN_ADDR"]);
        let container_ports: BTreeSet<u64> = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["containerPort"].as_u64())
            .collect();
        assert_eq!(
            container_ports,
            BTreeSet::from([u64::from(main), u64::from(admin)]),
            "{overlay} {name}: containerPorts differ from {}/ADMIN_ADDR",
            main_addr_key(&service)
        );
        let prev = shape.ports.insert(service.clone(), (main, admin));
        assert!(
            prev.is_none_or(|p| p == (main, admin)),
            "{overlay} {name}: ports differ between versions"
        );
    }
    shape
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn compose_kubernetes_and_fleet_up_run_the_same_services_versions_counts_env_and_ports() {
    let up = fleet_up_shape().await;
    let model = compose_model();
    let compose = compose_shape(&model);

    for service in SERVICES {
        assert!(up.env.contains_key(service), "fleet up runs no {service}");
        assert!(
            compose.env.contains_key(service),
            "compose runs no {service}"
        );
    }

    // Counts and versions: the same everywhere, except that compose and
    // Kubernetes run two dal instances on a shared store.
    let mut up_counts = up.counts.clone();
    let dal = ("dal".to_owned(), fleet_supervisor::V1.to_owned());
    assert_eq!(
        up_counts.get(&dal),
        Some(&1),
        "fleet up runs one dal (embedded store)"
    );
    up_counts.insert(dal.clone(), 2);
    assert_eq!(
        compose.counts, up_counts,
        "compose instances per (service, version) vs fleet up"
    );
    assert!(
        up.counts
            .contains_key(&("catalog".into(), fleet_supervisor::CATALOG_V1_2.into()))
    );
    assert!(
        up.counts
            .contains_key(&("catalog".into(), fleet_supervisor::CATALOG_V1_3.into()))
    );

    // Ports: compose listens on each service's defaults.
    assert_eq!(
        compose.ports, up.ports,
        "compose ports vs the services' defaults"
    );

    // Environment: compose gives every variable `fleet up` gives.
    for (service, names) in &up.env {
        let missing: Vec<_> = names.difference(&compose.env[service]).collect();
        assert!(
            missing.is_empty(),
            "compose {service} lacks {missing:?} that fleet up sets"
        );
    }

    let mut local_env = None;
    let compose_env: EnvNames = compose
        .env
        .iter()
        .map(|(s, names)| {
            let names = names
                .iter()
                .filter(|n| !COMPOSE_ONLY_ENV.contains(&n.as_str()))
                .cloned()
                .collect();
            (s.clone(), names)
        })
        .collect();
    for overlay in overlays() {
        let k8s = k8s_shape(&overlay, &render_overlay(&overlay));
        if overlay == "production" {
            // Production may run more (two edges), never fewer or others.
            assert_eq!(
                k8s.counts.keys().collect::<Vec<_>>(),
                compose.counts.keys().collect::<Vec<_>>(),
                "k8s/{overlay} (service, version) pairs vs compose"
            );
            for (key, n) in &compose.counts {
                assert!(
                    k8s.counts[key] >= *n,
                    "k8s/{overlay} {key:?}: fewer than compose"
                );
            }
            assert!(
                k8s.counts[&("edge".to_owned(), "1.0.0".to_owned())] >= 2,
                "k8s/production runs at least two edges"
            );
        } else {
            assert_eq!(
                k8s.counts, compose.counts,
                "k8s/{overlay} replicas per (service, version) vs compose"
            );
        }
        assert_eq!(k8s.ports, compose.ports, "k8s/{overlay} ports vs compose");
        if overlay == "production" {
            for (service, names) in local_env.as_ref().unwrap_or(&compose_env) {
                let missing: Vec<_> = names.difference(&k8s.env[service]).collect();
                assert!(
                    missing.is_empty(),
                    "k8s/production {service} lacks {missing:?}"
                );
            }
        } else {
            assert_eq!(
                k8s.env, compose_env,
                "k8s/{overlay} environment names vs compose (without the static lists)"
            );
            if overlay == "local" {
                local_env = Some(k8s.env);
            }
        }
    }
}

#[test]
fn compose_static_address_lists_and_scrape_targets_name_every_instance() {
    let model = compose_model();
    let instances = compose_instances(&model);
    let ports = default_ports();
    // service → ["ip:port@version", …] from each instance's fixed address.
    let mut lists: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut targets: BTreeSet<String> = BTreeSet::new();
    for (name, s) in &instances {
        let service = s["image"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("fleet/");
        let (service, version) = service.split_once(':').unwrap_or_default();
        let ip = s["networks"]["fleet"]["ipv4_address"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("compose {name}: static discovery needs a fixed ipv4_address")
            });
        let (main, admin) = ports[service];
        lists
            .entry(service.to_owned())
            .or_default()
            .insert(format!("{ip}:{main}@{version}"));
        targets.insert(format!("{name}:{admin}"));
    }
    let listed = |v: &Value, default_version: Option<&str>| -> BTreeSet<String> {
        scalar(v)
            .split(',')
            .map(|i| match (i.contains('@'), default_version) {
                (false, Some(d)) => format!("{i}@{d}"),
                _ => i.to_owned(),
            })
            .collect()
    };
    for (name, s) in &instances {
        let env = &s["environment"];
        if let Some(v) = env.get("DAL_ADDRS") {
            assert_eq!(
                listed(v, Some(fleet_supervisor::V1)),
                lists["dal"],
                "compose {name}: DAL_ADDRS"
            );
        }
        if let Some(v) = env.get("CATALOG_ADDRS") {
            assert_eq!(
                listed(v, None),
                lists["catalog"],
                "compose {name}: CATALOG_ADDRS"
            );
        }
        if let Some(v) = env.get("RATINGS_ADDRS") {
            assert_eq!(
                listed(v, None),
                lists["ratings"],
                "compose {name}: RATINGS_ADDRS"
            );
        }
    }

    let prom: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/prometheus/prometheus.yml"))
            .expect("prometheus.yml"),
    )
    .expect("prometheus.yml is YAML");
    let scraped: BTreeSet<String> = prom["scrape_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|j| j["static_configs"].as_array().into_iter().flatten())
        .flat_map(|c| c["targets"].as_array().into_iter().flatten())
        .map(scalar)
        .filter(|t| !t.starts_with("otel-collector:"))
        .collect();
    assert_eq!(
        scraped, targets,
        "Prometheus must scrape every compose instance's admin port"
    );
}

/// The routes-seed Job is named for the route tables it writes (a Job's pod
/// template is immutable, so new tables must be a new Job).
#[test]
fn the_routes_seed_job_is_named_for_its_route_tables() {
    let root = repo_root();
    let mut hasher = crc32fast::Hasher::new();
    for service in ["catalog", "ratings"] {
        hasher.update(
            &std::fs::read(root.join(format!("k8s/base/routes/{service}.json")))
                .expect("k8s/base/routes"),
        );
    }
    let expected = format!("routes-seed-{:08x}", hasher.finalize());
    for overlay in overlays() {
        let jobs: Vec<String> = render_overlay(&overlay)
            .iter()
            .filter(|o| o["kind"] == "Job")
            .map(|o| scalar(&o["metadata"]["name"]))
            .filter(|n| n.starts_with("routes-seed"))
            .collect();
        assert_eq!(
            jobs,
            vec![expected.clone()],
            "k8s/{overlay}: rename the routes-seed Job in k8s/base/jobs.yaml to {expected}"
        );
    }
}

#[test]
fn route_tables_are_the_same_file_for_compose_and_kubernetes() {
    let root = repo_root();
    for service in ["catalog", "ratings"] {
        let compose = std::fs::read_to_string(root.join(format!("deploy/routes/{service}.json")))
            .expect("deploy/routes");
        let k8s = std::fs::read_to_string(root.join(format!("k8s/base/routes/{service}.json")))
            .expect("k8s/base/routes");
        assert_eq!(
            compose, k8s,
            "{service}: deploy/routes and k8s/base/routes differ"
        );
        let table: Value = serde_json::from_str(&compose).expect("route table is JSON");
        assert_eq!(table["service"], service);
    }
}
