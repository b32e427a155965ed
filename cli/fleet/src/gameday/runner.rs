//! `fleet gameday run`: one experiment, start to verdict.
//!
//! Order, as in Chaos Toolkit: replay a crashed run's rollbacks (if its
//! rollback file is still there) → steady state before → method (with the
//! live monitor, if any, watching for a deviation) → steady state after →
//! rollbacks. Rollbacks always run: after the method, after a failed
//! steady state, on an automatic abort, on Ctrl-C/SIGTERM — and, should the
//! runner itself die, from the rollback file by the next run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::gameday::activity::{self, Context};
use crate::gameday::command::RunArgs;
use crate::gameday::experiment::{self, Activity, Experiment, Provider};
use crate::gameday::journal::{self, Record, Status, SteadyState};
use crate::gameday::monitor::{self, Cohort, Deviation, MonitorHandle};
use crate::gameday::target::Target;
use crate::gameday::undo::{self, UndoLog, UndoStep};

/// Why a run could not be carried out (not: why the system misbehaved).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The experiment file is unusable.
    #[error(transparent)]
    Experiment(#[from] experiment::ExperimentError),
    /// The rollback file is unusable or another run is going on.
    #[error(transparent)]
    Undo(#[from] undo::UndoError),
    /// Setting up failed.
    #[error("{0}")]
    Setup(String),
    /// The journal or report could not be written.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// Whether the steady state deviated.
    pub deviated: bool,
    /// The journal.
    pub journal: Value,
}

enum Stop {
    Abort(Deviation),
    Signal,
}

struct Run {
    cx: Context,
    t0: Instant,
}

impl Run {
    fn since(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    async fn activity(&self, a: &Activity) -> Record {
        let t_start = self.since();
        let start = SystemTime::now();
        let what = match &a.provider {
            Provider::Fleet { command, .. } => command.describe(),
            Provider::Http(h) => format!("{} {}", h.method, h.url),
            Provider::Process { path, .. } => format!("run {path}"),
        };
        eprintln!(
            "  [{t_start:>5.1}s] {} {:?}: {what} …",
            a.kind.as_str(),
            a.name
        );
        let result = activity::run_provider(&a.provider, &self.cx).await;
        let end = SystemTime::now();
        let duration = end.duration_since(start).unwrap_or_default().as_secs_f64();
        let (status, output, exception) = match result {
            Ok(out) => ("succeeded", Some(out), None),
            Err(e) => ("failed", None, Some(vec![e.to_string()])),
        };
        let tolerance_met = match (&a.tolerance, &output) {
            (Some(t), Some(out)) => Some(activity::within(t, out)),
            (Some(_), None) => Some(false),
            _ => None,
        };
        eprintln!(
            "  [{:>5.1}s]   {} in {duration:.2}s{}{}",
            self.since(),
            status,
            match tolerance_met {
                Some(true) => ", within tolerance",
                Some(false) => ", OUTSIDE tolerance",
                None => "",
            },
            exception
                .as_ref()
                .and_then(|e| e.first())
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        Record {
            activity: a.raw.clone(),
            status,
            start: journal::rfc3339(start),
            end: journal::rfc3339(end),
            duration,
            output,
            exception,
            tolerance_met,
            t_start,
            t_end: self.since(),
        }
    }

    async fn hypothesis(&self, e: &Experiment, when: &str) -> Option<SteadyState> {
        let h = e.hypothesis.as_ref()?;
        eprintln!(
            "  [{:>5.1}s] steady state ({when}): {}",
            self.since(),
            h.title
        );
        let mut probes = Vec::new();
        let mut met = true;
        for p in &h.probes {
            let r = self.activity(p).await;
            let ok = r.tolerance_met == Some(true);
            probes.push(r);
            if !ok {
                met = false;
                break;
            }
        }
        Some(SteadyState {
            steady_state_met: met,
            probes,
        })
    }

    async fn pause(&self, d: Duration) {
        if !d.is_zero() {
            eprintln!("  [{:>5.1}s]   pausing {d:.1?}", self.since());
            tokio::time::sleep(d).await;
        }
    }

    /// The method: activities in order, background ones joined at the end.
    async fn method(&self, e: &Experiment, out: &tokio::sync::Mutex<Vec<Record>>) {
        let mut background = Vec::new();
        for a in &e.method {
            self.pause(a.pause_before).await;
            if a.background {
                background.push(self.activity(a));
            } else {
                let r = self.activity(a).await;
                out.lock().await.push(r);
            }
            self.pause(a.pause_after).await;
        }
        for r in futures::future::join_all(background).await {
            out.lock().await.push(r);
        }
    }

    async fn rollbacks(&self, e: &Experiment) -> Vec<Record> {
        let mut out = Vec::new();
        if !e.rollbacks.is_empty() {
            eprintln!("  [{:>5.1}s] rollbacks", self.since());
        }
        for a in &e.rollbacks {
            self.pause(a.pause_before).await;
            out.push(self.activity(a).await);
        }
        out.extend(self.undo_all().await);
        out
    }

    /// Puts back everything the undo log still holds.
    async fn undo_all(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let args = self.cx.target.args().clone();
        for step in self.cx.undo.take() {
            let t_start = self.since();
            let start = SystemTime::now();
            let res = undo::apply(&step, &self.cx.target, &args, &self.cx.http).await;
            let end = SystemTime::now();
            let activity = undo_activity(&step);
            match &res {
                Ok(line) => eprintln!("  [{:>5.1}s] undo: {line}", self.since()),
                Err(e) => eprintln!("  [{:>5.1}s] undo FAILED: {e}", self.since()),
            }
            out.push(Record {
                activity,
                status: if res.is_ok() { "succeeded" } else { "failed" },
                start: journal::rfc3339(start),
                end: journal::rfc3339(end),
                duration: end.duration_since(start).unwrap_or_default().as_secs_f64(),
                output: res.as_ref().ok().map(|l| Value::String(l.clone())),
                exception: res.err().map(|e| vec![e]),
                tolerance_met: None,
                t_start,
                t_end: self.since(),
            });
        }
        out
    }
}

/// The undo step as a Chaos Toolkit activity, for the journal.
fn undo_activity(step: &UndoStep) -> Value {
    match step {
        UndoStep::RemoveFault {
            instance,
            admin_url,
            id,
        } => json!({
            "type": "action",
            "name": format!("remove fault rule {id} on {instance}"),
            "provider": {"type": "http", "method": "DELETE",
                         "url": format!("{admin_url}/admin/faults/{id}")},
        }),
        UndoStep::ComposeStart { service } => json!({
            "type": "action",
            "name": format!("start {service}"),
            "provider": {"type": "process", "path": "docker",
                         "arguments": ["compose", "start", service]},
        }),
        UndoStep::RemoveToxic { api, proxy, toxic } => json!({
            "type": "action",
            "name": format!("remove toxic {toxic} from {proxy}"),
            "provider": {"type": "http", "method": "DELETE",
                         "url": format!("{api}/proxies/{proxy}/toxics/{toxic}")},
        }),
        UndoStep::EnableProxy { api, proxy } => json!({
            "type": "action",
            "name": format!("enable proxy {proxy}"),
            "provider": {"type": "http", "method": "POST",
                         "url": format!("{api}/proxies/{proxy}"),
                         "arguments": {"enabled": true}},
        }),
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn signalled() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
    }
}

/// Runs the experiment in `args.file`; `env` is the environment snapshot
/// for `env`-typed configuration.
///
/// # Errors
/// [`RunError`] when the run could not be carried out at all (bad file,
/// another run in progress, unwritable journal). A steady state that did
/// not hold is an [`Outcome`], not an error.
pub async fn run(args: &RunArgs, env: &BTreeMap<String, String>) -> Result<Outcome, RunError> {
    let target = Target::new(args.target.clone());
    // On the embedded target, `env`-typed configuration can name what
    // `fleet gameday env` prints (edge URL, token, admin URLs): filled in
    // from the run directory unless the environment says otherwise.
    let mut env = env.clone();
    if target.kind == crate::gameday::command::TargetKind::Embedded
        && let (Ok(reg), Ok(token), Ok(edge)) =
            (target.registry(), target.admin_token(), target.edge_url())
    {
        let data_dir = target
            .run_dir()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        for (k, v) in crate::gameday::env_pairs(&reg, &token, &edge, &data_dir) {
            env.entry(k).or_insert(v);
        }
    }
    let env = &env;
    let e = experiment::load(&args.file, env)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| RunError::Setup(format!("HTTP client: {e}")))?;
    let rollback_file = args
        .rollback_file
        .clone()
        .unwrap_or_else(|| target.run_dir().join("gameday-rollback.json"));

    // A run that died left its rollback file: put the system back first.
    let mut replayed = Vec::new();
    if let Some(left) = UndoLog::leftover(&rollback_file)? {
        eprintln!(
            "fleet gameday: a run started {} (pid {}) did not finish; replaying its rollbacks first",
            left.started, left.runner_pid
        );
        let old_log = Arc::new(UndoLog::in_memory());
        for s in &left.steps {
            old_log.push(s.clone());
        }
        let replay = Run {
            cx: Context {
                target: target.clone(),
                undo: old_log,
                fault_scope: None,
                http: http.clone(),
            },
            t0: Instant::now(),
        };
        if let Some(path) = &left.experiment {
            match experiment::load(path, env) {
                Ok(old) => {
                    for a in &old.rollbacks {
                        replayed.push(replay.activity(a).await);
                    }
                }
                Err(err) => eprintln!("fleet gameday: cannot replay its declared rollbacks: {err}"),
            }
        }
        replayed.extend(replay.undo_all().await);
        let _ = std::fs::remove_file(&rollback_file);
    }

    let undo_log = Arc::new(UndoLog::create(&rollback_file, &args.file)?);
    let cohort = match args.experiment_cohort.or(e.cohort_percent) {
        Some(percent) => Some(Cohort {
            percent,
            scope: format!(
                "gameday-{}",
                uuid::Uuid::new_v4()
                    .simple()
                    .to_string()
                    .get(..8)
                    .unwrap_or("x")
            ),
            key: target
                .gameday_key()
                .map_err(|e| RunError::Setup(e.to_string()))?,
        }),
        None => None,
    };
    let run = Run {
        cx: Context {
            target: target.clone(),
            undo: undo_log.clone(),
            fault_scope: cohort.as_ref().map(|c| c.scope.clone()),
            http,
        },
        t0: Instant::now(),
    };
    let started = SystemTime::now();
    eprintln!("fleet gameday: {:?} against {:?}", e.title, target.kind);

    let mut status = Status::Completed;
    let mut deviated = false;
    let mut during = Vec::new();
    let mut method_records = Vec::new();
    let mut after = None;
    let mut abort: Option<Deviation> = None;
    let mut monitor_points = Vec::new();

    let monitor_spec = e.monitor.clone().or_else(|| {
        cohort.as_ref().map(|_| experiment::Monitor {
            rate: 20.0,
            mix: "title=80,home=20".into(),
            max_error_percent: 5.0,
            max_p99_ms: 1000.0,
            max_p99_ratio: 3.0,
            for_s: 2,
            headers: Vec::new(),
        })
    });
    // The monitor runs from the start (warm streams, a baseline on the
    // chart) but judges only from the method on.
    let mut mon: Option<MonitorHandle> = None;
    if let Some(m) = &monitor_spec {
        let url = target
            .edge_url()
            .map_err(|e| RunError::Setup(e.to_string()))?;
        mon = Some(
            monitor::start(m, &url, cohort.as_ref(), run.t0)
                .map_err(|e| RunError::Setup(e.to_string()))?,
        );
    }
    let before = run.hypothesis(&e, "before").await;
    let before_ok = before.as_ref().is_none_or(|s| s.steady_state_met);
    if !before_ok {
        eprintln!("  steady state does not hold before the method: nothing injected");
        status = Status::Failed;
    }
    if before_ok {
        if let Some(m) = &mon {
            m.arm();
        }
        let records = tokio::sync::Mutex::new(Vec::new());
        let stop = {
            let method = run.method(&e, &records);
            tokio::pin!(method);
            let aborted = async {
                match mon.as_mut() {
                    Some(m) => m.aborted().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut method => None,
                d = aborted => Some(Stop::Abort(d)),
                () = signalled() => Some(Stop::Signal),
            }
        };
        method_records = records.into_inner();
        match stop {
            None => {
                // The monitor may have seen the deviation during the last
                // pause: judge the steady state after only if it did not.
                after = run.hypothesis(&e, "after").await;
                if after.as_ref().is_some_and(|s| !s.steady_state_met) {
                    deviated = true;
                    status = Status::Failed;
                }
            }
            Some(Stop::Abort(d)) => {
                eprintln!(
                    "  [{:>5.1}s] ABORT: steady state deviated ({}) — rolling back",
                    run.since(),
                    d.detail
                );
                during.push(json!({"steady_state_met": false, "detail": d.detail,
                                   "started_t": d.started_t, "detected_t": d.detected_t}));
                abort = Some(d);
                deviated = true;
                status = Status::Aborted;
            }
            Some(Stop::Signal) => {
                eprintln!(
                    "  [{:>5.1}s] interrupted — rolling back (rollbacks are not interruptible)",
                    run.since()
                );
                status = Status::Interrupted;
            }
        }
    }
    let rollbacks = run.rollbacks(&e).await;
    let rollback_done = run.since();
    undo_log.finish();
    if let Some(m) = mon.take() {
        // A second more, so the chart shows the recovery.
        if status != Status::Interrupted {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        monitor_points = m.stop();
    }
    let ended = SystemTime::now();

    let timeline: Vec<Value> = method_records
        .iter()
        .map(|r| json!({"kind": "method", "name": activity_name(&r.activity), "status": r.status, "t_start": r.t_start, "t_end": r.t_end}))
        .chain(rollbacks.iter().map(|r| json!({"kind": "rollback", "name": activity_name(&r.activity), "status": r.status, "t_start": r.t_start, "t_end": r.t_end})))
        .collect();
    let abort_json = abort.as_ref().map(|d| {
        json!({
            "detail": d.detail,
            "deviation_started_t": d.started_t,
            "detected_t": d.detected_t,
            "rollback_done_t": rollback_done,
            "abort_latency_s": rollback_done - d.started_t,
        })
    });
    let journal = json!({
        "chaoslib-version": journal::CHAOSLIB_VERSION,
        "platform": journal::platform(),
        "node": journal::node_name(),
        "experiment": e.raw,
        "start": journal::rfc3339(started),
        "end": journal::rfc3339(ended),
        "duration": ended.duration_since(started).unwrap_or_default().as_secs_f64(),
        "status": status,
        "deviated": deviated,
        "steady_states": {"before": before, "after": after, "during": during},
        "run": method_records,
        "rollbacks": rollbacks,
        "fleet": {
            "runner": format!("fleet {}", env!("CARGO_PKG_VERSION")),
            "target": target.kind,
            "cohort": cohort.as_ref().map(|c| json!({"percent": c.percent, "scope": c.scope})),
            "monitor": monitor_spec.as_ref().map(|m| json!({"rate": m.rate, "mix": m.mix,
                "max_error_percent": m.max_error_percent, "max_p99_ms": m.max_p99_ms,
                "max_p99_ratio": m.max_p99_ratio, "for_s": m.for_s})),
            "series": monitor_points,
            "timeline": timeline,
            "abort": abort_json,
            "replayed_rollbacks": replayed,
        },
    });
    write(
        &args.journal,
        &serde_json::to_vec_pretty(&journal).unwrap_or_default(),
    )?;
    if let Some(report) = &args.report {
        write(report, crate::gameday::report::html(&journal).as_bytes())?;
    }
    let verdict = match (status, deviated) {
        (Status::Completed, false) => "steady state HELD".to_owned(),
        (Status::Aborted, _) => format!(
            "ABORTED automatically: {}",
            abort.as_ref().map_or("", |d| d.detail.as_str())
        ),
        (Status::Interrupted, _) => "INTERRUPTED (rolled back)".to_owned(),
        (_, true) => "steady state DEVIATED".to_owned(),
        (_, false) => "FAILED: the steady state did not hold before the method".to_owned(),
    };
    eprintln!(
        "fleet gameday: {verdict}; journal {}{}",
        args.journal.display(),
        args.report
            .as_ref()
            .map(|r| format!(", report {}", r.display()))
            .unwrap_or_default()
    );
    Ok(Outcome {
        status,
        deviated,
        journal,
    })
}

fn activity_name(v: &Value) -> String {
    v.get("name")
        .or_else(|| v.get("ref"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned()
}

fn write(path: &std::path::Path, bytes: &[u8]) -> Result<(), RunError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| RunError::Write {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    std::fs::write(path, bytes).map_err(|e| RunError::Write {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
