//! Live monitoring during a run, and the automatic abort (FIT / ChAP).
//!
//! Open-loop load goes to the edge through the `fleet load` engine's
//! driver client and workload generator, one stream per cohort, and every
//! second the answers of that second become a point per cohort (requests,
//! errors, p50, p99, from the due time: no coordinated omission).
//!
//! Without a cohort, one stream (`all`) is judged against absolute limits:
//! error share above `max_error_percent`, or p99 above `max_p99_ms`.
//!
//! With `--experiment-cohort P%`, two streams run side by side at the same
//! rate over two disjoint, equally sized slices of the users (P % of them
//! each): the **experiment** cohort carries the run's fault scope
//! (`x-fleet-fault`, signed with the edge's game-day key), so only
//! it meets the fault rules, which the runner scopes to that header; the
//! **control** cohort carries nothing. A second deviates when the
//! experiment's error share exceeds the control's by more than
//! `max_error_percent` points, or its p99 exceeds both the control's times
//! `max_p99_ratio` (by more than [`P99_FLOOR_MS`]) and `max_p99_ms`, or it
//! got no answers while the control did.
//!
//! `for_s` deviating seconds in a row raise the abort: the runner stops
//! the method and rolls back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fleet_edge_client::fault_signature::{GamedayKey, MAX_TTL};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::gameday::experiment::Monitor;
use crate::load::args::Target as LoadTarget;
use crate::load::driver::Driver;
use crate::load::mix::{Mix, Service, Workload};

/// p99 differences below this are noise, never a deviation.
pub const P99_FLOOR_MS: f64 = 20.0;
/// Most requests in flight per cohort; beyond, a due request counts as
/// failed (the system is not keeping up).
pub const MAX_IN_FLIGHT: usize = 512;
/// The users the workload draws from (as `fleet load`'s default).
pub const USERS: u32 = 500;

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The mix or the client could not be built.
    #[error("monitor: {0}")]
    Setup(String),
}

/// One cohort's second.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Point {
    /// Seconds since the run started (end of the second).
    pub t: f64,
    /// `all`, `control` or `experiment`.
    pub cohort: &'static str,
    /// Answers in the second.
    pub requests: u64,
    /// Failed answers.
    pub errors: u64,
    /// Successful share, percent (100 when there were no answers).
    pub success_percent: f64,
    /// Response-time p50, ms.
    pub p50_ms: f64,
    /// Response-time p99, ms.
    pub p99_ms: f64,
}

/// The deviation that raised the abort.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Deviation {
    /// Start of the first deviating second (s since the run started).
    pub started_t: f64,
    /// When the abort was raised.
    pub detected_t: f64,
    /// What deviated.
    pub detail: String,
}

/// The cohort setup of a run.
#[derive(Clone, Debug)]
pub struct Cohort {
    /// Share of users in each cohort, percent.
    pub percent: f64,
    /// The fault scope (`x-fleet-fault` value) of the experiment cohort.
    pub scope: String,
    /// The game-day key that signs the scope so the edge lets it through.
    pub key: GamedayKey,
}

#[derive(Default)]
struct Bucket {
    hist: Option<Histogram<u64>>,
    errors: u64,
}

type Buckets = Arc<Mutex<BTreeMap<(u64, usize), Bucket>>>;

/// A running monitor.
#[derive(Debug)]
pub struct MonitorHandle {
    armed: Arc<AtomicBool>,
    series: Arc<Mutex<Vec<Point>>>,
    abort: watch::Receiver<Option<Deviation>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MonitorHandle {
    /// From now on, deviations count (before: load and points only, so
    /// the streams are warm and the chart has a baseline).
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Resolves when the abort is raised (never, if it is not).
    pub async fn aborted(&mut self) -> Deviation {
        loop {
            if let Some(d) = self.abort.borrow().clone() {
                return d;
            }
            if self.abort.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The points so far.
    pub fn series(&self) -> Vec<Point> {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the load; returns every point.
    pub fn stop(self) -> Vec<Point> {
        for t in &self.tasks {
            t.abort();
        }
        self.series()
    }
}

/// Starts monitoring the edge at `edge_url`; seconds count from `t0`.
///
/// # Errors
/// [`MonitorError`] when the mix or the client cannot be built.
pub fn start(
    m: &Monitor,
    edge_url: &str,
    cohort: Option<&Cohort>,
    t0: Instant,
) -> Result<MonitorHandle, MonitorError> {
    let mix = Mix::parse(Some(&m.mix), Service::Edge).map_err(MonitorError::Setup)?;
    let slice = cohort.map_or(USERS, |c| {
        ((f64::from(USERS) * c.percent / 100.0).round() as u32).max(1)
    });
    // (cohort name, its headers, the offset of its slice of users)
    type Stream = (&'static str, Vec<(String, String)>, u32);
    let mut streams: Vec<Stream> = Vec::new();
    match cohort {
        None => streams.push(("all", m.headers.clone(), 0)),
        Some(c) => {
            let mut exp = m.headers.clone();
            // Signed once, valid for the longest lifetime the edge takes
            // (an hour): a longer experiment's cohort would be refused
            // (401) from then on, which the monitor reports as errors.
            let signed = c
                .key
                .sign(&c.scope, MAX_TTL, std::time::SystemTime::now())
                .map_err(|e| MonitorError::Setup(e.to_string()))?;
            exp.push((fleet_edge_client::FAULT.to_owned(), signed));
            streams.push(("experiment", exp, 0));
            streams.push(("control", m.headers.clone(), slice));
        }
    }
    let buckets: Buckets = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    let names: Vec<&'static str> = streams.iter().map(|s| s.0).collect();
    for (index, (_, headers, offset)) in streams.into_iter().enumerate() {
        let driver = Driver::new(
            &LoadTarget::Edge(edge_url.to_owned()),
            Duration::from_secs(5),
            MAX_IN_FLIGHT,
            &headers,
        )
        .map_err(|e| MonitorError::Setup(e.to_string()))?;
        let workload = Workload::new(mix.clone(), 1000, 1.0, slice, rand::random());
        tasks.push(tokio::spawn(generate(
            driver,
            workload,
            offset,
            m.rate,
            t0,
            index,
            buckets.clone(),
        )));
    }
    let series = Arc::new(Mutex::new(Vec::new()));
    let armed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = watch::channel(None);
    tasks.push(tokio::spawn(evaluate(
        m.clone(),
        names,
        t0,
        buckets,
        series.clone(),
        armed.clone(),
        tx,
    )));
    Ok(MonitorHandle {
        armed,
        series,
        abort: rx,
        tasks,
    })
}

/// Open loop: request `k` is due at `t0 + k / rate`, whatever the
/// earlier ones did.
async fn generate(
    driver: Driver,
    mut workload: Workload,
    user_offset: u32,
    rate: f64,
    t0: Instant,
    cohort: usize,
    buckets: Buckets,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    for k in 0u64.. {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due).await;
        let mut req = workload.next_request();
        if user_offset > 0
            && let Some(n) = req
                .user
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse::<u32>()
                .ok()
        {
            req.user = fleet_seed::user_id(n + user_offset);
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            record(&buckets, t0, cohort, Duration::ZERO, false);
            continue;
        };
        let driver = driver.clone();
        let buckets = buckets.clone();
        tokio::spawn(async move {
            let outcome = driver.execute(&req).await;
            record(&buckets, t0, cohort, due.elapsed(), outcome.ok);
            drop(permit);
        });
    }
}

fn record(buckets: &Buckets, t0: Instant, cohort: usize, latency: Duration, ok: bool) {
    let sec = t0.elapsed().as_secs();
    let mut b = buckets.lock().unwrap_or_else(PoisonError::into_inner);
    let bucket = b.entry((sec, cohort)).or_default();
    if bucket.hist.is_none() {
        bucket.hist = crate::load::figures::histogram().ok();
    }
    if let Some(h) = bucket.hist.as_mut() {
        crate::load::figures::record(h, latency);
    }
    if !ok {
        bucket.errors += 1;
    }
}

async fn evaluate(
    m: Monitor,
    names: Vec<&'static str>,
    t0: Instant,
    buckets: Buckets,
    series: Arc<Mutex<Vec<Point>>>,
    armed: Arc<AtomicBool>,
    tx: watch::Sender<Option<Deviation>>,
) {
    let mut streak = 0u32;
    let mut streak_start = 0.0;
    for sec in 0u64.. {
        tokio::time::sleep_until(t0 + Duration::from_secs(sec + 1)).await;
        let points: Vec<Point> = {
            let mut b = buckets.lock().unwrap_or_else(PoisonError::into_inner);
            names
                .iter()
                .enumerate()
                .map(|(i, name)| point(sec, name, b.remove(&(sec, i))))
                .collect()
        };
        // A second that began before arming is not judged.
        let verdict = if armed.load(Ordering::SeqCst) {
            judge(&m, &points)
        } else {
            None
        };
        let line = points
            .iter()
            .map(|p| {
                format!(
                    "{} {:.1}% ok p99 {:.0}ms ({} req)",
                    p.cohort, p.success_percent, p.p99_ms, p.requests
                )
            })
            .collect::<Vec<_>>()
            .join(" | ");
        eprintln!(
            "  [{:>5.1}s] monitor: {line}{}",
            (sec + 1) as f64,
            verdict
                .as_ref()
                .map(|d| format!("  ← DEVIATION: {d}"))
                .unwrap_or_default()
        );
        series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(points);
        match verdict {
            Some(detail) => {
                if streak == 0 {
                    streak_start = sec as f64;
                }
                streak += 1;
                if streak >= m.for_s && tx.borrow().is_none() {
                    let d = Deviation {
                        started_t: streak_start,
                        detected_t: t0.elapsed().as_secs_f64(),
                        detail,
                    };
                    let _ = tx.send(Some(d));
                }
            }
            None => streak = 0,
        }
    }
}

fn point(sec: u64, cohort: &'static str, b: Option<Bucket>) -> Point {
    let (requests, errors, p50, p99) = match b.and_then(|b| b.hist.map(|h| (h, b.errors))) {
        Some((h, errors)) => (
            h.len(),
            errors,
            crate::load::figures::ms(h.value_at_quantile(0.5)),
            crate::load::figures::ms(h.value_at_quantile(0.99)),
        ),
        None => (0, 0, 0.0, 0.0),
    };
    Point {
        t: (sec + 1) as f64,
        cohort,
        requests,
        errors,
        success_percent: if requests == 0 {
            100.0
        } else {
            100.0 * (requests - errors) as f64 / requests as f64
        },
        p50_ms: p50,
        p99_ms: p99,
    }
}

/// Whether one second's points deviate; the reason if so.
pub fn judge(m: &Monitor, points: &[Point]) -> Option<String> {
    let err = |p: &Point| 100.0 - p.success_percent;
    match points {
        [all] => {
            if all.requests == 0 {
                Some("no answers in a second".into())
            } else if err(all) > m.max_error_percent {
                Some(format!(
                    "errors {:.1}% > {:.1}%",
                    err(all),
                    m.max_error_percent
                ))
            } else if all.p99_ms > m.max_p99_ms {
                Some(format!("p99 {:.0}ms > {:.0}ms", all.p99_ms, m.max_p99_ms))
            } else {
                None
            }
        }
        [exp, ctl] => {
            if exp.requests == 0 && ctl.requests > 0 {
                Some("experiment cohort got no answers; control did".into())
            } else if err(exp) - err(ctl) > m.max_error_percent {
                Some(format!(
                    "experiment errors {:.1}% vs control {:.1}% (> {:.1} points)",
                    err(exp),
                    err(ctl),
                    m.max_error_percent
                ))
            } else if exp.p99_ms > ctl.p99_ms * m.max_p99_ratio
                && exp.p99_ms - ctl.p99_ms > P99_FLOOR_MS
                && exp.p99_ms > m.max_p99_ms
            {
                Some(format!(
                    "experiment p99 {:.0}ms vs control {:.0}ms (> ×{})",
                    exp.p99_ms, ctl.p99_ms, m.max_p99_ratio
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Monitor {
        Monitor {
            rate: 10.0,
            mix: "title".into(),
            max_error_percent: 5.0,
            max_p99_ms: 500.0,
            max_p99_ratio: 3.0,
            for_s: 2,
            headers: Vec::new(),
        }
    }

    fn p(cohort: &'static str, requests: u64, errors: u64, p99: f64) -> Point {
        Point {
            t: 1.0,
            cohort,
            requests,
            errors,
            success_percent: if requests == 0 {
                100.0
            } else {
                100.0 * (requests - errors) as f64 / requests as f64
            },
            p50_ms: p99 / 2.0,
            p99_ms: p99,
        }
    }

    #[test]
    fn absolute_limits_without_a_cohort() {
        assert_eq!(
            judge(&m(), &[p("all", 100, 5, 100.0)]),
            None,
            "5% is the limit"
        );
        assert!(
            judge(&m(), &[p("all", 100, 6, 100.0)])
                .unwrap()
                .contains("errors 6.0%")
        );
        assert!(
            judge(&m(), &[p("all", 100, 0, 501.0)])
                .unwrap()
                .contains("p99")
        );
        assert!(
            judge(&m(), &[p("all", 0, 0, 0.0)])
                .unwrap()
                .contains("no answers")
        );
    }

    #[test]
    fn a_cohort_is_judged_against_its_control() {
        // Both degraded alike: not the fault's doing.
        assert_eq!(
            judge(
                &m(),
                &[
                    p("experiment", 100, 20, 900.0),
                    p("control", 100, 18, 800.0)
                ]
            ),
            None
        );
        assert!(
            judge(
                &m(),
                &[p("experiment", 100, 10, 10.0), p("control", 100, 0, 10.0)]
            )
            .unwrap()
            .contains("experiment errors 10.0%")
        );
        assert!(
            judge(
                &m(),
                &[p("experiment", 100, 0, 600.0), p("control", 100, 0, 12.0)]
            )
            .unwrap()
            .contains("p99 600ms")
        );
        assert_eq!(
            judge(
                &m(),
                &[p("experiment", 100, 0, 400.0), p("control", 100, 0, 12.0)]
            ),
            None,
            "slower, but within the absolute limit (a delay the budget absorbs)"
        );
        assert_eq!(
            judge(
                &m(),
                &[p("experiment", 100, 0, 9.0), p("control", 100, 0, 2.0)]
            ),
            None,
            "×4.5 but only 7 ms: noise"
        );
        assert!(
            judge(
                &m(),
                &[p("experiment", 0, 0, 0.0), p("control", 50, 0, 5.0)]
            )
            .is_some()
        );
    }
}
