//! Recording: HDR histograms per operation and overall, one-second
//! intervals, the interval log, and the live progress line.
//!
//! Every finished request becomes a [`Sample`] carrying three instants —
//! when it was *due* (the schedule), when it was actually *sent*, and when
//! it *finished*. Response time runs from due to finished: it includes any
//! wait for a free slot or a late generator, which is what a user of the
//! system would have felt. Service time runs from sent to finished. Both go
//! into histograms of 3 significant digits over 1 µs … 1 h.
//!
//! The recorder runs on its own thread and closes an interval every second
//! of wall time (even when nothing arrives, so a stall shows as empty
//! seconds followed by a burst of long latencies).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::load::driver::Outcome;
use crate::load::figures::{Figures, HistogramError, Latencies, Tally, ms};
use crate::load::threshold::Threshold;

/// A send more than this late counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(1);

/// Interval-log comment that opens a run's description (JSON follows).
pub const HEADER_PREFIX: &str = "fleet-load ";
/// Interval-log comment that carries the final counts (JSON [`Tally`]).
pub const TRAILER_PREFIX: &str = "fleet-load-end ";

/// One finished request.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Index of its operation in the mix.
    pub op: usize,
    /// When the schedule said to send it.
    pub intended: Instant,
    /// When it was sent.
    pub sent: Instant,
    /// When the answer (or the error) came.
    pub done: Instant,
    /// How it ended.
    pub outcome: Outcome,
}

/// Counters shared by the scheduler and the recorder. Only requests due
/// after the warm-up are counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests the schedule made due.
    pub scheduled: AtomicU64,
    /// Requests sent.
    pub sent: AtomicU64,
    /// Sent over 1 ms late because the generator itself fell behind
    /// (CPU, timers).
    pub late_generator: AtomicU64,
    /// Sent over 1 ms late because every slot (`--concurrency`) was busy.
    pub late_limit: AtomicU64,
    /// Due but never sent: the run ended while they waited for a slot.
    pub unsent: AtomicU64,
    /// In flight now (warm-up included).
    pub in_flight: AtomicU64,
}

impl Counters {
    /// A snapshot.
    pub fn tally(&self) -> Tally {
        Tally {
            scheduled: self.scheduled.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            late_generator: self.late_generator.load(Ordering::Relaxed),
            late_limit: self.late_limit.load(Ordering::Relaxed),
            unsent: self.unsent.load(Ordering::Relaxed),
        }
    }
}

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// A histogram could not be made or added (a bug).
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    /// The interval log could not be written.
    #[error("interval log: {0}")]
    Log(String),
}

/// Everything about one operation (or all of them).
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// Operation name (`all` for the total).
    pub name: String,
    /// Its latencies.
    pub latencies: Latencies,
    /// Requests by status.
    pub statuses: BTreeMap<String, u64>,
}

impl OpRecord {
    /// An empty record.
    ///
    /// # Errors
    /// [`RecorderError::Histogram`] (never).
    pub fn new(name: &str) -> Result<Self, RecorderError> {
        Ok(Self {
            name: name.to_owned(),
            latencies: Latencies::new()?,
            statuses: BTreeMap::new(),
        })
    }
}

/// One second of the run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Second {
    /// Seconds since the measurement started (interval start).
    pub t: f64,
    /// Interval length in seconds (the last one may be shorter).
    pub length_s: f64,
    /// Requests sent in the interval (`null` when merged from logs).
    pub sent: Option<u64>,
    /// Requests that finished in the interval.
    pub completed: u64,
    /// Of which failed.
    pub errors: u64,
    /// Response time p50, ms.
    pub p50_ms: f64,
    /// Response time p90, ms.
    pub p90_ms: f64,
    /// Response time p99, ms.
    pub p99_ms: f64,
    /// Response time max, ms.
    pub max_ms: f64,
    /// Service time p99, ms.
    pub service_p99_ms: f64,
}

impl Second {
    /// Figures of one interval.
    pub fn from_latencies(t: f64, length_s: f64, sent: Option<u64>, l: &Latencies) -> Self {
        Self {
            t,
            length_s,
            sent,
            completed: l.count(),
            errors: l.failed(),
            p50_ms: ms(l.response.value_at_quantile(0.5)),
            p90_ms: ms(l.response.value_at_quantile(0.9)),
            p99_ms: ms(l.response.value_at_quantile(0.99)),
            max_ms: ms(l.response.max()),
            service_p99_ms: ms(l.service.value_at_quantile(0.99)),
        }
    }
}

/// What a run recorded.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// All operations together.
    pub overall: OpRecord,
    /// Per operation, in mix order.
    pub ops: Vec<OpRecord>,
    /// Per second.
    pub series: Vec<Second>,
    /// From the start of the measurement to the last answer.
    pub elapsed: Duration,
    /// Answers to warm-up requests (not recorded).
    pub warmup_completed: u64,
    /// Set when `--abort-on-fail` stopped the run: the breached threshold.
    pub aborted: Option<String>,
}

/// How the recorder thread is set up.
pub struct RecorderSettings {
    /// When the measurement starts (end of the warm-up).
    pub measure_start: Instant,
    /// Operation names in mix order.
    pub op_names: Vec<String>,
    /// The interval log, opened.
    pub hlog: Option<File>,
    /// A comment for the interval log's header (what ran).
    pub hlog_comment: String,
    /// Print the live progress line (stderr is a terminal).
    pub progress: bool,
    /// Thresholds checked every second when `abort_on_fail`.
    pub thresholds: Vec<Threshold>,
    /// Stop at the first breach.
    pub abort_on_fail: bool,
    /// Raised to stop the scheduler.
    pub stop: Arc<AtomicBool>,
    /// The scheduler's counters.
    pub counters: Arc<Counters>,
}

/// How often the recorder takes the samples queued since it last looked.
const BATCH_EVERY: Duration = Duration::from_millis(5);

/// Adds one to `status`'s count, allocating its key only the first time.
fn count_status(statuses: &mut BTreeMap<String, u64>, status: &str) {
    match statuses.get_mut(status) {
        Some(n) => *n += 1,
        None => {
            statuses.insert(status.to_owned(), 1);
        }
    }
}

/// Records samples from `rx` until every sender is gone.
///
/// # Errors
/// [`RecorderError`] when the interval log cannot be written.
pub fn run(settings: RecorderSettings, rx: &Receiver<Sample>) -> Result<Recorded, RecorderError> {
    let RecorderSettings {
        measure_start,
        op_names,
        hlog,
        hlog_comment,
        progress,
        thresholds,
        abort_on_fail,
        stop,
        counters,
    } = settings;
    let mut overall = OpRecord::new("all")?;
    let mut ops = op_names
        .iter()
        .map(|n| OpRecord::new(n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut interval = Latencies::new()?;
    let mut interval_ops = op_names
        .iter()
        .map(|_| Latencies::new())
        .collect::<Result<Vec<_>, _>>()?;
    let mut series = Vec::new();
    let mut warmup_completed = 0;
    let mut aborted = None;
    let mut last_sent = 0;

    // The interval log: header written by hand (the Java layout, which the
    // Java and Rust readers both accept), then one line per histogram.
    let mut log_file = hlog.map(BufWriter::new);
    let mut serializer = V2DeflateSerializer::new();
    let since_start = measure_start.saturating_duration_since(Instant::now());
    let epoch_start = SystemTime::now() + since_start;
    if let Some(f) = log_file.as_mut() {
        write_log_header(f, &hlog_comment, epoch_start)
            .map_err(|e| RecorderError::Log(e.to_string()))?;
    }
    let mut log = match log_file.as_mut() {
        Some(f) => Some(
            IntervalLogWriterBuilder::new()
                .with_max_value_divisor(1000.0)
                .begin_log_with(f, &mut serializer)
                .map_err(|e| RecorderError::Log(e.to_string()))?,
        ),
        None => None,
    };

    let mut interval_start = measure_start;
    let mut disconnected = false;
    while !disconnected {
        // Take samples in batches, every BATCH_EVERY, instead of waiting in
        // `recv`: a sender then never has to wake this thread, which it did
        // once per request (a futex wake and a context switch each, a large
        // share of the generator's CPU). Samples carry their own times, so
        // the few milliseconds they wait change no figure.
        let next_tick = interval_start + Duration::from_secs(1);
        std::thread::sleep(BATCH_EVERY.min(next_tick.saturating_duration_since(Instant::now())));
        let now = Instant::now();
        loop {
            let s = match rx.try_recv() {
                Ok(s) => s,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            };
            if s.intended < measure_start {
                warmup_completed += 1;
                continue;
            }
            let response = s.done.saturating_duration_since(s.intended);
            let service = s.done.saturating_duration_since(s.sent);
            let ok = s.outcome.ok;
            overall.latencies.record(response, service, ok);
            interval.record(response, service, ok);
            if let (Some(op), Some(iop)) = (ops.get_mut(s.op), interval_ops.get_mut(s.op)) {
                op.latencies.record(response, service, ok);
                iop.record(response, service, ok);
                count_status(&mut op.statuses, &s.outcome.status);
            }
            count_status(&mut overall.statuses, &s.outcome.status);
        }
        // Close every interval that has ended (several after a long stall
        // of this thread), and the partial last one at the end.
        // Nothing to close while still warming up.
        if now < measure_start {
            continue;
        }
        loop {
            let full_end = interval_start + Duration::from_secs(1);
            let end = if now >= full_end {
                full_end
            } else if disconnected {
                now
            } else {
                break;
            };
            let length = end.saturating_duration_since(interval_start);
            if length.is_zero() {
                break;
            }
            let t = interval_start
                .saturating_duration_since(measure_start)
                .as_secs_f64();
            let sent = counters.sent.load(Ordering::Relaxed);
            series.push(Second::from_latencies(
                t,
                length.as_secs_f64(),
                Some(sent - last_sent.min(sent)),
                &interval,
            ));
            last_sent = sent;
            if let Some(w) = log.as_mut() {
                let start = interval_start.saturating_duration_since(measure_start);
                let mut write = |h: &Histogram<u64>, tag: Option<&str>| {
                    w.write_histogram(h, start, length, tag.and_then(Tag::new))
                        .map_err(|e| RecorderError::Log(e.to_string()))
                };
                write(&interval.response, None)?;
                write(&interval.service, Some("service"))?;
                write(&interval.errors, Some("errors"))?;
                for (name, l) in op_names.iter().zip(&interval_ops) {
                    write(&l.response, Some(name))?;
                    write(&l.service, Some(&format!("{name}.service")))?;
                    write(&l.errors, Some(&format!("{name}.errors")))?;
                }
            }
            interval.reset();
            interval_ops.iter_mut().for_each(Latencies::reset);
            interval_start = end;
            if progress {
                progress_line(&overall, &counters, t + length.as_secs_f64());
            }
            if abort_on_fail && aborted.is_none() && t + length.as_secs_f64() >= 1.0 {
                let tally = counters.tally();
                let elapsed = now.saturating_duration_since(measure_start);
                let fig = Figures::of(&overall.latencies, &tally, elapsed);
                let op_figs: Vec<(String, Figures<'_>)> = ops
                    .iter()
                    .map(|o| (o.name.clone(), Figures::of_op(&o.latencies, elapsed)))
                    .collect();
                if let Some(t) = thresholds
                    .iter()
                    .find(|t| t.evaluate(&fig, &op_figs).is_some_and(|v| !v.passed))
                {
                    aborted = Some(t.to_string());
                    stop.store(true, Ordering::SeqCst);
                }
            }
        }
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    if let Some(w) = log.as_mut() {
        // The final counts, for `--merge` (readers skip comments).
        let tally = serde_json::to_string(&counters.tally()).unwrap_or_default();
        w.write_comment(&format!("{TRAILER_PREFIX}{tally}"))
            .map_err(|e| RecorderError::Log(e.to_string()))?;
    }
    drop(log);
    if let Some(mut f) = log_file {
        f.flush().map_err(|e| RecorderError::Log(e.to_string()))?;
    }
    let elapsed = interval_start.saturating_duration_since(measure_start);
    Ok(Recorded {
        overall,
        ops,
        series,
        elapsed,
        warmup_completed,
        aborted,
    })
}

fn write_log_header(
    f: &mut BufWriter<File>,
    comment: &str,
    start: SystemTime,
) -> std::io::Result<()> {
    let secs = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    writeln!(f, "#{}", comment.replace('\n', " "))?;
    writeln!(f, "#[Histogram log format version 1.3]")?;
    writeln!(f, "#[StartTime: {secs:.3} (seconds since epoch)]")?;
    writeln!(f, "#[BaseTime: {secs:.3} (seconds since epoch)]")?;
    writeln!(
        f,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    )
}

fn progress_line(overall: &OpRecord, counters: &Counters, t: f64) {
    let tally = counters.tally();
    let l = &overall.latencies;
    let rate = if t > 0.0 { l.count() as f64 / t } else { 0.0 };
    eprint!(
        "\r\x1b[2K{t:>6.0}s  sent {}  done {} ({rate:.1}/s)  errors {}  p99 {:.2} ms  in flight {}  late {}",
        tally.sent,
        l.count(),
        l.failed() + tally.unsent,
        ms(l.response.value_at_quantile(0.99)),
        counters.in_flight.load(Ordering::Relaxed),
        tally.late_generator + tally.late_limit,
    );
}

/// Whether a live progress line should be drawn: only on a terminal.
pub fn progress_wanted() -> bool {
    std::io::stderr().is_terminal()
}
