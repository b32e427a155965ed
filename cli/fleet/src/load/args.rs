//! The flags of `fleet load` and their validation into a [`LoadConfig`].
//!
//! Everything a user can get wrong is checked here, before a single request
//! is sent: the target, the rate, the bounds, the mix, the thresholds and
//! the output files' directories.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::load::mix::{Mix, Service};
use crate::load::threshold::{Threshold, ThresholdError};

/// The largest rate the tool accepts (requests per second).
pub const MAX_RATE: f64 = 1_000_000.0;
/// The longest run (warm-up plus measurement) the tool accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Flags of `fleet load`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit status: 0 all thresholds held, 2 bad input (nothing was sent), \
                        99 a threshold was breached, 1 the tool itself failed."
)]
pub struct LoadArgs {
    /// Where to send load: the edge's base URL (`http://127.0.0.1:8080`) or
    /// one service over gRPC (`grpc://127.0.0.1:7100`). Only this address
    /// is ever contacted.
    #[arg(long, required_unless_present = "merge")]
    pub target: Option<String>,
    /// For a `grpc://` target: which service listens there (catalog,
    /// ratings, dal). Default: the one the `--mix` operations belong to.
    #[arg(long, value_enum)]
    pub service: Option<Service>,
    /// Arrival rate in requests per second (open loop: requests are sent
    /// on the clock, whatever the previous response did).
    #[arg(long, required_unless_present_any = ["merge", "closed_loop"], allow_hyphen_values = true)]
    pub rate: Option<String>,
    /// How long to measure (after the warm-up), e.g. `30s`, `2m`.
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop after this many measured requests (with `--duration`: whichever
    /// comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Run at the rate for this long first, without recording.
    #[arg(long, default_value = "0s")]
    pub warmup: String,
    /// Raise the rate linearly from zero to `--rate` over this long (counts
    /// towards warm-up and duration as it falls).
    #[arg(long, default_value = "0s")]
    pub ramp: String,
    /// Closed loop instead (for comparison, like wrk): `--concurrency`
    /// workers each send their next request when the previous one answers.
    /// Response time then equals service time and hides queueing.
    #[arg(long)]
    pub closed_loop: bool,
    /// Open loop: most requests in flight; a request due while all are busy
    /// waits and is counted late (or unsent when the run ends first).
    /// Closed loop: the number of workers.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// The operations and their weights, e.g.
    /// `title=70,browse=10,home=10,rate=5,progress=5`, or one operation
    /// (`title`). Edge: title, browse, home, rate, progress, ratings.
    /// catalog: title, browse, genres. ratings: rate, progress, ratings,
    /// continue, top. dal: title, browse, ratings.
    #[arg(long)]
    pub mix: Option<String>,
    /// Zipf exponent of the title key skew (0 = uniform; 1 = a few titles
    /// get most reads).
    #[arg(long, default_value = "1.0")]
    pub zipf: String,
    /// Titles to draw from (`t00001…`), as many as the seed data has.
    #[arg(long, default_value_t = 1000)]
    pub titles: u32,
    /// Users to draw from (`u00001…`).
    #[arg(long, default_value_t = 500)]
    pub users: u32,
    /// Per-request timeout (a request that takes longer is an error).
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    /// Seed of the request generator (same seed, same requests).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Extra header on every edge request, `name: value` (repeatable),
    /// e.g. `x-version-catalog: 1.3`.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write the response-time percentile spectrum here (HdrHistogram
    /// `.hgrm`, values in ms); service time goes to `<stem>.service.hgrm`.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write a one-second HdrHistogram interval log here (`.hlog`, values
    /// in µs): untagged = response time; tags `service`, `errors`, `<op>`,
    /// `<op>.service`, `<op>.errors`.
    #[arg(long)]
    pub hlog: Option<PathBuf>,
    /// Write the per-second time series here as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Pass/fail condition (repeatable), e.g. `p99<50ms`, `errors<0.1%`,
    /// `title:p99.9<=200ms`, `service.p99<20ms`, `rate>=95`, `late<1%`.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// A file of thresholds, one per line (`#` starts a comment).
    #[arg(long)]
    pub threshold_file: Option<PathBuf>,
    /// Stop the run as soon as a threshold is breached (checked every
    /// second on the figures so far).
    #[arg(long)]
    pub abort_on_fail: bool,
    /// Merge the interval logs of earlier runs (e.g. one per host, run at
    /// the same time) into one report instead of sending load.
    #[arg(long, num_args = 1.., conflicts_with_all = ["target", "rate", "closed_loop", "hlog"])]
    pub merge: Vec<PathBuf>,
}

/// Where the load goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The edge's JSON API at this base URL.
    Edge(String),
    /// One service over gRPC at this address.
    Grpc {
        /// The address (resolved once, here).
        addr: SocketAddr,
        /// The service listening there.
        service: Service,
    },
}

impl Target {
    /// The service the load goes to.
    pub fn service(&self) -> Service {
        match self {
            Self::Edge(_) => Service::Edge,
            Self::Grpc { service, .. } => *service,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Edge(url) => f.write_str(url),
            Self::Grpc { addr, service } => write!(f, "grpc://{addr} ({})", service.name()),
        }
    }
}

/// How requests are paced.
#[derive(Clone, Debug, PartialEq)]
pub enum Pacing {
    /// On the clock at `rate` per second (after an optional ramp).
    OpenLoop {
        /// Requests per second.
        rate: f64,
        /// Linear ramp from zero.
        ramp: Duration,
    },
    /// `--concurrency` workers, back to back.
    ClosedLoop,
}

/// What the output files are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    /// JSON summary on stdout instead of the table.
    pub json: bool,
    /// `.hgrm` percentile spectrum.
    pub hgrm: Option<PathBuf>,
    /// `.hlog` interval log.
    pub hlog: Option<PathBuf>,
    /// CSV time series.
    pub csv: Option<PathBuf>,
}

/// A validated load run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Where.
    pub target: Target,
    /// How paced.
    pub pacing: Pacing,
    /// Most requests in flight (open loop) or workers (closed loop).
    pub concurrency: usize,
    /// Unrecorded lead-in.
    pub warmup: Duration,
    /// Measured time bound.
    pub duration: Option<Duration>,
    /// Measured request-count bound.
    pub requests: Option<u64>,
    /// Operations and weights.
    pub mix: Mix,
    /// Zipf exponent of title reads.
    pub zipf: f64,
    /// Title id range.
    pub titles: u32,
    /// User id range.
    pub users: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Generator seed.
    pub seed: u64,
    /// Extra edge headers.
    pub headers: Vec<(String, String)>,
    /// Outputs.
    pub outputs: Outputs,
    /// Pass/fail conditions.
    pub thresholds: Vec<Threshold>,
    /// Stop at the first breach.
    pub abort_on_fail: bool,
}

/// A validated merge of earlier runs.
#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// The interval logs.
    pub inputs: Vec<PathBuf>,
    /// Outputs (no `.hlog`).
    pub outputs: Outputs,
    /// Pass/fail conditions.
    pub thresholds: Vec<Threshold>,
}

/// What `fleet load` was asked to do.
#[derive(Clone, Debug)]
pub enum LoadCommand {
    /// Send load.
    Run(Box<LoadConfig>),
    /// Merge earlier runs.
    Merge(MergeConfig),
}

/// Bad input, reported before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A flag's value is unusable.
    #[error("--{flag} {value:?}: {reason}")]
    Invalid {
        /// The flag, without dashes.
        flag: &'static str,
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Flags that do not go together, or a missing one.
    #[error("{0}")]
    Conflict(String),
    /// A threshold does not parse.
    #[error("--threshold {0}")]
    Threshold(#[from] ThresholdError),
    /// The threshold file cannot be read.
    #[error("--threshold-file {path}: {source}")]
    ThresholdFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> ArgsError {
    ArgsError::Invalid {
        flag,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

impl LoadArgs {
    /// Validates every flag.
    ///
    /// # Errors
    /// [`ArgsError`] naming the first unusable flag; nothing has been sent.
    pub fn into_command(self) -> Result<LoadCommand, ArgsError> {
        let mut thresholds = self
            .thresholds
            .iter()
            .map(|t| Threshold::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(path) = &self.threshold_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ArgsError::ThresholdFile {
                    path: path.clone(),
                    source,
                })?;
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if !line.is_empty() {
                    thresholds.push(Threshold::parse(line)?);
                }
            }
        }
        let outputs = Outputs {
            json: self.json,
            hgrm: self.hgrm.clone(),
            hlog: self.hlog.clone(),
            csv: self.csv.clone(),
        };
        for (flag, path) in [
            ("hgrm", &outputs.hgrm),
            ("hlog", &outputs.hlog),
            ("csv", &outputs.csv),
        ] {
            if let Some(p) = path {
                check_writable(flag, p)?;
            }
        }
        if !self.merge.is_empty() {
            for p in &self.merge {
                if !p.is_file() {
                    return Err(invalid("merge", &p.display().to_string(), "no such file"));
                }
            }
            if self.abort_on_fail {
                return Err(ArgsError::Conflict(
                    "--abort-on-fail has no meaning with --merge".into(),
                ));
            }
            return Ok(LoadCommand::Merge(MergeConfig {
                inputs: self.merge,
                outputs,
                thresholds,
            }));
        }

        let target_text = self
            .target
            .as_deref()
            .ok_or_else(|| ArgsError::Conflict("--target is required".into()))?;
        let pacing = match (&self.rate, self.closed_loop) {
            (Some(_), true) => {
                return Err(ArgsError::Conflict(
                    "--rate and --closed-loop do not go together: a closed loop sends as fast as the answers come".into(),
                ));
            }
            (Some(r), false) => Pacing::OpenLoop {
                rate: parse_rate(r)?,
                ramp: parse_duration("ramp", &self.ramp, Duration::ZERO)?,
            },
            (None, true) => Pacing::ClosedLoop,
            (None, false) => return Err(ArgsError::Conflict("--rate is required".into())),
        };
        let duration = self
            .duration
            .as_deref()
            .map(|d| parse_duration("duration", d, Duration::from_millis(1)))
            .transpose()?;
        if let Some(0) = self.requests {
            return Err(invalid("requests", "0", "must be at least 1"));
        }
        if duration.is_none() && self.requests.is_none() {
            return Err(ArgsError::Conflict(
                "give --duration (e.g. 30s) or --requests, or both".into(),
            ));
        }
        let warmup = parse_duration("warmup", &self.warmup, Duration::ZERO)?;
        if warmup + duration.unwrap_or_default() > MAX_DURATION {
            return Err(invalid(
                "duration",
                self.duration.as_deref().unwrap_or_default(),
                "warm-up plus duration must stay within 24h",
            ));
        }
        if let Pacing::OpenLoop { ramp, .. } = &pacing
            && duration.is_some_and(|d| *ramp > warmup + d)
        {
            return Err(invalid(
                "ramp",
                &self.ramp,
                "longer than warm-up plus duration: the rate would never be reached",
            ));
        }
        if !(1..=100_000).contains(&self.concurrency) {
            return Err(invalid(
                "concurrency",
                &self.concurrency.to_string(),
                "must be 1..=100000",
            ));
        }
        let mix_text = self.mix.as_deref();
        let (target, mix) = parse_target(target_text, self.service, mix_text)?;
        for t in &thresholds {
            if let Some(op) = t.scope()
                && !mix.ops().iter().any(|(o, _)| o.name() == op)
            {
                return Err(ArgsError::Conflict(format!(
                    "--threshold {t}: operation {op:?} is not in the mix"
                )));
            }
        }
        let zipf: f64 = self
            .zipf
            .parse()
            .map_err(|_| invalid("zipf", &self.zipf, "not a number"))?;
        if !(0.0..=10.0).contains(&zipf) {
            return Err(invalid("zipf", &self.zipf, "must be 0..=10"));
        }
        if !(1..=99_999).contains(&self.titles) {
            return Err(invalid(
                "titles",
                &self.titles.to_string(),
                "must be 1..=99999",
            ));
        }
        if !(1..=99_999).contains(&self.users) {
            return Err(invalid(
                "users",
                &self.users.to_string(),
                "must be 1..=99999",
            ));
        }
        let timeout = parse_duration("timeout", &self.timeout, Duration::from_millis(1))?;
        let headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        if !headers.is_empty() && !matches!(target, Target::Edge(_)) {
            return Err(ArgsError::Conflict(
                "--header applies to edge (http) targets only".into(),
            ));
        }
        Ok(LoadCommand::Run(Box::new(LoadConfig {
            target,
            pacing,
            concurrency: self.concurrency,
            warmup,
            duration,
            requests: self.requests,
            mix,
            zipf,
            titles: self.titles,
            users: self.users,
            timeout,
            seed: self.seed,
            headers,
            outputs,
            thresholds,
            abort_on_fail: self.abort_on_fail,
        })))
    }
}

/// Parses `--rate`: a positive, finite number of requests per second.
///
/// # Errors
/// [`ArgsError::Invalid`] for anything else.
pub fn parse_rate(s: &str) -> Result<f64, ArgsError> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| invalid("rate", s, "not a number of requests per second"))?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(invalid("rate", s, "must be a positive number"));
    }
    if rate > MAX_RATE {
        return Err(invalid("rate", s, "more than 1000000 requests per second"));
    }
    Ok(rate)
}

/// Parses a duration flag (`30s`, `1m30s`, `250ms`) no shorter than `min`
/// and no longer than a day.
///
/// # Errors
/// [`ArgsError::Invalid`] naming the flag.
pub fn parse_duration(flag: &'static str, s: &str, min: Duration) -> Result<Duration, ArgsError> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| invalid(flag, s, format!("{e} (expected e.g. 30s, 2m, 500ms)")))?;
    if d < min {
        return Err(invalid(
            flag,
            s,
            format!("must be at least {}", humantime::format_duration(min)),
        ));
    }
    if d > MAX_DURATION {
        return Err(invalid(flag, s, "longer than 24h"));
    }
    Ok(d)
}

/// Parses `--target` (and `--service`, `--mix`, which depend on it).
///
/// # Errors
/// [`ArgsError`] for an unsupported scheme, a missing port, an address
/// that does not resolve, or operations the target does not serve.
pub fn parse_target(
    target: &str,
    service: Option<Service>,
    mix: Option<&str>,
) -> Result<(Target, Mix), ArgsError> {
    let (scheme, rest) = target.split_once("://").ok_or_else(|| {
        invalid(
            "target",
            target,
            "expected http://host:port (the edge) or grpc://host:port (one service)",
        )
    })?;
    match scheme {
        "http" | "https" => {
            if service.is_some_and(|s| s != Service::Edge) {
                return Err(ArgsError::Conflict(
                    "--service names a gRPC service; an http target is the edge".into(),
                ));
            }
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.is_empty() {
                return Err(invalid("target", target, "no host"));
            }
            if authority.contains('@') {
                return Err(invalid("target", target, "credentials in the URL"));
            }
            if rest.contains('?') || rest.contains('#') {
                return Err(invalid("target", target, "a query or fragment"));
            }
            if authority.ends_with(":0") {
                return Err(invalid("target", target, "port 0"));
            }
            fleet_edge_client::EdgeClient::new(target)
                .map_err(|e| invalid("target", target, e.to_string()))?;
            let mix = Mix::parse(mix, Service::Edge)
                .map_err(|reason| invalid("mix", mix.unwrap_or_default(), reason))?;
            Ok((Target::Edge(target.to_owned()), mix))
        }
        "grpc" => {
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            if authority.is_empty() || authority.contains('/') {
                return Err(invalid(
                    "target",
                    target,
                    "expected grpc://host:port with no path",
                ));
            }
            let addr = resolve(authority).map_err(|reason| invalid("target", target, reason))?;
            let service = match service {
                Some(Service::Edge) => {
                    return Err(ArgsError::Conflict(
                        "--service edge: the edge speaks http; use --target http://…".into(),
                    ));
                }
                Some(s) => s,
                None => Mix::infer_service(mix).map_err(ArgsError::Conflict)?,
            };
            let mix = Mix::parse(mix, service)
                .map_err(|reason| invalid("mix", mix.unwrap_or_default(), reason))?;
            Ok((Target::Grpc { addr, service }, mix))
        }
        other => Err(invalid(
            "target",
            target,
            format!("unsupported scheme {other:?}: use http:// (the edge) or grpc:// (a service)"),
        )),
    }
}

fn resolve(authority: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err("port 0".into());
        }
        return Ok(addr);
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| "no port (expected host:port)".to_owned())?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    if port == 0 {
        return Err("port 0".into());
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn parse_header(h: &str) -> Result<(String, String), ArgsError> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| invalid("header", h, "expected `name: value`"))?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid("header", h, "bad header name"));
    }
    if value.bytes().any(|b| b.is_ascii_control()) {
        return Err(invalid("header", h, "control characters in the value"));
    }
    Ok((name.to_ascii_lowercase(), value.to_owned()))
}

fn check_writable(flag: &'static str, path: &Path) -> Result<(), ArgsError> {
    if path.is_dir() {
        return Err(invalid(flag, &path.display().to_string(), "is a directory"));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(invalid(
            flag,
            &path.display().to_string(),
            format!("directory {} does not exist", parent.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_positive_finite_numbers() {
        assert_eq!(parse_rate("250").unwrap(), 250.0);
        assert_eq!(parse_rate("0.5").unwrap(), 0.5);
        for bad in ["0", "-3", "abc", "", "NaN", "inf", "1e9"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_name_the_flag_and_the_expected_form() {
        assert_eq!(
            parse_duration("duration", "1m30s", Duration::ZERO).unwrap(),
            Duration::from_secs(90)
        );
        let e = parse_duration("duration", "ten", Duration::ZERO).unwrap_err();
        assert!(e.to_string().starts_with("--duration \"ten\""), "{e}");
        assert!(parse_duration("duration", "0s", Duration::from_millis(1)).is_err());
        assert!(parse_duration("duration", "25h", Duration::ZERO).is_err());
    }

    #[test]
    fn targets_are_edge_urls_or_grpc_addresses_only() {
        let (t, _) = parse_target("http://127.0.0.1:8080", None, None).unwrap();
        assert_eq!(t, Target::Edge("http://127.0.0.1:8080".into()));
        let (t, mix) = parse_target("grpc://127.0.0.1:7100", None, Some("genres")).unwrap();
        assert_eq!(t.service(), Service::Catalog);
        assert_eq!(mix.ops().len(), 1);
        let (t, _) = parse_target("grpc://127.0.0.1:7200", Some(Service::Ratings), None).unwrap();
        assert_eq!(t.service(), Service::Ratings);
        for bad in [
            "127.0.0.1:8080",
            "ftp://x:1",
            "http://",
            "http://u:p@127.0.0.1:8080",
            "http://127.0.0.1:0",
            "grpc://127.0.0.1",
            "grpc://127.0.0.1:0",
            "grpc://127.0.0.1:7100/x",
            "grpc://no-such-host.invalid:7100",
        ] {
            assert!(
                parse_target(bad, Some(Service::Catalog), None).is_err(),
                "{bad}"
            );
        }
        // gRPC with neither --service nor a telling mix is ambiguous.
        assert!(parse_target("grpc://127.0.0.1:7100", None, None).is_err());
        // An operation the service does not serve.
        assert!(
            parse_target(
                "grpc://127.0.0.1:7100",
                Some(Service::Catalog),
                Some("home")
            )
            .is_err()
        );
    }

    #[test]
    fn headers_are_name_colon_value() {
        assert_eq!(
            parse_header("X-Version-Catalog: 1.3").unwrap(),
            ("x-version-catalog".into(), "1.3".into())
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}
