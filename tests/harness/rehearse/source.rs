//! Reading a deployment's definitions into a [`Plan`]: the compose model
//! that `docker compose config --format json` prints, the objects of
//! `kustomize build`, and the Dockerfile's runtime stage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{
    Check, Condition, Entry, FleetBin, Name, Plan, Policy, PortRef, Probe, Program, Role, Rule,
    Scrape, Unit,
};
use fleet_config::Env;

/// Where `scripts/validate-deploy` installs the deploy tools.
pub fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("FLEET_CACHE_DIR").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/fleet"),
        PathBuf::from,
    );
    cache.join("tools")
}

/// Runs a deploy tool; anything on stderr is a failure too (Docker Compose
/// reports some invalid projects there and exits 0).
///
/// # Errors
/// The tool is missing or failed.
pub fn run_tool(repo: &Path, tool: &Path, args: &[&str]) -> Result<String, String> {
    if !tool.exists() {
        return Err(format!(
            "{} is not installed: run scripts/validate-deploy --install",
            tool.display()
        ));
    }
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo)
        .output()
        .map_err(|e| format!("failed to run {}: {e}", tool.display()))?;
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(format!(
            "{} {args:?} failed ({}):\n{}",
            tool.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout)
        .map_err(|e| format!("{}: output is not UTF-8: {e}", tool.display()))
}

/// The resolved compose model (every profile, no `.env`).
///
/// # Errors
/// Compose refused the file.
pub fn compose_model(repo: &Path) -> Result<Value, String> {
    let compose = tools_dir().join("venv/bin/docker-compose");
    let json = run_tool(
        repo,
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
    )?;
    serde_json::from_str(&json).map_err(|e| format!("docker compose config: not JSON: {e}"))
}

/// `kustomize build k8s/overlays/<overlay>`, as objects.
///
/// # Errors
/// kustomize refused the overlay.
pub fn overlay_objects(repo: &Path, overlay: &str) -> Result<Vec<Value>, String> {
    let kustomize = tools_dir().join("bin/kustomize");
    let yaml = run_tool(
        repo,
        &kustomize,
        &["build", &format!("k8s/overlays/{overlay}")],
    )?;
    serde_saphyr::from_multiple::<Value>(&yaml).map_err(|e| format!("kustomize output: {e}"))
}

/// Programs under /usr/local/bin and variable names of the Dockerfile's
/// last stage (the runtime image).
pub fn dockerfile(repo: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(repo.join("Dockerfile")).unwrap_or_default();
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().collect();
    let last_stage = lines
        .iter()
        .rposition(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .unwrap_or(0);
    let mut programs = BTreeSet::new();
    let mut env = BTreeSet::new();
    for line in lines.iter().skip(last_stage) {
        let line = line.trim();
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("COPY ") {
            if let Some(dest) = line.split_whitespace().last()
                && dest.starts_with("/usr/local/bin/")
            {
                programs.insert(dest.to_owned());
            }
        } else if upper.starts_with("ENV ") {
            for token in line.split_whitespace().skip(1) {
                if let Some((k, _)) = token.split_once('=') {
                    env.insert(k.to_owned());
                }
            }
        } else if upper.starts_with("ENTRYPOINT ")
            && let Some(p) = line.split('"').nth(1)
        {
            programs.insert(p.to_owned());
        }
    }
    (programs, env)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(scalar).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
        .unwrap_or_default()
}

fn duration(v: &Value, default: Duration) -> Duration {
    let s = scalar(v);
    if s.is_empty() {
        return default;
    }
    humantime::parse_duration(&s).unwrap_or(default)
}

/// The ports a fleet service listens on with this environment (its
/// defaults where the environment says nothing).
fn fleet_ports(bin: FleetBin, env: &BTreeMap<String, String>) -> BTreeSet<u16> {
    let with = bin.configure(&Env::from_pairs(env.clone()));
    let defaults = || bin.configure(&Env::from_pairs(std::iter::empty::<(String, String)>()));
    match with.or_else(|_| defaults()) {
        Ok((_, main, admin)) => BTreeSet::from([main, admin]),
        Err(_) => BTreeSet::new(),
    }
}

// ------------------------------------------------------------------ compose

/// A plan from the compose model.
pub fn compose_plan(repo: &Path, model: &Value) -> Plan {
    let (image_programs, image_env) = dockerfile(repo);
    let mut plan = Plan {
        name: "compose".into(),
        image_programs,
        image_env,
        ..Plan::default()
    };
    let Some(services) = model["services"].as_object() else {
        plan.findings.push("compose: no services".into());
        return plan;
    };
    for (name, s) in services {
        let image = scalar(&s["image"]);
        let program = Program::from_image(&image);
        let mut unit = Unit::new(name, name, program.clone());
        unit.env = labels(&s["environment"]);
        unit.args = strings(&s["command"]);
        unit.entrypoint = (!s["entrypoint"].is_null()).then(|| strings(&s["entrypoint"]));
        unit.on_demand = s["profiles"].as_array().is_some_and(|p| !p.is_empty());
        let restart = scalar(&s["restart"]);
        if restart == "no" || restart.starts_with("on-failure") {
            unit.role = Role::Job;
            unit.retries = restart
                .strip_prefix("on-failure:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(u32::from(restart.starts_with("on-failure")) * 3);
        }
        if let Program::Fleet(bin) = program {
            unit.ports = fleet_ports(bin, &unit.env);
        }
        for v in s["volumes"].as_array().into_iter().flatten() {
            if v["type"] == "bind" {
                unit.mounts
                    .insert(scalar(&v["target"]), PathBuf::from(scalar(&v["source"])));
            }
        }
        if let Some(deps) = s["depends_on"].as_object() {
            for (dep, d) in deps {
                let cond = match d["condition"].as_str() {
                    Some("service_healthy") => Condition::Healthy,
                    Some("service_completed_successfully") => Condition::Completed,
                    _ => Condition::Started,
                };
                unit.depends_on.push((dep.clone(), cond));
            }
        }
        let hc = &s["healthcheck"];
        if hc.is_object() && hc["disable"] != Value::Bool(true) {
            let test = strings(&hc["test"]);
            let check = match test.first().map(String::as_str) {
                Some("CMD") => Some(test[1..].to_vec()),
                Some("CMD-SHELL") => Some(vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")]),
                _ => None,
            };
            if let Some(argv) = check {
                let interval = duration(&hc["interval"], Duration::from_secs(30));
                let retries = hc["retries"].as_u64().unwrap_or(3);
                let start = duration(&hc["start_period"], Duration::ZERO);
                unit.readiness = Some(Probe {
                    check: Check::Exec(argv),
                    budget: start + interval * u32::try_from(retries + 1).unwrap_or(4),
                    period: interval.min(Duration::from_secs(1)),
                });
            }
        }
        plan.units.push(unit);
    }
    // Names: services, aliases, fixed addresses; Toxiproxy's listeners.
    for (i, (name, s)) in services.iter().enumerate() {
        plan.names.insert(name.clone(), Name::Unit(i));
        for (_, net) in s["networks"].as_object().into_iter().flatten() {
            if let Some(ip) = net["ipv4_address"].as_str() {
                plan.names.insert(ip.to_owned(), Name::Unit(i));
            }
            for alias in net["aliases"].as_array().into_iter().flatten() {
                plan.names.insert(scalar(alias), Name::Unit(i));
            }
        }
        if plan.units[i].program == Program::Toxiproxy && plan.units[i].role == Role::Service {
            let config = plan.units[i]
                .args
                .iter()
                .find_map(|a| a.strip_prefix("-config="))
                .and_then(|c| plan.units[i].mounts.get(c))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok());
            let mut routes = BTreeMap::new();
            for proxy in config
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(port) = scalar(&proxy["listen"])
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                {
                    routes.insert(port, scalar(&proxy["upstream"]));
                    plan.units[i].ports.insert(port);
                }
            }
            if routes.is_empty() {
                plan.findings.push(format!(
                    "compose: {name}: no proxies found in its -config file"
                ));
            }
            plan.names.insert(name.clone(), Name::Proxy(routes));
        }
    }
    // Prometheus: the scrape targets of the configuration it mounts.
    for (name, s) in services {
        let unit = &plan.units[plan.unit(name).unwrap_or(0)];
        if !matches!(&unit.program, Program::Other(i) if i.contains("prometheus")) {
            continue;
        }
        let file = strings(&s["command"])
            .iter()
            .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
            .and_then(|f| unit.mounts.get(&f).cloned());
        let Some(file) = file else {
            plan.findings.push(format!(
                "compose: {name}: its --config.file is not a mounted file"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let prom: Value = serde_saphyr::from_str(&text).unwrap_or(Value::Null);
        for job in prom["scrape_configs"].as_array().into_iter().flatten() {
            for sc in job["static_configs"].as_array().into_iter().flatten() {
                for t in sc["targets"].as_array().into_iter().flatten() {
                    let t = scalar(t);
                    match t
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                    {
                        Some((host, port)) => plan.scrape.push(Scrape {
                            origin: format!("{} job {}", file.display(), scalar(&job["job_name"])),
                            host,
                            port,
                        }),
                        None => plan
                            .findings
                            .push(format!("compose: scrape target {t} is not host:port")),
                    }
                }
            }
        }
    }
    // The public door: the edge's published port.
    for (name, s) in services {
        let Some(i) = plan.unit(name) else { continue };
        if plan.units[i].program != Program::Fleet(FleetBin::Edge) {
            continue;
        }
        for p in s["ports"].as_array().into_iter().flatten() {
            if let Some(target) = p["target"].as_u64().and_then(|t| u16::try_from(t).ok()) {
                plan.entry = Some(Entry {
                    origin: format!("{name} published port {}", scalar(&p["published"])),
                    host: name.clone(),
                    port: target,
                    host_header: None,
                    path: "/api/".into(),
                });
            }
        }
    }
    plan
}

// ------------------------------------------------------------------ Kubernetes

/// A value of a `valueFrom` (field, Secret or ConfigMap key).
fn value_from(
    vf: &Value,
    pod: &str,
    ns: &str,
    objects: &[Value],
    findings: &mut Vec<String>,
) -> String {
    if let Some(path) = vf["fieldRef"]["fieldPath"].as_str() {
        return match path {
            "metadata.name" => pod.to_owned(),
            "metadata.namespace" => ns.to_owned(),
            "status.podIP" | "status.hostIP" => "127.0.0.1".to_owned(),
            "spec.nodeName" => "node-0".to_owned(),
            other => {
                findings.push(format!("{pod}: fieldRef {other} is not rehearsed"));
                String::new()
            }
        };
    }
    for (kind, key_ref) in [("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")] {
        let r = &vf[key_ref];
        if r.is_null() {
            continue;
        }
        let (name, key) = (scalar(&r["name"]), scalar(&r["key"]));
        let obj = objects.iter().find(|o| {
            o["kind"] == kind
                && scalar(&o["metadata"]["name"]) == name
                && scalar(&o["metadata"]["namespace"]) == ns
        });
        let Some(obj) = obj else {
            // Created out of band (the production admin token): a stand-in.
            return "rehearsal-stand-in-secret-0123456789".to_owned();
        };
        if let Some(v) = obj["stringData"][&key].as_str() {
            return v.to_owned();
        }
        if let Some(v) = obj["data"][&key].as_str() {
            if kind == "ConfigMap" {
                return v.to_owned();
            }
            use base64::Engine as _;
            return base64::engine::general_purpose::STANDARD
                .decode(v)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
        }
        findings.push(format!("{pod}: {kind} {name} has no key {key}"));
    }
    String::new()
}

fn k8s_probe(p: &Value, port_names: &BTreeMap<String, u16>) -> Option<Probe> {
    if !p.is_object() {
        return None;
    }
    let port = |v: &Value| -> u16 {
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .or_else(|| port_names.get(&scalar(v)).copied())
            .unwrap_or(0)
    };
    let check = if p["httpGet"].is_object() {
        Check::Http {
            port: port(&p["httpGet"]["port"]),
            path: scalar(&p["httpGet"]["path"]),
        }
    } else if p["tcpSocket"].is_object() {
        Check::Tcp {
            port: port(&p["tcpSocket"]["port"]),
        }
    } else if p["exec"].is_object() {
        Check::Exec(strings(&p["exec"]["command"]))
    } else {
        return None;
    };
    let period = Duration::from_secs(p["periodSeconds"].as_u64().unwrap_or(10));
    let failures = u32::try_from(p["failureThreshold"].as_u64().unwrap_or(3)).unwrap_or(3);
    let delay = Duration::from_secs(p["initialDelaySeconds"].as_u64().unwrap_or(0));
    Some(Probe {
        check,
        budget: delay + period * failures,
        period: period.min(Duration::from_secs(1)),
    })
}

fn selector(v: &Value) -> Option<BTreeMap<String, String>> {
    v.is_object().then(|| labels(&v["matchLabels"]))
}

/// A plan from an overlay's objects; ConfigMap volumes are written under
/// `files`.
pub fn k8s_plan(repo: &Path, overlay: &str, objects: &[Value], files: &Path) -> Plan {
    let (image_programs, image_env) = dockerfile(repo);
    let mut plan = Plan {
        name: format!("k8s/{overlay}"),
        image_programs,
        image_env,
        ..Plan::default()
    };
    let ns_of = |o: &Value| {
        let ns = scalar(&o["metadata"]["namespace"]);
        if ns.is_empty() {
            "default".to_owned()
        } else {
            ns
        }
    };
    for o in objects.iter().filter(|o| o["kind"] == "Namespace") {
        let name = scalar(&o["metadata"]["name"]);
        let mut l = labels(&o["metadata"]["labels"]);
        l.insert("kubernetes.io/metadata.name".into(), name.clone());
        plan.namespaces.insert(name, l);
    }
    for ns in ["kube-system", "ingress-nginx", "monitoring"] {
        plan.namespaces.insert(
            ns.into(),
            BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), ns.to_owned())]),
        );
    }
    let mut findings = Vec::new();
    for o in objects {
        let kind = scalar(&o["kind"]);
        let (replicas, role) = match kind.as_str() {
            "Deployment" | "StatefulSet" => {
                (o["spec"]["replicas"].as_u64().unwrap_or(1), Role::Service)
            }
            "DaemonSet" => (1, Role::Service),
            "Job" => (1, Role::Job),
            _ => continue,
        };
        let workload = scalar(&o["metadata"]["name"]);
        let ns = ns_of(o);
        if !plan.namespaces.contains_key(&ns) {
            findings.push(format!("{kind} {workload}: namespace {ns} is not defined"));
        }
        let template = &o["spec"]["template"];
        let pod_spec = &template["spec"];
        let init: Vec<&Value> = pod_spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let main: Vec<&Value> = pod_spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        for r in 0..replicas {
            let pod = if kind == "Job" {
                workload.clone()
            } else {
                format!("{workload}-{r}")
            };
            let containers: Vec<(&Value, bool)> = if role == Role::Job {
                init.iter()
                    .map(|c| (*c, true))
                    .chain(main.iter().map(|c| (*c, false)))
                    .collect()
            } else {
                main.iter().map(|c| (*c, false)).collect()
            };
            let init_names: Vec<String> = init
                .iter()
                .map(|c| format!("{pod}/{}", scalar(&c["name"])))
                .collect();
            for (c, is_init) in containers {
                let image = scalar(&c["image"]);
                let program = Program::from_image(&image);
                let name = if role == Role::Job || main.len() > 1 {
                    format!("{pod}/{}", scalar(&c["name"]))
                } else {
                    pod.clone()
                };
                let mut unit = Unit::new(&name, &workload, program.clone());
                unit.role = role;
                unit.namespace = ns.clone();
                unit.labels = labels(&template["metadata"]["labels"]);
                unit.annotations = labels(&template["metadata"]["annotations"]);
                unit.entrypoint = (!c["command"].is_null()).then(|| strings(&c["command"]));
                unit.args = strings(&c["args"]);
                if role == Role::Job {
                    unit.retries =
                        u32::try_from(o["spec"]["backoffLimit"].as_u64().unwrap_or(6).min(3))
                            .unwrap_or(3);
                    if !is_init {
                        unit.depends_on = init_names
                            .iter()
                            .map(|n| (n.clone(), Condition::Completed))
                            .collect();
                    } else if let Some(pos) = init_names.iter().position(|n| *n == name)
                        && pos > 0
                    {
                        unit.depends_on = vec![(init_names[pos - 1].clone(), Condition::Completed)];
                    }
                }
                for e in c["env"].as_array().into_iter().flatten() {
                    let value = if e["valueFrom"].is_object() {
                        value_from(&e["valueFrom"], &pod, &ns, objects, &mut findings)
                    } else {
                        scalar(&e["value"])
                    };
                    unit.env.insert(scalar(&e["name"]), value);
                }
                let declared: Vec<&Value> = c["ports"].as_array().into_iter().flatten().collect();
                if !declared.is_empty() || matches!(program, Program::Fleet(_)) {
                    unit.ports = BTreeSet::new();
                }
                for p in declared {
                    if p["protocol"].as_str().unwrap_or("TCP") != "TCP" {
                        continue;
                    }
                    if let Some(n) = p["containerPort"]
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                    {
                        unit.ports.insert(n);
                        if let Some(pn) = p["name"].as_str() {
                            unit.port_names.insert(pn.to_owned(), n);
                        }
                    }
                }
                unit.readiness = k8s_probe(&c["readinessProbe"], &unit.port_names);
                unit.liveness = k8s_probe(&c["livenessProbe"], &unit.port_names);
                unit.startup = k8s_probe(&c["startupProbe"], &unit.port_names);
                for m in c["volumeMounts"].as_array().into_iter().flatten() {
                    let vol = pod_spec["volumes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|v| v["name"] == m["name"]);
                    let Some(cm) = vol.and_then(|v| v["configMap"]["name"].as_str()) else {
                        continue;
                    };
                    let Some(obj) = objects.iter().find(|o| {
                        o["kind"] == "ConfigMap"
                            && scalar(&o["metadata"]["name"]) == cm
                            && ns_of(o) == ns
                    }) else {
                        findings.push(format!("{name}: ConfigMap {cm} is not defined in {ns}"));
                        continue;
                    };
                    let dir = files.join(format!("{ns}-{cm}"));
                    let _ = std::fs::create_dir_all(&dir);
                    for (k, v) in obj["data"].as_object().into_iter().flatten() {
                        let _ = std::fs::write(dir.join(k), scalar(v));
                    }
                    let target = scalar(&m["mountPath"]);
                    let source = match m["subPath"].as_str() {
                        Some(sub) => dir.join(sub),
                        None => dir.clone(),
                    };
                    unit.mounts.insert(target, source);
                }
                plan.units.push(unit);
            }
        }
    }
    // Names: Services (and StatefulSet pods behind a headless Service).
    for o in objects.iter().filter(|o| o["kind"] == "Service") {
        let name = scalar(&o["metadata"]["name"]);
        let ns = ns_of(o);
        let sel = labels(&o["spec"]["selector"]);
        let units: Vec<usize> = plan
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| {
                u.namespace == ns
                    && u.role == Role::Service
                    && !sel.is_empty()
                    && super::matches(&sel, &u.labels)
            })
            .map(|(i, _)| i)
            .collect();
        let mut ports = BTreeMap::new();
        for p in o["spec"]["ports"].as_array().into_iter().flatten() {
            if p["protocol"].as_str().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Some(port) = p["port"].as_u64().and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let target = match &p["targetPort"] {
                Value::Null => PortRef::Number(port),
                Value::Number(n) => {
                    PortRef::Number(n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(0))
                }
                other => PortRef::Named(scalar(other)),
            };
            ports.insert(port, target);
        }
        plan.names
            .insert(format!("{name}.{ns}"), Name::Service { ports, units });
    }
    for o in objects.iter().filter(|o| o["kind"] == "StatefulSet") {
        let svc = scalar(&o["spec"]["serviceName"]);
        let ns = ns_of(o);
        let workload = scalar(&o["metadata"]["name"]);
        for (i, u) in plan.units.iter().enumerate() {
            if u.workload == workload && u.namespace == ns {
                plan.names
                    .insert(format!("{}.{svc}.{ns}", u.name), Name::Unit(i));
            }
        }
    }
    // The public door: the Ingress's /api/ path.
    for o in objects.iter().filter(|o| o["kind"] == "Ingress") {
        let ns = ns_of(o);
        for rule in o["spec"]["rules"].as_array().into_iter().flatten() {
            for path in rule["http"]["paths"].as_array().into_iter().flatten() {
                let svc = scalar(&path["backend"]["service"]["name"]);
                let port = &path["backend"]["service"]["port"];
                let number = port["number"]
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .or_else(|| {
                        let pname = scalar(&port["name"]);
                        objects
                            .iter()
                            .find(|s| {
                                s["kind"] == "Service"
                                    && scalar(&s["metadata"]["name"]) == svc
                                    && ns_of(s) == ns
                            })
                            .and_then(|s| {
                                s["spec"]["ports"]
                                    .as_array()?
                                    .iter()
                                    .find(|p| scalar(&p["name"]) == pname)?["port"]
                                    .as_u64()
                            })
                            .and_then(|n| u16::try_from(n).ok())
                    });
                match number {
                    Some(port) => {
                        plan.entry = Some(Entry {
                            origin: format!("Ingress {}", scalar(&o["metadata"]["name"])),
                            host: format!("{svc}.{ns}"),
                            port,
                            host_header: rule["host"].as_str().map(str::to_owned),
                            path: scalar(&path["path"]),
                        });
                    }
                    None => findings.push(format!("Ingress → Service {svc}: no such port {port}")),
                }
            }
        }
    }
    // NetworkPolicies.
    for o in objects.iter().filter(|o| o["kind"] == "NetworkPolicy") {
        let spec = &o["spec"];
        let types: Vec<String> = strings(&spec["policyTypes"]);
        let rules = |key: &str, peer_key: &str| -> Vec<Rule> {
            spec[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let peers = match r[peer_key].as_array() {
                        None => vec![(Some(BTreeMap::new()), None)],
                        Some(ps) => ps
                            .iter()
                            .map(|p| {
                                (
                                    selector(&p["namespaceSelector"]),
                                    selector(&p["podSelector"]),
                                )
                            })
                            .collect(),
                    };
                    let ports = r["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| {
                            Some((
                                p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                                u16::try_from(p["port"].as_u64()?).ok()?,
                            ))
                        })
                        .collect();
                    Rule { peers, ports }
                })
                .collect()
        };
        let has = |t: &str| {
            types.iter().any(|x| x == t)
                || (types.is_empty() && (t == "Ingress" || !spec["egress"].is_null()))
        };
        plan.policies.push(Policy {
            name: format!("{}/{}", ns_of(o), scalar(&o["metadata"]["name"])),
            namespace: ns_of(o),
            selector: labels(&spec["podSelector"]["matchLabels"]),
            ingress: has("Ingress").then(|| rules("ingress", "from")),
            egress: has("Egress").then(|| rules("egress", "to")),
        });
    }
    plan.findings = findings;
    plan
}
