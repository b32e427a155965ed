//! Rolling counters in fixed time buckets (the Hystrix rolling window).
//!
//! A ring of buckets, each counting one slice of time; buckets older than the
//! window are cleared lazily as time moves on, so recording is O(1) and a
//! quiet period costs nothing. Time comes from `tokio::time::Instant`, so
//! tests run on paused time.

use std::time::Duration;

use tokio::time::Instant;

/// What happened to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered successfully (including "not found" and other answers that
    /// say nothing bad about the dependency's health).
    Success,
    /// Failed (unavailable, internal error) or answered slower than the
    /// slow-call threshold.
    Failure,
    /// The deadline passed before it answered.
    Timeout,
    /// Refused by the bulkhead before it was sent.
    Rejected,
    /// Refused by the open circuit before it was sent.
    ShortCircuited,
}

/// Counts over some span of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Every call, sent or refused.
    pub requests: u64,
    /// Successful calls.
    pub successes: u64,
    /// Failed calls (not counting timeouts).
    pub errors: u64,
    /// Calls whose deadline passed.
    pub timeouts: u64,
    /// Calls refused by a full bulkhead.
    pub rejections: u64,
    /// Calls refused by an open circuit.
    pub short_circuits: u64,
    /// Successful calls slower than the slow-call threshold (unhealthy
    /// like errors; a failed or timed-out call is counted once, as such,
    /// however long it took).
    pub slow: u64,
}

impl Counts {
    fn add(&mut self, o: &Self) {
        self.requests += o.requests;
        self.successes += o.successes;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.rejections += o.rejections;
        self.short_circuits += o.short_circuits;
        self.slow += o.slow;
    }

    /// Records one outcome.
    pub fn record(&mut self, outcome: Outcome, slow: bool) {
        self.requests += 1;
        match outcome {
            Outcome::Success => self.successes += 1,
            Outcome::Failure => self.errors += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Rejected => self.rejections += 1,
            Outcome::ShortCircuited => self.short_circuits += 1,
        }
        // Each call is unhealthy at most once: only a success can be "slow".
        if slow && outcome == Outcome::Success {
            self.slow += 1;
        }
    }

    /// Calls that reached the dependency: what a breaker judges health by.
    pub fn executed(&self) -> u64 {
        self.successes + self.errors + self.timeouts
    }

    /// Unhealthy executed calls: errors and timeouts, slow successes too.
    pub fn unhealthy(&self) -> u64 {
        self.errors + self.timeouts + self.slow
    }

    /// Unhealthy share of executed calls, 0–100.
    pub fn error_percent(&self) -> f64 {
        let executed = self.executed();
        if executed == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let p = self.unhealthy() as f64 * 100.0 / executed as f64;
            p
        }
    }
}

/// A rolling window of [`Counts`].
#[derive(Debug)]
pub struct RollingCounts {
    bucket: Duration,
    buckets: Vec<Counts>,
    /// Index of the bucket `head_start` belongs to.
    head: usize,
    head_start: Instant,
}

impl RollingCounts {
    /// A window of `buckets` buckets of `bucket` each, starting `now`.
    ///
    /// `buckets` is at least 1 and `bucket` at least 1 ms.
    pub fn new(bucket: Duration, buckets: usize, now: Instant) -> Self {
        Self {
            bucket: bucket.max(Duration::from_millis(1)),
            buckets: vec![Counts::default(); buckets.max(1)],
            head: 0,
            head_start: now,
        }
    }

    /// The span the window covers.
    pub fn span(&self) -> Duration {
        self.bucket * u32::try_from(self.buckets.len()).unwrap_or(u32::MAX)
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.head_start);
        let steps = (elapsed.as_nanos() / self.bucket.as_nanos().max(1)) as usize;
        if steps == 0 {
            return;
        }
        let n = self.buckets.len();
        for i in 1..=steps.min(n) {
            self.buckets[(self.head + i) % n] = Counts::default();
        }
        self.head = (self.head + steps) % n;
        let step_time = self.bucket * u32::try_from(steps).unwrap_or(u32::MAX);
        self.head_start += step_time;
    }

    /// Records one outcome at `now`.
    pub fn record(&mut self, now: Instant, outcome: Outcome, slow: bool) {
        self.roll(now);
        self.buckets[self.head].record(outcome, slow);
    }

    /// Totals over the whole window.
    pub fn totals(&mut self, now: Instant) -> Counts {
        self.totals_over(now, self.buckets.len())
    }

    /// Totals over the newest buckets covering `span` (at least one).
    pub fn totals_since(&mut self, now: Instant, span: Duration) -> Counts {
        let n = (span.as_nanos().div_ceil(self.bucket.as_nanos().max(1))) as usize;
        self.totals_over(now, n.clamp(1, self.buckets.len()))
    }

    fn totals_over(&mut self, now: Instant, newest: usize) -> Counts {
        self.roll(now);
        let n = self.buckets.len();
        let mut out = Counts::default();
        for i in 0..newest {
            out.add(&self.buckets[(self.head + n - i) % n]);
        }
        out
    }

    /// Clears every bucket (a breaker closing starts afresh).
    pub fn reset(&mut self, now: Instant) {
        self.buckets.iter_mut().for_each(|b| *b = Counts::default());
        self.head_start = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_buckets_fall_out_of_the_window() {
        let t0 = Instant::now();
        let mut w = RollingCounts::new(Duration::from_millis(100), 10, t0);
        for _ in 0..5 {
            w.record(t0, Outcome::Failure, false);
        }
        w.record(t0 + Duration::from_millis(550), Outcome::Success, false);
        let now = t0 + Duration::from_millis(600);
        assert_eq!(w.totals(now).requests, 6);
        assert_eq!(w.totals_since(now, Duration::from_millis(200)).requests, 1);
        // 1 s after the first five, they are gone.
        let later = t0 + Duration::from_millis(1_000);
        assert_eq!(w.totals(later).requests, 1);
        assert_eq!(w.totals(t0 + Duration::from_secs(60)).requests, 0);
    }

    #[test]
    fn error_percent_counts_timeouts_and_slow_calls() {
        let mut c = Counts::default();
        c.record(Outcome::Success, false);
        c.record(Outcome::Success, true);
        c.record(Outcome::Timeout, false);
        c.record(Outcome::Failure, false);
        c.record(Outcome::Rejected, false);
        assert_eq!(c.executed(), 4);
        assert!((c.error_percent() - 75.0).abs() < 1e-9);
    }

    #[test]
    fn a_slow_failure_is_one_unhealthy_call_not_two() {
        let mut c = Counts::default();
        for _ in 0..10 {
            c.record(Outcome::Timeout, true);
            c.record(Outcome::Failure, true);
            c.record(Outcome::Success, false);
            c.record(Outcome::Success, false);
        }
        assert_eq!(c.executed(), 40);
        assert_eq!(c.unhealthy(), 20);
        assert!((c.error_percent() - 50.0).abs() < 1e-9, "{c:?}");
    }
}
