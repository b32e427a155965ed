//! Adaptive concurrency and deadline-aware admission for servers.
//!
//! A static concurrency limit is either too low (it sheds load the
//! instance could serve) or too high (requests queue, latency climbs and
//! every caller times out). [`Gradient2`] finds the limit instead, the way
//! Netflix's `concurrency-limits` `Gradient2Limit` does: it compares a
//! long-term exponential average of response time with the latest sample;
//! while they agree the limit grows by a small allowance for queueing,
//! when the latest sample is slower (a queue is forming) the limit shrinks
//! in proportion, never by more than half a step, smoothed so outliers do
//! not whipsaw it.
//!
//! ```text
//! gradient  = clamp(long_rtt / short_rtt, 0.5, 1.0)
//! new_limit = limit · gradient + queue_size
//! limit     = limit · (1 − smoothing) + new_limit · smoothing   (within min..=max)
//! ```
//!
//! The limit does not grow while the instance is app-limited (fewer than
//! half the limit in flight), and when the long average is more than twice
//! the latest sample (latency back to normal after a long overload) the
//! long average is cut by 10 % per sample so the limit recovers in seconds
//! rather than minutes.
//!
//! [`Adaptive`] is the tower layer: a request beyond the limit is refused
//! at once, as is — **deadline-aware admission** — a request whose
//! remaining budget (from the ambient [`RequestContext`]) is below its
//! operation's recent median response time: working on it would most
//! likely only produce a timeout, after using a slot a request that could
//! succeed needed. The median is of the last [`AdaptiveConfig::p50_samples`]
//! responses younger than [`AdaptiveConfig::p50_window`], so an operation
//! that stopped being served (every call refused) forgets its old latency
//! instead of refusing forever. A request that ended at its deadline (or
//! whose caller left) counts with the time it ran, a lower bound; the
//! first request that *completes* afterwards supersedes those bounds (they
//! are dropped from the median): it proves the operation finishes in that
//! time again, so a dependency that recovered is admitted at once instead
//! of being refused on stale timeouts until they age out. How a refusal is answered (gRPC
//! `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`, HTTP 503 with
//! `Retry-After`) is the protocol's business: an [`AdmissionPolicy`] names
//! each request's operation and renders refusals.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use fleet_context::RequestContext;
use tokio::time::Instant;

/// Settings of the limit and of deadline-aware admission.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// The limit before any sample (Netflix's default: 20).
    pub initial_limit: usize,
    /// The limit never goes below this (default 20).
    pub min_limit: usize,
    /// The limit never goes above this (default 200).
    pub max_limit: usize,
    /// Share of a new estimate taken per sample, 0 < s ≤ 1 (default 0.2).
    pub smoothing: f64,
    /// How far the limit may grow past what is in flight while latency
    /// holds (default 4).
    pub queue_size: usize,
    /// Samples the long-term average spans (default 600; the first 10 are
    /// a plain average, as a warm-up).
    pub long_window: usize,
    /// Responses kept per operation for the median (default 64).
    pub p50_samples: usize,
    /// Fewest recent responses before the median is trusted (default 10).
    pub p50_min_samples: usize,
    /// Responses older than this do not count for the median (default
    /// 10 s).
    pub p50_window: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            smoothing: 0.2,
            queue_size: 4,
            long_window: 600,
            p50_samples: 64,
            p50_min_samples: 10,
            p50_window: Duration::from_secs(10),
        }
    }
}

/// Why a request was refused before it was worked on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// As many requests as the current limit are in flight.
    #[error("concurrency limit {limit} reached")]
    LimitReached {
        /// The limit in force.
        limit: usize,
    },
    /// The caller's remaining budget is below what the operation takes.
    #[error("remaining budget {remaining:?} is below the operation's recent median {p50:?}")]
    InsufficientBudget {
        /// What the caller has left.
        remaining: Duration,
        /// The operation's recent median response time.
        p50: Duration,
    },
}

impl Refused {
    /// How long a caller should wait before trying again: the median when
    /// the budget was short (a fresh request with a full budget can make
    /// it), else a short pause for the queue to drain.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::LimitReached { .. } => Duration::from_millis(100),
            Self::InsufficientBudget { p50, .. } => (*p50).max(Duration::from_millis(1)),
        }
    }

    /// A low-cardinality name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::LimitReached { .. } => "limit",
            Self::InsufficientBudget { .. } => "budget",
        }
    }
}

/// Exponential average with a warm-up (Netflix's `ExpAvgMeasurement`).
#[derive(Clone, Debug)]
struct ExpAvg {
    value: f64,
    sum: f64,
    count: usize,
    window: usize,
    warmup: usize,
}

impl ExpAvg {
    fn new(window: usize, warmup: usize) -> Self {
        Self {
            value: 0.0,
            sum: 0.0,
            count: 0,
            window: window.max(1),
            warmup,
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.sum += sample;
            self.value = self.sum / self.count as f64;
        } else {
            let factor = 2.0 / (self.window as f64 + 1.0);
            self.value = self.value * (1.0 - factor) + sample * factor;
        }
        self.value
    }
}

/// The Gradient2 limit algorithm (see the module docs).
#[derive(Clone, Debug)]
pub struct Gradient2 {
    estimated: f64,
    long_rtt: ExpAvg,
    min: f64,
    max: f64,
    smoothing: f64,
    queue_size: f64,
}

impl Gradient2 {
    /// A limit starting at `config.initial_limit`.
    pub fn new(config: &AdaptiveConfig) -> Self {
        let min = config.min_limit.max(1) as f64;
        let max = (config.max_limit as f64).max(min);
        Self {
            estimated: (config.initial_limit as f64).clamp(min, max),
            long_rtt: ExpAvg::new(config.long_window, 10),
            min,
            max,
            smoothing: config.smoothing.clamp(f64::MIN_POSITIVE, 1.0),
            queue_size: config.queue_size as f64,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.estimated as usize
    }

    /// Feeds one response time, measured while `inflight` requests
    /// (this one included) were being served; returns the new limit.
    pub fn sample(&mut self, rtt: Duration, inflight: usize) -> usize {
        // A zero RTT (a clock that did not move) says nothing about queueing.
        let short = rtt.as_secs_f64().max(1e-9);
        let long = self.long_rtt.add(short);
        // Latency is back to normal after a long overload: pull the
        // baseline down faster than the average would.
        if long / short > 2.0 {
            self.long_rtt.value *= 0.9;
        }
        // App-limited: no evidence that more concurrency would be served.
        if (inflight as f64) < self.estimated / 2.0 {
            return self.limit();
        }
        let gradient = (long / short).clamp(0.5, 1.0);
        let next = self.estimated * gradient + self.queue_size;
        let next = self.estimated * (1.0 - self.smoothing) + next * self.smoothing;
        self.estimated = next.clamp(self.min, self.max);
        self.limit()
    }
}

/// Recent response times of one operation.
#[derive(Debug)]
struct Recent {
    /// When each response ended, how long it ran, and whether it ended
    /// unfinished (a lower bound, superseded by the next completion).
    samples: VecDeque<(Instant, Duration, bool)>,
}

impl Recent {
    fn p50(&mut self, cfg: &AdaptiveConfig, now: Instant) -> Option<Duration> {
        while let Some((at, _, _)) = self.samples.front() {
            if now.saturating_duration_since(*at) > cfg.p50_window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        if self.samples.len() < cfg.p50_min_samples.max(1) {
            return None;
        }
        let mut v: Vec<Duration> = self.samples.iter().map(|(_, d, _)| *d).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }
}

#[derive(Debug)]
struct Shared {
    config: AdaptiveConfig,
    limit: Mutex<Gradient2>,
    /// Mirrors the limit for the admission fast path.
    current: AtomicUsize,
    inflight: AtomicUsize,
    /// Keyed by operation name; the policy keeps the set bounded.
    recent: Mutex<HashMap<Arc<str>, Recent>>,
}

/// One server's limit and admission state (cheap to clone; clones share).
#[derive(Clone, Debug)]
pub struct AdaptiveLimiter {
    shared: Arc<Shared>,
}

impl AdaptiveLimiter {
    /// A limiter with `config`.
    pub fn new(config: AdaptiveConfig) -> Self {
        let limit = Gradient2::new(&config);
        Self {
            shared: Arc::new(Shared {
                current: AtomicUsize::new(limit.limit()),
                limit: Mutex::new(limit),
                inflight: AtomicUsize::new(0),
                recent: Mutex::new(HashMap::new()),
                config,
            }),
        }
    }

    /// The concurrency limit in force.
    pub fn limit(&self) -> usize {
        self.shared.current.load(Ordering::Relaxed)
    }

    /// Requests admitted and not finished.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::Relaxed)
    }

    /// The recent median response time of `operation`, once enough recent
    /// responses were seen.
    pub fn p50(&self, operation: &str) -> Option<Duration> {
        let now = Instant::now();
        self.shared
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(operation)
            .and_then(|r| r.p50(&self.shared.config, now))
    }

    /// Admits a request for `operation` with `remaining` budget (`None`:
    /// no deadline), or says why not. Dropping the permit frees the slot
    /// and records the response time.
    ///
    /// # Errors
    /// [`Refused`] when the limit is reached or the budget is too short.
    pub fn try_acquire(
        &self,
        operation: Arc<str>,
        remaining: Option<Duration>,
    ) -> Result<Permit, Refused> {
        if let Some(remaining) = remaining
            && let Some(p50) = self.p50(&operation)
            && remaining < p50
        {
            return Err(Refused::InsufficientBudget { remaining, p50 });
        }
        let limit = self.limit();
        let admitted =
            self.shared
                .inflight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                });
        match admitted {
            Ok(before) => Ok(Permit {
                shared: self.shared.clone(),
                operation,
                started: Instant::now(),
                inflight: before + 1,
                completed: false,
            }),
            Err(_) => Err(Refused::LimitReached { limit }),
        }
    }
}

/// An admitted request's slot (see [`AdaptiveLimiter::try_acquire`]).
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    operation: Arc<str>,
    started: Instant,
    inflight: usize,
    /// The request finished (not dropped at its deadline or abandoned).
    completed: bool,
}

impl Permit {
    /// The request finished (the same as dropping the permit, said out
    /// loud).
    pub fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for Permit {
    /// Frees the slot and feeds the response time to the limit and the
    /// operation's median. A request dropped unfinished (its deadline
    /// passed, or its caller went away) counts with the time it ran: a
    /// lower bound, so while many requests time out the median errs low
    /// and admission errs on the side of working.
    fn drop(&mut self) {
        let rtt = self.started.elapsed();
        let now = Instant::now();
        let limit = self
            .shared
            .limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sample(rtt, self.inflight);
        self.shared.current.store(limit, Ordering::Relaxed);
        {
            let cap = self.shared.config.p50_samples.max(1);
            let mut recent = self
                .shared
                .recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let r = recent
                .entry(self.operation.clone())
                .or_insert_with(|| Recent {
                    samples: VecDeque::with_capacity(cap),
                });
            if self.completed {
                // A completion supersedes the lower bounds before it.
                r.samples.retain(|(_, _, unfinished)| !unfinished);
            }
            if r.samples.len() >= cap {
                r.samples.pop_front();
            }
            r.samples.push_back((now, rtt, !self.completed));
        }
        self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the layer needs from the protocol it guards.
pub trait AdmissionPolicy<Req, Resp>: Clone + Send + Sync + 'static {
    /// The request's operation, from a bounded set (it keys the medians).
    fn operation(&self, req: &Req) -> Arc<str>;
    /// The answer to a refused request.
    fn refuse(&self, operation: &str, refused: &Refused) -> Resp;
    /// Told the limit after each request (for a gauge); nothing by default.
    fn limit_changed(&self, _limit: usize) {}
}

/// Builds [`Adaptive`] services.
#[derive(Clone, Debug)]
pub struct AdaptiveLayer<P> {
    limiter: AdaptiveLimiter,
    policy: P,
}

impl<P> AdaptiveLayer<P> {
    /// Guards with `limiter`, answering refusals through `policy`.
    pub fn new(limiter: AdaptiveLimiter, policy: P) -> Self {
        Self { limiter, policy }
    }
}

impl<S, P: Clone> tower::Layer<S> for AdaptiveLayer<P> {
    type Service = Adaptive<S, P>;
    fn layer(&self, inner: S) -> Self::Service {
        Adaptive {
            inner,
            limiter: self.limiter.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// See the module docs. Admission is decided when the response future is
/// first polled, inside the request context the outer layer set up.
#[derive(Clone, Debug)]
pub struct Adaptive<S, P> {
    inner: S,
    limiter: AdaptiveLimiter,
    policy: P,
}

impl<S, P> Adaptive<S, P> {
    /// The limiter, for metrics and tests.
    pub fn limiter(&self) -> &AdaptiveLimiter {
        &self.limiter
    }
}

type BoxFut<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, P, Req> tower::Service<Req> for Adaptive<S, P>
where
    S: tower::Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    P: AdmissionPolicy<Req, S::Response>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFut<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let operation = self.policy.operation(&req);
        // The readied service serves this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let remaining = RequestContext::current().and_then(|cx| cx.remaining());
            match limiter.try_acquire(operation.clone(), remaining) {
                Ok(permit) => {
                    let result = inner.call(req).await;
                    permit.complete();
                    policy.limit_changed(limiter.limit());
                    result
                }
                Err(refused) => {
                    tracing::debug!(operation = %operation, reason = refused.reason(), %refused, "refused at admission");
                    Ok(policy.refuse(&operation, &refused))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steady_latency_under_load_grows_the_limit_to_its_max() {
        let cfg = AdaptiveConfig::default();
        let mut g = Gradient2::new(&cfg);
        let mut last = g.limit();
        for _ in 0..20 {
            let l = g.sample(ms(10), g.limit());
            assert!(l >= last, "steady latency never shrinks the limit");
            last = l;
        }
        assert!(last > cfg.initial_limit, "grew from {}", cfg.initial_limit);
        for _ in 0..2000 {
            g.sample(ms(10), g.limit());
        }
        assert_eq!(g.limit(), cfg.max_limit);
    }

    #[test]
    fn an_app_limited_server_keeps_its_limit() {
        let mut g = Gradient2::new(&AdaptiveConfig::default());
        for _ in 0..500 {
            g.sample(ms(10), 3);
        }
        assert_eq!(g.limit(), 20, "3 in flight of 20 is no evidence for more");
    }

    #[test]
    fn a_forming_queue_shrinks_the_limit_at_most_by_half_a_step() {
        let cfg = AdaptiveConfig {
            initial_limit: 100,
            ..AdaptiveConfig::default()
        };
        let mut g = Gradient2::new(&cfg);
        for _ in 0..50 {
            g.sample(ms(10), 100);
        }
        let before = g.limit();
        // Latency quadruples: the gradient is clamped at 0.5.
        let after = g.sample(ms(40), before);
        let floor = (before as f64 * 0.9) as usize;
        assert!(after < before && after >= floor, "{before} → {after}");
        for _ in 0..200 {
            g.sample(ms(40), g.limit());
        }
        // Long average catches up to 40 ms: the limit stops shrinking,
        // never below the minimum.
        assert!(g.limit() >= cfg.min_limit);
    }

    #[test]
    fn recovery_after_a_long_overload_pulls_the_baseline_down() {
        let cfg = AdaptiveConfig::default();
        let mut g = Gradient2::new(&cfg);
        for _ in 0..1000 {
            g.sample(ms(200), g.limit());
        }
        // Back to 10 ms: long/short = 20 > 2, the baseline drops 10 % per
        // sample, so the ratio is back under 2 within a few dozen samples.
        let mut n = 0;
        while g.long_rtt.value / 0.010 > 2.0 {
            g.sample(ms(10), g.limit());
            n += 1;
            assert!(n < 100, "baseline still {} after {n}", g.long_rtt.value);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_limit_requests_are_refused_at_once_and_slots_come_back() {
        let cfg = AdaptiveConfig {
            initial_limit: 2,
            min_limit: 2,
            max_limit: 2,
            ..AdaptiveConfig::default()
        };
        let l = AdaptiveLimiter::new(cfg);
        let op: Arc<str> = "Get".into();
        let a = l.try_acquire(op.clone(), None).unwrap();
        let b = l.try_acquire(op.clone(), None).unwrap();
        assert_eq!(
            l.try_acquire(op.clone(), None).unwrap_err(),
            Refused::LimitReached { limit: 2 }
        );
        drop(a); // slot back
        let c = l.try_acquire(op.clone(), None).unwrap();
        b.complete();
        c.complete();
        assert_eq!(l.inflight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_below_the_recent_median_is_refused_until_the_median_ages_out() {
        let l = AdaptiveLimiter::new(AdaptiveConfig::default());
        let op: Arc<str> = "Slow".into();
        for _ in 0..10 {
            let p = l.try_acquire(op.clone(), None).unwrap();
            tokio::time::advance(ms(200)).await;
            p.complete();
        }
        assert_eq!(l.p50("Slow"), Some(ms(200)));
        let refused = l.try_acquire(op.clone(), Some(ms(150))).unwrap_err();
        assert_eq!(
            refused,
            Refused::InsufficientBudget {
                remaining: ms(150),
                p50: ms(200)
            }
        );
        assert_eq!(refused.retry_after(), ms(200));
        // Enough budget, or another operation, or no deadline: admitted.
        l.try_acquire(op.clone(), Some(ms(250))).unwrap().complete();
        drop(l.try_acquire("Fast".into(), Some(ms(1))).unwrap());
        drop(l.try_acquire(op.clone(), None).unwrap());
        // Nothing served for a while: the old median no longer refuses.
        tokio::time::advance(ms(10_500)).await;
        assert_eq!(l.p50("Slow"), None);
        drop(l.try_acquire(op, Some(ms(150))).unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_completion_after_timeouts_ends_refusals_on_the_stale_median() {
        let l = AdaptiveLimiter::new(AdaptiveConfig::default());
        let op: Arc<str> = "Hung".into();
        // Twenty requests ran into their 500 ms deadline (dropped unfinished).
        for _ in 0..20 {
            let p = l.try_acquire(op.clone(), Some(ms(500))).unwrap();
            tokio::time::advance(ms(500)).await;
            drop(p);
        }
        assert_eq!(l.p50("Hung"), Some(ms(500)));
        assert!(l.try_acquire(op.clone(), Some(ms(300))).is_err());
        // The dependency recovered: one request with budget enough is
        // admitted and completes in 2 ms.
        let p = l.try_acquire(op.clone(), Some(ms(600))).unwrap();
        tokio::time::advance(ms(2)).await;
        p.complete();
        // The timeouts no longer speak for the operation: admitted at once,
        // not seconds later when they age out.
        assert_eq!(l.p50("Hung"), None, "one completion is too few to judge");
        drop(l.try_acquire(op, Some(ms(300))).unwrap());
    }

    #[derive(Clone)]
    struct Plain;
    impl AdmissionPolicy<Duration, Result<Duration, Refused>> for Plain {
        fn operation(&self, _: &Duration) -> Arc<str> {
            "Op".into()
        }
        fn refuse(&self, _: &str, refused: &Refused) -> Result<Duration, Refused> {
            Err(refused.clone())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_refuses_short_budgets_from_the_ambient_context() {
        let limiter = AdaptiveLimiter::new(AdaptiveConfig::default());
        let sleeper = tower::service_fn(|d: Duration| async move {
            tokio::time::sleep(d).await;
            Ok::<_, std::convert::Infallible>(Ok(d))
        });
        let mut svc = tower::Layer::layer(&AdaptiveLayer::new(limiter.clone(), Plain), sleeper);
        for _ in 0..10 {
            let r = svc.ready().await.unwrap().call(ms(100)).await.unwrap();
            assert_eq!(r, Ok(ms(100)));
        }
        let short = RequestContext::new().with_budget(ms(50));
        let r = short
            .scope(svc.ready().await.unwrap().call(ms(100)))
            .await
            .unwrap();
        assert_eq!(
            r,
            Err(Refused::InsufficientBudget {
                remaining: ms(50),
                p50: ms(100)
            })
        );
        let long = RequestContext::new().with_budget(ms(500));
        let r = long
            .scope(svc.ready().await.unwrap().call(ms(100)))
            .await
            .unwrap();
        assert_eq!(r, Ok(ms(100)));
        assert_eq!(limiter.inflight(), 0);
    }

    #[test]
    fn refusals_name_their_reason() {
        assert_eq!(Refused::LimitReached { limit: 3 }.reason(), "limit");
        let short = Refused::InsufficientBudget {
            remaining: ms(1),
            p50: ms(2),
        };
        assert_eq!(short.reason(), "budget");
    }

    #[test]
    fn the_long_average_is_plain_for_its_warm_up_then_exponential() {
        // window 3: each sample after the warm-up weighs 2/(3+1) = 1/2.
        let mut a = ExpAvg::new(3, 10);
        let mut sum = 0.0;
        for i in 1..=10 {
            sum += f64::from(i);
            assert!((a.add(f64::from(i)) - sum / f64::from(i)).abs() < 1e-12);
        }
        assert!((a.add(9.5) - 7.5).abs() < 1e-12, "(5.5 + 9.5) / 2");
        assert!((a.add(1.5) - 4.5).abs() < 1e-12, "(7.5 + 1.5) / 2");
    }

    #[test]
    fn the_baseline_is_pulled_down_only_beyond_twice_the_latest() {
        let mut g = Gradient2::new(&AdaptiveConfig::default());
        g.sample(Duration::from_secs(3), 20);
        // Warm-up average (3 s + 1 s) / 2 = 2 s: exactly twice 1 s, left be.
        g.sample(Duration::from_secs(1), 20);
        assert!(
            (g.long_rtt.value - 2.0).abs() < 1e-12,
            "{}",
            g.long_rtt.value
        );
        // (3 + 1 + 0.5) / 3 = 1.5 s, three times 0.5 s: cut by 10 %.
        g.sample(Duration::from_millis(500), 20);
        assert!(
            (g.long_rtt.value - 1.35).abs() < 1e-12,
            "{}",
            g.long_rtt.value
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_grows_once_half_of_it_is_in_flight() {
        // Smoothing 1: the limit becomes limit·gradient + queue_size at once.
        let cfg = AdaptiveConfig {
            initial_limit: 40,
            smoothing: 1.0,
            ..AdaptiveConfig::default()
        };
        let l = AdaptiveLimiter::new(cfg.clone());
        let op: Arc<str> = "Get".into();
        let held: Vec<Permit> = (0..19)
            .map(|_| l.try_acquire(op.clone(), None).unwrap())
            .collect();
        assert_eq!(l.inflight(), 19);
        let twentieth = l.try_acquire(op.clone(), None).unwrap();
        tokio::time::advance(ms(10)).await;
        twentieth.complete();
        assert_eq!(l.limit(), 44, "20 of 40 in flight: not app-limited");
        drop(held);
        assert_eq!(l.inflight(), 0);

        let mut g = Gradient2::new(&cfg);
        assert_eq!(g.sample(ms(10), 19), 40, "19 of 40: app-limited");
    }

    #[tokio::test(start_paused = true)]
    async fn the_median_is_of_recent_responses_up_to_the_window_edge() {
        let l = AdaptiveLimiter::new(AdaptiveConfig::default());
        let op: Arc<str> = "Get".into();
        // Ten responses of 100, 90, …, 10 ms, all ending at the same time.
        let mut started = Vec::new();
        for _ in 0..10 {
            started.push(l.try_acquire(op.clone(), None).unwrap());
            tokio::time::advance(ms(10)).await;
        }
        for p in started {
            p.complete();
        }
        // The upper median of ten: 60 ms.
        assert_eq!(l.p50("Get"), Some(ms(60)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            l.p50("Get"),
            Some(ms(60)),
            "exactly the window old still counts"
        );
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert_eq!(l.p50("Get"), None);
    }

    #[derive(Clone)]
    struct Ops;
    impl AdmissionPolicy<crate::testing::TestRequest, ()> for Ops {
        fn operation(&self, _: &crate::testing::TestRequest) -> Arc<str> {
            "Op".into()
        }
        fn refuse(&self, _: &str, _: &Refused) {}
    }

    #[tokio::test]
    async fn the_layer_is_ready_only_when_its_service_is() {
        let limiter = AdaptiveLimiter::new(AdaptiveConfig::default());
        let mut svc = tower::Layer::layer(
            &AdaptiveLayer::new(limiter, Ops),
            crate::testing::Unready("busy"),
        );
        let e = ServiceExt::<crate::testing::TestRequest>::ready(&mut svc)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.to_string(), "busy");
    }
}
