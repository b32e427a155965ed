//! The circuit breaker layer: Hystrix's semantics, and faster detection.
//!
//! [`CircuitBreaker`] is the tower layer (one [`Circuit`] per operation,
//! kept in a shared [`Circuits`] registry the stream reads); [`Circuit`] is
//! the state machine. The classifier decides what an outcome counts as:
//! caller mistakes that were never sent, a full bulkhead or an open circuit
//! count nothing; a NotFound answered by the dependency counts as healthy.
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
//! 100 req/s; the 1 s fast window notices in ~0.2 s (that is why buckets are
//! 100 ms by default, not Hystrix's 1 s: a 1 s fast window needs finer
//! buckets to stay a second long). Open → after `sleep_window`, exactly
//! one trial call is let through (half-open); its success closes the
//! circuit with a fresh window, its failure reopens it; a trial whose
//! outcome counts nothing (a caller mistake) hands the trial to the next
//! call. Each call is counted once: a slow failure is one failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::classify::{Class, Classify};
use crate::observe::Observer;
use crate::request::ResilientRequest;
use crate::window::{Counts, Outcome, RollingCounts};
use crate::{BoxError, BoxFuture};

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
pub enum BreakerError {
    /// The circuit is open (or its one half-open trial is under way).
    #[error("circuit open; next trial in {retry_after:?}")]
    Open {
        /// When the next trial call will be allowed.
        retry_after: Duration,
    },
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
pub struct Circuit {
    config: Arc<BreakerConfig>,
    inner: Arc<Mutex<Inner>>,
}

/// Permission to make one call; give it back through
/// [`Circuit::record`]. Dropping it unrecorded (the caller gave up)
/// counts as nothing, except that an abandoned half-open trial reopens.
#[derive(Debug)]
pub struct Permit {
    breaker: Circuit,
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

impl Circuit {
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
    /// [`BreakerError`] while the circuit is open (counted as a short circuit).
    pub fn try_acquire(&self) -> Result<Permit, BreakerError> {
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
                return Err(BreakerError::Open {
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
                return Err(BreakerError::Open {
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
    /// Timeout, or `None` for an outcome that must count nothing (a caller
    /// mistake refused without a call); a success slower than the slow-call
    /// threshold is unhealthy.
    pub fn record(&self, mut permit: Permit, outcome: Option<Outcome>, elapsed: Duration) {
        permit.recorded = true;
        let now = Instant::now();
        let Some(outcome) = outcome else {
            // Counts nothing; a trial spent on it passes to the next call.
            let mut inner = self.lock();
            if permit.trial && matches!(inner.state, State::HalfOpen { .. }) {
                inner.state = State::Open { until: now };
            }
            return;
        };
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

/// The circuits of one dependency, one per operation, created on first use
/// (cheap to clone; clones share them). Each dependency has its own
/// registry, so two dependencies (catalog v1 and v2) never share a circuit.
#[derive(Clone, Debug)]
pub struct Circuits {
    config: BreakerConfig,
    map: Arc<Mutex<HashMap<&'static str, Circuit>>>,
}

impl Circuits {
    /// No circuits yet; each will use `config`.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            map: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The circuit of `operation`.
    pub fn get(&self, operation: &'static str) -> Circuit {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(operation)
            .or_insert_with(|| Circuit::new(self.config.clone()))
            .clone()
    }

    /// Every circuit so far, by operation.
    pub fn all(&self) -> Vec<(&'static str, Circuit)> {
        let mut v: Vec<_> = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, c)| (*k, c.clone()))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Clone)]
pub struct CircuitBreaker<S, C> {
    inner: S,
    layer: CircuitBreakerLayer<C>,
}

/// Guards each operation with its circuit.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C> {
    circuits: Circuits,
    classifier: C,
    observer: Arc<dyn Observer>,
}

impl<C> std::fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("circuits", &self.circuits)
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker<(), ()> {
    /// A layer over `circuits` (shared with whoever reports their state),
    /// judging outcomes with `classifier`, reporting to `observer`.
    pub fn layer<C: Classify>(
        circuits: Circuits,
        classifier: C,
        observer: Arc<dyn Observer>,
    ) -> CircuitBreakerLayer<C> {
        CircuitBreakerLayer {
            circuits,
            classifier,
            observer,
        }
    }
}

impl<S, C: Clone> tower::Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            layer: self.clone(),
        }
    }
}

impl<S, C, Req> tower::Service<Req> for CircuitBreaker<S, C>
where
    Req: ResilientRequest + Send + 'static,
    S: tower::Service<Req> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    C: Classify,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let op = req.operation();
        let circuit = self.layer.circuits.get(op);
        let observer = self.layer.observer.clone();
        let permit = match circuit.try_acquire() {
            Ok(p) => p,
            Err(open) => {
                observer.refused(op, "circuit_open");
                observer.circuit(op, circuit.state());
                return Box::pin(async move { Err(open.into()) });
            }
        };
        let classifier = self.layer.classifier.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let class = match &result {
                Ok(_) => Class::Success,
                Err(e) => classifier.classify(e),
            };
            circuit.record(permit, class.breaker_outcome(), started.elapsed());
            observer.circuit(op, circuit.state());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn call(b: &Circuit, outcome: Outcome) -> Result<(), BreakerError> {
        let p = b.try_acquire()?;
        b.record(p, Some(outcome), MS);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_within_a_second_at_100_rps_after_a_long_healthy_run() {
        let b = Circuit::new(BreakerConfig::default());
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
        let b = Circuit::new(BreakerConfig::default());
        for _ in 0..19 {
            call(&b, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state(), CircuitState::Closed);
        call(&b, Outcome::Failure).unwrap();
        assert_eq!(b.state(), CircuitState::Open);
        let e = b.try_acquire().unwrap_err();
        assert_eq!(
            e,
            BreakerError::Open {
                retry_after: Duration::from_secs(5)
            }
        );
        assert_eq!(b.counts().short_circuits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_half_open_trial_decides() {
        let b = Circuit::new(BreakerConfig::default());
        for _ in 0..20 {
            call(&b, Outcome::Timeout).unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let trial = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only one trial at a time");
        b.record(trial, Some(Outcome::Failure), MS);
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = b.try_acquire().unwrap();
        b.record(trial, Some(Outcome::Success), MS);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.counts().requests, 0, "closing starts a fresh window");
        assert_eq!(b.times_opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_trial_reopens_and_slow_calls_count() {
        let b = Circuit::new(BreakerConfig::default());
        for _ in 0..20 {
            let p = b.try_acquire().unwrap();
            b.record(p, Some(Outcome::Success), Duration::from_secs(2));
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
        let b = Circuit::new(BreakerConfig {
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

    #[tokio::test(start_paused = true)]
    async fn a_slow_failure_counts_once() {
        // 10 slow timeouts and 10 fast successes: 50 % unhealthy, under a
        // 60 % threshold. Counted twice, the slow ones would make it 100 %.
        let b = Circuit::new(BreakerConfig {
            error_threshold_percent: 60.0,
            ..BreakerConfig::default()
        });
        for _ in 0..10 {
            let p = b.try_acquire().unwrap();
            b.record(p, Some(Outcome::Success), MS);
            let p = b.try_acquire().unwrap();
            b.record(p, Some(Outcome::Timeout), Duration::from_secs(2));
        }
        assert_eq!(b.state(), CircuitState::Closed, "{:?}", b.counts());
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncounted_trial_hands_the_trial_to_the_next_call() {
        let b = Circuit::new(BreakerConfig::default());
        for _ in 0..20 {
            call(&b, Outcome::Failure).unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = b.try_acquire().unwrap();
        b.record(trial, None, MS);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let trial = b.try_acquire().unwrap();
        b.record(trial, Some(Outcome::Success), MS);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_counts_what_the_classifier_says() {
        use crate::observe::NoObserver;
        use crate::testing::{TestRequest, TextClassifier, failing};
        use tower::{Layer, ServiceExt};
        let circuits = Circuits::new(BreakerConfig::default());
        let layer = CircuitBreaker::layer(circuits.clone(), TextClassifier, Arc::new(NoObserver));
        for text in ["caller", "notfound"] {
            let svc = layer.layer(failing(text));
            for _ in 0..50 {
                let e = svc
                    .clone()
                    .oneshot(TestRequest::new("Get"))
                    .await
                    .unwrap_err();
                assert_eq!(e.to_string(), text, "never short-circuited");
            }
        }
        assert_eq!(circuits.get("Get").state(), CircuitState::Closed);
        assert_eq!(circuits.get("Get").counts().errors, 0);
        // Failures of one operation open its circuit only.
        let svc = layer.layer(failing("down"));
        for _ in 0..20 {
            let _ = svc.clone().oneshot(TestRequest::new("Put")).await;
        }
        let e = svc
            .clone()
            .oneshot(TestRequest::new("Put"))
            .await
            .unwrap_err();
        assert!(e.downcast_ref::<BreakerError>().is_some(), "{e}");
        assert_eq!(circuits.get("Put").state(), CircuitState::Open);
        assert_eq!(circuits.get("Get").state(), CircuitState::Closed);
    }

    #[test]
    fn validate_accepts_the_edges_and_refuses_each_bad_field() {
        let ok = BreakerConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let edges = BreakerConfig {
            window: Duration::from_secs(1),
            bucket: Duration::from_secs(1),
            fast_window: Duration::from_secs(1),
            error_threshold_percent: 100.0,
            request_volume_threshold: 1,
            ..ok.clone()
        };
        assert_eq!(edges.validate(), Ok(()), "one bucket, fast window = window");
        assert_eq!(
            BreakerConfig {
                error_threshold_percent: 0.0,
                ..ok.clone()
            }
            .validate(),
            Ok(())
        );
        let bad = [
            BreakerConfig {
                bucket: Duration::ZERO,
                ..ok.clone()
            },
            BreakerConfig {
                window: Duration::from_millis(99),
                fast_window: Duration::from_millis(99),
                ..ok.clone()
            },
            BreakerConfig {
                fast_window: Duration::from_millis(10_001),
                ..ok.clone()
            },
            BreakerConfig {
                error_threshold_percent: 100.5,
                ..ok.clone()
            },
            BreakerConfig {
                error_threshold_percent: -1.0,
                ..ok.clone()
            },
            BreakerConfig {
                request_volume_threshold: 0,
                ..ok.clone()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_state_gauge_encodes_closed_open_half_open() {
        let b = Circuit::new(BreakerConfig::default());
        assert_eq!(b.state().as_gauge(), 0);
        for _ in 0..20 {
            call(&b, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state().as_gauge(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state().as_gauge(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_trial_decides_a_half_open_circuit() {
        // Permits taken while closed, still out when the circuit opens and
        // its trial starts: whatever becomes of them, the trial decides.
        let b = Circuit::new(BreakerConfig::default());
        let (dropped, uncounted, succeeded) = (
            b.try_acquire().unwrap(),
            b.try_acquire().unwrap(),
            b.try_acquire().unwrap(),
        );
        for _ in 0..20 {
            call(&b, Outcome::Failure).unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = b.try_acquire().unwrap();
        drop(dropped);
        assert_eq!(b.state(), CircuitState::HalfOpen, "not reopened");
        assert!(b.try_acquire().is_err(), "the trial is still out");
        b.record(uncounted, None, MS);
        assert!(b.try_acquire().is_err(), "no second trial handed out");
        b.record(succeeded, Some(Outcome::Success), MS);
        assert_eq!(
            b.state(),
            CircuitState::HalfOpen,
            "an old call closes nothing"
        );
        assert!(b.try_acquire().is_err());
        b.record(trial, Some(Outcome::Success), MS);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_trial_is_replaced_only_after_a_whole_sleep_window() {
        let b = Circuit::new(BreakerConfig::default());
        for _ in 0..20 {
            call(&b, Outcome::Failure).unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let silent = b.try_acquire().unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            b.try_acquire().unwrap_err(),
            BreakerError::Open {
                retry_after: Duration::from_secs(5)
            },
            "exactly one sleep window: still the first trial's turn"
        );
        tokio::time::advance(MS).await;
        let second = b.try_acquire().expect("a second trial");
        assert!(b.try_acquire().is_err(), "and only one");
        b.record(second, Some(Outcome::Success), MS);
        assert_eq!(b.state(), CircuitState::Closed);
        drop(silent);
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "the late trial changes nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn times_opened_counts_each_opening() {
        let b = Circuit::new(BreakerConfig::default());
        assert_eq!(b.times_opened(), 0);
        for round in 1..=2 {
            for _ in 0..20 {
                call(&b, Outcome::Failure).unwrap();
            }
            assert_eq!(b.times_opened(), round);
            tokio::time::advance(Duration::from_secs(5)).await;
            call(&b, Outcome::Success).unwrap();
            assert_eq!(b.state(), CircuitState::Closed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_registry_lists_its_circuits_by_operation() {
        let circuits = Circuits::new(BreakerConfig::default());
        assert!(circuits.all().is_empty());
        let put = circuits.get("Put");
        circuits.get("Get");
        for _ in 0..20 {
            call(&put, Outcome::Failure).unwrap();
        }
        let all = circuits.all();
        let names: Vec<_> = all.iter().map(|(op, _)| *op).collect();
        assert_eq!(names, ["Get", "Put"]);
        assert_eq!(all[0].1.state(), CircuitState::Closed);
        assert_eq!(all[1].1.state(), CircuitState::Open, "the same circuit");
        let layer = CircuitBreaker::layer(
            circuits,
            crate::testing::TextClassifier,
            Arc::new(crate::observe::NoObserver),
        );
        let debug = format!("{layer:?}");
        assert!(
            debug.starts_with("CircuitBreakerLayer") && debug.contains("\"Put\""),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn the_layer_is_ready_only_when_its_service_is() {
        use crate::observe::NoObserver;
        use crate::testing::{TextClassifier, Unready};
        use tower::{Layer, ServiceExt};
        let layer = CircuitBreaker::layer(
            Circuits::new(BreakerConfig::default()),
            TextClassifier,
            Arc::new(NoObserver),
        );
        let mut svc = layer.layer(Unready("busy"));
        let e = ServiceExt::<crate::testing::TestRequest>::ready(&mut svc)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.to_string(), "busy");
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const BUCKET_MS: u64 = 100;
        const SLEEP_MS: u64 = 500;

        #[derive(Clone, Copy, Debug)]
        enum Kind {
            Ok,
            Fail,
            Timeout,
            SlowOk,
            SlowFail,
            /// A caller mistake: counts nothing.
            Ignored,
        }

        #[derive(Clone, Copy, Debug)]
        enum Op {
            Call(Kind),
            /// Acquire, then give up without an outcome.
            Abandon,
            /// Move the clock by this many buckets.
            Advance(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => prop_oneof![
                    Just(Kind::Ok),
                    Just(Kind::Fail),
                    Just(Kind::Timeout),
                    Just(Kind::SlowOk),
                    Just(Kind::SlowFail),
                    Just(Kind::Ignored),
                ]
                .prop_map(Op::Call),
                1 => Just(Op::Abandon),
                2 => (1u64..30).prop_map(Op::Advance),
            ]
        }

        #[derive(Debug, PartialEq)]
        enum M {
            Closed,
            Open { until: u64 },
        }

        /// The reference: every executed call in its bucket, judged over
        /// the whole window and the fast window.
        struct Model {
            state: M,
            base: u64,
            buckets: BTreeMap<u64, (u64, u64)>,
            volume: u64,
            percent: f64,
        }

        impl Model {
            fn trips(&self, now: u64, span_buckets: u64) -> bool {
                let cur = (now - self.base) / BUCKET_MS;
                let (mut executed, mut unhealthy) = (0, 0);
                for (idx, (e, u)) in &self.buckets {
                    if *idx + span_buckets > cur {
                        executed += e;
                        unhealthy += u;
                    }
                }
                #[allow(clippy::cast_precision_loss)]
                let p = unhealthy as f64 * 100.0 / executed.max(1) as f64;
                executed >= self.volume && p >= self.percent
            }

            /// Returns whether the call was let through.
            fn call(&mut self, now: u64, kind: Option<Kind>) -> bool {
                let unhealthy = !matches!(kind, Some(Kind::Ok) | Some(Kind::Ignored));
                match self.state {
                    M::Open { until } if now < until => false,
                    M::Open { .. } => {
                        self.state = match kind {
                            None => M::Open {
                                until: now + SLEEP_MS,
                            },
                            Some(Kind::Ignored) => M::Open { until: now },
                            Some(_) if unhealthy => M::Open {
                                until: now + SLEEP_MS,
                            },
                            Some(_) => {
                                self.buckets.clear();
                                self.base = now;
                                M::Closed
                            }
                        };
                        true
                    }
                    M::Closed => {
                        let Some(kind) = kind.filter(|k| !matches!(k, Kind::Ignored)) else {
                            return true;
                        };
                        let _ = kind;
                        let b = self
                            .buckets
                            .entry((now - self.base) / BUCKET_MS)
                            .or_default();
                        b.0 += 1;
                        b.1 += u64::from(unhealthy);
                        if unhealthy && (self.trips(now, 100) || self.trips(now, 10)) {
                            self.state = M::Open {
                                until: now + SLEEP_MS,
                            };
                        }
                        true
                    }
                }
            }
        }

        fn outcome(kind: Kind) -> (Option<Outcome>, Duration) {
            match kind {
                Kind::Ok => (Some(Outcome::Success), MS),
                Kind::Fail => (Some(Outcome::Failure), MS),
                Kind::Timeout => (Some(Outcome::Timeout), MS),
                Kind::SlowOk => (Some(Outcome::Success), Duration::from_secs(2)),
                Kind::SlowFail => (Some(Outcome::Failure), Duration::from_secs(2)),
                Kind::Ignored => (None, MS),
            }
        }

        proptest! {
            /// State machine: the breaker agrees with the reference model
            /// after every step — which calls are let through, when it
            /// opens (volume and percentage over the 10 s and the 1 s
            /// window, each call counted once, caller mistakes not at all),
            /// the sleep window, and the one trial deciding.
            #[test]
            fn the_breaker_follows_the_model(
                volume in 1u64..12,
                percent in 10u32..=90,
                ops in proptest::collection::vec(op(), 1..300),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let b = Circuit::new(BreakerConfig {
                        request_volume_threshold: volume,
                        error_threshold_percent: f64::from(percent),
                        sleep_window: Duration::from_millis(SLEEP_MS),
                        ..BreakerConfig::default()
                    });
                    let mut m = Model {
                        state: M::Closed,
                        base: 0,
                        buckets: BTreeMap::new(),
                        volume,
                        percent: f64::from(percent),
                    };
                    let mut now = 0u64;
                    for op in ops {
                        match op {
                            Op::Advance(n) => {
                                now += n * BUCKET_MS;
                                tokio::time::advance(Duration::from_millis(n * BUCKET_MS)).await;
                            }
                            Op::Call(kind) => {
                                let permit = b.try_acquire();
                                let allowed = m.call(now, Some(kind));
                                prop_assert_eq!(permit.is_ok(), allowed, "at {} ms", now);
                                if let Ok(p) = permit {
                                    let (o, elapsed) = outcome(kind);
                                    b.record(p, o, elapsed);
                                }
                            }
                            Op::Abandon => {
                                let permit = b.try_acquire();
                                prop_assert_eq!(permit.is_ok(), m.call(now, None), "at {} ms", now);
                                drop(permit);
                            }
                        }
                        let expected = match m.state {
                            M::Closed => CircuitState::Closed,
                            M::Open { until } if now >= until => CircuitState::HalfOpen,
                            M::Open { .. } => CircuitState::Open,
                        };
                        prop_assert_eq!(b.state(), expected, "at {} ms after {:?}", now, op);
                    }
                    Ok(())
                })?;
            }
        }
    }
}
