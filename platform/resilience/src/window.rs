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

    /// 3 successes (one slow), 2 errors (one slow), 4 timeouts, 5
    /// rejections, 6 short circuits.
    fn mixed(c: &mut impl FnMut(Outcome, bool)) {
        for (outcome, n) in [
            (Outcome::Success, 2),
            (Outcome::Failure, 1),
            (Outcome::Timeout, 4),
            (Outcome::Rejected, 5),
            (Outcome::ShortCircuited, 6),
        ] {
            for _ in 0..n {
                c(outcome, false);
            }
        }
        c(Outcome::Success, true);
        c(Outcome::Failure, true);
    }

    const MIXED: Counts = Counts {
        requests: 20,
        successes: 3,
        errors: 2,
        timeouts: 4,
        rejections: 5,
        short_circuits: 6,
        slow: 1,
    };

    #[test]
    fn each_outcome_is_counted_in_its_own_field() {
        let mut c = Counts::default();
        mixed(&mut |o, slow| c.record(o, slow));
        assert_eq!(c, MIXED);
        assert_eq!(c.executed(), 9, "refusals were never executed");
        assert_eq!(c.unhealthy(), 7, "errors, timeouts and the slow success");
        assert!((c.error_percent() - 700.0 / 9.0).abs() < 1e-9);
        assert!(Counts::default().error_percent().abs() < f64::EPSILON);
    }

    #[test]
    fn totals_add_up_every_field_across_buckets() {
        let t0 = Instant::now();
        let bucket = Duration::from_millis(100);
        let mut w = RollingCounts::new(bucket, 10, t0);
        assert_eq!(w.span(), Duration::from_secs(1));
        let mut at = t0;
        mixed(&mut |o, slow| w.record(at, o, slow));
        at += 3 * bucket;
        mixed(&mut |o, slow| w.record(at, o, slow));
        let double = Counts {
            requests: 40,
            successes: 6,
            errors: 4,
            timeouts: 8,
            rejections: 10,
            short_circuits: 12,
            slow: 2,
        };
        assert_eq!(w.totals(at), double);
        assert_eq!(w.totals_since(at, bucket), MIXED);
        assert_eq!(w.totals_since(at, 4 * bucket), double);
        w.reset(at);
        assert_eq!(w.totals(at), Counts::default());
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Copy, Debug)]
        enum Op {
            Record(u8, bool),
            /// Move the clock by this many milliseconds.
            Advance(u64),
            /// Totals over the newest buckets covering this many ms.
            Since(u64),
            Reset,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0u8..5, any::<bool>()).prop_map(|(o, s)| Op::Record(o, s)),
                3 => prop_oneof![0u64..40, 0u64..400].prop_map(Op::Advance),
                2 => (0u64..300).prop_map(Op::Since),
                1 => Just(Op::Reset),
            ]
        }

        const OUTCOMES: [Outcome; 5] = [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Timeout,
            Outcome::Rejected,
            Outcome::ShortCircuited,
        ];

        proptest! {
            /// The ring of buckets agrees with the plain definition: every
            /// outcome kept with its bucket number, counted while the
            /// bucket is one of the newest `n` (or of those a span covers).
            #[test]
            fn the_ring_counts_what_the_window_covers(
                bucket_ms in 1u64..30,
                n in 1usize..12,
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let t0 = Instant::now();
                let bucket = Duration::from_millis(bucket_ms);
                let mut w = RollingCounts::new(bucket, n, t0);
                prop_assert_eq!(w.span(), bucket * u32::try_from(n).unwrap());
                // (bucket number since `base`, outcome, slow)
                let mut kept: Vec<(u64, Outcome, bool)> = Vec::new();
                let (mut base, mut now) = (0u64, 0u64);
                let model = |kept: &[(u64, Outcome, bool)], cur: u64, newest: u64| {
                    let mut c = Counts::default();
                    for (idx, o, slow) in kept {
                        if idx + newest > cur {
                            c.record(*o, *slow);
                        }
                    }
                    c
                };
                for op in ops {
                    let at = t0 + Duration::from_millis(now);
                    let cur = (now - base) / bucket_ms;
                    match op {
                        Op::Record(o, slow) => {
                            let o = OUTCOMES[usize::from(o)];
                            w.record(at, o, slow);
                            kept.push((cur, o, slow));
                        }
                        Op::Advance(ms) => now += ms,
                        Op::Since(ms) => {
                            let newest = ms.div_ceil(bucket_ms).clamp(1, n as u64);
                            prop_assert_eq!(
                                w.totals_since(at, Duration::from_millis(ms)),
                                model(&kept, cur, newest),
                                "span {} ms at {} ms", ms, now
                            );
                        }
                        Op::Reset => {
                            w.reset(at);
                            kept.clear();
                            base = now;
                        }
                    }
                    let at = t0 + Duration::from_millis(now);
                    let cur = (now - base) / bucket_ms;
                    prop_assert_eq!(w.totals(at), model(&kept, cur, n as u64), "at {} ms", now);
                }
            }
        }
    }
}
