//! `fleet load`: an open-loop load generator built on the driver clients.
//!
//! Requests are sent on a clock fixed in advance (constant rate, optional
//! ramp), never paced by the answers, so a stall in the system shows as
//! latency instead of silently slowing the generator down (no coordinated
//! omission). Every request's response time is measured from when it was
//! *due*; its service time from when it was actually sent. Both go into
//! HDR histograms per operation and overall.
//!
//! One file per concern:
//! * `args` — flags and their validation (nothing is sent on bad input);
//! * `mix` — operations, weights, Zipf keys: what to send;
//! * `driver` — sending one request through the edge or a gRPC client;
//! * `scheduler` — when to send (open loop; closed loop for comparison);
//! * `figures` — the histograms and counters of a run and the figures read
//!   from them (the bottom: it uses none of the others);
//! * `recorder` — one-second intervals, interval log, progress;
//! * `report` — table, JSON, `.hgrm`, CSV, merging runs;
//! * `threshold` — pass/fail conditions and the exit code.
//!
//! Dependencies point one way: `mod` → `report` → `recorder` →
//! `threshold` → `figures`; nothing below imports anything above.

pub mod args;
pub mod driver;
pub mod figures;
pub mod mix;
pub mod recorder;
pub mod report;
pub mod scheduler;
pub mod threshold;

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use args::{LoadArgs, LoadCommand, LoadConfig, MergeConfig, Outputs, Pacing, Target};
pub use report::Report;

use crate::load::args::ArgsError;
use crate::load::driver::{Driver, DriverError};
use crate::load::mix::Workload;
use crate::load::recorder::{Counters, HEADER_PREFIX, RecorderError, RecorderSettings};
use crate::load::report::{ReportError, RunInfo};
use crate::load::scheduler::{Bounds, Schedule, Shared};

/// Exit status when the tool itself failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad input (nothing was sent), as clap uses.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when a threshold was breached (k6's convention).
pub const EXIT_THRESHOLDS: u8 = 99;

/// Why a run could not be carried out (not: why the system misbehaved —
/// that is the report's business).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad input.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// The client could not be built.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Recording failed.
    #[error(transparent)]
    Recorder(#[from] RecorderError),
    /// Output could not be written, or input read.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// An output file could not be created.
    #[error("failed to create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A worker thread could not be started or died.
    #[error("{0}")]
    Thread(String),
}

/// Runs `fleet load` and maps the outcome to the exit status: 0 when every
/// threshold held, [`EXIT_THRESHOLDS`] when one was breached,
/// [`EXIT_USAGE`] for bad input, [`EXIT_FAILURE`] when the tool failed.
pub fn main(args: LoadArgs) -> ExitCode {
    let command = match args.into_command() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet load: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match &command {
        LoadCommand::Merge(m) => merge_runs(m),
        LoadCommand::Run(cfg) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run(cfg)),
            Err(e) => Err(LoadError::Thread(format!(
                "failed to start the async runtime: {e}"
            ))),
        },
    };
    let json = match &command {
        LoadCommand::Merge(m) => m.outputs.json,
        LoadCommand::Run(c) => c.outputs.json,
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleet load: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Err(e) = report::print(&report, json) {
        eprintln!("fleet load: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_THRESHOLDS)
    }
}

/// Runs the load described by `cfg` and writes its output files; the
/// caller prints the report.
///
/// # Errors
/// [`LoadError`] when the run could not be carried out.
pub async fn run(cfg: &LoadConfig) -> Result<Report, LoadError> {
    run_recorded(cfg).await.map(|(report, _)| report)
}

/// [`run`], also returning the histograms behind the report.
///
/// # Errors
/// [`LoadError`] when the run could not be carried out.
pub async fn run_recorded(cfg: &LoadConfig) -> Result<(Report, recorder::Recorded), LoadError> {
    // Output files first: a bad path fails before any load is sent.
    let create = |p: &PathBuf| {
        File::create(p).map_err(|source| LoadError::Create {
            path: p.clone(),
            source,
        })
    };
    let hlog = cfg.outputs.hlog.as_ref().map(create).transpose()?;
    for p in [&cfg.outputs.hgrm, &cfg.outputs.csv].into_iter().flatten() {
        create(p)?;
    }
    let driver = Driver::new(&cfg.target, cfg.timeout, cfg.concurrency, &cfg.headers)?;
    let workload = Workload::new(cfg.mix.clone(), cfg.titles, cfg.zipf, cfg.users, cfg.seed);
    let info = run_info(cfg);

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    let bounds = Bounds {
        start,
        measure_start: start + cfg.warmup,
        end: cfg.duration.map(|d| start + cfg.warmup + d),
        requests: cfg.requests,
    };
    let settings = RecorderSettings {
        measure_start: bounds.measure_start,
        op_names: cfg
            .mix
            .ops()
            .iter()
            .map(|(op, _)| op.name().to_owned())
            .collect(),
        hlog,
        hlog_comment: format!(
            "{HEADER_PREFIX}{}",
            serde_json::to_string(&info).unwrap_or_default()
        ),
        progress: recorder::progress_wanted(),
        thresholds: cfg.thresholds.clone(),
        abort_on_fail: cfg.abort_on_fail,
        stop: stop.clone(),
        counters: counters.clone(),
    };
    let recorder = std::thread::Builder::new()
        .name("fleet-load-recorder".into())
        .spawn(move || recorder::run(settings, &rx))
        .map_err(|e| LoadError::Thread(format!("failed to start the recorder: {e}")))?;

    // Ctrl-C stops sending; the report covers what ran.
    let ctrl_c = tokio::spawn({
        let stop = stop.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        }
    });
    let shared = Shared {
        driver,
        samples: tx,
        counters: counters.clone(),
        stop,
    };
    match cfg.pacing {
        Pacing::OpenLoop { rate, ramp } => {
            let handle = tokio::runtime::Handle::current();
            let concurrency = cfg.concurrency;
            let scheduler = std::thread::Builder::new()
                .name("fleet-load-scheduler".into())
                .spawn(move || {
                    scheduler::open_loop(
                        &handle,
                        &shared,
                        workload,
                        Schedule { rate, ramp },
                        bounds,
                        concurrency,
                    );
                })
                .map_err(|e| LoadError::Thread(format!("failed to start the scheduler: {e}")))?;
            tokio::task::spawn_blocking(move || scheduler.join())
                .await
                .map_err(|e| LoadError::Thread(format!("scheduler: {e}")))?
                .map_err(|_| LoadError::Thread("the scheduler panicked".into()))?;
        }
        Pacing::ClosedLoop => {
            scheduler::closed_loop(shared, workload, bounds, cfg.concurrency).await;
        }
    }
    ctrl_c.abort();
    // The recorder ends once the last request in flight has answered.
    let recorded = tokio::task::spawn_blocking(move || recorder.join())
        .await
        .map_err(|e| LoadError::Thread(format!("recorder: {e}")))?
        .map_err(|_| LoadError::Thread("the recorder panicked".into()))??;
    let report = Report::new(info, &recorded, &counters.tally(), &cfg.thresholds);
    write_outputs(&cfg.outputs, &recorded)?;
    Ok((report, recorded))
}

/// Merges the interval logs of earlier runs into one report.
///
/// # Errors
/// [`LoadError`] for unreadable logs or unwritable outputs.
pub fn merge_runs(cfg: &MergeConfig) -> Result<Report, LoadError> {
    let (info, recorded, tally) = report::merge(&cfg.inputs)?;
    let report = Report::new(info, &recorded, &tally, &cfg.thresholds);
    write_outputs(&cfg.outputs, &recorded)?;
    Ok(report)
}

fn write_outputs(outputs: &Outputs, recorded: &recorder::Recorded) -> Result<(), LoadError> {
    if let Some(p) = &outputs.hgrm {
        report::write_hgrm(p, &recorded.overall.latencies.response)?;
        report::write_hgrm(
            &report::service_hgrm_path(p),
            &recorded.overall.latencies.service,
        )?;
    }
    if let Some(p) = &outputs.csv {
        report::write_csv(p, &recorded.series)?;
    }
    Ok(())
}

fn run_info(cfg: &LoadConfig) -> RunInfo {
    let (mode, target_rate) = match cfg.pacing {
        Pacing::OpenLoop { rate, .. } => ("open-loop", Some(rate)),
        Pacing::ClosedLoop => ("closed-loop", None),
    };
    RunInfo {
        target: cfg.target.to_string(),
        mode: mode.into(),
        target_rate,
        concurrency: Some(cfg.concurrency),
        duration_s: cfg.duration.map(|d| d.as_secs_f64()),
        warmup_s: cfg.warmup.as_secs_f64(),
        mix: cfg
            .mix
            .ops()
            .iter()
            .enumerate()
            .map(|(i, (op, _))| (op.name().to_owned(), cfg.mix.percent(i)))
            .collect(),
    }
}
