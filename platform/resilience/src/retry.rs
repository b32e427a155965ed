//! The retry layer: tower's own `Retry` with [`RetryPolicy`].
//!
//! The budget is tower's `TpsBudget` (Finagle's design): every original
//! request deposits, every retry withdraws, so retries stay a fixed share of
//! requests whatever fails — no retry storms. The policy adds the rules,
//! asking the classifier what a failure means: only idempotent calls, only
//! failures another instance might not have (gateway failures of the
//! instance itself — never an error the instance passed up from deeper
//! down, which every instance would meet again), at most `max_retries`,
//! never to an instance this call already tried (and not at all when no
//! other instance is left), after the server's `grpc-retry-pushback-ms`
//! (a negative one means "don't") or a full-jitter backoff, only while the
//! deadline can still afford it. A server's admission refusal
//! ([`Class::Overloaded`]) is retried only when it carries a non-negative
//! pushback, and no sooner (gRPC A6). The budget is withdrawn from last, so a
//! token is spent only on a retry that is actually sent.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::BoxError;
use crate::classify::{Class, Classify, Pushback};
use crate::observe::Observer;
use crate::request::ResilientRequest;

/// Retry settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Retries per call at most; default 1.
    pub max_retries: u32,
    /// Share of requests that may be retries, over `budget_window`;
    /// default 0.1 (attempts/requests ≤ 1.1).
    pub budget_percent: f32,
    /// Window the budget is computed over; default 10 s (1..=60 s).
    pub budget_window: Duration,
    /// Retries per second always allowed on top of the percentage;
    /// default 0, so the 1.1 ceiling holds at every rate.
    pub min_per_sec: u32,
    /// Base of the exponential backoff; default 5 ms.
    pub backoff_base: Duration,
    /// Longest backoff; default 50 ms.
    pub backoff_max: Duration,
    /// Don't retry unless at least this much of the deadline remains;
    /// default 10 ms.
    pub min_remaining: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 1,
            budget_percent: 0.1,
            budget_window: Duration::from_secs(10),
            min_per_sec: 0,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            min_remaining: Duration::from_millis(10),
        }
    }
}

impl RetryConfig {
    /// Checks the settings (tower's budget asserts on bad ones).
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.budget_window) {
            return Err("budget_window must be within 1 s..=60 s".into());
        }
        if !(0.0..=1.0).contains(&self.budget_percent) {
            return Err("budget_percent must be within 0..=1".into());
        }
        if self.max_retries > 5 {
            return Err("max_retries above 5 only amplifies load".into());
        }
        if self.min_per_sec > 1_000 {
            return Err("min_per_sec must be at most 1000".into());
        }
        Ok(())
    }
}

/// Decides retries for one dependency (clones share the budget).
#[derive(Clone)]
pub struct RetryPolicy<C> {
    budget: Arc<TpsBudget>,
    config: Arc<RetryConfig>,
    classifier: C,
    observer: Arc<dyn Observer>,
}

impl<C> std::fmt::Debug for RetryPolicy<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// tower's retry service with our policy.
pub type Retry<S, C> = tower::retry::Retry<RetryPolicy<C>, S>;

impl<C: Classify> RetryPolicy<C> {
    /// A policy per `config` (call [`RetryConfig::validate`] first; bad
    /// values are clamped here rather than panicking), judging failures with
    /// `classifier` and reporting retries to `observer`.
    pub fn new(config: RetryConfig, classifier: C, observer: Arc<dyn Observer>) -> Self {
        let window = config
            .budget_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let percent = config.budget_percent.clamp(0.0, 1.0);
        let budget = TpsBudget::new(window, config.min_per_sec.min(1_000), percent);
        Self {
            budget: Arc::new(budget),
            config: Arc::new(config),
            classifier,
            observer,
        }
    }

    /// tower's `RetryLayer` with this policy: the layer of a stack.
    pub fn layer(
        config: RetryConfig,
        classifier: C,
        observer: Arc<dyn Observer>,
    ) -> tower::retry::RetryLayer<Self> {
        tower::retry::RetryLayer::new(Self::new(config, classifier, observer))
    }

    /// The settings.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Full-jitter backoff before retry number `retry`: uniform in
    /// `0..min(max, base·2^(retry-1))`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let cap = exp.min(self.config.backoff_max);
        if cap.is_zero() {
            return cap;
        }
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(0..nanos))
    }
}

impl<C, Req, Res> tower::retry::Policy<Req, Res, BoxError> for RetryPolicy<C>
where
    C: Classify,
    Req: ResilientRequest + Clone,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Self::Future> {
        let Err(error) = result else {
            return None;
        };
        if !req.idempotent() {
            return None;
        }
        let class = self.classifier.classify(error);
        let pushback = self.classifier.pushback(error);
        // An admission refusal is retried only when the server said after
        // how long (gRPC A6: absent or negative pushback, no retry).
        let overload_retry = class == Class::Overloaded && matches!(pushback, Pushback::After(_));
        if !class.retryable() && !overload_retry {
            return None;
        }
        let tried = u32::try_from(req.attempts().count()).unwrap_or(u32::MAX);
        if tried > self.config.max_retries {
            return None;
        }
        // Never the instance that just failed (nor any other already
        // tried, of its version or a fallback); no retry at all when none
        // is left.
        let attempts = req.attempts();
        if !req
            .candidates()
            .iter()
            .chain(req.fallbacks())
            .any(|k| !attempts.contains(k))
        {
            return None;
        }
        let wait = match pushback {
            Pushback::Stop => return None,
            Pushback::After(d) => d,
            Pushback::None => self.backoff(tried),
        };
        let remaining = req.deadline().saturating_duration_since(Instant::now());
        if remaining < wait.saturating_add(self.config.min_remaining) {
            return None;
        }
        // Last, so a withdrawn token always pays for a retry that is sent.
        if !self.budget.withdraw() {
            return None;
        }
        self.observer.retried(req.operation());
        tracing::debug!(operation = req.operation(), failed_instance = ?attempts.last().map(|k| k.to_string()), wait_ms = wait.as_millis() as u64, "retrying on another instance");
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // Called once before the first attempt (no attempts yet): the one
        // deposit of an original request.
        if req.attempts().count() == 0 {
            self.budget.deposit();
        }
        req.idempotent().then(|| req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::NoObserver;
    use crate::testing::TestRequest;
    use tower::retry::Policy;

    /// Every error is a gateway failure; `pushback` is the server's advice.
    #[derive(Clone)]
    struct Gateway(Pushback);

    impl Classify for Gateway {
        fn classify(&self, e: &BoxError) -> Class {
            if e.to_string() == "deeper" {
                Class::Downstream
            } else if e.to_string() == "overloaded" {
                Class::Overloaded
            } else {
                Class::InstanceFailure { gateway: true }
            }
        }
        fn label(&self, _: &BoxError) -> &'static str {
            "UNAVAILABLE"
        }
        fn pushback(&self, _: &BoxError) -> Pushback {
            self.0
        }
    }

    fn policy(config: RetryConfig, pushback: Pushback) -> RetryPolicy<Gateway> {
        RetryPolicy::new(config, Gateway(pushback), Arc::new(NoObserver))
    }

    /// Runs the policy the way tower's `Retry` does for a call whose first
    /// attempt went to `a` and failed with `error`.
    fn after_failure(
        p: &mut RetryPolicy<Gateway>,
        req: &TestRequest,
        error: &str,
    ) -> Option<tokio::time::Sleep> {
        let mut saved = Policy::<TestRequest, (), BoxError>::clone_request(p, req)?;
        req.attempts.push("a".to_owned());
        let mut result: Result<(), BoxError> = Err(error.into());
        p.retry(&mut saved, &mut result)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_ten_percent_under_total_failure() {
        let mut p = policy(RetryConfig::default(), Pushback::None);
        let (mut requests, mut attempts) = (0u32, 0u32);
        for _ in 0..3000 {
            // 100 req/s, every attempt fails.
            requests += 1;
            attempts += 1;
            if after_failure(&mut p, &TestRequest::new("Get"), "down").is_some() {
                attempts += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let ratio = f64::from(attempts) / f64::from(requests);
        assert!(ratio <= 1.1, "attempts/requests = {ratio}");
        assert!(ratio > 1.05, "the budget does allow retries: {ratio}");
    }

    fn generous() -> RetryConfig {
        RetryConfig {
            min_per_sec: 1000,
            ..RetryConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_idempotent_gateway_failures_with_another_instance_left_are_retried() {
        let mut p = policy(generous(), Pushback::None);
        assert!(after_failure(&mut p, &TestRequest::new("Get"), "down").is_some());
        let mut write = TestRequest::new("Put");
        write.idempotent = false;
        assert!(
            after_failure(&mut p, &write, "down").is_none(),
            "not idempotent"
        );
        assert!(
            after_failure(&mut p, &TestRequest::new("Get"), "deeper").is_none(),
            "a deeper failure is not retried here"
        );
        let mut alone = TestRequest::new("Get");
        alone.candidates = vec!["a".into()];
        assert!(
            after_failure(&mut p, &alone, "down").is_none(),
            "never back to the instance that just failed"
        );
        // Alone in its version, with another version to fall back to.
        let mut fallback = TestRequest::new("Get");
        fallback.candidates = vec!["a".into()];
        fallback.fallbacks = vec!["z".into()];
        assert!(
            after_failure(&mut p, &fallback, "down").is_some(),
            "a retry may go to another version"
        );
        let mut short = TestRequest::new("Get");
        short.deadline = Instant::now() + Duration::from_millis(5);
        assert!(
            after_failure(&mut p, &short, "down").is_none(),
            "no time left"
        );
        // A second retry is over the default limit of one.
        let req = TestRequest::new("Get");
        let mut saved = Policy::<TestRequest, (), BoxError>::clone_request(&mut p, &req).unwrap();
        req.attempts.push("a".into());
        req.attempts.push("b".into());
        saved.candidates.push("c".into());
        let mut result: Result<(), BoxError> = Err("down".into());
        assert!(
            p.retry(&mut saved, &mut result).is_none(),
            "one retry at most"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refused_retries_cost_no_budget_tokens() {
        // 20 requests at 10 % earn about two retries; had each refused
        // retry (no time left) withdrawn first, they would be spent.
        let mut p = policy(RetryConfig::default(), Pushback::None);
        for _ in 0..20 {
            let mut no_time = TestRequest::new("Get");
            no_time.deadline = Instant::now() + Duration::from_millis(5);
            assert!(after_failure(&mut p, &no_time, "down").is_none());
        }
        assert!(after_failure(&mut p, &TestRequest::new("Get"), "down").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn server_pushback_sets_the_wait_or_stops_the_retry() {
        let mut p = policy(generous(), Pushback::After(Duration::from_millis(300)));
        let sleep = after_failure(&mut p, &TestRequest::new("Get"), "down").unwrap();
        assert_eq!(
            sleep.deadline() - Instant::now(),
            Duration::from_millis(300)
        );
        let mut short = TestRequest::new("Get");
        short.deadline = Instant::now() + Duration::from_millis(200);
        assert!(
            after_failure(&mut p, &short, "down").is_none(),
            "a pushback beyond the deadline is no retry"
        );
        let mut stop = policy(generous(), Pushback::Stop);
        assert!(after_failure(&mut stop, &TestRequest::new("Get"), "down").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_admission_refusal_is_retried_only_after_the_servers_pushback() {
        // No pushback (or a negative one): the server did not invite a
        // retry (gRPC A6), whatever the budget allows.
        for pushback in [Pushback::None, Pushback::Stop] {
            let mut p = policy(generous(), pushback);
            assert!(
                after_failure(&mut p, &TestRequest::new("Get"), "overloaded").is_none(),
                "{pushback:?}"
            );
        }
        // A pushback: retried on another instance, no sooner than asked.
        let mut p = policy(generous(), Pushback::After(Duration::from_millis(120)));
        let sleep = after_failure(&mut p, &TestRequest::new("Get"), "overloaded").unwrap();
        assert_eq!(
            sleep.deadline() - Instant::now(),
            Duration::from_millis(120)
        );
        // …and only while the deadline can afford the wait.
        let mut short = TestRequest::new("Get");
        short.deadline = Instant::now() + Duration::from_millis(100);
        assert!(after_failure(&mut p, &short, "overloaded").is_none());
        // Never a write.
        let mut write = TestRequest::new("Put");
        write.idempotent = false;
        assert!(after_failure(&mut p, &write, "overloaded").is_none());
    }

    #[test]
    fn backoff_is_bounded_and_bad_config_is_refused() {
        let p = policy(RetryConfig::default(), Pushback::None);
        for r in 1..5 {
            assert!(p.backoff(r) <= Duration::from_millis(50));
        }
        assert!(
            RetryConfig {
                budget_window: Duration::ZERO,
                ..RetryConfig::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn validate_accepts_the_edges_and_refuses_each_bad_field() {
        let ok = RetryConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let edges = [
            RetryConfig {
                budget_window: Duration::from_secs(1),
                budget_percent: 0.0,
                max_retries: 5,
                min_per_sec: 1_000,
                ..ok.clone()
            },
            RetryConfig {
                budget_window: Duration::from_secs(60),
                budget_percent: 1.0,
                max_retries: 0,
                ..ok.clone()
            },
        ];
        for c in edges {
            assert_eq!(c.validate(), Ok(()), "{c:?}");
        }
        let bad = [
            RetryConfig {
                budget_window: Duration::from_millis(999),
                ..ok.clone()
            },
            RetryConfig {
                budget_window: Duration::from_secs(61),
                ..ok.clone()
            },
            RetryConfig {
                budget_percent: 1.01,
                ..ok.clone()
            },
            RetryConfig {
                budget_percent: -0.01,
                ..ok.clone()
            },
            RetryConfig {
                max_retries: 6,
                ..ok.clone()
            },
            RetryConfig {
                min_per_sec: 1_001,
                ..ok.clone()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn the_policy_keeps_its_settings() {
        let config = RetryConfig {
            max_retries: 3,
            backoff_base: Duration::from_millis(7),
            ..RetryConfig::default()
        };
        let p = policy(config.clone(), Pushback::None);
        assert_eq!(p.config(), &config);
        let debug = format!("{p:?}");
        assert!(
            debug.starts_with("RetryPolicy") && debug.contains("max_retries: 3"),
            "{debug}"
        );
    }

    #[test]
    fn backoff_doubles_per_retry_up_to_the_cap_with_full_jitter() {
        // Uniform in 0..min(50 ms, 5 ms·2^(retry-1)): over 400 draws each
        // range is filled past its lower half and never left.
        let p = policy(RetryConfig::default(), Pushback::None);
        for (retry, cap_ms) in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 50), (30, 50)] {
            let cap = Duration::from_millis(cap_ms);
            let draws: Vec<Duration> = (0..400).map(|_| p.backoff(retry)).collect();
            assert!(draws.iter().all(|d| *d < cap), "retry {retry}: {draws:?}");
            assert!(
                draws.iter().any(|d| *d > cap / 2),
                "retry {retry}: {draws:?}"
            );
        }
        let none = policy(
            RetryConfig {
                backoff_base: Duration::ZERO,
                ..RetryConfig::default()
            },
            Pushback::None,
        );
        assert_eq!(none.backoff(3), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_backoff_is_the_wait_without_pushback() {
        let mut p = policy(generous(), Pushback::None);
        let waits: Vec<Duration> = (0..200)
            .map(|_| {
                let sleep = after_failure(&mut p, &TestRequest::new("Get"), "down").unwrap();
                sleep.deadline() - Instant::now()
            })
            .collect();
        assert!(
            waits.iter().all(|w| *w < Duration::from_millis(5)),
            "{waits:?}"
        );
        assert!(waits.iter().any(|w| !w.is_zero()), "{waits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pushback_does_not_make_a_deeper_failure_retryable() {
        let mut p = policy(generous(), Pushback::After(Duration::from_millis(20)));
        assert!(after_failure(&mut p, &TestRequest::new("Get"), "deeper").is_none());
        assert!(after_failure(&mut p, &TestRequest::new("Get"), "down").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_needs_the_wait_plus_the_minimum_left() {
        // 300 ms pushback + 10 ms minimum: exactly 310 ms left is enough.
        let mut p = policy(generous(), Pushback::After(Duration::from_millis(300)));
        let mut just = TestRequest::new("Get");
        just.deadline = Instant::now() + Duration::from_millis(310);
        assert!(after_failure(&mut p, &just, "down").is_some());
        let mut short = TestRequest::new("Get");
        short.deadline = Instant::now() + Duration::from_millis(309);
        assert!(after_failure(&mut p, &short, "down").is_none());
    }
}
