//! The report: final table, JSON summary, `.hgrm` spectrum, CSV time
//! series, and merging the interval logs of several runs into one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

use crate::load::figures::{Figures, Latencies, Tally, ms};
use crate::load::recorder::{
    HEADER_PREFIX, OpRecord, Recorded, RecorderError, Second, TRAILER_PREFIX,
};
use crate::load::threshold::{Threshold, Verdict};

/// Share of sends over 1 ms late, for reasons of the generator's own,
/// above which its figures are flagged as unreliable.
pub const SATURATED_PERCENT: f64 = 1.0;

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be written.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An interval log is malformed.
    #[error("{path}: not an interval log of fleet load: {reason}")]
    BadLog {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Histograms could not be combined.
    #[error(transparent)]
    Recorder(#[from] RecorderError),
}

/// What ran, as written at the head of the interval log.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// The target.
    pub target: String,
    /// `open-loop`, `closed-loop` or `merged`.
    pub mode: String,
    /// Requests per second asked for (open loop).
    pub target_rate: Option<f64>,
    /// `--concurrency`.
    pub concurrency: Option<usize>,
    /// Measured duration asked for, seconds.
    pub duration_s: Option<f64>,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Operations and their share (percent), in mix order.
    pub mix: Vec<(String, f64)>,
}

/// Latency percentiles of one histogram, in ms.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p99_9_ms: f64,
    /// 99.99th percentile.
    pub p99_99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Of `h` (µs).
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            p99_99_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One operation's figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpReport {
    /// Operation.
    pub name: String,
    /// Its share of the mix, percent.
    pub share_percent: Option<f64>,
    /// Answered.
    pub completed: u64,
    /// Failed.
    pub errors: u64,
    /// By status.
    pub statuses: BTreeMap<String, u64>,
    /// Response time (from the due time).
    pub response: Percentiles,
    /// Service time (from the actual send).
    pub service: Percentiles,
}

/// Late sends.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Late {
    /// Because the generator fell behind.
    pub generator: u64,
    /// Because every slot was busy.
    pub concurrency_limit: u64,
    /// Both, as a percentage of sends.
    pub percent: f64,
}

/// The summary of a run (what `--json` prints).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// What ran.
    pub run: RunInfo,
    /// From the start of measurement to the last answer, seconds.
    pub elapsed_s: f64,
    /// Requests due in the measured window.
    pub scheduled: u64,
    /// Sent.
    pub sent: u64,
    /// Answered (successfully or not).
    pub completed: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Answered with an error.
    pub failed: u64,
    /// Due but never sent (the run ended while they waited for a slot).
    pub unsent: u64,
    /// (failed + unsent) / (completed + unsent), percent.
    pub error_percent: f64,
    /// Answers per second.
    pub achieved_rate: f64,
    /// Late sends.
    pub late: Late,
    /// The generator could not keep its schedule: its figures describe
    /// itself, not the system.
    pub generator_saturated: bool,
    /// All requests by status.
    pub statuses: BTreeMap<String, u64>,
    /// Response time of all requests (from the due time: the honest figure).
    pub response: Percentiles,
    /// Service time of all requests (from the actual send).
    pub service: Percentiles,
    /// Per operation.
    pub operations: Vec<OpReport>,
    /// Per second.
    pub timeseries: Vec<Second>,
    /// Warm-up answers (not in any figure).
    pub warmup_completed: u64,
    /// Thresholds and whether they held.
    pub thresholds: Vec<Verdict>,
    /// Every threshold held (and the run was not aborted).
    pub passed: bool,
    /// The threshold that aborted the run, if one did.
    pub aborted: Option<String>,
}

impl Report {
    /// Builds the report and checks the thresholds.
    pub fn new(run: RunInfo, recorded: &Recorded, tally: &Tally, thresholds: &[Threshold]) -> Self {
        let l = &recorded.overall.latencies;
        let completed = l.count();
        let failed = l.failed();
        let elapsed = recorded.elapsed;
        let elapsed_s = elapsed.as_secs_f64();
        let late = tally.late_generator + tally.late_limit;
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                n as f64 * 100.0 / of as f64
            }
        };
        let overall = Figures::of(l, tally, elapsed);
        let op_figs: Vec<(String, Figures<'_>)> = recorded
            .ops
            .iter()
            .map(|o| (o.name.clone(), Figures::of_op(&o.latencies, elapsed)))
            .collect();
        let verdicts: Vec<Verdict> = thresholds
            .iter()
            .map(|t| {
                t.evaluate(&overall, &op_figs).unwrap_or_else(|| Verdict {
                    threshold: t.to_string(),
                    value: None,
                    passed: false,
                })
            })
            .collect();
        let passed = verdicts.iter().all(|v| v.passed) && recorded.aborted.is_none();
        let operations = recorded
            .ops
            .iter()
            .map(|o| OpReport {
                name: o.name.clone(),
                share_percent: run.mix.iter().find(|(n, _)| *n == o.name).map(|(_, p)| *p),
                completed: o.latencies.count(),
                errors: o.latencies.failed(),
                statuses: o.statuses.clone(),
                response: Percentiles::of(&o.latencies.response),
                service: Percentiles::of(&o.latencies.service),
            })
            .collect();
        Self {
            run,
            elapsed_s,
            scheduled: tally.scheduled,
            sent: tally.sent,
            completed,
            ok: completed - failed,
            failed,
            unsent: tally.unsent,
            error_percent: pct(failed + tally.unsent, completed + tally.unsent),
            achieved_rate: if elapsed_s > 0.0 {
                completed as f64 / elapsed_s
            } else {
                0.0
            },
            late: Late {
                generator: tally.late_generator,
                concurrency_limit: tally.late_limit,
                percent: pct(late, tally.sent),
            },
            generator_saturated: pct(tally.late_generator, tally.sent) > SATURATED_PERCENT,
            statuses: recorded.overall.statuses.clone(),
            response: Percentiles::of(&l.response),
            service: Percentiles::of(&l.service),
            operations,
            timeseries: recorded.series.clone(),
            warmup_completed: recorded.warmup_completed,
            thresholds: verdicts,
            passed,
            aborted: recorded.aborted.clone(),
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let r = &self.run;
        let _ = write!(out, "fleet load → {}  ({}", r.target, r.mode);
        if let Some(rate) = r.target_rate {
            let _ = write!(out, ", target {rate:.1} req/s");
        }
        if let Some(c) = r.concurrency {
            let _ = write!(out, ", concurrency {c}");
        }
        if r.warmup_s > 0.0 {
            let _ = write!(out, ", warm-up {:.1}s", r.warmup_s);
        }
        let _ = writeln!(out, ")");
        let _ = writeln!(
            out,
            "  {:.1}s measured: scheduled {}  sent {}  answered {} ({:.1}/s)  ok {}  failed {}  unsent {}  errors {:.2}%",
            self.elapsed_s,
            self.scheduled,
            self.sent,
            self.completed,
            self.achieved_rate,
            self.ok,
            self.failed,
            self.unsent,
            self.error_percent
        );
        let _ = writeln!(
            out,
            "  late sends (>1 ms): {} ({:.2}%): {} generator, {} concurrency limit",
            self.late.generator + self.late.concurrency_limit,
            self.late.percent,
            self.late.generator,
            self.late.concurrency_limit
        );
        if self.generator_saturated {
            let _ = writeln!(
                out,
                "  WARNING: the generator is saturated (over {SATURATED_PERCENT}% of sends left late on its own account):\n  these figures describe this machine's load generator, not the system. Lower --rate or add hosts and --merge."
            );
        }
        let _ = writeln!(
            out,
            "\n  {:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (ms)",
            "latency", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let row = |out: &mut String, label: &str, p: &Percentiles| {
            let _ = writeln!(
                out,
                "  {:<22} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                label, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p99_9_ms, p.p99_99_ms, p.max_ms
            );
        };
        row(&mut out, "response time (all)", &self.response);
        row(&mut out, "service time (all)", &self.service);
        if self.operations.len() > 1 {
            for o in &self.operations {
                let share = o
                    .share_percent
                    .map(|p| format!(" {p:.0}%"))
                    .unwrap_or_default();
                row(
                    &mut out,
                    &format!("{}{share} response", o.name),
                    &o.response,
                );
                row(&mut out, &format!("{}{share} service", o.name), &o.service);
            }
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect();
        let _ = writeln!(out, "\n  status: {}", statuses.join(", "));
        for o in self.operations.iter().filter(|o| o.errors > 0) {
            let s: Vec<String> = o
                .statuses
                .iter()
                .map(|(s, n)| format!("{s} ×{n}"))
                .collect();
            let _ = writeln!(out, "    {}: {}", o.name, s.join(", "));
        }
        if !self.thresholds.is_empty() {
            let _ = writeln!(out);
            for v in &self.thresholds {
                let value = v.value.map_or("no data".to_owned(), |x| format!("{x:.3}"));
                let _ = writeln!(
                    out,
                    "  threshold {:<28} {}  (measured {value})",
                    v.threshold,
                    if v.passed { "ok" } else { "BREACHED" }
                );
            }
        }
        if let Some(t) = &self.aborted {
            let _ = writeln!(out, "  aborted early: {t} was breached");
        }
        out
    }
}

/// Writes `h` (µs) as a percentile spectrum in the HdrHistogram `.hgrm`
/// layout (Java's `outputPercentileDistribution`, values in ms) that
/// HdrHistogram's plotter and wrk2 users read.
///
/// # Errors
/// [`ReportError::Write`].
pub fn write_hgrm(path: &Path, h: &Histogram<u64>) -> Result<(), ReportError> {
    std::fs::write(path, hgrm(h)).map_err(|source| ReportError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The `.hgrm` text of `h` (µs, printed in ms).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = ms(v.value_iterated_to());
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        ms(h.max()),
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h)
    );
    out
}

/// Java's `subBucketCount`: the smallest power of two ≥ 2·10^sigfig.
fn sub_buckets(h: &Histogram<u64>) -> u64 {
    let need = 2 * 10u64.pow(u32::from(h.sigfig()));
    need.next_power_of_two()
}

/// The `.service.hgrm` path next to `--hgrm`'s.
pub fn service_hgrm_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hgrm".to_owned());
    path.with_file_name(format!("{stem}.service.{ext}"))
}

/// Writes the per-second time series as CSV.
///
/// # Errors
/// [`ReportError::Write`].
pub fn write_csv(path: &Path, series: &[Second]) -> Result<(), ReportError> {
    let mut out = String::from(
        "t_s,length_s,sent,completed,errors,p50_ms,p90_ms,p99_ms,max_ms,service_p99_ms\n",
    );
    for s in series {
        let _ = writeln!(
            out,
            "{:.3},{:.3},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3}",
            s.t,
            s.length_s,
            s.sent.map(|n| n.to_string()).unwrap_or_default(),
            s.completed,
            s.errors,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            s.service_p99_ms
        );
    }
    std::fs::write(path, out).map_err(|source| ReportError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Prints the report: JSON on stdout, or the table.
///
/// # Errors
/// [`ReportError::Write`] when stdout is gone.
pub fn print(report: &Report, json: bool) -> Result<(), ReportError> {
    let text = if json {
        serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
    } else {
        report.table()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|source| ReportError::Write {
            path: PathBuf::from("<stdout>"),
            source,
        })
}

/// Merges the interval logs of several runs (e.g. one per host, run at
/// the same time): histograms add up exactly, intervals align by their
/// offset from each run's start, counts and target rates add up.
///
/// # Errors
/// [`ReportError`] for unreadable or malformed logs.
pub fn merge(paths: &[PathBuf]) -> Result<(RunInfo, Recorded, Tally), ReportError> {
    let mut overall = OpRecord::new("all")?;
    let mut ops: Vec<OpRecord> = Vec::new();
    let mut seconds: BTreeMap<u64, (f64, Latencies)> = BTreeMap::new();
    let mut tally = Tally::default();
    let mut elapsed = Duration::ZERO;
    let mut targets = Vec::new();
    let mut info = RunInfo {
        mode: "merged".into(),
        ..RunInfo::default()
    };
    let mut deserializer = Deserializer::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| ReportError::Read {
            path: path.clone(),
            source,
        })?;
        let bad = |reason: String| ReportError::BadLog {
            path: path.clone(),
            reason,
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut header: Option<RunInfo> = None;
        for line in text.lines() {
            if let Some(j) = line
                .strip_prefix('#')
                .and_then(|l| l.strip_prefix(HEADER_PREFIX))
            {
                header = serde_json::from_str(j).ok();
            }
            if let Some(j) = line
                .strip_prefix('#')
                .and_then(|l| l.strip_prefix(TRAILER_PREFIX))
            {
                let t: Tally =
                    serde_json::from_str(j).map_err(|e| bad(format!("bad final counts: {e}")))?;
                tally.scheduled += t.scheduled;
                tally.sent += t.sent;
                tally.late_generator += t.late_generator;
                tally.late_limit += t.late_limit;
                tally.unsent += t.unsent;
            }
        }
        let header = header.ok_or_else(|| bad("no `#fleet-load` header line".into()))?;
        targets.push(header.target.clone());
        if let Some(r) = header.target_rate {
            *info.target_rate.get_or_insert(0.0) += r;
        }
        if info.mix.is_empty() {
            info.mix = header.mix.clone();
        }
        info.warmup_s = info.warmup_s.max(header.warmup_s);
        let mut run_length: BTreeMap<u64, f64> = BTreeMap::new();
        for entry in IntervalLogIterator::new(&bytes) {
            let entry = entry.map_err(|e| bad(format!("{e:?}")))?;
            let LogEntry::Interval(ilh) = entry else {
                continue;
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(ilh.encoded_histogram())
                .map_err(|e| bad(format!("bad base64: {e}")))?;
            let h: Histogram<u64> = deserializer
                .deserialize(&mut raw.as_slice())
                .map_err(|e| bad(format!("bad histogram: {e:?}")))?;
            let second = ilh.start_timestamp().as_secs();
            let length = ilh.duration().as_secs_f64();
            let tag = ilh.tag().map(|t| t.as_str().to_owned());
            let add = |dst: &mut Histogram<u64>| {
                dst.add(&h)
                    .map_err(|e| bad(format!("histogram of another range: {e:?}")))
            };
            match tag.as_deref() {
                None => {
                    run_length.insert(second, length);
                    add(&mut overall.latencies.response)?;
                    let slot = match seconds.entry(second) {
                        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert((length, Latencies::new().map_err(RecorderError::from)?))
                        }
                    };
                    slot.0 = slot.0.max(length);
                    add(&mut slot.1.response)?;
                }
                Some("service") => add(&mut overall.latencies.service)?,
                Some("errors") => {
                    add(&mut overall.latencies.errors)?;
                    if let Some(slot) = seconds.get_mut(&second) {
                        add(&mut slot.1.errors)?;
                    }
                }
                Some(t) => {
                    let (name, kind) = t.split_once('.').unwrap_or((t, ""));
                    let idx = match ops.iter().position(|o| o.name == name) {
                        Some(i) => i,
                        None => {
                            ops.push(OpRecord::new(name)?);
                            ops.len() - 1
                        }
                    };
                    let Some(op) = ops.get_mut(idx) else { continue };
                    match kind {
                        "" => add(&mut op.latencies.response)?,
                        "service" => add(&mut op.latencies.service)?,
                        "errors" => add(&mut op.latencies.errors)?,
                        _ => {}
                    }
                }
            }
        }
        elapsed = elapsed.max(Duration::from_secs_f64(run_length.values().sum()));
    }
    for o in ops.iter_mut().chain(std::iter::once(&mut overall)) {
        let failed = o.latencies.failed();
        o.statuses.insert("ok".into(), o.latencies.count() - failed);
        if failed > 0 {
            o.statuses.insert("error".into(), failed);
        }
    }
    let series = seconds
        .iter()
        .map(|(t, (length, l))| Second::from_latencies(*t as f64, *length, None, l))
        .collect();
    info.target = targets.join(" + ");
    Ok((
        info,
        Recorded {
            overall,
            ops,
            series,
            elapsed,
            warmup_completed: 0,
            aborted: None,
        },
        tally,
    ))
}
