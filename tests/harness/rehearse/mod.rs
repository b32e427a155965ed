//! The deployment rehearsal: a deployment's own definitions — the compose
//! model (`docker compose config`) or a kustomize overlay's objects — read
//! into a [`Plan`], checked statically ([`Plan::check`]), then run as local
//! processes against the real backends ([`run::run`]).
//!
//! What a definition gives is what runs: the same binary (the workspace's
//! `edge`, `catalog`, `ratings`, `dal`, `fleet-probe`, and the real
//! `consul`), the same arguments and the same environment, with every
//! address (`host:port`) mapped to a loopback port of what the name means
//! in that deployment (a compose service or fixed IP, a Kubernetes Service
//! and its target port, a Toxiproxy listener and its upstream). Scylla,
//! Redis and Consul are the real Cassandra, Redis and Consul of
//! `scripts/backends`. Third-party containers the system only sends data to
//! (OTel collector, Prometheus, Grafana, Toxiproxy's own CLI job) are not
//! run; their configuration is checked statically.
//!
//! The static checks find what a container runtime would only show by
//! failing: a variable the code never reads (the list comes from the
//! services' own `Config::from_env`, which records every name it looks up:
//! `fleet_config::Env::names_read`), a required or invalid one, a port that
//! differs between the service, its probes, what other units call it at,
//! the Prometheus scrape configuration and the NetworkPolicies, a
//! dependency cycle or a condition that can never hold, a health-check
//! program the image does not contain.

// A test-support module: a panic is how a broken invariant reports itself.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod run;
pub mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use fleet_config::Env;

/// The fleet binaries an image can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FleetBin {
    /// `edge`
    Edge,
    /// `catalog`
    Catalog,
    /// `ratings`
    Ratings,
    /// `dal`
    Dal,
}

impl FleetBin {
    /// The binary's (and service's) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Catalog => "catalog",
            Self::Ratings => "ratings",
            Self::Dal => "dal",
        }
    }

    /// The variable holding the main listener.
    pub fn main_addr_var(self) -> &'static str {
        match self {
            Self::Edge => "HTTP_ADDR",
            _ => "GRPC_ADDR",
        }
    }

    /// Reads this service's configuration from `env` the way its `main`
    /// does; returns (variables read, main port, admin port).
    ///
    /// # Errors
    /// The configuration error, as the service would report it (exit 64).
    pub fn configure(self, env: &Env) -> Result<(BTreeSet<String>, u16, u16), String> {
        fleet_telemetry::TelemetryConfig::from_env(env, self.name()).map_err(|e| e.to_string())?;
        let (main, admin) = match self {
            Self::Edge => fleet_edge::Config::from_env(env)
                .map(|c| (c.server.addr.port(), c.server.admin_addr.port())),
            Self::Catalog => fleet_catalog::Config::from_env(env)
                .map(|c| (c.server.addr.port(), c.server.admin_addr.port())),
            Self::Ratings => fleet_ratings::Config::from_env(env)
                .map(|c| (c.server.addr.port(), c.server.admin_addr.port())),
            Self::Dal => fleet_dal::Config::from_env(env)
                .map(|c| (c.server.addr.port(), c.server.admin_addr.port())),
        }
        .map_err(|e| e.to_string())?;
        Ok((env.names_read(), main, admin))
    }

    /// `fleet/<name>:<tag>` or `<registry>/fleet/<name>:<tag>`.
    fn from_image(image: &str) -> Option<Self> {
        let repo = image.split(':').next().unwrap_or_default();
        let name = repo
            .strip_prefix("fleet/")
            .or_else(|| repo.rsplit_once("/fleet/").map(|(_, n)| n))?;
        match name {
            "edge" => Some(Self::Edge),
            "catalog" => Some(Self::Catalog),
            "ratings" => Some(Self::Ratings),
            "dal" => Some(Self::Dal),
            _ => None,
        }
    }
}

/// What a unit's image is, to the rehearsal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// One of ours: run the workspace's binary.
    Fleet(FleetBin),
    /// `hashicorp/consul`: as a service, the real Consul agent of the
    /// rehearsal; as a job, its command with the real `consul` binary.
    Consul,
    /// Scylla: the real Cassandra.
    Scylla,
    /// Redis or Valkey: the real Redis.
    Redis,
    /// Toxiproxy: its listeners forward to their upstreams.
    Toxiproxy,
    /// Not run (the image named).
    Other(String),
}

impl Program {
    fn from_image(image: &str) -> Self {
        if let Some(bin) = FleetBin::from_image(image) {
            return Self::Fleet(bin);
        }
        let repo = image.split(':').next().unwrap_or_default();
        if repo.ends_with("hashicorp/consul") {
            Self::Consul
        } else if repo.ends_with("scylladb/scylla") {
            Self::Scylla
        } else if repo.ends_with("/redis") || repo == "redis" || repo.ends_with("valkey/valkey") {
            Self::Redis
        } else if repo.ends_with("shopify/toxiproxy") {
            Self::Toxiproxy
        } else {
            Self::Other(image.to_owned())
        }
    }

    /// The ports a third-party image listens on by default.
    fn default_ports(&self) -> BTreeSet<u16> {
        let ports: &[u16] = match self {
            Self::Scylla => &[9042, 19042, 7000],
            Self::Redis => &[6379],
            Self::Consul => &[8500, 8300, 8301, 8600],
            Self::Toxiproxy => &[8474],
            Self::Other(image) if image.contains("opentelemetry-collector") => {
                &[4317, 4318, 8888, 13133]
            }
            Self::Other(image) if image.contains("prometheus") => &[9090],
            Self::Other(image) if image.contains("grafana") => &[3000],
            _ => &[],
        };
        ports.iter().copied().collect()
    }
}

/// Long-running or one-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs until stopped.
    Service,
    /// Runs to completion; must exit 0.
    Job,
}

/// A `depends_on` condition (Kubernetes: Job order, init containers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `service_started`
    Started,
    /// `service_healthy`
    Healthy,
    /// `service_completed_successfully`
    Completed,
}

/// A health check or probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// A command in the container (compose `CMD`, Kubernetes `exec`).
    Exec(Vec<String>),
    /// Kubernetes `httpGet` on a container port.
    Http {
        /// The port (named ports resolved).
        port: u16,
        /// The path.
        path: String,
    },
    /// Kubernetes `tcpSocket`.
    Tcp {
        /// The port.
        port: u16,
    },
}

/// A check with its retry budget.
#[derive(Clone, Debug)]
pub struct Probe {
    /// What is checked.
    pub check: Check,
    /// How long it may take to pass (start period + retries × interval).
    pub budget: Duration,
    /// Time between attempts.
    pub period: Duration,
}

/// One process of the deployment (a compose service, a pod's container).
#[derive(Clone, Debug)]
pub struct Unit {
    /// Unique: compose service name; Kubernetes `<workload>-<i>` or
    /// `<job>/<container>`.
    pub name: String,
    /// The compose service or Kubernetes object it comes from.
    pub workload: String,
    /// Kubernetes namespace (empty for compose).
    pub namespace: String,
    /// Pod labels (Kubernetes).
    pub labels: BTreeMap<String, String>,
    /// Pod annotations (Kubernetes).
    pub annotations: BTreeMap<String, String>,
    /// Service or job.
    pub role: Role,
    /// What the image is.
    pub program: Program,
    /// Entrypoint override (compose `entrypoint`, Kubernetes `command`).
    pub entrypoint: Option<Vec<String>>,
    /// Arguments (compose `command`, Kubernetes `args`).
    pub args: Vec<String>,
    /// The environment, as defined.
    pub env: BTreeMap<String, String>,
    /// Ports it listens on (declared, or the service's own for compose).
    pub ports: BTreeSet<u16>,
    /// Named container ports.
    pub port_names: BTreeMap<String, u16>,
    /// What must hold before it starts.
    pub depends_on: Vec<(String, Condition)>,
    /// Readiness (compose healthcheck, Kubernetes readinessProbe).
    pub readiness: Option<Probe>,
    /// Kubernetes livenessProbe.
    pub liveness: Option<Probe>,
    /// Kubernetes startupProbe.
    pub startup: Option<Probe>,
    /// Mounts: container path → host path.
    pub mounts: BTreeMap<String, PathBuf>,
    /// How many times a failed job is started again.
    pub retries: u32,
    /// Only run on demand (compose profiles): checked, not started.
    pub on_demand: bool,
}

impl Unit {
    fn new(name: &str, workload: &str, program: Program) -> Self {
        Self {
            name: name.to_owned(),
            workload: workload.to_owned(),
            namespace: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            role: Role::Service,
            ports: program.default_ports(),
            program,
            entrypoint: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            port_names: BTreeMap::new(),
            depends_on: Vec::new(),
            readiness: None,
            liveness: None,
            startup: None,
            mounts: BTreeMap::new(),
            retries: 0,
            on_demand: false,
        }
    }

    /// The environment with Kubernetes `$(VAR)` references expanded.
    pub fn expanded_env(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .map(|(k, v)| {
                let mut out = v.clone();
                for (name, value) in &self.env {
                    out = out.replace(&format!("$({name})"), value);
                }
                (k.clone(), out)
            })
            .collect()
    }
}

/// How a Kubernetes Service port reaches a pod.
#[derive(Clone, Debug)]
pub enum PortRef {
    /// `targetPort: 7300`
    Number(u16),
    /// `targetPort: grpc`
    Named(String),
}

/// What a host name means in the deployment.
#[derive(Clone, Debug)]
pub enum Name {
    /// A compose service, a fixed IP, a StatefulSet pod: one unit.
    Unit(usize),
    /// A Kubernetes Service: its ports over the pods it selects.
    Service {
        /// Service port → target port.
        ports: BTreeMap<u16, PortRef>,
        /// The selected units.
        units: Vec<usize>,
    },
    /// A Toxiproxy: listen port → upstream `host:port`.
    Proxy(BTreeMap<u16, String>),
}

/// A Prometheus scrape target.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// Where it is configured.
    pub origin: String,
    /// `host` (compose) or the unit's name (Kubernetes annotations).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// The public door: the edge through its published port or Ingress.
#[derive(Clone, Debug)]
pub struct Entry {
    /// How the definition names it.
    pub origin: String,
    /// The name and port it forwards to.
    pub host: String,
    /// The port.
    pub port: u16,
    /// `Host` header (Ingress rule host).
    pub host_header: Option<String>,
    /// The path prefix it routes.
    pub path: String,
}

/// A NetworkPolicy, reduced to what decides a connection.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `namespace/name`.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The pods it applies to.
    pub selector: BTreeMap<String, String>,
    /// Ingress rules, if it restricts ingress.
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules, if it restricts egress.
    pub egress: Option<Vec<Rule>>,
}

/// A label selector of a NetworkPolicy peer; `None` = any.
pub type Labels = Option<BTreeMap<String, String>>;

/// One NetworkPolicy rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Peers: (namespace labels, pod labels).
    pub peers: Vec<(Labels, Labels)>,
    /// (protocol, port); empty = every port.
    pub ports: Vec<(String, u16)>,
}

/// A deployment, ready to check and run.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// `compose`, `k8s/local`, …
    pub name: String,
    /// Every process.
    pub units: Vec<Unit>,
    /// Host names.
    pub names: BTreeMap<String, Name>,
    /// Prometheus targets.
    pub scrape: Vec<Scrape>,
    /// The public door.
    pub entry: Option<Entry>,
    /// NetworkPolicies (Kubernetes; empty for compose).
    pub policies: Vec<Policy>,
    /// Namespaces and their labels (Kubernetes).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Programs the service image contains (from the Dockerfile).
    pub image_programs: BTreeSet<String>,
    /// Variables the service image sets (from the Dockerfile).
    pub image_env: BTreeSet<String>,
    /// Problems found while reading the definitions.
    pub findings: Vec<String>,
}

/// A `host:port` inside a value, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrRef {
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Byte range of `host:port` in the value.
    pub span: std::ops::Range<usize>,
}

/// The `host:port` references in a setting: comma-separated lists, with or
/// without `scheme://` (and userinfo), `/path`, or `@version` suffixes.
pub fn addresses(value: &str) -> Vec<AddrRef> {
    let mut out = Vec::new();
    let mut offset = 0;
    for piece in value.split(',') {
        let lead = piece.len() - piece.trim_start().len();
        let mut start = offset + lead;
        let mut rest = piece.trim();
        let had_scheme = if let Some(i) = rest.find("://") {
            start += i + 3;
            rest = &rest[i + 3..];
            true
        } else {
            false
        };
        let end_host = rest.find('/').unwrap_or(rest.len());
        let mut authority = &rest[..end_host];
        if had_scheme {
            if let Some(i) = authority.rfind('@') {
                start += i + 1;
                authority = &authority[i + 1..];
            }
        } else if let Some(i) = authority.find('@') {
            authority = &authority[..i];
        }
        if let Some((host, port)) = authority.rsplit_once(':')
            && !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && let Ok(port) = port.parse::<u16>()
        {
            out.push(AddrRef {
                host: host.to_owned(),
                port,
                span: start..start + authority.len(),
            });
        }
        offset += piece.len() + 1;
    }
    out
}

/// Hosts that mean "this container".
pub fn is_self(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "127.0.0.1" | "localhost" | "::" | "::1")
}

impl Plan {
    /// The unit called `name`.
    pub fn unit(&self, name: &str) -> Option<usize> {
        self.units.iter().position(|u| u.name == name)
    }

    /// What `host:port` reaches, seen from unit `from`: (unit, container
    /// port) pairs.
    ///
    /// # Errors
    /// Why it reaches nothing: unknown name, or no such port there.
    pub fn resolve(&self, from: usize, host: &str, port: u16) -> Result<Vec<(usize, u16)>, String> {
        self.resolve_depth(from, host, port, 0)
    }

    fn resolve_depth(
        &self,
        from: usize,
        host: &str,
        port: u16,
        depth: u32,
    ) -> Result<Vec<(usize, u16)>, String> {
        if depth > 4 {
            return Err(format!("{host}:{port}: proxies loop"));
        }
        let listens = |u: usize, p: u16| -> Result<Vec<(usize, u16)>, String> {
            let unit = &self.units[u];
            if unit.ports.contains(&p) {
                Ok(vec![(u, p)])
            } else {
                Err(format!(
                    "{host}:{port}: {} does not listen on {p} (it listens on {:?})",
                    unit.name, unit.ports
                ))
            }
        };
        if is_self(host) {
            return listens(from, port);
        }
        let candidates = self.name_candidates(from, host);
        let Some(name) = candidates.iter().find_map(|c| self.names.get(c)) else {
            return Err(format!("{host}:{port}: no such host in {}", self.name));
        };
        match name {
            Name::Unit(u) => listens(*u, port),
            Name::Proxy(routes) => {
                let upstream = routes.get(&port).ok_or_else(|| {
                    format!(
                        "{host}:{port}: the proxy has no listener on {port} (it has {:?})",
                        routes.keys().collect::<Vec<_>>()
                    )
                })?;
                let (h, p) = upstream
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse().ok()?)))
                    .ok_or_else(|| format!("{host}:{port}: bad upstream {upstream}"))?;
                self.resolve_depth(from, h, p, depth + 1)
            }
            Name::Service { ports, units } => {
                let target = ports.get(&port).ok_or_else(|| {
                    format!(
                        "{host}:{port}: Service {host} has no port {port} (it has {:?})",
                        ports.keys().collect::<Vec<_>>()
                    )
                })?;
                if units.is_empty() {
                    return Err(format!("{host}:{port}: Service {host} selects no pod"));
                }
                let mut out = Vec::new();
                for &u in units {
                    let p = match target {
                        PortRef::Number(n) => *n,
                        PortRef::Named(n) => *self.units[u].port_names.get(n).ok_or_else(|| {
                            format!(
                                "{host}:{port}: targetPort {n} is not a port of {}",
                                self.units[u].name
                            )
                        })?,
                    };
                    out.extend(listens(u, p)?);
                }
                Ok(out)
            }
        }
    }

    /// Kubernetes DNS: `svc` resolves in the caller's namespace.
    fn name_candidates(&self, from: usize, host: &str) -> Vec<String> {
        let host = host
            .strip_suffix(".cluster.local")
            .unwrap_or(host)
            .trim_end_matches('.');
        let host = host.strip_suffix(".svc").unwrap_or(host);
        let ns = &self.units[from].namespace;
        let mut out = Vec::new();
        if !ns.is_empty() {
            out.push(format!("{host}.{ns}"));
        }
        out.push(host.to_owned());
        out
    }

    /// Everything wrong that can be seen without running anything.
    pub fn check(&self) -> Vec<String> {
        let mut out = self.findings.clone();
        out.extend(self.check_image());
        out.extend(self.check_units());
        out.extend(self.check_dependencies());
        out.extend(self.check_scrape());
        if !self.policies.is_empty() {
            out.extend(self.check_policies());
        }
        out
    }

    /// Every variable the image sets is read by every service.
    fn check_image(&self) -> Vec<String> {
        let mut out = Vec::new();
        for bin in [
            FleetBin::Edge,
            FleetBin::Catalog,
            FleetBin::Ratings,
            FleetBin::Dal,
        ] {
            let env = Env::from_pairs(std::iter::empty::<(String, String)>());
            match bin.configure(&env) {
                Ok((read, _, _)) => {
                    for name in self.image_env.difference(&read) {
                        out.push(format!(
                            "Dockerfile: the image sets {name}, which {} never reads",
                            bin.name()
                        ));
                    }
                }
                Err(e) => out.push(format!("{}: defaults do not load: {e}", bin.name())),
            }
        }
        out
    }

    /// Environment, ports, probes and references of every unit.
    fn check_units(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, unit) in self.units.iter().enumerate() {
            let what = format!("{}: {}", self.name, unit.name);
            if let Program::Fleet(bin) = unit.program {
                let env = unit.expanded_env();
                let expansion_only: BTreeSet<String> = unit
                    .env
                    .keys()
                    .filter(|k| unit.env.values().any(|v| v.contains(&format!("$({k})"))))
                    .cloned()
                    .collect();
                match bin.configure(&Env::from_pairs(env.clone())) {
                    Err(e) => out.push(format!(
                        "{what}: {} refuses its configuration: {e}",
                        bin.name()
                    )),
                    Ok((read, main, admin)) => {
                        for name in env.keys() {
                            if !read.contains(name) && !expansion_only.contains(name) {
                                out.push(format!(
                                    "{what}: sets {name}, which {} never reads",
                                    bin.name()
                                ));
                            }
                        }
                        // A one-off job (`dal migrate`) runs to completion
                        // and serves nothing: only services declare ports.
                        let listens = BTreeSet::from([main, admin]);
                        if matches!(unit.role, Role::Service) && unit.ports != listens {
                            out.push(format!(
                                "{what}: declares ports {:?}, but {} listens on {main} ({}) and {admin} (ADMIN_ADDR)",
                                unit.ports,
                                bin.name(),
                                bin.main_addr_var()
                            ));
                        }
                        out.extend(self.check_probes(unit, &what, admin));
                        if unit
                            .annotations
                            .get("prometheus.io/scrape")
                            .map(String::as_str)
                            == Some("true")
                        {
                            let port = unit.annotations.get("prometheus.io/port");
                            if port != Some(&admin.to_string()) {
                                out.push(format!(
                                    "{what}: prometheus.io/port is {port:?}, but /metrics is on the admin port {admin}"
                                ));
                            }
                        }
                    }
                }
                if unit.entrypoint.is_some() {
                    out.push(format!(
                        "{what}: overrides the entrypoint of a service image"
                    ));
                }
            }
            for (key, value) in unit.expanded_env() {
                for r in addresses(&value) {
                    if let Err(e) = self.resolve(i, &r.host, r.port) {
                        out.push(format!("{what}: {key}: {e}"));
                    }
                }
            }
        }
        out
    }

    /// Probes: the image has the program, the port is the admin port,
    /// readiness is /readyz and liveness /healthz.
    fn check_probes(&self, unit: &Unit, what: &str, admin: u16) -> Vec<String> {
        let mut out = Vec::new();
        let probes = [
            ("readiness", &unit.readiness, "/readyz"),
            ("liveness", &unit.liveness, "/healthz"),
            ("startup", &unit.startup, "/healthz"),
        ];
        for (kind, probe, want_path) in probes {
            let Some(probe) = probe else { continue };
            match &probe.check {
                Check::Http { port, path } => {
                    if *port != admin {
                        out.push(format!(
                            "{what}: {kind} probe on port {port}, but the admin port is {admin}"
                        ));
                    }
                    if path != want_path {
                        out.push(format!(
                            "{what}: {kind} probe on {path}, expected {want_path}"
                        ));
                    }
                }
                Check::Tcp { port } => {
                    if !unit.ports.contains(port) {
                        out.push(format!(
                            "{what}: {kind} probe on port {port}, which it does not listen on"
                        ));
                    }
                }
                Check::Exec(argv) => {
                    let program = argv.first().cloned().unwrap_or_default();
                    if !self.image_programs.contains(&program) {
                        out.push(format!(
                            "{what}: {kind} check runs {program}, which the image does not contain (it has {:?})",
                            self.image_programs
                        ));
                    }
                    for arg in argv.iter().skip(1) {
                        for r in addresses(arg) {
                            if !is_self(&r.host) {
                                out.push(format!(
                                    "{what}: {kind} check calls {}:{}, not this container",
                                    r.host, r.port
                                ));
                            } else if r.port != admin {
                                out.push(format!(
                                    "{what}: {kind} check on port {}, but the admin port is {admin}",
                                    r.port
                                ));
                            } else if kind == "readiness" && !arg.contains(want_path) {
                                out.push(format!("{what}: {kind} check is not {want_path}: {arg}"));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Unknown targets, cycles, and conditions that cannot hold.
    fn check_dependencies(&self) -> Vec<String> {
        let mut out = Vec::new();
        for unit in &self.units {
            for (dep, cond) in &unit.depends_on {
                let Some(d) = self.unit(dep) else {
                    out.push(format!(
                        "{}: {}: depends on unknown {dep}",
                        self.name, unit.name
                    ));
                    continue;
                };
                let d = &self.units[d];
                match cond {
                    Condition::Healthy if d.readiness.is_none() => out.push(format!(
                        "{}: {} waits for {dep} to be healthy, but {dep} has no health check",
                        self.name, unit.name
                    )),
                    Condition::Healthy | Condition::Started if d.role == Role::Job => out.push(format!(
                        "{}: {} waits for one-off job {dep} to be {}; wait for service_completed_successfully",
                        self.name,
                        unit.name,
                        if *cond == Condition::Healthy { "healthy" } else { "started" }
                    )),
                    Condition::Completed if d.role == Role::Service => out.push(format!(
                        "{}: {} waits for {dep} to complete, but {dep} runs until stopped",
                        self.name, unit.name
                    )),
                    _ => {}
                }
            }
        }
        if let Err(cycle) = self.start_order() {
            out.push(format!(
                "{}: depends_on cycle: {}",
                self.name,
                cycle.join(" → ")
            ));
        }
        out
    }

    /// Units in an order where every dependency comes first.
    ///
    /// # Errors
    /// The cycle, when there is one.
    pub fn start_order(&self) -> Result<Vec<usize>, Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        fn visit(
            plan: &Plan,
            i: usize,
            marks: &mut [Mark],
            stack: &mut Vec<usize>,
            order: &mut Vec<usize>,
        ) -> Result<(), Vec<String>> {
            match marks[i] {
                Mark::Done => return Ok(()),
                Mark::Open => {
                    let from = stack.iter().position(|&s| s == i).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[from..]
                        .iter()
                        .map(|&s| plan.units[s].name.clone())
                        .collect();
                    cycle.push(plan.units[i].name.clone());
                    return Err(cycle);
                }
                Mark::New => {}
            }
            marks[i] = Mark::Open;
            stack.push(i);
            for (dep, _) in &plan.units[i].depends_on {
                if let Some(d) = plan.unit(dep) {
                    visit(plan, d, marks, stack, order)?;
                }
            }
            stack.pop();
            marks[i] = Mark::Done;
            order.push(i);
            Ok(())
        }
        let mut marks = vec![Mark::New; self.units.len()];
        let mut order = Vec::new();
        for i in 0..self.units.len() {
            visit(self, i, &mut marks, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    /// Prometheus targets reach a unit's admin port.
    fn check_scrape(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.scrape {
            let from = self
                .units
                .iter()
                .position(
                    |u| matches!(u.program, Program::Other(ref i) if i.contains("prometheus")),
                )
                .unwrap_or(0);
            match self.resolve(from, &s.host, s.port) {
                Err(e) => out.push(format!(
                    "{}: scrape target {}:{} ({}): {e}",
                    self.name, s.host, s.port, s.origin
                )),
                Ok(targets) => {
                    for (u, p) in targets {
                        if let Program::Fleet(bin) = self.units[u].program
                            && let Ok((_, _, admin)) =
                                bin.configure(&Env::from_pairs(self.units[u].expanded_env()))
                            && p != admin
                        {
                            out.push(format!(
                                "{}: scrape target {}:{} is not {}'s admin port {admin}",
                                self.name, s.host, s.port, self.units[u].name
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// Every connection the deployment makes is allowed by its
    /// NetworkPolicies: each unit to what its settings name, Consul to the
    /// admin ports it health-checks, the ingress controller to the edge,
    /// Prometheus (namespace `monitoring`) to every scraped admin port.
    fn check_policies(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut edges: BTreeSet<(Peer, usize, u16, String)> = BTreeSet::new();
        for (i, unit) in self.units.iter().enumerate() {
            for (key, value) in unit.expanded_env() {
                for r in addresses(&value) {
                    if is_self(&r.host) {
                        continue;
                    }
                    for (u, p) in self.resolve(i, &r.host, r.port).unwrap_or_default() {
                        edges.insert((Peer::Unit(i), u, p, format!("{key}={value}")));
                        if key == "CONSUL_HTTP_ADDR"
                            && unit.env.get("CONSUL_CHECK").map(String::as_str) != Some("grpc")
                            && let Program::Fleet(bin) = unit.program
                            && let Ok((_, _, admin)) =
                                bin.configure(&Env::from_pairs(unit.expanded_env()))
                        {
                            edges.insert((
                                Peer::Unit(u),
                                i,
                                admin,
                                "the Consul health check".into(),
                            ));
                        }
                    }
                }
            }
            if unit
                .annotations
                .get("prometheus.io/scrape")
                .map(String::as_str)
                == Some("true")
            {
                match unit
                    .annotations
                    .get("prometheus.io/port")
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    Some(port) if unit.ports.contains(&port) => {
                        edges.insert((
                            Peer::Namespace("monitoring".into()),
                            i,
                            port,
                            "Prometheus".into(),
                        ));
                    }
                    other => out.push(format!(
                        "{}: {}: prometheus.io/port {other:?} is not a port it listens on ({:?})",
                        self.name, unit.name, unit.ports
                    )),
                }
            }
        }
        // The call graph the services discover in Consul (no address in
        // their settings): edge → catalog, ratings; catalog, ratings → dal.
        for (i, src) in self.units.iter().enumerate() {
            let Program::Fleet(from) = src.program else {
                continue;
            };
            for (j, dst) in self.units.iter().enumerate() {
                let Program::Fleet(to) = dst.program else {
                    continue;
                };
                let calls = matches!(
                    (from, to),
                    (FleetBin::Edge, FleetBin::Catalog | FleetBin::Ratings)
                        | (FleetBin::Catalog | FleetBin::Ratings, FleetBin::Dal)
                );
                if calls
                    && dst.role == Role::Service
                    && let Ok((_, main, _)) = to.configure(&Env::from_pairs(dst.expanded_env()))
                {
                    edges.insert((
                        Peer::Unit(i),
                        j,
                        main,
                        format!("{} calls {}", from.name(), to.name()),
                    ));
                }
            }
        }
        if let Some(entry) = &self.entry
            && let Ok(targets) = self.resolve(0, &entry.host, entry.port)
        {
            for (u, p) in targets {
                edges.insert((
                    Peer::Namespace("ingress-nginx".into()),
                    u,
                    p,
                    entry.origin.clone(),
                ));
            }
        }
        for (src, dst, port, why) in edges {
            if let Some(denied) = self.denied(&src, dst, port) {
                let src_name = match &src {
                    Peer::Unit(s) => self.units[*s].name.clone(),
                    Peer::Namespace(ns) => format!("namespace {ns}"),
                };
                out.push(format!(
                    "{}: {src_name} → {}:{port} ({why}) is not allowed: {denied}",
                    self.name, self.units[dst].name
                ));
            }
        }
        out
    }

    /// `Some(reason)` when the policies stop `src` reaching `dst:port`.
    fn denied(&self, src: &Peer, dst: usize, port: u16) -> Option<String> {
        let dst_unit = &self.units[dst];
        if let Peer::Unit(s) = src {
            let s_unit = &self.units[*s];
            let egress: Vec<&Policy> = self
                .policies
                .iter()
                .filter(|p| {
                    p.namespace == s_unit.namespace
                        && p.egress.is_some()
                        && matches(&p.selector, &s_unit.labels)
                })
                .collect();
            if !egress.is_empty()
                && !egress.iter().any(|p| {
                    p.egress
                        .iter()
                        .flatten()
                        .any(|r| self.rule_allows(r, &p.namespace, dst_unit, port))
                })
            {
                return Some(format!("no egress rule of {} allows it", names(&egress)));
            }
        }
        let ingress: Vec<&Policy> = self
            .policies
            .iter()
            .filter(|p| {
                p.namespace == dst_unit.namespace
                    && p.ingress.is_some()
                    && matches(&p.selector, &dst_unit.labels)
            })
            .collect();
        let from = match src {
            Peer::Unit(s) => Some(&self.units[*s]),
            Peer::Namespace(_) => None,
        };
        let allowed = ingress.iter().any(|p| {
            p.ingress.iter().flatten().any(|r| {
                r.ports_allow(port)
                    && r.peers.iter().any(|(ns_sel, pod_sel)| match (src, from) {
                        (_, Some(f)) => self.peer_matches(
                            ns_sel,
                            pod_sel,
                            &p.namespace,
                            &f.namespace,
                            &f.labels,
                        ),
                        (Peer::Namespace(ns), None) => {
                            pod_sel.as_ref().is_none_or(BTreeMap::is_empty)
                                && ns_sel.as_ref().is_some_and(|sel| {
                                    let labels = BTreeMap::from([(
                                        "kubernetes.io/metadata.name".to_owned(),
                                        ns.clone(),
                                    )]);
                                    matches(sel, &labels)
                                })
                        }
                        _ => false,
                    })
            })
        });
        if !ingress.is_empty() && !allowed {
            return Some(format!("no ingress rule of {} allows it", names(&ingress)));
        }
        None
    }

    fn rule_allows(&self, rule: &Rule, policy_ns: &str, dst: &Unit, port: u16) -> bool {
        rule.ports_allow(port)
            && rule.peers.iter().any(|(ns_sel, pod_sel)| {
                self.peer_matches(ns_sel, pod_sel, policy_ns, &dst.namespace, &dst.labels)
            })
    }

    fn peer_matches(
        &self,
        ns_sel: &Option<BTreeMap<String, String>>,
        pod_sel: &Option<BTreeMap<String, String>>,
        policy_ns: &str,
        peer_ns: &str,
        peer_labels: &BTreeMap<String, String>,
    ) -> bool {
        let ns_ok = match ns_sel {
            None => peer_ns == policy_ns,
            Some(sel) => self
                .namespaces
                .get(peer_ns)
                .is_some_and(|labels| matches(sel, labels)),
        };
        ns_ok && pod_sel.as_ref().is_none_or(|sel| matches(sel, peer_labels))
    }
}

/// Who opens a connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Unit(usize),
    Namespace(String),
}

impl Rule {
    fn ports_allow(&self, port: u16) -> bool {
        self.ports.is_empty()
            || self
                .ports
                .iter()
                .any(|(proto, p)| proto == "TCP" && *p == port)
    }
}

/// `matchLabels` semantics.
fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn names(policies: &[&Policy]) -> String {
    policies
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_urls_lists_and_versions() {
        let refs = |v: &str| -> Vec<(String, u16)> {
            addresses(v).into_iter().map(|r| (r.host, r.port)).collect()
        };
        assert_eq!(refs("http://consul:8500"), vec![("consul".into(), 8500)]);
        assert_eq!(
            refs("redis://:pw@redis.ns.svc:6379/0"),
            vec![("redis.ns.svc".into(), 6379)]
        );
        assert_eq!(
            refs("172.28.0.41:7100@1.2.4, 172.28.0.42:7100@1.2.4"),
            vec![("172.28.0.41".into(), 7100), ("172.28.0.42".into(), 7100)]
        );
        assert_eq!(refs("0.0.0.0:7300"), vec![("0.0.0.0".into(), 7300)]);
        assert!(refs("info,fleet_server=debug").is_empty());
        assert!(refs("10s").is_empty());
        let v = "http://consul:8500/x";
        let r = &addresses(v)[0];
        assert_eq!(&v[r.span.clone()], "consul:8500");
    }
}
