//! Running a [`Plan`] as local processes: every name mapped to a loopback
//! port, backends to the real Cassandra, Redis and a Consul agent of the
//! rehearsal's own, units started in dependency order (jobs to completion,
//! services until their health checks pass), then the edge driven through
//! the public door and every scrape target scraped once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{Check, Condition, FleetBin, Plan, Probe, Program, Role, addresses};

/// The real backends.
#[derive(Clone, Debug)]
pub struct Backends {
    /// A CQL contact point (Cassandra stands in for Scylla).
    pub cql: SocketAddr,
    /// Redis.
    pub redis: SocketAddr,
    /// The Consul agent's HTTP address.
    pub consul: SocketAddr,
    /// The `consul` binary (for jobs and health checks that run it).
    pub consul_bin: PathBuf,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The workspace's binaries (`edge`, …, `fleet-probe`).
    pub bin_dir: PathBuf,
    /// Logs, container file systems.
    pub work: PathBuf,
    /// Real backends.
    pub backends: Backends,
    /// Prefix of every keyspace (a rehearsal never touches a real one).
    pub keyspace_prefix: String,
    /// Longest wait for one job.
    pub job_timeout: Duration,
    /// Longest wait for one service to become healthy.
    pub health_timeout: Duration,
}

/// What the rehearsal did (printed by `scripts/rehearse`).
#[derive(Debug, Default)]
pub struct Report {
    /// One line per step.
    pub lines: Vec<String>,
}

/// A Consul dev agent of the rehearsal's own (`scripts/backends up consul`
/// in a private state directory); stopped on drop.
pub struct Consul {
    repo: PathBuf,
    dir: PathBuf,
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// The binary.
    pub bin: PathBuf,
}

impl Consul {
    /// Starts the agent.
    ///
    /// # Errors
    /// `scripts/backends` failed (the binary is built by
    /// `scripts/backends fetch consul`).
    pub fn start(repo: &Path, dir: &Path) -> Result<Self, String> {
        let out = std::process::Command::new(repo.join("scripts/backends"))
            .args(["up", "consul"])
            .env("FLEET_BACKENDS_DIR", dir)
            .output()
            .map_err(|e| format!("scripts/backends: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/backends up consul failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let envfile = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(&envfile).map_err(|e| format!("{envfile}: {e}"))?;
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {key}=")))
                .map(|v| v.trim_matches('\'').to_owned())
        };
        let addr = get("FLEET_TEST_CONSUL_HTTP_ADDR")
            .and_then(|a| a.parse().ok())
            .ok_or("no FLEET_TEST_CONSUL_HTTP_ADDR in the env file")?;
        let bin = get("FLEET_TEST_CONSUL_BIN")
            .map(PathBuf::from)
            .ok_or("no FLEET_TEST_CONSUL_BIN")?;
        Ok(Self {
            repo: repo.to_owned(),
            dir: dir.to_owned(),
            addr,
            bin,
        })
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.repo.join("scripts/backends"))
            .arg("down")
            .env("FLEET_BACKENDS_DIR", &self.dir)
            .output();
    }
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9)))
}

struct Runner<'a> {
    plan: &'a Plan,
    opts: &'a Options,
    /// (unit, container port) → loopback address.
    net: BTreeMap<(usize, u16), SocketAddr>,
    children: Vec<(usize, tokio::process::Child)>,
    healthy: BTreeSet<usize>,
    completed: BTreeSet<usize>,
    report: Report,
    bin_path: PathBuf,
}

/// Runs the plan; stops everything it started before returning.
///
/// # Errors
/// What failed: a job's exit status, a health check that never passed, a
/// request through the public door, a scrape.
pub async fn run(plan: &Plan, opts: &Options) -> Result<Report, (Report, String)> {
    let mut r = Runner::new(plan, opts);
    let outcome = r.run_all().await;
    r.stop_all().await;
    match outcome {
        Ok(()) => Ok(r.report),
        Err(e) => Err((r.report, e)),
    }
}

impl<'a> Runner<'a> {
    fn new(plan: &'a Plan, opts: &'a Options) -> Self {
        let b = &opts.backends;
        let mut net = BTreeMap::new();
        for (i, u) in plan.units.iter().enumerate() {
            for &p in &u.ports {
                let addr = match (&u.program, p) {
                    (Program::Scylla, 9042 | 19042) => b.cql,
                    (Program::Redis, 6379) => b.redis,
                    (Program::Consul, 8500) if u.role == Role::Service => b.consul,
                    _ => free_port(),
                };
                net.insert((i, p), addr);
            }
        }
        let bin_path = opts.work.join("bin");
        let _ = std::fs::create_dir_all(&bin_path);
        let _ = std::fs::remove_file(bin_path.join("consul"));
        let _ = std::os::unix::fs::symlink(&b.consul_bin, bin_path.join("consul"));
        Self {
            plan,
            opts,
            net,
            children: Vec::new(),
            healthy: BTreeSet::new(),
            completed: BTreeSet::new(),
            report: Report::default(),
            bin_path,
        }
    }

    fn say(&mut self, line: String) {
        println!("rehearse {}: {line}", self.plan.name);
        self.report.lines.push(line);
    }

    /// `value` with every `host:port` replaced by its loopback address.
    fn rewrite(&self, unit: usize, value: &str) -> Result<String, String> {
        let mut out = value.to_owned();
        for r in addresses(value).into_iter().rev() {
            let targets = self.plan.resolve(unit, &r.host, r.port)?;
            let Some(addr) = targets.first().and_then(|t| self.net.get(t)) else {
                return Err(format!("{}:{}: nothing to map it to", r.host, r.port));
            };
            out.replace_range(r.span.clone(), &addr.to_string());
        }
        Ok(out)
    }

    /// A container path: a mount's host path, or under the unit's own root.
    fn path(&self, unit: usize, p: &str) -> String {
        let u = &self.plan.units[unit];
        let mut mounts: Vec<(&String, &PathBuf)> = u.mounts.iter().collect();
        mounts.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        for (target, source) in mounts {
            if let Some(rest) = p.strip_prefix(target.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", source.display());
            }
        }
        let root = self.opts.work.join("root").join(u.name.replace('/', "_"));
        let host = format!("{}{p}", root.display());
        if let Some(parent) = Path::new(&host).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        host
    }

    /// Container paths inside a shell script or argument.
    fn paths_in(&self, unit: usize, arg: &str) -> String {
        let u = &self.plan.units[unit];
        let mut out = arg.to_owned();
        let mut mounts: Vec<(&String, &PathBuf)> = u.mounts.iter().collect();
        mounts.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        for (target, source) in mounts {
            out = out.replace(&format!("{target}/"), &format!("{}/", source.display()));
        }
        out
    }

    /// The environment the process gets: the definition's, addresses and
    /// paths mapped, keyspace and replication adapted to the one real node.
    fn env(&self, unit: usize) -> Result<BTreeMap<String, String>, String> {
        let u = &self.plan.units[unit];
        let mut env = BTreeMap::new();
        for (k, v) in u.expanded_env() {
            let mut v = self
                .rewrite(unit, &v)
                .map_err(|e| format!("{}: {k}: {e}", u.name))?;
            if v.starts_with('/') && !v.contains(',') {
                v = self.path(unit, &v);
            }
            env.insert(k, v);
        }
        if let Program::Fleet(bin) = u.program {
            if let Some(ks) = env.get_mut("SCYLLA_KEYSPACE") {
                *ks = format!("{}{ks}", self.opts.keyspace_prefix);
            } else if env.contains_key("SCYLLA_NODES") {
                env.insert(
                    "SCYLLA_KEYSPACE".into(),
                    format!("{}fleet", self.opts.keyspace_prefix),
                );
            }
            if let Some(rf) = env.get_mut("SCYLLA_REPLICATION_FACTOR")
                && rf.as_str() != "1"
            {
                *rf = "1".into();
            }
            // A Redis database of its own on the shared server.
            if let Some(url) = env.get_mut("REDIS_URL")
                && url.matches('/').count() == 2
            {
                url.push_str("/7");
            }
            for var in [bin.main_addr_var(), "ADMIN_ADDR"] {
                if !env.contains_key(var) {
                    let (_, main, admin) = bin
                        .configure(&fleet_config::Env::from_pairs(u.expanded_env()))
                        .map_err(|e| format!("{}: {e}", u.name))?;
                    let p = if var == "ADMIN_ADDR" { admin } else { main };
                    if let Some(a) = self.net.get(&(unit, p)) {
                        env.insert(var.into(), a.to_string());
                    }
                }
            }
        }
        if u.program == Program::Consul && !env.contains_key("CONSUL_HTTP_ADDR") {
            let own = self
                .net
                .get(&(unit, 8500))
                .copied()
                .unwrap_or(self.opts.backends.consul);
            env.insert("CONSUL_HTTP_ADDR".into(), format!("http://{own}"));
        }
        let path = format!(
            "{}:{}",
            self.bin_path.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        env.insert("PATH".into(), path);
        Ok(env)
    }

    /// The host program for a container's argv[0], if the rehearsal can run it.
    fn program(&self, unit: usize, argv0: &str) -> Option<PathBuf> {
        let u = &self.plan.units[unit];
        match (&u.program, argv0) {
            (Program::Fleet(bin), "/usr/local/bin/service") => {
                Some(self.opts.bin_dir.join(bin.name()))
            }
            (Program::Fleet(_), "/usr/local/bin/fleet-probe") => {
                Some(self.opts.bin_dir.join("fleet-probe"))
            }
            (Program::Consul, "consul" | "/bin/consul" | "/usr/local/bin/consul") => {
                Some(self.opts.backends.consul_bin.clone())
            }
            (Program::Consul, "/bin/sh" | "sh") => Some(PathBuf::from("/bin/sh")),
            _ => None,
        }
    }

    /// The command a unit runs, or `None` when the rehearsal does not run it.
    fn command(&self, unit: usize) -> Result<Option<tokio::process::Command>, String> {
        let u = &self.plan.units[unit];
        let (exe, args): (PathBuf, Vec<String>) = match (&u.program, &u.entrypoint) {
            (Program::Fleet(bin), None) => (self.opts.bin_dir.join(bin.name()), u.args.clone()),
            (Program::Consul, Some(ep)) if u.role == Role::Job => {
                let Some(exe) = ep.first().and_then(|p| self.program(unit, p)) else {
                    return Err(format!(
                        "{}: cannot run {ep:?} from the consul image",
                        u.name
                    ));
                };
                (exe, ep[1..].iter().chain(&u.args).cloned().collect())
            }
            (Program::Consul, None) if u.role == Role::Job => {
                let args = if u.args.first().map(String::as_str) == Some("consul") {
                    u.args[1..].to_vec()
                } else {
                    u.args.clone()
                };
                (self.opts.backends.consul_bin.clone(), args)
            }
            _ => return Ok(None),
        };
        let args: Vec<String> = args
            .iter()
            .map(|a| self.rewrite(unit, a).map(|a| self.paths_in(unit, &a)))
            .collect::<Result<_, _>>()?;
        let env = self.env(unit)?;
        let logs = self.opts.work.join("logs");
        let _ = std::fs::create_dir_all(&logs);
        let log = std::fs::File::create(logs.join(format!("{}.log", u.name.replace('/', "_"))))
            .map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        Ok(Some(cmd))
    }

    fn log_tail(&self, unit: usize) -> String {
        let u = &self.plan.units[unit];
        let text = std::fs::read_to_string(
            self.opts
                .work
                .join("logs")
                .join(format!("{}.log", u.name.replace('/', "_"))),
        )
        .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Runs a job to completion, honouring its retry policy.
    async fn run_job(&mut self, unit: usize) -> Result<(), String> {
        if self.completed.contains(&unit) {
            return Ok(());
        }
        let name = self.plan.units[unit].name.clone();
        let attempts = self.plan.units[unit].retries + 1;
        for attempt in 1..=attempts {
            let Some(mut cmd) = self.command(unit)? else {
                self.say(format!(
                    "{name}: not rehearsed ({:?}), taken as completed",
                    self.plan.units[unit].program
                ));
                self.completed.insert(unit);
                return Ok(());
            };
            let started = Instant::now();
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("{name}: cannot start: {e}"))?;
            let status = tokio::time::timeout(self.opts.job_timeout, child.wait()).await;
            match status {
                Ok(Ok(s)) if s.success() => {
                    self.say(format!(
                        "{name}: job completed in {:.1}s",
                        started.elapsed().as_secs_f64()
                    ));
                    self.completed.insert(unit);
                    return Ok(());
                }
                Ok(Ok(s)) if attempt < attempts => {
                    self.say(format!(
                        "{name}: job exited {s} (attempt {attempt}/{attempts}); retrying"
                    ));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Ok(s)) => {
                    return Err(format!(
                        "one-off job {name} exited {s} ({attempts} attempts); its last output:\n{}",
                        self.log_tail(unit)
                    ));
                }
                Ok(Err(e)) => return Err(format!("{name}: {e}")),
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(format!(
                        "one-off job {name} did not finish within {:?}",
                        self.opts.job_timeout
                    ));
                }
            }
        }
        Err(format!("{name}: no attempt ran"))
    }

    /// One run of a check.
    async fn check_once(&self, unit: usize, check: &Check) -> Result<(), String> {
        let u = &self.plan.units[unit];
        let argv: Vec<String> = match check {
            Check::Exec(argv) => argv.clone(),
            Check::Http { port, path } => {
                let addr = self
                    .net
                    .get(&(unit, *port))
                    .ok_or_else(|| format!("{}: no port {port}", u.name))?;
                vec![
                    "/usr/local/bin/fleet-probe".into(),
                    format!("http://{addr}{path}"),
                ]
            }
            Check::Tcp { port } => {
                let addr = *self
                    .net
                    .get(&(unit, *port))
                    .ok_or_else(|| format!("{}: no port {port}", u.name))?;
                return tokio::net::TcpStream::connect(addr)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("tcp {addr}: {e}"));
            }
        };
        let exe = match check {
            Check::Http { .. } => Some(self.opts.bin_dir.join("fleet-probe")),
            _ => argv.first().and_then(|p| self.program(unit, p)),
        };
        let Some(exe) = exe else {
            return Err(format!("cannot run {:?} here", argv.first()));
        };
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| {
                if matches!(check, Check::Http { .. }) {
                    Ok(a.clone())
                } else {
                    self.rewrite(unit, a)
                }
            })
            .collect::<Result<_, _>>()?;
        let env = self.env(unit)?;
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(&exe)
                .args(&args)
                .env_clear()
                .envs(env)
                .output(),
        )
        .await
        .map_err(|_| format!("{} timed out", exe.display()))?
        .map_err(|e| format!("{}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {args:?}: {} {}",
                exe.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Waits until the unit's probe passes (or says why it never did).
    async fn wait_probe(
        &mut self,
        unit: usize,
        probe: &Probe,
        budget: Duration,
        kind: &str,
    ) -> Result<(), String> {
        let name = self.plan.units[unit].name.clone();
        let started = Instant::now();
        let mut last;
        loop {
            match self.check_once(unit, &probe.check).await {
                Ok(()) => {
                    self.say(format!(
                        "{name}: {kind} passed after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ));
                    return Ok(());
                }
                Err(e) => last = e,
            }
            let exited = self
                .children
                .iter_mut()
                .find(|(u, _)| *u == unit)
                .and_then(|(_, child)| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "{name} exited {status} before its {kind} passed; its last output:\n{}",
                    self.log_tail(unit)
                ));
            }
            if started.elapsed() >= budget {
                return Err(format!(
                    "{name}: {kind} never passed within {budget:?}: {last}\nits last output:\n{}",
                    self.log_tail(unit)
                ));
            }
            tokio::time::sleep(probe.period.max(Duration::from_millis(200))).await;
        }
    }

    /// Makes `cond` of unit `dep` hold.
    async fn ensure(&mut self, dep: usize, cond: Condition) -> Result<(), String> {
        let u = self.plan.units[dep].clone();
        match cond {
            Condition::Started => Ok(()),
            Condition::Completed => self.run_job(dep).await,
            Condition::Healthy => {
                if self.healthy.contains(&dep) {
                    return Ok(());
                }
                let Some(probe) = u.readiness.clone() else {
                    return Err(format!("{} has no health check to wait for", u.name));
                };
                let runnable = match &probe.check {
                    Check::Exec(argv) => argv.first().and_then(|p| self.program(dep, p)).is_some(),
                    _ => true,
                };
                if !runnable {
                    if matches!(u.program, Program::Fleet(_)) {
                        return Err(format!(
                            "{}: its health check {:?} cannot run in its image",
                            u.name, probe.check
                        ));
                    }
                    self.say(format!(
                        "{}: health check {:?} not rehearsed (backend provided)",
                        u.name, probe.check
                    ));
                } else {
                    let budget = probe
                        .budget
                        .min(self.opts.health_timeout)
                        .max(Duration::from_secs(20));
                    self.wait_probe(dep, &probe, budget, "health check").await?;
                }
                self.healthy.insert(dep);
                Ok(())
            }
        }
    }

    async fn start_service(&mut self, unit: usize) -> Result<(), String> {
        let name = self.plan.units[unit].name.clone();
        match self.command(unit)? {
            Some(mut cmd) => {
                let child = cmd
                    .spawn()
                    .map_err(|e| format!("{name}: cannot start: {e}"))?;
                self.children.push((unit, child));
                self.say(format!("{name}: started"));
            }
            None => {
                let what = match &self.plan.units[unit].program {
                    Program::Scylla => "the real Cassandra".to_owned(),
                    Program::Redis => "the real Redis".to_owned(),
                    Program::Consul => "the rehearsal's Consul agent".to_owned(),
                    Program::Toxiproxy => "its upstreams (direct)".to_owned(),
                    other => format!("not rehearsed ({other:?})"),
                };
                self.say(format!("{name}: {what}"));
            }
        }
        Ok(())
    }

    async fn run_all(&mut self) -> Result<(), String> {
        self.say(format!(
            "adaptations: listen and peer addresses mapped to loopback ports; keyspaces prefixed {}, \
             replication factor 1 (one real node); Redis database 7; Cassandra {}, Redis {}, Consul {}",
            self.opts.keyspace_prefix, self.opts.backends.cql, self.opts.backends.redis, self.opts.backends.consul
        ));
        let order = self
            .plan
            .start_order()
            .map_err(|c| format!("depends_on cycle: {}", c.join(" → ")))?;
        let k8s = !self.plan.namespaces.is_empty();
        // Kubernetes applies everything at once; the Jobs (init containers
        // first) must complete, the rest must become ready. Compose starts
        // in depends_on order, waiting for each condition.
        let (first, rest): (Vec<usize>, Vec<usize>) = if k8s {
            order
                .iter()
                .copied()
                .partition(|&u| self.plan.units[u].role == Role::Job)
        } else {
            (Vec::new(), order.clone())
        };
        for u in first {
            for (dep, cond) in self.plan.units[u].depends_on.clone() {
                let d = self
                    .plan
                    .unit(&dep)
                    .ok_or_else(|| format!("unknown {dep}"))?;
                self.ensure(d, cond).await?;
            }
            self.run_job(u).await?;
        }
        for u in rest {
            let unit = self.plan.units[u].clone();
            if unit.on_demand {
                self.say(format!(
                    "{}: on demand only (profile), not started",
                    unit.name
                ));
                continue;
            }
            for (dep, cond) in &unit.depends_on {
                let d = self
                    .plan
                    .unit(dep)
                    .ok_or_else(|| format!("unknown {dep}"))?;
                self.ensure(d, *cond).await?;
            }
            match unit.role {
                Role::Job => self.run_job(u).await?,
                Role::Service => self.start_service(u).await?,
            }
        }
        // Every service must become healthy (ready), and live.
        for u in 0..self.plan.units.len() {
            let unit = self.plan.units[u].clone();
            if unit.role != Role::Service
                || unit.on_demand
                || !matches!(unit.program, Program::Fleet(_))
            {
                continue;
            }
            let Some(probe) = unit.readiness.clone() else {
                continue;
            };
            if !self.healthy.contains(&u) {
                let budget = unit
                    .startup
                    .as_ref()
                    .map_or(probe.budget, |s| s.budget.max(probe.budget));
                let budget = budget
                    .min(self.opts.health_timeout)
                    .max(Duration::from_secs(20));
                self.wait_probe(u, &probe, budget, "readiness").await?;
                self.healthy.insert(u);
            }
            if let Some(live) = unit.liveness.clone() {
                self.check_once(u, &live.check)
                    .await
                    .map_err(|e| format!("{}: liveness probe fails: {e}", unit.name))?;
            }
        }
        self.drive_entry().await?;
        self.scrape().await
    }

    /// GETs a title through the public door until it answers.
    async fn drive_entry(&mut self) -> Result<(), String> {
        let Some(entry) = self.plan.entry.clone() else {
            return Err("no public door (published edge port or Ingress) found".into());
        };
        let targets = self.plan.resolve(0, &entry.host, entry.port)?;
        let addr = targets
            .first()
            .and_then(|t| self.net.get(t))
            .copied()
            .ok_or("the public door leads nowhere")?;
        let base = entry.path.trim_end_matches('/');
        let url = format!("http://{addr}{base}/v1/titles/t00001");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        loop {
            let mut req = client.get(&url);
            if let Some(h) = &entry.host_header {
                req = req.header("host", h);
            }
            let last = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let body = r.text().await.unwrap_or_default();
                    if body.contains("t00001") {
                        self.say(format!("{}: GET {url} → 200 with the title", entry.origin));
                        return Ok(());
                    }
                    format!("200 without the title: {body}")
                }
                Ok(r) => format!("{}", r.status()),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "{}: GET {url} never answered 200: {last}",
                    entry.origin
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Scrapes each Prometheus target of a fleet unit once.
    async fn scrape(&mut self) -> Result<(), String> {
        let mut targets: Vec<(String, SocketAddr)> = Vec::new();
        for s in &self.plan.scrape {
            for t in self.plan.resolve(0, &s.host, s.port).unwrap_or_default() {
                if matches!(self.plan.units[t.0].program, Program::Fleet(_))
                    && let Some(a) = self.net.get(&t)
                {
                    targets.push((format!("{}:{}", s.host, s.port), *a));
                }
            }
        }
        for (i, u) in self.plan.units.iter().enumerate() {
            if let (Program::Fleet(_), Some(port)) =
                (&u.program, u.annotations.get("prometheus.io/port"))
                && let Some(a) = port.parse().ok().and_then(|p: u16| self.net.get(&(i, p)))
            {
                targets.push((format!("{} (prometheus.io/port {port})", u.name), *a));
            }
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let n = targets.len();
        for (what, addr) in targets {
            let r = client
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .map_err(|e| format!("scrape {what}: {e}"))?;
            if !r.status().is_success() {
                return Err(format!("scrape {what}: {}", r.status()));
            }
        }
        self.say(format!("{n} scrape targets answered /metrics"));
        Ok(())
    }

    async fn stop_all(&mut self) {
        for (_, child) in &self.children {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for (_, child) in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        self.children.clear();
    }
}

/// Checks that the workspace binaries the rehearsal runs are built.
///
/// # Errors
/// The first one missing.
pub fn fleet_binaries(bin_dir: &Path) -> Result<(), String> {
    for b in [
        FleetBin::Edge,
        FleetBin::Catalog,
        FleetBin::Ratings,
        FleetBin::Dal,
    ] {
        if !bin_dir.join(b.name()).exists() {
            return Err(format!(
                "{} is missing: cargo build --workspace --bins",
                bin_dir.join(b.name()).display()
            ));
        }
    }
    if !bin_dir.join("fleet-probe").exists() {
        return Err(format!(
            "{} is missing: cargo build --workspace --bins",
            bin_dir.join("fleet-probe").display()
        ));
    }
    Ok(())
}

/// Everything a dynamic rehearsal needs from the machine: the real
/// Cassandra and Redis (`FLEET_TEST_SCYLLA_NODES`, `FLEET_TEST_REDIS_URL`
/// from `scripts/backends`), a Consul agent of its own, the built binaries.
///
/// # Errors
/// A backend variable is missing, or Consul does not start.
pub fn prepare(repo: &Path, work: &Path, bin_dir: &Path) -> Result<(Options, Consul), String> {
    fleet_binaries(bin_dir)?;
    let var = |k: &str| {
        std::env::var(k).map_err(|_| {
            format!(
                "{k} is unset: source the env file of `scripts/backends up cassandra redis` first"
            )
        })
    };
    let cql = var("FLEET_TEST_SCYLLA_NODES")?;
    let cql: SocketAddr = cql
        .split(',')
        .next()
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("FLEET_TEST_SCYLLA_NODES={cql:?} is not ip:port"))?;
    let redis_url = var("FLEET_TEST_REDIS_URL")?;
    let redis = addresses(&redis_url)
        .first()
        .and_then(|r| format!("{}:{}", r.host, r.port).parse().ok())
        .ok_or_else(|| format!("FLEET_TEST_REDIS_URL={redis_url:?} has no ip:port"))?;
    let consul = Consul::start(repo, &work.join("consul"))?;
    let opts = Options {
        bin_dir: bin_dir.to_owned(),
        work: work.to_owned(),
        backends: Backends {
            cql,
            redis,
            consul: consul.addr,
            consul_bin: consul.bin.clone(),
        },
        keyspace_prefix: "rehearsal_".into(),
        job_timeout: Duration::from_secs(300),
        health_timeout: Duration::from_secs(120),
    };
    Ok((opts, consul))
}
