//! The open-loop scheduler (and the closed loop, for comparison).
//!
//! Open loop: request *i* is due at a time fixed in advance by the rate
//! (and the ramp), never by earlier answers. A dedicated OS thread sleeps
//! until each due time (`nanosleep`, finer than tokio's 1 ms timer wheel),
//! takes a slot (at most `--concurrency` in flight) and hands the request
//! to the runtime. When the system stalls, due requests keep coming: they
//! wait for a slot, and their response time — measured from the due time
//! — carries the wait. Nothing is skipped: a send more than 1 ms late is
//! counted late (blamed on the concurrency limit when a slot was what it
//! waited for, on the generator otherwise), and a request still waiting
//! when the run ends is counted unsent.
//!
//! Closed loop: `--concurrency` workers, each sending its next request when
//! the previous one answers — how wrk and most tools work. A stall then
//! delays the sends instead of the measurements (coordinated omission), so
//! its figures are for comparison only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::load::driver::Driver;
use crate::load::mix::Workload;
use crate::load::recorder::{Counters, LATE_AFTER, Sample};

/// When requests are due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Requests per second once ramped up.
    pub rate: f64,
    /// Linear ramp from zero to `rate`.
    pub ramp: Duration,
}

impl Schedule {
    /// How long after the start request `i` (0-based) is due.
    ///
    /// During the ramp the rate grows as `rate·t/ramp`, so `i` requests
    /// are due by `t = sqrt(2·ramp·i/rate)`; after it, one every `1/rate`.
    pub fn offset(&self, i: u64) -> Duration {
        let i = i as f64;
        let ramp = self.ramp.as_secs_f64();
        let in_ramp = self.rate * ramp / 2.0;
        let t = if i < in_ramp {
            (2.0 * ramp * i / self.rate).sqrt()
        } else {
            ramp + (i - in_ramp) / self.rate
        };
        Duration::from_secs_f64(t.max(0.0))
    }
}

/// When to stop.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The run's start (the warm-up starts here).
    pub start: Instant,
    /// The measurement starts here.
    pub measure_start: Instant,
    /// Nothing due at or after this is sent.
    pub end: Option<Instant>,
    /// At most this many measured requests.
    pub requests: Option<u64>,
}

/// What a request task needs.
#[derive(Clone)]
pub struct Shared {
    /// The client.
    pub driver: Driver,
    /// Where samples go.
    pub samples: Sender<Sample>,
    /// The scheduler's counters.
    pub counters: Arc<Counters>,
    /// Raised by `--abort-on-fail` (or Ctrl-C): stop sending.
    pub stop: Arc<AtomicBool>,
}

/// Runs the open-loop schedule on the calling (non-runtime) thread until
/// the bounds are reached or `stop` is raised; requests run on `runtime`.
/// Returns when the last request has been handed over (not answered).
pub fn open_loop(
    runtime: &Handle,
    shared: &Shared,
    mut workload: Workload,
    schedule: Schedule,
    bounds: Bounds,
    concurrency: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let counters = &shared.counters;
    // The last time a slot came free after every slot had been busy:
    // a request due before it was held up by the limit, not the generator.
    let mut limit_released: Option<Instant> = None;
    let mut measured: u64 = 0;
    for i in 0.. {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let intended = bounds.start + schedule.offset(i);
        if bounds.end.is_some_and(|end| intended >= end) {
            break;
        }
        let is_measured = intended >= bounds.measure_start;
        if is_measured && bounds.requests.is_some_and(|n| measured >= n) {
            break;
        }
        if !sleep_until(intended, &shared.stop) {
            break;
        }
        // Past the end with requests still due: the generator could not
        // keep up. Those are counted, not sent.
        if bounds.end.is_some_and(|end| Instant::now() >= end) {
            count_unsent(counters, &schedule, &bounds, i, measured);
            break;
        }
        if is_measured {
            measured += 1;
            counters.scheduled.fetch_add(1, Ordering::Relaxed);
        }
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let wait = slots.clone().acquire_owned();
                let got = match bounds.end {
                    Some(end) => runtime.block_on(async {
                        tokio::time::timeout_at(tokio::time::Instant::from_std(end), wait).await
                    }),
                    None => Ok(runtime.block_on(wait)),
                };
                match got {
                    Ok(Ok(p)) => {
                        limit_released = Some(Instant::now());
                        p
                    }
                    // The run ended (or the semaphore closed) while waiting.
                    _ => {
                        if is_measured {
                            counters.unsent.fetch_add(1, Ordering::Relaxed);
                        }
                        count_unsent(counters, &schedule, &bounds, i + 1, measured);
                        break;
                    }
                }
            }
        };
        let sent = Instant::now();
        if is_measured {
            counters.sent.fetch_add(1, Ordering::Relaxed);
            if sent.saturating_duration_since(intended) > LATE_AFTER {
                if limit_released.is_some_and(|r| intended <= r) {
                    counters.late_limit.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.late_generator.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let req = workload.next_request();
        let shared = shared.clone();
        shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        runtime.spawn(async move {
            let outcome = shared.driver.execute(&req).await;
            let done = Instant::now();
            drop(permit);
            shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            // The recorder outlives every sender; a failed send means the
            // run is being torn down, and the sample has nowhere to go.
            let _ = shared.samples.send(Sample {
                op: req.op_index,
                intended,
                sent,
                done,
                outcome,
            });
        });
    }
}

/// Counts requests `from..` that were due before the end (and within the
/// request bound, of which `measured` are already used) as unsent.
fn count_unsent(
    counters: &Counters,
    schedule: &Schedule,
    bounds: &Bounds,
    from: u64,
    measured: u64,
) {
    let Some(end) = bounds.end else { return };
    let mut n = 0;
    let mut i = from;
    loop {
        let due = bounds.start + schedule.offset(i);
        if due >= end || bounds.requests.is_some_and(|r| measured + n >= r) {
            break;
        }
        if due >= bounds.measure_start {
            n += 1;
        }
        i += 1;
    }
    counters.unsent.fetch_add(n, Ordering::Relaxed);
    counters.scheduled.fetch_add(n, Ordering::Relaxed);
}

/// Sleeps until `t`, waking every 100 ms to look at `stop`. False when
/// stopped.
fn sleep_until(t: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = t.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Runs `concurrency` closed-loop workers until the bounds are reached or
/// `stop` is raised, and waits for them.
pub async fn closed_loop(shared: Shared, workload: Workload, bounds: Bounds, concurrency: usize) {
    let measured = Arc::new(AtomicU64::new(0));
    let workload = Arc::new(std::sync::Mutex::new(workload));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let shared = shared.clone();
        let measured = measured.clone();
        let workload = workload.clone();
        workers.spawn(async move {
            loop {
                let now = Instant::now();
                if shared.stop.load(Ordering::Relaxed) || bounds.end.is_some_and(|e| now >= e) {
                    break;
                }
                let is_measured = now >= bounds.measure_start;
                if is_measured {
                    let n = measured.fetch_add(1, Ordering::Relaxed);
                    if bounds.requests.is_some_and(|r| n >= r) {
                        break;
                    }
                    shared.counters.scheduled.fetch_add(1, Ordering::Relaxed);
                    shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                let req = match workload.lock() {
                    Ok(mut w) => w.next_request(),
                    Err(poisoned) => poisoned.into_inner().next_request(),
                };
                shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
                let outcome = shared.driver.execute(&req).await;
                shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                // In a closed loop the request is due when it is sent.
                let _ = shared.samples.send(Sample {
                    op: req.op_index,
                    intended: now,
                    sent: now,
                    done: Instant::now(),
                    outcome,
                });
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_rate_spaces_requests_evenly() {
        let s = Schedule {
            rate: 100.0,
            ramp: Duration::ZERO,
        };
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(100), Duration::from_secs(1));
        assert_eq!(s.offset(250), Duration::from_millis(2500));
    }

    #[test]
    fn a_ramp_sends_half_the_full_rate_on_average_then_the_full_rate() {
        let s = Schedule {
            rate: 100.0,
            ramp: Duration::from_secs(10),
        };
        // 500 requests over the 10 s ramp (average 50/s) …
        assert!((s.offset(500).as_secs_f64() - 10.0).abs() < 1e-9);
        // … a quarter of them in the first half.
        assert!((s.offset(125).as_secs_f64() - 5.0).abs() < 1e-9);
        // Then one every 10 ms.
        assert!((s.offset(600).as_secs_f64() - 11.0).abs() < 1e-9);
        // Due times never go backwards.
        let mut last = Duration::ZERO;
        for i in 0..2000 {
            let t = s.offset(i);
            assert!(t >= last);
            last = t;
        }
    }
}
