//! Per-operation stats for the stream: rolling counts and latency
//! percentiles over the last 10 s, in 1 s buckets (HdrHistogram, two
//! significant digits, 1 µs to 1 min — 20 KiB per bucket).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::window::{Counts, Outcome, RollingCounts};

const BUCKET: Duration = Duration::from_secs(1);
const BUCKETS: usize = 10;
const MAX_US: u64 = 60_000_000;

/// Latency percentiles in milliseconds (the extra quantiles and the mean
/// feed `/hystrix.stream`, whose `latencyExecute` lists 0, 25, 50, 75, 90,
/// 95, 99, 99.5 and 100).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// 25th percentile.
    pub p25: f64,
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99.5th percentile.
    pub p99_5: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

#[derive(Debug)]
struct Inner {
    counts: RollingCounts,
    latency: Vec<Histogram<u64>>,
    /// Index of the current latency bucket and when it started.
    head: usize,
    head_start: Instant,
    retries: RollingCounts,
}

/// Rolling stats of one dependency operation.
#[derive(Debug)]
pub struct OperationStats {
    inner: Mutex<Inner>,
}

impl Default for OperationStats {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid; fall back to an
    // auto-resizing histogram rather than panic if they ever were not.
    Histogram::new_with_bounds(1, MAX_US, 2).unwrap_or_else(|_| {
        let mut h = Histogram::new(2).unwrap_or_else(|_| unreachable_histogram());
        h.auto(true);
        h
    })
}

#[allow(clippy::expect_used)]
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is always valid")
}

impl OperationStats {
    /// Empty stats starting now.
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            inner: Mutex::new(Inner {
                counts: RollingCounts::new(BUCKET, BUCKETS, now),
                latency: (0..BUCKETS).map(|_| histogram()).collect(),
                head: 0,
                head_start: now,
                retries: RollingCounts::new(BUCKET, BUCKETS, now),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a call's outcome; `latency` for calls that were sent.
    pub fn record(&self, outcome: Outcome, slow: bool, latency: Option<Duration>) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.counts.record(now, outcome, slow);
        if let Some(l) = latency {
            roll_latency(&mut inner, now);
            let head = inner.head;
            let us = u64::try_from(l.as_micros())
                .unwrap_or(MAX_US)
                .clamp(1, MAX_US);
            let _ = inner.latency[head].record(us);
        }
    }

    /// Records a retry.
    pub fn record_retry(&self) {
        let now = Instant::now();
        self.lock().retries.record(now, Outcome::Success, false);
    }

    /// Counts, retries and latency over the last 10 s.
    pub fn snapshot(&self) -> (Counts, u64, Latency) {
        let now = Instant::now();
        let mut inner = self.lock();
        roll_latency(&mut inner, now);
        let counts = inner.counts.totals(now);
        let retries = inner.retries.totals(now).requests;
        let mut merged = histogram();
        for h in &inner.latency {
            let _ = merged.add(h);
        }
        let ms = |us: u64| {
            #[allow(clippy::cast_precision_loss)]
            let v = us as f64 / 1000.0;
            v
        };
        let latency = if merged.is_empty() {
            Latency::default()
        } else {
            Latency {
                min: ms(merged.min()),
                mean: merged.mean() / 1000.0,
                p25: ms(merged.value_at_quantile(0.25)),
                p50: ms(merged.value_at_quantile(0.5)),
                p75: ms(merged.value_at_quantile(0.75)),
                p95: ms(merged.value_at_quantile(0.95)),
                p99_5: ms(merged.value_at_quantile(0.995)),
                p90: ms(merged.value_at_quantile(0.9)),
                p99: ms(merged.value_at_quantile(0.99)),
                max: ms(merged.max()),
            }
        };
        (counts, retries, latency)
    }
}

fn roll_latency(inner: &mut Inner, now: Instant) {
    let elapsed = now.saturating_duration_since(inner.head_start);
    let steps = (elapsed.as_nanos() / BUCKET.as_nanos()) as usize;
    if steps == 0 {
        return;
    }
    for i in 1..=steps.min(BUCKETS) {
        let idx = (inner.head + i) % BUCKETS;
        inner.latency[idx].reset();
    }
    inner.head = (inner.head + steps) % BUCKETS;
    inner.head_start += BUCKET * u32::try_from(steps).unwrap_or(u32::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn percentiles_over_the_last_ten_seconds() {
        let s = OperationStats::new();
        for i in 1..=100 {
            s.record(Outcome::Success, false, Some(Duration::from_millis(i)));
        }
        s.record(Outcome::Rejected, false, None);
        s.record_retry();
        let (c, retries, l) = s.snapshot();
        assert_eq!(c.requests, 101);
        assert_eq!(c.rejections, 1);
        assert_eq!(retries, 1);
        assert!((49.0..=51.0).contains(&l.p50), "{l:?}");
        assert!((98.0..=101.0).contains(&l.p99), "{l:?}");
        tokio::time::advance(Duration::from_secs(11)).await;
        let (c, _, l) = s.snapshot();
        assert_eq!(c.requests, 0);
        assert_eq!(l, Latency::default());
    }

    /// Within the histogram's two significant digits.
    fn near(got: f64, want: f64) -> bool {
        (got - want).abs() <= want * 0.01
    }

    #[tokio::test(start_paused = true)]
    async fn latency_buckets_roll_a_second_at_a_time() {
        let s = OperationStats::new();
        // Second k records one call of (k + 1) · 10 ms: the last ten
        // seconds hold the calls of seconds k-9..=k.
        for k in 0u32..25 {
            let ms = f64::from(k + 1) * 10.0;
            s.record(
                Outcome::Success,
                false,
                Some(Duration::from_millis(u64::from(k + 1) * 10)),
            );
            let (c, _, l) = s.snapshot();
            let oldest = f64::from(k.saturating_sub(9) + 1) * 10.0;
            assert!(near(l.min, oldest), "second {k}: {l:?}");
            assert!(near(l.max, ms), "second {k}: {l:?}");
            assert!(near(l.mean, (oldest + ms) / 2.0), "second {k}: {l:?}");
            assert_eq!(c.requests, u64::from(k.min(9) + 1));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // A quiet spell longer than the window, then one call.
        tokio::time::advance(Duration::from_secs(25)).await;
        s.record(Outcome::Success, false, Some(Duration::from_millis(7)));
        let (_, _, l) = s.snapshot();
        assert!(near(l.min, 7.0) && near(l.max, 7.0), "{l:?}");
    }
}
