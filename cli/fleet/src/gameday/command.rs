//! The command line of `fleet gameday`, and our own providers.
//!
//! The same parser reads the command line and the `arguments` of an
//! experiment's `process` provider whose `path` is `fleet` (see
//! [`crate::gameday::experiment`]): an activity such as
//! `["gameday", "kill", "--service", "catalog"]` is exactly what a person
//! would type, it is validated with the file, and stock `chaos run` runs it
//! by executing `fleet`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Longest fault rule lifetime (the admin API's own limit).
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Longest load probe.
pub const MAX_PROBE: Duration = Duration::from_secs(600);

/// `fleet gameday …` on its own (used to parse activity arguments).
#[derive(Debug, Parser)]
#[command(name = "fleet")]
pub struct GamedayCli {
    /// What to do.
    #[command(subcommand)]
    pub command: GamedayCommand,
}

/// Where the system under test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// `fleet up`'s local processes (run directory `<data-dir>/run`).
    Embedded,
    /// `docker compose` (the repository's `docker-compose.yml`).
    Compose,
    /// Kubernetes (`kubectl`, the `k8s/` manifests).
    K8s,
}

/// Which system, and how to reach it. Read from the command line or the
/// environment (so that stock `chaos run` can run our providers too).
#[derive(Clone, Debug, Args)]
pub struct TargetArgs {
    /// Where the system runs.
    #[arg(
        long,
        value_enum,
        env = "FLEET_GAMEDAY_TARGET",
        default_value = "embedded"
    )]
    pub target: TargetKind,
    /// `fleet up`'s data directory (embedded): the admin token and
    /// `run/registry.json` are read from its `run/`.
    #[arg(long, env = "FLEET_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The compose file (compose).
    #[arg(long, env = "FLEET_COMPOSE_FILE", default_value = "docker-compose.yml")]
    pub compose_file: PathBuf,
    /// The compose project name (compose); default: compose's own.
    #[arg(long, env = "COMPOSE_PROJECT_NAME")]
    pub compose_project: Option<String>,
    /// The namespace (k8s).
    #[arg(long, env = "FLEET_K8S_NAMESPACE", default_value = "fleet")]
    pub namespace: String,
    /// The edge's URL for probes; default: from the registry (embedded),
    /// `http://127.0.0.1:8080` otherwise.
    #[arg(long, env = "FLEET_EDGE_URL")]
    pub edge_url: Option<String>,
    /// The admin token; default: `<data-dir>/run/admin-token` (embedded).
    #[arg(long, env = "FLEET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<fleet_config::Secret>,
    /// The edge's game-day key, which signs the experiment cohort's
    /// `x-fleet-fault` header; default: `<data-dir>/run/gameday-key`
    /// (embedded).
    #[arg(long, env = "FLEET_GAMEDAY_KEY", hide_env_values = true)]
    pub gameday_key: Option<fleet_config::Secret>,
    /// Toxiproxy's API (`http://127.0.0.1:8474`); default: what
    /// `fleet up --toxiproxy` wrote to `<data-dir>/run/toxiproxy.json`.
    #[arg(long, env = "TOXIPROXY_URL")]
    pub toxiproxy: Option<String>,
    /// Prometheus (`http://127.0.0.1:9090`) for `probe prometheus`;
    /// default: what `fleet up --observability` wrote to
    /// `<data-dir>/run/observability.json`, else `http://127.0.0.1:9090`
    /// (compose publishes it there).
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus: Option<String>,
}

/// The subcommands of `fleet gameday`.
#[derive(Debug, Subcommand)]
pub enum GamedayCommand {
    /// Run an experiment: steady state, method, steady state, rollbacks;
    /// write the journal (and report); exit 0 when the steady state held.
    Run(Box<RunArgs>),
    /// Check experiment files without running anything.
    Validate {
        /// The files (JSON, or YAML by extension).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print `export` lines that point stock `chaos run` at this system
    /// (edge URL, admin token, every instance's admin URL).
    Env(TargetArgs),
    /// Add or clear fault rules through instances' admin APIs.
    Fault {
        /// add or clear.
        #[command(subcommand)]
        op: FaultOp,
    },
    /// Kill an instance with SIGKILL (a crash; Chaos Monkey).
    Kill(InstanceArgs),
    /// Stop an instance gracefully (SIGTERM / compose stop / pod delete).
    Stop(InstanceArgs),
    /// Restart an instance and wait until it is ready again.
    Restart(InstanceArgs),
    /// A network fault through Toxiproxy (latency, bandwidth, timeout,
    /// reset_peer, slicer, down) on one proxy.
    Network(NetworkArgs),
    /// Measure the system.
    Probe {
        /// load or status.
        #[command(subcommand)]
        probe: ProbeOp,
    },
}

/// Flags of `fleet gameday run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment file (Chaos Toolkit JSON or YAML).
    pub file: PathBuf,
    /// The system under test.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Write the journal (Chaos Toolkit's shape) here.
    #[arg(long, default_value = "journal.json")]
    pub journal: PathBuf,
    /// Also write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// FIT/ChAP: send the faults only to this share of users (e.g. `2%`)
    /// and compare them live with an equally sized control cohort; abort
    /// on deviation.
    #[arg(long, value_parser = parse_percent)]
    pub experiment_cohort: Option<f64>,
    /// Where the undo log of a run in progress lives (replayed by the next
    /// run if this one dies); default `<data-dir>/run/gameday-rollback.json`.
    #[arg(long)]
    pub rollback_file: Option<PathBuf>,
}

/// Fault subcommands.
#[derive(Debug, Subcommand)]
pub enum FaultOp {
    /// Add a rule on the chosen instances.
    Add(FaultAddArgs),
    /// Remove every rule on the chosen instances.
    Clear(FaultScopeArgs),
}

/// Services the runner acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceArg {
    /// The edge.
    Edge,
    /// catalog (any version).
    Catalog,
    /// ratings.
    Ratings,
    /// The data access layer.
    Dal,
}

impl ServiceArg {
    /// Its name in registries, compose and k8s.
    pub fn name(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Catalog => "catalog",
            Self::Ratings => "ratings",
            Self::Dal => "dal",
        }
    }
}

/// Which instances of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Every one.
    All,
    /// One chosen at random (Chaos Monkey).
    Random,
    /// This many, chosen at random.
    Count(usize),
    /// These instance ids.
    Ids(Vec<String>),
}

fn parse_pick(s: &str) -> Result<Pick, String> {
    let s = s.trim();
    match s {
        "all" => Ok(Pick::All),
        "random" | "one" => Ok(Pick::Random),
        _ if s.chars().all(|c| c.is_ascii_digit()) => match s.parse::<usize>() {
            Ok(n @ 1..=64) => Ok(Pick::Count(n)),
            _ => Err("a count is 1..=64".into()),
        },
        _ => {
            let ids: Vec<String> = s.split(',').map(|x| x.trim().to_owned()).collect();
            if ids.iter().any(|i| {
                i.is_empty()
                    || i.len() > 64
                    || !i
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            }) {
                return Err(
                    "all, random, a count, or instance ids (letters, digits, - _ .) separated by commas"
                        .into(),
                );
            }
            Ok(Pick::Ids(ids))
        }
    }
}

/// `2%` → 2.0: a cohort share, more than 0 and at most 50 %.
///
/// # Errors
/// A message for anything else.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if v > 0.0 && v <= 50.0 {
        Ok(v)
    } else {
        Err("a cohort is more than 0% and at most 50% of users".into())
    }
}

fn parse_version(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 32
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !s.starts_with('.')
    {
        Ok(s.to_owned())
    } else {
        Err("a version prefix such as 1.3 or 1.3.0".into())
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d >= Duration::from_secs(1) && d <= MAX_TTL {
        Ok(d)
    } else {
        Err("between 1s and 24h".into())
    }
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d >= Duration::from_millis(1) && d <= Duration::from_secs(60) {
        Ok(d)
    } else {
        Err("between 1ms and 60s".into())
    }
}

fn parse_probe_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d >= Duration::from_secs(1) && d <= MAX_PROBE {
        Ok(d)
    } else {
        Err("between 1s and 10m".into())
    }
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d <= MAX_PROBE {
        Ok(d)
    } else {
        Err("at most 10m".into())
    }
}

fn parse_text(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control) {
        Ok(s.to_owned())
    } else {
        Err("1..128 printable characters".into())
    }
}

/// Which instances of which service.
#[derive(Clone, Debug, Args)]
pub struct FaultScopeArgs {
    /// The service.
    #[arg(long, value_enum)]
    pub service: ServiceArg,
    /// Only instances whose version starts with this (e.g. `1.3`).
    #[arg(long, value_parser = parse_version)]
    pub version: Option<String>,
    /// `all` (default), `random`, a count, or instance ids `a,b`.
    #[arg(long, default_value = "all", value_parser = parse_pick)]
    pub instances: Pick,
    /// The system under test.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// A fault rule and where it goes.
#[derive(Clone, Debug, Args)]
#[command(group = clap::ArgGroup::new("fault_action").required(true).args(["delay", "abort", "hang"]))]
pub struct FaultAddArgs {
    /// Which instances.
    #[command(flatten)]
    pub scope: FaultScopeArgs,
    /// Delay matching requests this long, then serve them (`200ms`).
    #[arg(long, value_parser = parse_delay)]
    pub delay: Option<Duration>,
    /// Answer matching requests at once with this gRPC code name
    /// (`UNAVAILABLE`) or HTTP status (`503`).
    #[arg(long, value_parser = parse_text)]
    pub abort: Option<String>,
    /// Never answer matching requests (their callers' deadlines end them).
    #[arg(long)]
    pub hang: bool,
    /// Only this operation (gRPC method `GetTitle`, or an edge route).
    #[arg(long, value_parser = parse_text)]
    pub operation: Option<String>,
    /// Share of matching requests, 0 < p ≤ 100.
    #[arg(long, default_value_t = 100.0)]
    pub percent: f64,
    /// Only requests from this caller (`edge`, `catalog`, …).
    #[arg(long, value_parser = parse_text)]
    pub caller: Option<String>,
    /// Only requests carrying `x-fleet-fault: <header>` (game-day clients).
    #[arg(long, value_parser = parse_text)]
    pub header: Option<String>,
    /// The rule removes itself after this long — a guard should every
    /// rollback fail.
    #[arg(long, default_value = "10m", value_parser = parse_ttl)]
    pub ttl: Duration,
}

/// One instance of a service.
#[derive(Clone, Debug, Args)]
pub struct InstanceArgs {
    /// The service.
    #[arg(long, value_enum)]
    pub service: ServiceArg,
    /// Only instances whose version starts with this.
    #[arg(long, value_parser = parse_version)]
    pub version: Option<String>,
    /// An instance id, or `random` (default).
    #[arg(long, default_value = "random", value_parser = parse_pick)]
    pub instance: Pick,
    /// How long `restart` waits for the instance to be ready again.
    #[arg(long, default_value = "60s", value_parser = parse_wait)]
    pub wait: Duration,
    /// The system under test.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Which direction a toxic affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StreamArg {
    /// Server → client (answers).
    Downstream,
    /// Client → server (requests).
    Upstream,
}

impl StreamArg {
    /// Toxiproxy's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
        }
    }
}

fn parse_net_delay(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d <= Duration::from_secs(600) {
        Ok(d)
    } else {
        Err("at most 10m".into())
    }
}

fn parse_proxy(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        Ok(s.to_owned())
    } else {
        Err("a proxy name: letters, digits, - _ .".into())
    }
}

/// A network fault on one Toxiproxy proxy.
#[derive(Clone, Debug, Args)]
#[command(group = clap::ArgGroup::new("net_fault").required(true)
    .args(["latency", "bandwidth_kbps", "timeout", "reset_peer", "slicer", "down"]))]
pub struct NetworkArgs {
    /// The proxy (`cassandra`, `redis`, `consul`, or an instance such as
    /// `ratings-1` under `fleet up --toxiproxy`); a name also means its
    /// numbered ones: `ratings` is every `ratings-…` proxy, `cassandra`
    /// every node's.
    #[arg(long, value_parser = parse_proxy)]
    pub proxy: String,
    /// Add this latency (`200ms`).
    #[arg(long, value_parser = parse_net_delay)]
    pub latency: Option<Duration>,
    /// ± this much around `--latency`.
    #[arg(long, default_value = "0ms", value_parser = parse_net_delay)]
    pub jitter: Duration,
    /// Limit throughput to this many KB/s.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub bandwidth_kbps: Option<u64>,
    /// Stop all data; close the connection after this long (`0s`: never).
    #[arg(long, value_parser = parse_net_delay)]
    pub timeout: Option<Duration>,
    /// Reset connections (TCP RST) after this long.
    #[arg(long, value_parser = parse_net_delay)]
    pub reset_peer: Option<Duration>,
    /// Slice data into ~64-byte packets 1 ms apart.
    #[arg(long)]
    pub slicer: bool,
    /// Disable the proxy: connections are refused.
    #[arg(long)]
    pub down: bool,
    /// Which direction.
    #[arg(long, value_enum, default_value = "downstream")]
    pub stream: StreamArg,
    /// Share of connections affected, 0 < t ≤ 1.
    #[arg(long, default_value_t = 1.0)]
    pub toxicity: f64,
    /// The system under test.
    #[command(flatten)]
    pub target: TargetArgs,
}

impl NetworkArgs {
    /// The fault asked for.
    pub fn fault(&self) -> crate::gameday::network::NetFault {
        use crate::gameday::network::NetFault;
        if let Some(latency) = self.latency {
            NetFault::Latency {
                latency,
                jitter: self.jitter,
            }
        } else if let Some(rate_kbps) = self.bandwidth_kbps {
            NetFault::Bandwidth { rate_kbps }
        } else if let Some(after) = self.timeout {
            NetFault::Timeout { after }
        } else if let Some(after) = self.reset_peer {
            NetFault::ResetPeer { after }
        } else if self.slicer {
            NetFault::Slicer {
                average_size: 64,
                size_variation: 16,
                delay: Duration::from_millis(1),
            }
        } else {
            NetFault::Down
        }
    }
}

/// Probe subcommands.
#[derive(Debug, Subcommand)]
pub enum ProbeOp {
    /// Drive the edge with the `fleet load` engine for a while and report
    /// success rate and latency percentiles (JSON on stdout); exit 99 when
    /// a threshold is breached.
    Load(ProbeLoadArgs),
    /// Count the ready instances of a service (JSON on stdout); exit 1
    /// when fewer than `--min-ready`.
    Status(ProbeStatusArgs),
    /// Evaluate a PromQL query (an instant query) and compare its value
    /// with `--min`/`--max` (JSON on stdout); exit 1 when outside, or when
    /// the query returns no series and `--absent` is not `pass`.
    Prometheus(ProbePrometheusArgs),
}

/// What an empty query result means to the Prometheus probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AbsentIs {
    /// No series: the probe fails (the default: a query that matches
    /// nothing usually means the data is not there).
    Fail,
    /// No series: the probe passes (an alert that is not firing, a ratio
    /// with no traffic).
    Pass,
}

/// Flags of the Prometheus probe.
#[derive(Clone, Debug, Args)]
pub struct ProbePrometheusArgs {
    /// The PromQL expression; a vector result is reduced to its largest
    /// value (so `--max` bounds every series).
    #[arg(long)]
    pub query: String,
    /// Smallest value that passes.
    #[arg(long, allow_negative_numbers = true)]
    pub min: Option<f64>,
    /// Largest value that passes.
    #[arg(long, allow_negative_numbers = true)]
    pub max: Option<f64>,
    /// What a result with no series means.
    #[arg(long, value_enum, default_value = "fail")]
    pub absent: AbsentIs,
    /// Keep asking this long until the value passes (a rate needs a
    /// scrape or two after a change); `0s` asks once.
    #[arg(long, default_value = "0s", value_parser = parse_wait)]
    pub wait: Duration,
    /// The system under test.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Flags of the load probe.
#[derive(Clone, Debug, Args)]
pub struct ProbeLoadArgs {
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// How long.
    #[arg(long, default_value = "3s", value_parser = parse_probe_duration)]
    pub duration: Duration,
    /// The edge operations, `fleet load --mix` syntax.
    #[arg(long, default_value = "title=80,home=20")]
    pub mix: String,
    /// Send at the rate this long first without measuring (connections
    /// and caches warm).
    #[arg(long, default_value = "1s", value_parser = parse_wait)]
    pub warmup: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Pass/fail conditions, `fleet load --threshold` syntax
    /// (`errors<1%`, `p99<500ms`).
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// The system under test.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Flags of the status probe.
#[derive(Clone, Debug, Args)]
pub struct ProbeStatusArgs {
    /// The service.
    #[arg(long, value_enum)]
    pub service: ServiceArg,
    /// Fewest ready instances for success.
    #[arg(long, default_value_t = 1)]
    pub min_ready: usize,
    /// Keep looking this long for `--min-ready` instances (e.g. while a
    /// supervisor restarts one); `0s` looks once.
    #[arg(long, default_value = "0s", value_parser = parse_wait)]
    pub wait: Duration,
    /// The system under test.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// One of our own providers, as an experiment uses it.
#[derive(Clone, Debug)]
pub enum FleetCommand {
    /// Add a fault rule.
    FaultAdd(FaultAddArgs),
    /// Clear fault rules.
    FaultClear(FaultScopeArgs),
    /// SIGKILL.
    Kill(InstanceArgs),
    /// Graceful stop.
    Stop(InstanceArgs),
    /// Restart and wait.
    Restart(InstanceArgs),
    /// Load probe.
    ProbeLoad(ProbeLoadArgs),
    /// Status probe.
    ProbeStatus(ProbeStatusArgs),
    /// Prometheus query probe.
    ProbePrometheus(ProbePrometheusArgs),
    /// Network fault.
    Network(NetworkArgs),
}

impl FleetCommand {
    /// The activity form of a parsed command line.
    ///
    /// # Errors
    /// A message when the subcommand is not an activity (`run`,
    /// `validate`, `env`) or a value is out of range.
    pub fn from_cli(c: GamedayCommand) -> Result<Self, String> {
        let cmd = match c {
            GamedayCommand::Fault {
                op: FaultOp::Add(a),
            } => Self::FaultAdd(a),
            GamedayCommand::Fault {
                op: FaultOp::Clear(a),
            } => Self::FaultClear(a),
            GamedayCommand::Kill(a) => Self::Kill(a),
            GamedayCommand::Network(a) => Self::Network(a),
            GamedayCommand::Stop(a) => Self::Stop(a),
            GamedayCommand::Restart(a) => Self::Restart(a),
            GamedayCommand::Probe {
                probe: ProbeOp::Load(a),
            } => Self::ProbeLoad(a),
            GamedayCommand::Probe {
                probe: ProbeOp::Status(a),
            } => Self::ProbeStatus(a),
            GamedayCommand::Probe {
                probe: ProbeOp::Prometheus(a),
            } => Self::ProbePrometheus(a),
            GamedayCommand::Run(_) | GamedayCommand::Validate { .. } | GamedayCommand::Env(_) => {
                return Err(
                    "only fault, kill, stop, restart, network and probe are activities (not run, validate or env)"
                        .into(),
                );
            }
        };
        cmd.validate()?;
        Ok(cmd)
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Self::FaultAdd(a) => {
                if !(a.percent > 0.0 && a.percent <= 100.0) {
                    return Err("--percent must be > 0 and ≤ 100".into());
                }
                if let Some(code) = &a.abort {
                    fleet_resilience::fault::abort_status(code).map_err(|e| e.0)?;
                }
                Ok(())
            }
            Self::ProbeLoad(a) => {
                if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 5000.0) {
                    return Err("--rate must be within (0, 5000]".into());
                }
                crate::load::mix::Mix::parse(Some(&a.mix), crate::load::mix::Service::Edge)?;
                for t in &a.thresholds {
                    crate::load::threshold::Threshold::parse(t).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Self::ProbePrometheus(a) => {
                if a.query.trim().is_empty() || a.query.len() > 4096 {
                    return Err("--query must be a PromQL expression of 1..=4096 bytes".into());
                }
                if [a.min, a.max].iter().flatten().any(|v| !v.is_finite()) {
                    return Err("--min and --max must be finite numbers".into());
                }
                if let (Some(lo), Some(hi)) = (a.min, a.max)
                    && lo > hi
                {
                    return Err(format!("--min {lo} is above --max {hi}"));
                }
                Ok(())
            }
            Self::Network(a) => {
                if a.toxicity > 0.0 && a.toxicity <= 1.0 {
                    Ok(())
                } else {
                    Err("--toxicity must be > 0 and ≤ 1".into())
                }
            }
            _ => Ok(()),
        }
    }

    /// Short description for progress lines.
    pub fn describe(&self) -> String {
        match self {
            Self::FaultAdd(a) => {
                let what = match (&a.delay, &a.abort, a.hang) {
                    (Some(d), _, _) => format!("delay {}", humantime::format_duration(*d)),
                    (_, Some(c), _) => format!("abort {c}"),
                    _ => "hang".into(),
                };
                format!("fault {what} on {}", a.scope.service.name())
            }
            Self::FaultClear(a) => format!("clear faults on {}", a.service.name()),
            Self::Kill(a) => format!("kill a {} instance", a.service.name()),
            Self::Stop(a) => format!("stop a {} instance", a.service.name()),
            Self::Restart(a) => format!("restart a {} instance", a.service.name()),
            Self::ProbeLoad(a) => format!(
                "load probe {} req/s for {}",
                a.rate,
                humantime::format_duration(a.duration)
            ),
            Self::ProbeStatus(a) => format!("status of {}", a.service.name()),
            Self::ProbePrometheus(a) => format!("prometheus {}", a.query),
            Self::Network(a) => format!("{} on proxy {}", a.fault().kind(), a.proxy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<FleetCommand, String> {
        let cli = GamedayCli::try_parse_from(std::iter::once("fleet").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        FleetCommand::from_cli(cli.command)
    }

    #[test]
    fn activity_arguments_parse_into_typed_commands() {
        match parse(&[
            "fault",
            "add",
            "--service",
            "catalog",
            "--version",
            "1.3",
            "--delay",
            "300ms",
            "--percent",
            "50",
        ])
        .unwrap()
        {
            FleetCommand::FaultAdd(a) => {
                assert_eq!(a.scope.service, ServiceArg::Catalog);
                assert_eq!(a.scope.version.as_deref(), Some("1.3"));
                assert_eq!(a.scope.instances, Pick::All);
                assert_eq!(a.delay, Some(Duration::from_millis(300)));
                assert!((a.percent - 50.0).abs() < f64::EPSILON);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "network",
            "--proxy",
            "cassandra",
            "--latency",
            "200ms",
            "--jitter",
            "20ms",
        ])
        .unwrap()
        {
            FleetCommand::Network(a) => assert_eq!(
                a.fault(),
                crate::gameday::network::NetFault::Latency {
                    latency: Duration::from_millis(200),
                    jitter: Duration::from_millis(20)
                }
            ),
            other => panic!("{other:?}"),
        }
        match parse(&["kill", "--service", "dal"]).unwrap() {
            FleetCommand::Kill(a) => assert_eq!(a.instance, Pick::Random),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "stop",
            "--service",
            "catalog",
            "--instance",
            "catalog-v12-1",
        ])
        .unwrap()
        {
            FleetCommand::Stop(a) => {
                assert_eq!(a.instance, Pick::Ids(vec!["catalog-v12-1".into()]))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_activity_arguments_are_refused() {
        for bad in [
            &["fault", "add", "--service", "catalog"][..],
            &[
                "fault",
                "add",
                "--service",
                "catalog",
                "--delay",
                "1s",
                "--hang",
            ],
            &["fault", "add", "--service", "catalog", "--abort", "TEAPOT"],
            &[
                "fault",
                "add",
                "--service",
                "catalog",
                "--hang",
                "--percent",
                "0",
            ],
            &[
                "fault",
                "add",
                "--service",
                "catalog",
                "--hang",
                "--ttl",
                "2d",
            ],
            &[
                "fault",
                "add",
                "--service",
                "catalog",
                "--hang",
                "--version",
                "x",
            ],
            &["kill", "--service", "mainframe"],
            &["kill", "--service", "dal", "--instance", "../../etc"],
            &["probe", "load", "--rate", "0"],
            &["probe", "load", "--mix", "explode=1"],
            &["probe", "load", "--threshold", "p99<<1"],
            &["network", "--proxy", "cassandra"],
            &[
                "network",
                "--proxy",
                "cassandra",
                "--latency",
                "1s",
                "--down",
            ],
            &["network", "--proxy", "../x", "--down"],
            &["network", "--proxy", "redis", "--down", "--toxicity", "2"],
            &["validate", "x.json"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cohort_percentages_are_bounded() {
        assert_eq!(parse_percent("2%"), Ok(2.0));
        assert_eq!(parse_percent("0.5"), Ok(0.5));
        assert!(parse_percent("0%").is_err());
        assert!(parse_percent("60%").is_err());
        assert!(parse_percent("lots").is_err());
    }
}
