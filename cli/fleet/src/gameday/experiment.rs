//! The experiment file: Chaos Toolkit's format (JSON or YAML), read into
//! typed structs and validated whole before anything runs.
//!
//! The keys are Chaos Toolkit's: `version`, `title`, `description`, `tags`,
//! `configuration`, `secrets`, `extensions`, `steady-state-hypothesis`
//! (`title`, `probes` each with a `tolerance`), `method` (actions and
//! probes, each with optional `pauses` `{before, after}` in seconds, or a
//! `ref` to an activity declared earlier), and `rollbacks`.
//!
//! Providers:
//! * `http` — as in Chaos Toolkit: `url`, `method`, `headers`, `arguments`
//!   (query string for GET, JSON body with a JSON content type, form
//!   otherwise), `timeout`, `expected_status` (an action whose answer has
//!   another status fails);
//! * `process` — runs `path` with `arguments`; when `path` is `fleet` and
//!   the first argument is `gameday`, the activity is one of our own
//!   providers (`fleet gameday fault|kill|stop|restart|network|probe …`,
//!   see `docs/GAMEDAY.md`), parsed here with the very same command-line
//!   parser, so a bad argument is refused before the run, and run
//!   in-process by `fleet gameday run` — while stock `chaos run` runs the
//!   same activity by executing `fleet`;
//! * `python` — refused: it needs Chaos Toolkit's Python runtime.
//!
//! `${name}` in strings is replaced by the configuration or secret `name`
//! (Chaos Toolkit's substitution); configuration values are literals or
//! `{"type": "env", "key": …, "default": …}`.
//!
//! Hostile files are refused with a message naming the place: files over
//! [`MAX_FILE_BYTES`], more than [`MAX_ACTIVITIES`] activities, nesting
//! deeper than [`MAX_DEPTH`], YAML alias bombs (the YAML reader's budget),
//! pauses over [`MAX_PAUSE`], unknown provider or activity types, missing
//! names, tolerances of the wrong shape, and references to nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use clap::Parser as _;
use serde_json::{Map, Value};

use crate::gameday::command::{FleetCommand, GamedayCli};

/// Largest experiment file accepted.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most activities (hypothesis probes, method and rollbacks together).
pub const MAX_ACTIVITIES: usize = 256;
/// Deepest nesting of JSON/YAML values.
pub const MAX_DEPTH: usize = 32;
/// Longest pause before or after an activity.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Longest HTTP provider timeout.
pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(300);

/// Why an experiment file was refused. Every message names the place.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not JSON/YAML.
    #[error("{path}: not valid {format}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// `JSON` or `YAML`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// It parsed, but is not a valid experiment.
    #[error("{path}: {at}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Where in the experiment (`method[2].provider.url`).
        at: String,
        /// What is wrong.
        message: String,
    },
}

/// Probe or action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivityKind {
    /// Observes; its output may be checked against a tolerance.
    Probe,
    /// Changes the system.
    Action,
}

impl ActivityKind {
    /// Chaos Toolkit's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Action => "action",
        }
    }
}

/// An HTTP provider (Chaos Toolkit semantics).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpProvider {
    /// The URL (after substitution).
    pub url: String,
    /// The method, upper case.
    pub method: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Query (GET), JSON body (JSON content type) or form body.
    pub arguments: Option<Value>,
    /// Whole-request timeout.
    pub timeout: Option<Duration>,
    /// The status an action must get.
    pub expected_status: Option<u16>,
}

/// Where an activity's work is done.
#[derive(Clone, Debug)]
pub enum Provider {
    /// An HTTP call.
    Http(HttpProvider),
    /// One of our own providers (`fleet gameday …`).
    Fleet {
        /// The parsed command.
        command: Box<FleetCommand>,
        /// Its arguments as written (after substitution), for the journal
        /// and for running it as a process.
        args: Vec<String>,
    },
    /// Any other program.
    Process {
        /// The program.
        path: String,
        /// Its arguments.
        args: Vec<String>,
        /// Kill it after this long.
        timeout: Option<Duration>,
    },
}

/// What a probe's output must be for the steady state to hold.
#[derive(Clone, Debug)]
pub enum Tolerance {
    /// Output equals this boolean.
    Bool(bool),
    /// The output's `status` (HTTP status, exit code) or the output itself
    /// equals this number.
    Int(i64),
    /// Output equals this string.
    Str(String),
    /// The output's `status` is one of these; for a bare number, two
    /// values are an inclusive range.
    List(Vec<Value>),
    /// The pattern matches the output (or its `target` key).
    Regex {
        /// Compiled pattern.
        pattern: regex::Regex,
        /// Key of the output to match (`body`, `stdout`).
        target: Option<String>,
    },
    /// The output (or its `target` key) is a number within `[lo, hi]`.
    Range {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
        /// Key of the output.
        target: Option<String>,
    },
}

impl PartialEq for Tolerance {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Str(a), Self::Str(b)) => a == b,
            (Self::List(a), Self::List(b)) => a == b,
            (
                Self::Regex {
                    pattern: p1,
                    target: t1,
                },
                Self::Regex {
                    pattern: p2,
                    target: t2,
                },
            ) => p1.as_str() == p2.as_str() && t1 == t2,
            (
                Self::Range {
                    lo: l1,
                    hi: h1,
                    target: t1,
                },
                Self::Range {
                    lo: l2,
                    hi: h2,
                    target: t2,
                },
            ) => l1 == l2 && h1 == h2 && t1 == t2,
            _ => false,
        }
    }
}

/// One probe or action.
#[derive(Clone, Debug)]
pub struct Activity {
    /// Probe or action.
    pub kind: ActivityKind,
    /// Its name (unique per experiment unless referenced).
    pub name: String,
    /// Where the work is done.
    pub provider: Provider,
    /// For hypothesis probes: what the output must be.
    pub tolerance: Option<Tolerance>,
    /// Wait before.
    pub pause_before: Duration,
    /// Wait after.
    pub pause_after: Duration,
    /// Run without waiting for it (the method goes on).
    pub background: bool,
    /// The activity as written, for the journal.
    pub raw: Value,
}

/// The steady-state hypothesis.
#[derive(Clone, Debug)]
pub struct Hypothesis {
    /// Its title.
    pub title: String,
    /// Probes with tolerances; all must hold.
    pub probes: Vec<Activity>,
}

/// The `fleet` extension: live monitoring and automatic abort.
///
/// ```json
/// "extensions": [{"name": "fleet", "monitor": {"rate": 40, "mix": "title=80,home=20",
///   "max_error_percent": 5, "max_p99_ms": 800, "max_p99_ratio": 3, "for_s": 2}}]
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Monitor {
    /// Requests per second (per cohort).
    pub rate: f64,
    /// The edge operations (`fleet load --mix` syntax).
    pub mix: String,
    /// Abort when the (experiment cohort's) error share exceeds this
    /// (percentage points above the control cohort's, with a cohort).
    pub max_error_percent: f64,
    /// Abort when the p99 exceeds this (ms).
    pub max_p99_ms: f64,
    /// With a cohort: abort when the experiment p99 exceeds the control's
    /// times this.
    pub max_p99_ratio: f64,
    /// For this many consecutive seconds.
    pub for_s: u32,
    /// Extra headers on every monitor request of both cohorts, e.g. a
    /// version pin (`x-version-catalog: 1.3`) so that both meet the canary.
    pub headers: Vec<(String, String)>,
}

/// A parsed, validated experiment.
#[derive(Clone, Debug)]
pub struct Experiment {
    /// `version` (free text in Chaos Toolkit).
    pub version: Option<String>,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Resolved configuration (after env lookups).
    pub configuration: BTreeMap<String, Value>,
    /// Steady-state hypothesis.
    pub hypothesis: Option<Hypothesis>,
    /// The method, in order.
    pub method: Vec<Activity>,
    /// Rollbacks, in order.
    pub rollbacks: Vec<Activity>,
    /// Live monitoring (the `fleet` extension).
    pub monitor: Option<Monitor>,
    /// The FIT/ChAP cohort share, percent (the `fleet` extension's
    /// `cohort`; `--experiment-cohort` overrides it).
    pub cohort_percent: Option<f64>,
    /// The file as written, for the journal.
    pub raw: Value,
}

/// Reads and validates `path` (JSON, or YAML for `.yaml`/`.yml`), looking
/// environment-typed configuration up in `env`.
///
/// # Errors
/// [`ExperimentError`] naming the first problem.
pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Experiment, ExperimentError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ExperimentError::Read {
        path: shown.clone(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(ExperimentError::Invalid {
            path: shown,
            at: "file".into(),
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Read {
        path: shown.clone(),
        source,
    })?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    parse(&text, yaml, env).map_err(|e| match e {
        ExperimentError::Syntax {
            format, message, ..
        } => ExperimentError::Syntax {
            path: shown.clone(),
            format,
            message,
        },
        ExperimentError::Invalid { at, message, .. } => ExperimentError::Invalid {
            path: shown.clone(),
            at,
            message,
        },
        other => other,
    })
}

/// Parses and validates experiment text.
///
/// # Errors
/// [`ExperimentError`] (with an empty path) naming the first problem.
pub fn parse(
    text: &str,
    yaml: bool,
    env: &BTreeMap<String, String>,
) -> Result<Experiment, ExperimentError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(invalid(
            "file",
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let raw: Value = if yaml {
        // Aliases may not expand into more than a small experiment's worth
        // of values (an alias bomb is refused, not expanded).
        let mut options = serde_saphyr::Options::default();
        options.alias_limits.max_total_replayed_events = 10_000;
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ExperimentError::Syntax {
            path: String::new(),
            format: "YAML",
            message: e.to_string(),
        })?
    } else {
        serde_json::from_str(text).map_err(|e| ExperimentError::Syntax {
            path: String::new(),
            format: "JSON",
            message: e.to_string(),
        })?
    };
    if depth(&raw) > MAX_DEPTH {
        return Err(invalid(
            "file",
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Parser::new(env).experiment(raw)
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> ExperimentError {
    ExperimentError::Invalid {
        path: String::new(),
        at: at.into(),
        message: message.into(),
    }
}

struct Parser<'a> {
    env: &'a BTreeMap<String, String>,
    vars: BTreeMap<String, Value>,
    declared: BTreeMap<String, Value>,
    count: usize,
}

impl<'a> Parser<'a> {
    fn new(env: &'a BTreeMap<String, String>) -> Self {
        Self {
            env,
            vars: BTreeMap::new(),
            declared: BTreeMap::new(),
            count: 0,
        }
    }

    fn experiment(mut self, raw: Value) -> Result<Experiment, ExperimentError> {
        let Value::Object(top) = &raw else {
            return Err(invalid("file", "an experiment is a mapping (JSON object)"));
        };
        let title = non_empty_str(top, "title", "title")?;
        let description = non_empty_str(top, "description", "description")?;
        let version = match top.get("version") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(invalid("version", "must be a string")),
        };
        let tags = match top.get("tags") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(invalid(
                        format!("tags[{i}]"),
                        "tags must be non-empty strings",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("tags", "must be a list of strings")),
        };
        let configuration = self.configuration(top.get("configuration"), "configuration")?;
        self.vars.extend(configuration.clone());
        if let Some(secrets) = top.get("secrets") {
            let Value::Object(scopes) = secrets else {
                return Err(invalid("secrets", "must be a mapping of scopes"));
            };
            for (scope, values) in scopes {
                let resolved = self.configuration(Some(values), &format!("secrets.{scope}"))?;
                self.vars.extend(resolved);
            }
        }
        let (monitor, cohort_percent) = self.extensions(top.get("extensions"))?;

        let hypothesis = match top.get("steady-state-hypothesis") {
            None | Some(Value::Null) => None,
            Some(Value::Object(h)) => {
                let title = non_empty_str(h, "title", "steady-state-hypothesis.title")?;
                let probes = match h.get("probes") {
                    None => Vec::new(),
                    Some(Value::Array(a)) => a
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let at = format!("steady-state-hypothesis.probes[{i}]");
                            let act = self.activity(p, &at)?;
                            if act.kind != ActivityKind::Probe {
                                return Err(invalid(at, "the hypothesis holds probes only"));
                            }
                            if act.tolerance.is_none() {
                                return Err(invalid(at, "a hypothesis probe needs a tolerance"));
                            }
                            Ok(act)
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => {
                        return Err(invalid("steady-state-hypothesis.probes", "must be a list"));
                    }
                };
                Some(Hypothesis { title, probes })
            }
            Some(_) => {
                return Err(invalid(
                    "steady-state-hypothesis",
                    "must be a mapping with a title and probes",
                ));
            }
        };
        let method = match top.get("method") {
            None => {
                return Err(invalid(
                    "method",
                    "an experiment requires a method (it may be an empty list)",
                ));
            }
            Some(v) => self.activities(v, "method")?,
        };
        let rollbacks = match top.get("rollbacks") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => self.activities(v, "rollbacks")?,
        };
        for (i, r) in rollbacks.iter().enumerate() {
            if r.kind != ActivityKind::Action {
                return Err(invalid(format!("rollbacks[{i}]"), "rollbacks are actions"));
            }
        }
        Ok(Experiment {
            version,
            title,
            description,
            tags,
            configuration,
            hypothesis,
            method,
            rollbacks,
            monitor,
            cohort_percent,
            raw,
        })
    }

    fn configuration(
        &self,
        v: Option<&Value>,
        at: &str,
    ) -> Result<BTreeMap<String, Value>, ExperimentError> {
        let mut out = BTreeMap::new();
        let Some(v) = v else { return Ok(out) };
        let Value::Object(map) = v else {
            return Err(invalid(at, "must be a mapping"));
        };
        for (key, value) in map {
            let here = format!("{at}.{key}");
            let resolved = match value {
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("env") => {
                    let Some(Value::String(name)) = o.get("key") else {
                        return Err(invalid(here, "an env value needs a `key`"));
                    };
                    match (self.env.get(name), o.get("default")) {
                        (Some(s), _) => convert(s, o.get("env_var_type"), &here)?,
                        (None, Some(d)) => d.clone(),
                        (None, None) => {
                            return Err(invalid(
                                here,
                                format!(
                                    "the environment variable {name} is not set and there is no default"
                                ),
                            ));
                        }
                    }
                }
                Value::Object(o) if o.contains_key("type") => {
                    return Err(invalid(
                        here,
                        format!(
                            "configuration type {} is not supported (literals and `env` are)",
                            o.get("type").unwrap_or(&Value::Null)
                        ),
                    ));
                }
                other => other.clone(),
            };
            out.insert(key.clone(), resolved);
        }
        Ok(out)
    }

    fn extensions(
        &self,
        v: Option<&Value>,
    ) -> Result<(Option<Monitor>, Option<f64>), ExperimentError> {
        let Some(v) = v else {
            return Ok((None, None));
        };
        let Value::Array(list) = v else {
            return Err(invalid("extensions", "must be a list"));
        };
        let mut monitor = None;
        let mut cohort = None;
        for (i, ext) in list.iter().enumerate() {
            let at = format!("extensions[{i}]");
            let Value::Object(o) = ext else {
                return Err(invalid(at, "an extension is a mapping with a name"));
            };
            let Some(Value::String(name)) = o.get("name") else {
                return Err(invalid(at, "an extension needs a name"));
            };
            if name != "fleet" {
                continue;
            }
            for key in o.keys() {
                if !["name", "monitor", "cohort"].contains(&key.as_str()) {
                    return Err(invalid(
                        format!("{at}.{key}"),
                        "unknown key of the fleet extension (known: name, monitor, cohort)",
                    ));
                }
            }
            if let Some(m) = o.get("monitor") {
                monitor = Some(parse_monitor(m, &format!("{at}.monitor"))?);
            }
            if let Some(c) = o.get("cohort") {
                let text = match c {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                cohort = Some(
                    crate::gameday::command::parse_percent(&text)
                        .map_err(|m| invalid(format!("{at}.cohort"), m))?,
                );
            }
        }
        Ok((monitor, cohort))
    }

    fn activities(&mut self, v: &Value, at: &str) -> Result<Vec<Activity>, ExperimentError> {
        let Value::Array(a) = v else {
            return Err(invalid(at, "must be a list of activities"));
        };
        a.iter()
            .enumerate()
            .map(|(i, x)| self.activity(x, &format!("{at}[{i}]")))
            .collect()
    }

    fn activity(&mut self, v: &Value, at: &str) -> Result<Activity, ExperimentError> {
        self.count += 1;
        if self.count > MAX_ACTIVITIES {
            return Err(invalid(
                at,
                format!("more than {MAX_ACTIVITIES} activities"),
            ));
        }
        let Value::Object(o) = v else {
            return Err(invalid(at, "an activity is a mapping"));
        };
        if let Some(r) = o.get("ref") {
            let Value::String(name) = r else {
                return Err(invalid(at, "ref must be a non-empty string"));
            };
            let Some(target) = self.declared.get(name).cloned() else {
                return Err(invalid(
                    at,
                    format!("ref {name:?} names no activity declared before it"),
                ));
            };
            let mut act = self.activity_body(&target, at)?;
            act.raw = v.clone();
            return Ok(act);
        }
        let act = self.activity_body(v, at)?;
        self.declared.insert(act.name.clone(), v.clone());
        Ok(act)
    }

    fn activity_body(&self, v: &Value, at: &str) -> Result<Activity, ExperimentError> {
        let Value::Object(o) = v else {
            return Err(invalid(at, "an activity is a mapping"));
        };
        let kind = match o.get("type").and_then(Value::as_str) {
            Some("probe") => ActivityKind::Probe,
            Some("action") => ActivityKind::Action,
            Some(other) => {
                return Err(invalid(
                    format!("{at}.type"),
                    format!("{other:?} is not an activity type (probe or action)"),
                ));
            }
            None => return Err(invalid(format!("{at}.type"), "an activity needs a type")),
        };
        let name = non_empty_str(o, "name", &format!("{at}.name"))?;
        if name.len() > 200 || name.chars().any(char::is_control) {
            return Err(invalid(
                format!("{at}.name"),
                "at most 200 printable characters",
            ));
        }
        let Some(provider) = o.get("provider") else {
            return Err(invalid(
                format!("{at}.provider"),
                "an activity needs a provider",
            ));
        };
        let provider = self.provider(provider, &format!("{at}.provider"))?;
        let (pause_before, pause_after) = match o.get("pauses") {
            None => (Duration::ZERO, Duration::ZERO),
            Some(Value::Object(p)) => {
                for key in p.keys() {
                    if key != "before" && key != "after" {
                        return Err(invalid(
                            format!("{at}.pauses.{key}"),
                            "pauses are `before` and `after`",
                        ));
                    }
                }
                (
                    self.pause(p.get("before"), &format!("{at}.pauses.before"))?,
                    self.pause(p.get("after"), &format!("{at}.pauses.after"))?,
                )
            }
            Some(_) => return Err(invalid(format!("{at}.pauses"), "must be a mapping")),
        };
        let background = match o.get("background") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid(format!("{at}.background"), "must be a boolean")),
        };
        let tolerance = o
            .get("tolerance")
            .map(|t| self.tolerance(t, &format!("{at}.tolerance")))
            .transpose()?;
        Ok(Activity {
            kind,
            name,
            provider,
            tolerance,
            pause_before,
            pause_after,
            background,
            raw: v.clone(),
        })
    }

    fn pause(&self, v: Option<&Value>, at: &str) -> Result<Duration, ExperimentError> {
        let secs = match v {
            None => return Ok(Duration::ZERO),
            Some(Value::String(s)) => {
                let s = substitute_str(s, &self.vars);
                match s {
                    Value::Number(n) => n.as_f64(),
                    Value::String(t) => t.trim().parse::<f64>().ok(),
                    _ => None,
                }
            }
            Some(Value::Number(n)) => n.as_f64(),
            Some(_) => None,
        };
        match secs {
            Some(s) if s.is_finite() && (0.0..=MAX_PAUSE.as_secs_f64()).contains(&s) => {
                Ok(Duration::from_secs_f64(s))
            }
            _ => Err(invalid(
                at,
                format!(
                    "a pause is a number of seconds within 0..={}",
                    MAX_PAUSE.as_secs()
                ),
            )),
        }
    }

    fn provider(&self, v: &Value, at: &str) -> Result<Provider, ExperimentError> {
        let Value::Object(o) = v else {
            return Err(invalid(at, "a provider is a mapping"));
        };
        let v = substitute(v, &self.vars);
        let Value::Object(p) = &v else {
            return Err(invalid(at, "a provider is a mapping"));
        };
        match o.get("type").and_then(Value::as_str) {
            Some("http") => http_provider(p, at).map(Provider::Http),
            Some("process") => process_provider(p, at),
            Some("python") => Err(invalid(
                format!("{at}.type"),
                "python providers need Chaos Toolkit's Python runtime: run this file with `chaos run`, or use an http or process (fleet) provider",
            )),
            Some(other) => Err(invalid(
                format!("{at}.type"),
                format!("unknown provider type {other:?} (http, process, python)"),
            )),
            None => Err(invalid(format!("{at}.type"), "a provider needs a type")),
        }
    }

    fn tolerance(&self, v: &Value, at: &str) -> Result<Tolerance, ExperimentError> {
        let v = substitute(v, &self.vars);
        Ok(match &v {
            Value::Bool(b) => Tolerance::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Tolerance::Int(i),
                None => return Err(invalid(at, "a number tolerance is an integer")),
            },
            Value::String(s) => Tolerance::Str(s.clone()),
            Value::Array(a) => {
                if a.is_empty() {
                    return Err(invalid(at, "an empty list tolerates nothing"));
                }
                Tolerance::List(a.clone())
            }
            Value::Object(o) => {
                let target = match o.get("target") {
                    None => None,
                    Some(Value::String(t)) => Some(t.clone()),
                    Some(_) => return Err(invalid(format!("{at}.target"), "must be a string")),
                };
                match o.get("type").and_then(Value::as_str) {
                    Some("regex") => {
                        let Some(Value::String(p)) = o.get("pattern") else {
                            return Err(invalid(at, "a regex tolerance needs a `pattern`"));
                        };
                        let pattern = regex::RegexBuilder::new(p)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|e| {
                                invalid(format!("{at}.pattern"), format!("invalid pattern: {e}"))
                            })?;
                        Tolerance::Regex { pattern, target }
                    }
                    Some("range") => {
                        let bounds = o
                            .get("range")
                            .and_then(Value::as_array)
                            .filter(|r| r.len() == 2)
                            .and_then(|r| Some((r.first()?.as_f64()?, r.get(1)?.as_f64()?)));
                        let Some((lo, hi)) = bounds else {
                            return Err(invalid(
                                format!("{at}.range"),
                                "a range is a list of two numbers",
                            ));
                        };
                        if lo > hi {
                            return Err(invalid(format!("{at}.range"), "lower bound above upper"));
                        }
                        Tolerance::Range { lo, hi, target }
                    }
                    Some(other) => {
                        return Err(invalid(
                            format!("{at}.type"),
                            format!(
                                "tolerance type {other:?} is not supported by fleet gameday (regex, range; or a bool, number, string or list)"
                            ),
                        ));
                    }
                    None => return Err(invalid(at, "a tolerance mapping needs a type")),
                }
            }
            Value::Null => return Err(invalid(at, "a tolerance cannot be null")),
        })
    }
}

fn parse_monitor(v: &Value, at: &str) -> Result<Monitor, ExperimentError> {
    let Value::Object(o) = v else {
        return Err(invalid(at, "must be a mapping"));
    };
    let known = [
        "rate",
        "mix",
        "max_error_percent",
        "max_p99_ms",
        "max_p99_ratio",
        "for_s",
        "headers",
    ];
    for key in o.keys() {
        if !known.contains(&key.as_str()) {
            return Err(invalid(
                format!("{at}.{key}"),
                format!("unknown key (known: {})", known.join(", ")),
            ));
        }
    }
    let num = |key: &str, default: f64, lo: f64, hi: f64| -> Result<f64, ExperimentError> {
        match o.get(key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
                _ => Err(invalid(
                    format!("{at}.{key}"),
                    format!("must be a number within {lo}..={hi}"),
                )),
            },
        }
    };
    let mix = match o.get("mix") {
        None => "title=80,home=20".to_owned(),
        Some(Value::String(s)) => {
            crate::load::mix::Mix::parse(Some(s), crate::load::mix::Service::Edge)
                .map_err(|e| invalid(format!("{at}.mix"), e))?;
            s.clone()
        }
        Some(_) => return Err(invalid(format!("{at}.mix"), "must be a string")),
    };
    let for_s = num("for_s", 2.0, 1.0, 60.0)?;
    let headers = match o.get("headers") {
        None => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| match v {
                Value::String(s)
                    if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok()
                        && reqwest::header::HeaderValue::from_str(s).is_ok() =>
                {
                    Ok((k.clone(), s.clone()))
                }
                _ => Err(invalid(format!("{at}.headers.{k}"), "not a valid header")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(format!("{at}.headers"), "headers are a mapping")),
    };
    Ok(Monitor {
        headers,
        rate: num("rate", 40.0, 1.0, 2000.0)?,
        mix,
        max_error_percent: num("max_error_percent", 5.0, 0.0, 100.0)?,
        max_p99_ms: num("max_p99_ms", 1000.0, 1.0, 600_000.0)?,
        max_p99_ratio: num("max_p99_ratio", 3.0, 1.0, 1000.0)?,
        // Whole seconds: checked once per second.
        for_s: for_s.round() as u32,
    })
}

fn non_empty_str(o: &Map<String, Value>, key: &str, at: &str) -> Result<String, ExperimentError> {
    match o.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(invalid(at, format!("{key} is required"))),
        Some(_) => Err(invalid(at, "must be a string")),
    }
}

fn convert(s: &str, ty: Option<&Value>, at: &str) -> Result<Value, ExperimentError> {
    match ty.and_then(Value::as_str) {
        None | Some("str") => Ok(Value::String(s.to_owned())),
        Some("int") => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| invalid(at, format!("{s:?} is not an integer"))),
        Some("float") => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| invalid(at, format!("{s:?} is not a number"))),
        Some("bool") => Ok(Value::Bool(matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ))),
        Some(other) => Err(invalid(at, format!("env_var_type {other:?} is unknown"))),
    }
}

/// Chaos Toolkit's `${name}` substitution, recursively. A string that is
/// exactly one `${name}` takes the value's type; names that are not
/// defined are left as written.
pub fn substitute(v: &Value, vars: &BTreeMap<String, Value>) -> Value {
    match v {
        Value::String(s) => substitute_str(s, vars),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(x, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_str(s: &str, vars: &BTreeMap<String, Value>) -> Value {
    if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
        && !name.contains('}')
        && let Some(v) = vars.get(name)
    {
        return v.clone();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        match after.find('}') {
            Some(end) => {
                let name = after.get(..end).unwrap_or_default();
                match vars.get(name) {
                    Some(Value::String(x)) => out.push_str(x),
                    Some(other) => out.push_str(&other.to_string()),
                    None => {
                        out.push_str("${");
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = after.get(end + 1..).unwrap_or_default();
            }
            None => {
                out.push_str(rest.get(start..).unwrap_or_default());
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Value::String(out)
}

fn http_provider(p: &Map<String, Value>, at: &str) -> Result<HttpProvider, ExperimentError> {
    let url = match p.get("url") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => return Err(invalid(format!("{at}.url"), "an http provider needs a url")),
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| invalid(format!("{at}.url"), format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("{at}.url"), "only http and https URLs"));
    }
    let method = match p.get("method") {
        None => "GET".to_owned(),
        Some(Value::String(m)) => {
            let m = m.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].contains(&m.as_str()) {
                return Err(invalid(
                    format!("{at}.method"),
                    format!("unknown method {m}"),
                ));
            }
            m
        }
        Some(_) => return Err(invalid(format!("{at}.method"), "must be a string")),
    };
    let headers = match p.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => {
                        return Err(invalid(
                            format!("{at}.headers.{k}"),
                            "header values are strings",
                        ));
                    }
                };
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(&value).is_err()
                {
                    return Err(invalid(format!("{at}.headers.{k}"), "not a valid header"));
                }
                Ok((k.clone(), value))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(format!("{at}.headers"), "headers are a mapping")),
    };
    let timeout = match p.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => {
            // Chaos Toolkit allows [connect, read]; the larger bounds the call.
            let secs = match v {
                Value::Array(a) => a.iter().filter_map(Value::as_f64).reduce(f64::max),
                other => other.as_f64(),
            };
            match secs {
                Some(s) if s > 0.0 && s <= MAX_HTTP_TIMEOUT.as_secs_f64() => {
                    Some(Duration::from_secs_f64(s))
                }
                _ => {
                    return Err(invalid(
                        format!("{at}.timeout"),
                        format!(
                            "seconds within 0..={} (or [connect, read])",
                            MAX_HTTP_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
        }
    };
    let expected_status = match p.get("expected_status") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(s @ 100..=599) => Some(s as u16),
            _ => {
                return Err(invalid(
                    format!("{at}.expected_status"),
                    "an HTTP status 100..=599",
                ));
            }
        },
    };
    Ok(HttpProvider {
        url,
        method,
        headers,
        arguments: p.get("arguments").cloned().filter(|a| !a.is_null()),
        timeout,
        expected_status,
    })
}

fn process_provider(p: &Map<String, Value>, at: &str) -> Result<Provider, ExperimentError> {
    let path = match p.get("path") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(invalid(
                format!("{at}.path"),
                "a process provider needs a path",
            ));
        }
    };
    let args: Vec<String> = match p.get("arguments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null() && v.as_str() != Some(""))
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(invalid(
                    format!("{at}.arguments[{i}]"),
                    "arguments are strings or numbers",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(_)) => {
            return Err(invalid(
                format!("{at}.arguments"),
                "give arguments as a list (a string would go through a shell)",
            ));
        }
        Some(_) => return Err(invalid(format!("{at}.arguments"), "must be a list")),
    };
    let timeout = match p.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 && s <= 86_400.0 => Some(Duration::from_secs_f64(s)),
            _ => return Err(invalid(format!("{at}.timeout"), "seconds within 0..=86400")),
        },
    };
    let is_fleet = Path::new(&path).file_name().and_then(|f| f.to_str()) == Some("fleet")
        && args.first().map(String::as_str) == Some("gameday");
    if is_fleet {
        let argv = std::iter::once("fleet".to_owned()).chain(args.iter().skip(1).cloned());
        let cli = GamedayCli::try_parse_from(argv).map_err(|e| {
            invalid(
                format!("{at}.arguments"),
                first_line(&e.to_string()).to_owned(),
            )
        })?;
        let command = FleetCommand::from_cli(cli.command)
            .map_err(|m| invalid(format!("{at}.arguments"), m))?;
        return Ok(Provider::Fleet {
            command: Box::new(command),
            args,
        });
    }
    Ok(Provider::Process {
        path,
        args,
        timeout,
    })
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim_start_matches("error: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn err(text: &str) -> String {
        parse(text, false, &env()).unwrap_err().to_string()
    }

    const OK: &str = r#"{
      "version": "1.0.0", "title": "t", "description": "d", "tags": ["a"],
      "configuration": {"edge": {"type": "env", "key": "NOPE_EDGE", "default": "http://127.0.0.1:8080"},
                        "code": 200},
      "steady-state-hypothesis": {"title": "up", "probes": [
        {"type": "probe", "name": "title", "tolerance": "${code}",
         "provider": {"type": "http", "url": "${edge}/api/v1/titles/t00001", "timeout": 2}}]},
      "method": [
        {"type": "action", "name": "slow", "pauses": {"after": 1},
         "provider": {"type": "process", "path": "fleet", "arguments":
           ["gameday", "fault", "add", "--service", "catalog", "--delay", "200ms"]}},
        {"ref": "title"}],
      "rollbacks": [{"type": "action", "name": "clear", "provider": {"type": "process",
         "path": "fleet", "arguments": ["gameday", "fault", "clear", "--service", "catalog"]}}]
    }"#;

    #[test]
    fn a_chaos_toolkit_experiment_parses_with_substitution_and_refs() {
        let e = parse(OK, false, &env()).unwrap();
        assert_eq!(e.title, "t");
        let h = e.hypothesis.unwrap();
        let probe = &h.probes[0];
        assert_eq!(
            probe.tolerance,
            Some(Tolerance::Int(200)),
            "typed ${{code}}"
        );
        match &probe.provider {
            Provider::Http(p) => {
                assert_eq!(p.url, "http://127.0.0.1:8080/api/v1/titles/t00001");
                assert_eq!(p.timeout, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.method.len(), 2);
        assert_eq!(e.method[0].pause_after, Duration::from_secs(1));
        assert!(matches!(e.method[0].provider, Provider::Fleet { .. }));
        assert_eq!(e.method[1].name, "title", "ref resolved");
        assert_eq!(e.rollbacks.len(), 1);
    }

    #[test]
    fn yaml_parses_the_same() {
        let yaml = "title: t\ndescription: d\nmethod:\n  - type: action\n    name: kill\n    provider:\n      type: process\n      path: fleet\n      arguments: [gameday, kill, --service, catalog]\n";
        let e = parse(yaml, true, &env()).unwrap();
        assert_eq!(e.method[0].name, "kill");
    }

    #[test]
    fn env_configuration_is_read_from_the_given_environment() {
        let mut env = env();
        env.insert("NOPE_EDGE".into(), "http://10.0.0.1:1".into());
        let e = parse(OK, false, &env).unwrap();
        assert_eq!(e.configuration["edge"], "http://10.0.0.1:1");
        let missing = r#"{"title":"t","description":"d","method":[],
            "configuration":{"x":{"type":"env","key":"SURELY_UNSET_42"}}}"#;
        assert!(err(missing).contains("SURELY_UNSET_42 is not set"));
    }

    #[test]
    fn malformed_and_hostile_files_are_refused_with_the_place_named() {
        let cases: &[(&str, &str)] = &[
            ("[]", "an experiment is a mapping"),
            (r#"{"description":"d","method":[]}"#, "title is required"),
            (r#"{"title":"t","method":[]}"#, "description is required"),
            (r#"{"title":"t","description":"d"}"#, "requires a method"),
            (
                r#"{"title":"t","description":"d","tags":[""],"method":[]}"#,
                "tags[0]",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"nap","name":"x"}]}"#,
                "method[0].type",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","provider":{"type":"http","url":"http://x"}}]}"#,
                "method[0].name",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x"}]}"#,
                "method[0].provider",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x","provider":{"type":"teleport"}}]}"#,
                "unknown provider type",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x","provider":{"type":"python","module":"m","func":"f"}}]}"#,
                "chaos run",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x","provider":{"type":"http","url":"file:///etc/passwd"}}]}"#,
                "only http and https",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x","provider":{"type":"http","url":"http://x","timeout":-1}}]}"#,
                "method[0].provider.timeout",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x","pauses":{"after":1e9},"provider":{"type":"http","url":"http://x"}}]}"#,
                "method[0].pauses.after",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x","provider":{"type":"process","path":"sh","arguments":"rm -rf /"}}]}"#,
                "shell",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x","provider":{"type":"process","path":"fleet","arguments":["gameday","kill","--service","nosuch"]}}]}"#,
                "method[0].provider.arguments",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"type":"action","name":"x","provider":{"type":"process","path":"fleet","arguments":["gameday","fault","add","--service","catalog","--delay","9h"]}}]}"#,
                "method[0].provider.arguments",
            ),
            (
                r#"{"title":"t","description":"d","method":[{"ref":"ghost"}]}"#,
                "names no activity",
            ),
            (
                r#"{"title":"t","description":"d","steady-state-hypothesis":{"title":"h","probes":[{"type":"probe","name":"p","provider":{"type":"http","url":"http://x"}}]},"method":[]}"#,
                "needs a tolerance",
            ),
            (
                r#"{"title":"t","description":"d","steady-state-hypothesis":{"title":"h","probes":[{"type":"probe","name":"p","tolerance":{"type":"regex","pattern":"("},"provider":{"type":"http","url":"http://x"}}]},"method":[]}"#,
                "invalid pattern",
            ),
            (
                r#"{"title":"t","description":"d","steady-state-hypothesis":{"title":"h","probes":[{"type":"probe","name":"p","tolerance":{"type":"range","range":[5,1]},"provider":{"type":"http","url":"http://x"}}]},"method":[]}"#,
                "lower bound",
            ),
            (
                r#"{"title":"t","description":"d","method":[],"rollbacks":[{"type":"probe","name":"p","provider":{"type":"http","url":"http://x"}}]}"#,
                "rollbacks are actions",
            ),
            (
                r#"{"title":"t","description":"d","method":[],"extensions":[{"name":"fleet","monitor":{"rate":0}}]}"#,
                "monitor.rate",
            ),
            (
                r#"{"title":"t","description":"d","method":[],"extensions":[{"name":"fleet","monitor":{"mix":"explode=1"}}]}"#,
                "monitor.mix",
            ),
            ("{\"title\":", "not valid JSON"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text}\n  got: {got}\n  want: {want}");
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let deep = format!(r#"{{"title":"t","description":"d","method":[],"x":{deep}}}"#);
        assert!(err(&deep).contains("nested deeper"), "{}", err(&deep));
        let many = format!(
            r#"{{"title":"t","description":"d","method":[{}]}}"#,
            vec![
                r#"{"type":"action","name":"a","provider":{"type":"http","url":"http://x"}}"#;
                MAX_ACTIVITIES + 1
            ]
            .join(",")
        );
        assert!(err(&many).contains("more than 256 activities"));
    }

    #[test]
    fn a_yaml_alias_bomb_is_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            bomb.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = c;
        }
        bomb.push_str("title: t\ndescription: d\nmethod: []\n");
        let e = parse(&bomb, true, &env()).unwrap_err().to_string();
        assert!(e.contains("not valid YAML"), "{e}");
    }

    #[test]
    fn substitution_keeps_unknown_names_and_types_whole_values() {
        let mut vars = BTreeMap::new();
        vars.insert("n".to_owned(), Value::from(3));
        vars.insert("s".to_owned(), Value::from("x"));
        assert_eq!(substitute_str("${n}", &vars), Value::from(3));
        assert_eq!(substitute_str("a${s}b${n}c", &vars), Value::from("axb3c"));
        assert_eq!(
            substitute_str("${nope}-${s", &vars),
            Value::from("${nope}-${s")
        );
    }
}
