//! A circuit breaker with Hystrix's semantics, and faster detection.
//!
//! Written here because no well-kept crate implements Hystrix's model
//! (rolling window, request-volume threshold, error percentage, sleep
//! window, a single half-open trial) plus a slow-call threshold with tokio's
//! clock for paused-time tests; tower has no breaker at all.
//!
//! Closed → Open when, over the rolling window, at least
//! `request_volume_threshold` calls were executed and at least
//! `error_threshold_percent` of them were unhealthy (errors, timeouts, calls
//! slower than `slow_call_threshold`). The same rule is also applied to the
//! newest `fast_window` alone: Hystrix's 10 s window, dominated by old
//! successes, needs ~5 s to notice a dependency that went hard down at
//! 100 req/s; the 1 s fast window notices in ~0.2 s. Open → after
//! `sleep_window`, exactly one trial call is let through (half-open); its
//! success closes the circuit with a fresh window, its failure reopens it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::window::{Counts, Outcome, RollingCounts};

/// Breaker settings (Hystrix defaults, plus the fast window and slow calls).
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// When false the breaker never opens (it still counts).
    pub enabled: bool,
    /// Rolling window length; default 10 s.
    pub window: Duration,
    /// Bucket length; default 100 ms (Hystrix: 1 s).
    pub bucket: Duration,
    /// Newest part of the window also judged on its own; default 1 s.
    pub fast_window: Duration,
    /// Executed calls needed before the error rate counts; default 20.
    pub request_volume_threshold: u64,
    /// Unhealthy percentage that opens the circuit; default 50.
    pub error_threshold_percent: f64,
    /// How long the circuit stays open before a trial; default 5 s.
    pub sleep_window: Duration,
    /// Calls slower than this count as unhealthy; default 1 s.
    pub slow_call_threshold: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            bucket: Duration::from_millis(100),
            fast_window: Duration::from_secs(1),
            request_volume_threshold: 20,
            error_threshold_percent: 50.0,
            sleep_window: Duration::from_secs(5),
            slow_call_threshold: Duration::from_secs(1),
        }
    }
}

impl BreakerConfig {
    /// Checks the settings make sense.
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket.is_zero() || self.window < self.bucket {
            return Err("window must be at least one bucket, and bucket > 0".into());
        }
        if self.fast_window > self.window {
            return Err("fast_window must not exceed window".into());
        }
        if !(0.0..=100.0).contains(&self.error_threshold_percent) {
            return Err("error_threshold_percent must be within 0..=100".into());
        }
        if self.request_volume_threshold == 0 {
            return Err("request_volume_threshold must be at least 1".into());
        }
        Ok(())
    }

    fn buckets(&self) -> usize {
        (self.window.as_nanos() / self.bucket.as_nanos().max(1)).max(1) as usize
    }
}

/// The circuit's state as metrics and the stream report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the sleep window passes.
    Open,
    /// One trial call is deciding.
    HalfOpen,
}

impl CircuitState {
    /// 0 closed, 1 open, 2 half-open (the metric's encoding).
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// A call refused because the circuit is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; next trial in {retry_after:?}")]
pub struct BreakerOpen {
    /// When the next trial call will be allowed.
    pub retry_after: Duration,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { trial_started: Instant },
}

#[derive(Debug)]
struct Inner {
    state: State,
    window: RollingCounts,
    opened: u64,
}

/// One circuit (cheap to clone; clones share state).
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: Arc<BreakerConfig>,
    inner: Arc<Mutex<Inner>>,
}

/// Permission to make one call; give it back through
/// [`CircuitBreaker::record`]. Dropping it unrecorded (the caller gave up)
/// counts as nothing, except that an abandoned half-open trial reopens.
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    trial: bool,
    recorded: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.trial && !self.recorded {
            let mut inner = self.breaker.lock();
            if matches!(inner.state, State::HalfOpen { .. }) {
                inner.state = State::Open {
                    until: Instant::now() + self.breaker.config.sleep_window,
                };
            }
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let now = Instant::now();
        let window = RollingCounts::new(config.bucket, config.buckets(), now);
        Self {
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Inner {
                state: State::Closed,
                window,
                opened: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks to make a call.
    ///
    /// # Errors
    /// [`BreakerOpen`] while the circuit is open (counted as a short circuit).
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let now = Instant::now();
        let mut inner = self.lock();
        let trial = match inner.state {
            State::Closed => false,
            State::Open { until } if now >= until => {
                inner.state = State::HalfOpen { trial_started: now };
                true
            }
            State::Open { until } => {
                inner.window.record(now, Outcome::ShortCircuited, false);
                return Err(BreakerOpen {
                    retry_after: until - now,
                });
            }
            State::HalfOpen { trial_started } => {
                inner.window.record(now, Outcome::ShortCircuited, false);
                // A trial that never reports back would wedge the circuit;
                // the sleep window bounds how long it may take.
                if now.saturating_duration_since(trial_started) > self.config.sleep_window {
                    inner.state = State::HalfOpen { trial_started: now };
                    drop(inner);
                    return Ok(Permit {
                        breaker: self.clone(),
                        trial: true,
                        recorded: false,
                    });
                }
                return Err(BreakerOpen {
                    retry_after: self.config.sleep_window,
                });
            }
        };
        drop(inner);
        Ok(Permit {
            breaker: self.clone(),
            trial,
            recorded: false,
        })
    }

    /// Reports how a permitted call went. `outcome` is Success, Failure or
    /// Timeout; a success slower than the slow-call threshold is unhealthy.
    pub fn record(&self, mut permit: Permit, outcome: Outcome, elapsed: Duration) {
        permit.recorded = true;
        let now = Instant::now();
        let slow = elapsed >= self.config.slow_call_threshold;
        let healthy = outcome == Outcome::Success && !slow;
        let mut inner = self.lock();
        inner.window.record(now, outcome, slow);
        match inner.state {
            State::HalfOpen { .. } if permit.trial => {
                if healthy {
                    inner.state = State::Closed;
                    inner.window.reset(now);
                    tracing::info!("circuit closed after a successful trial");
                } else {
                    inner.state = State::Open {
                        until: now + self.config.sleep_window,
                    };
                }
            }
            State::Closed if self.config.enabled && !healthy => {
                let full = inner.window.totals(now);
                let fast = inner.window.totals_since(now, self.config.fast_window);
                if self.trips(&full) || self.trips(&fast) {
                    inner.state = State::Open {
                        until: now + self.config.sleep_window,
                    };
                    inner.opened += 1;
                    tracing::warn!(
                        error_percent = fast.error_percent().max(full.error_percent()),
                        executed = full.executed(),
                        "circuit opened"
                    );
                }
            }
            _ => {}
        }
    }

    fn trips(&self, c: &Counts) -> bool {
        c.executed() >= self.config.request_volume_threshold
            && c.error_percent() >= self.config.error_threshold_percent
    }

    /// The current state (an open circuit whose sleep window has passed
    /// reports half-open: the next call is the trial).
    pub fn state(&self) -> CircuitState {
        let inner = self.lock();
        match inner.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Counts over the rolling window.
    pub fn counts(&self) -> Counts {
        self.lock().window.totals(Instant::now())
    }

    /// How many times the circuit has opened.
    pub fn times_opened(&self) -> u64 {
        self.lock().opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn call(b: &CircuitBreaker, outcome: Outcome) -> Result<(), BreakerOpen> {
        let p = b.try_acquire()?;
        b.record(p, outcome, MS);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_within_a_second_at_100_rps_after_a_long_healthy_run() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        // 10 s of health at 100 req/s fills the window with successes.
        for _ in 0..1000 {
            call(&b, Outcome::Success).unwrap();
            tokio::time::advance(10 * MS).await;
        }
        let down = Instant::now();
        let mut cut_off = None;
        for _ in 0..200 {
            if call(&b, Outcome::Failure).is_err() {
                cut_off = Some(Instant::now() - down);
                break;
            }
            tokio::time::advance(10 * MS).await;
        }
        let cut_off = cut_off.expect("the circuit opened");
        assert!(cut_off <= Duration::from_secs(1), "took {cut_off:?}");
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn needs_the_request_volume() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..19 {
            call(&b, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state(), CircuitState::Closed);
        call(&b, Outcome::Failure).unwrap();
        assert_eq!(b.state(), CircuitState::Open);
        let e = b.try_acquire().unwrap_err();
        assert_eq!(e.retry_after, Duration::from_secs(5));
        assert_eq!(b.counts().short_circuits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_half_open_trial_decides() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..20 {
            call(&b, Outcome::Timeout).unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let trial = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only one trial at a time");
        b.record(trial, Outcome::Failure, MS);
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = b.try_acquire().unwrap();
        b.record(trial, Outcome::Success, MS);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.counts().requests, 0, "closing starts a fresh window");
        assert_eq!(b.times_opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_trial_reopens_and_slow_calls_count() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..20 {
            let p = b.try_acquire().unwrap();
            b.record(p, Outcome::Success, Duration::from_secs(2));
        }
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "slow successes are unhealthy"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b.try_acquire().unwrap());
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_never_opens() {
        let b = CircuitBreaker::new(BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        });
        for _ in 0..100 {
            call(&b, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(
            BreakerConfig {
                request_volume_threshold: 0,
                ..BreakerConfig::default()
            }
            .validate()
            .is_err()
        );
    }
}
