//! The balance layer: power of two choices over a peak-EWMA latency ×
//! pending-requests cost, skipping ejected instances and the instances a
//! call already tried.
//!
//! tower's `p2c::Balance` with `PeakEwma` is the model (Finagle's
//! algorithm), and the cost function is the same: `cost = ewma × (pending +
//! 1)`, where the estimate jumps up at once on a slow response and decays
//! towards zero *when read*, so an instance that was slow and stopped being
//! picked is tried again within seconds of recovering. tower's balancer
//! picks in `poll_ready` from a `Discover` stream, before it sees the
//! request, so it cannot do what a retry needs — "any instance but the ones
//! this call already tried" — nor skip instances [`Outliers`] ejected; this
//! one picks in `call`, from the candidates version routing left on the
//! request.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::classify::{Class, Classify};
use crate::eject::Outliers;
use crate::request::ResilientRequest;
use crate::{BoxError, BoxFuture};

/// Balancer settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BalanceConfig {
    /// Latency assumed for an instance never measured; default 5 ms.
    pub default_rtt: Duration,
    /// Time constant of the estimate's decay; default 1 s (a 300 ms peak
    /// falls below a 2 ms neighbour's in about 5 s).
    pub decay: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            default_rtt: Duration::from_millis(5),
            decay: Duration::from_secs(1),
        }
    }
}

/// No instance is left to send the call to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// Every candidate was already tried by this call (or there were none).
    #[error("no untried instance left")]
    NoInstance,
}

#[derive(Debug)]
struct Load {
    pending: usize,
    /// Peak EWMA of latency, nanoseconds, as of `stamp`.
    ewma_ns: f64,
    stamp: Instant,
}

impl Load {
    /// The estimate now: decayed towards zero since it was last updated.
    fn estimate(&self, now: Instant, decay: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
        self.ewma_ns * (-elapsed / decay.as_secs_f64().max(1e-3)).exp()
    }

    fn cost(&self, now: Instant, decay: Duration) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let pending = (self.pending + 1) as f64;
        self.estimate(now, decay) * pending
    }
}

/// Snapshot of one instance, for the stream and `fleet status`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EndpointState {
    /// Instance key.
    pub instance: String,
    /// Calls in flight.
    pub pending: usize,
    /// Latency estimate now, ms.
    pub ewma_ms: f64,
    /// Currently ejected.
    pub ejected: bool,
}

/// The load estimates of one dependency's instances (cheap to clone;
/// clones share them).
#[derive(Debug)]
pub struct Loads<K> {
    config: Arc<BalanceConfig>,
    map: Arc<Mutex<HashMap<K, Load>>>,
}

impl<K> Clone for Loads<K> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            map: self.map.clone(),
        }
    }
}

impl<K: Clone + Eq + Hash + std::fmt::Display> Loads<K> {
    /// No estimates yet.
    pub fn new(config: BalanceConfig) -> Self {
        Self {
            config: Arc::new(config),
            map: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Load>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Discovery's current list: forgets instances that left (unless calls
    /// to them are still in flight), keeps the others' estimates.
    pub fn sync(&self, known: &[K]) {
        self.lock()
            .retain(|k, l| known.contains(k) || l.pending > 0);
    }

    /// Picks one of `candidates` not in `exclude`, preferring instances
    /// `outliers` has not ejected (all are ejected: among those). Counts it
    /// pending until the returned guard is dropped or recorded.
    pub fn pick(
        &self,
        candidates: &[K],
        exclude: impl Fn(&K) -> bool,
        outliers: &Outliers<K>,
    ) -> Option<Picked<K>> {
        let now = Instant::now();
        let untried: Vec<&K> = candidates.iter().filter(|k| !exclude(k)).collect();
        let healthy: Vec<&K> = untried
            .iter()
            .copied()
            .filter(|k| !outliers.is_ejected(k))
            .collect();
        let pool = if healthy.is_empty() { untried } else { healthy };
        let mut map = self.lock();
        for k in &pool {
            if !map.contains_key(*k) {
                map.insert(
                    (*k).clone(),
                    Load {
                        pending: 0,
                        #[allow(clippy::cast_precision_loss)]
                        ewma_ns: self.config.default_rtt.as_nanos() as f64,
                        stamp: now,
                    },
                );
            }
        }
        let decay = self.config.decay;
        let cost = |k: &K| map.get(k).map_or(0.0, |l| l.cost(now, decay));
        let chosen = match pool.len() {
            0 => return None,
            1 => pool.first().copied()?.clone(),
            n => {
                let a = rand::random_range(0..n);
                let mut b = rand::random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ka, kb) = (pool.get(a)?, pool.get(b)?);
                if cost(ka) <= cost(kb) {
                    (*ka).clone()
                } else {
                    (*kb).clone()
                }
            }
        };
        if let Some(l) = map.get_mut(&chosen) {
            l.pending += 1;
        }
        Some(Picked {
            key: chosen,
            loads: self.clone(),
            started: now,
            done: false,
        })
    }

    /// Every known instance's state.
    pub fn states(&self, outliers: &Outliers<K>) -> Vec<EndpointState> {
        let now = Instant::now();
        let map = self.lock();
        let mut out: Vec<EndpointState> = map
            .iter()
            .map(|(k, l)| EndpointState {
                instance: k.to_string(),
                pending: l.pending,
                ewma_ms: l.estimate(now, self.config.decay) / 1e6,
                ejected: outliers.is_ejected(k),
            })
            .collect();
        out.sort_by(|a, b| a.instance.cmp(&b.instance));
        out
    }
}

/// An instance picked for one attempt: pending until dropped or
/// [`Picked::record`]ed.
#[derive(Debug)]
pub struct Picked<K: Clone + Eq + Hash + std::fmt::Display> {
    /// The chosen instance.
    pub key: K,
    loads: Loads<K>,
    started: Instant,
    done: bool,
}

impl<K: Clone + Eq + Hash + std::fmt::Display> Picked<K> {
    /// Reports the attempt's latency: `penalize` for a failure, which may
    /// raise the estimate but never lowers it (a fast failure must not
    /// attract traffic).
    pub fn record(mut self, penalize: bool) {
        self.done = true;
        let now = Instant::now();
        let decay = self.loads.config.decay;
        let mut map = self.loads.lock();
        let Some(l) = map.get_mut(&self.key) else {
            return;
        };
        l.pending = l.pending.saturating_sub(1);
        #[allow(clippy::cast_precision_loss)]
        let rtt = now.saturating_duration_since(self.started).as_nanos() as f64;
        let current = l.estimate(now, decay);
        let elapsed = now.saturating_duration_since(l.stamp).as_secs_f64();
        let w = (-elapsed / decay.as_secs_f64().max(1e-3)).exp();
        l.ewma_ns = if rtt > current {
            rtt
        } else if penalize {
            current
        } else {
            // The decayed estimate plus the new sample's share.
            current + rtt * (1.0 - w)
        };
        l.stamp = now;
    }
}

impl<K: Clone + Eq + Hash + std::fmt::Display> Drop for Picked<K> {
    fn drop(&mut self) {
        if !self.done
            && let Some(l) = self.loads.lock().get_mut(&self.key)
        {
            l.pending = l.pending.saturating_sub(1);
        }
    }
}

/// The service of [`BalanceLayer`].
#[derive(Clone)]
pub struct Balance<S, K, C> {
    inner: S,
    layer: BalanceLayer<K, C>,
}

/// Picks the instance of each attempt.
#[derive(Clone)]
pub struct BalanceLayer<K, C> {
    loads: Loads<K>,
    outliers: Outliers<K>,
    classifier: C,
}

impl<K, C> std::fmt::Debug for BalanceLayer<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceLayer").finish_non_exhaustive()
    }
}

impl Balance<(), (), ()> {
    /// A layer over `loads`, skipping what `outliers` ejected.
    pub fn layer<K, C: Classify>(
        loads: Loads<K>,
        outliers: Outliers<K>,
        classifier: C,
    ) -> BalanceLayer<K, C> {
        BalanceLayer {
            loads,
            outliers,
            classifier,
        }
    }
}

impl<S, K: Clone, C: Clone> tower::Layer<S> for BalanceLayer<K, C> {
    type Service = Balance<S, K, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Balance {
            inner,
            layer: self.clone(),
        }
    }
}

impl<S, K, C, Req> tower::Service<Req> for Balance<S, K, C>
where
    Req: ResilientRequest<Key = K> + Send + 'static,
    K: Clone + Eq + Hash + std::fmt::Display + Send + Sync + 'static,
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
        let attempts = req.attempts().clone();
        // The routed candidates while one is untried; then the fallbacks
        // (another version), for a retry.
        let pool = if req.candidates().iter().any(|k| !attempts.contains(k)) {
            req.candidates()
        } else {
            req.fallbacks()
        };
        let Some(picked) =
            self.layer
                .loads
                .pick(pool, |k| attempts.contains(k), &self.layer.outliers)
        else {
            return Box::pin(async { Err(BalanceError::NoInstance.into()) });
        };
        attempts.push(picked.key.clone());
        let classifier = self.layer.classifier.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let penalize = match &result {
                Ok(_) => false,
                Err(e) => !matches!(
                    classifier.classify(e),
                    Class::CallerError { .. } | Class::Downstream
                ),
            };
            picked.record(penalize);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eject::EjectConfig;

    fn keys() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn none(_: &String) -> bool {
        false
    }

    #[tokio::test(start_paused = true)]
    async fn prefers_the_faster_instance() {
        let loads = Loads::new(BalanceConfig::default());
        let out = Outliers::new(EjectConfig::default());
        let ks = keys();
        // Teach it: "a" is slow.
        for _ in 0..20 {
            let p = loads.pick(&ks[..1], none, &out).unwrap();
            tokio::time::advance(Duration::from_millis(50)).await;
            p.record(false);
        }
        let mut picked_a = 0;
        for _ in 0..300 {
            let p = loads.pick(&ks, none, &out).unwrap();
            if p.key == "a" {
                picked_a += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
            p.record(false);
        }
        assert!(picked_a < 20, "slow instance picked {picked_a}/300");
    }

    /// Sequential calls for `secs` seconds, `a` taking `a_ms` and `b` 2 ms;
    /// returns how many went to `a` in the last two seconds.
    async fn run(
        loads: &Loads<String>,
        out: &Outliers<String>,
        a_ms: u64,
        secs: u64,
    ) -> (u32, u32) {
        let ks = vec!["a".to_owned(), "b".to_owned()];
        let end = Instant::now() + Duration::from_secs(secs);
        let tail = end - Duration::from_secs(2);
        let (mut to_a, mut total) = (0, 0);
        while Instant::now() < end {
            let p = loads.pick(&ks, none, out).unwrap();
            let ms = if p.key == "a" { a_ms } else { 2 };
            if Instant::now() >= tail {
                total += 1;
                if p.key == "a" {
                    to_a += 1;
                }
            }
            tokio::time::advance(Duration::from_millis(ms)).await;
            p.record(false);
        }
        (to_a, total)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slowed_then_recovered_instance_gets_its_share_back_within_ten_seconds() {
        let loads = Loads::new(BalanceConfig::default());
        let out = Outliers::new(EjectConfig::default());
        let (slow_share, slow_total) = run(&loads, &out, 300, 10).await;
        assert!(
            slow_share * 10 < slow_total,
            "while slow: {slow_share}/{slow_total}"
        );
        let (to_a, total) = run(&loads, &out, 2, 10).await;
        println!(
            "slowed: {slow_share}/{slow_total} picks; recovered: {to_a}/{total} picks in seconds 8-10"
        );
        assert!(
            to_a * 10 >= total * 3,
            "recovered instance got {to_a}/{total} in seconds 8-10"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_picks_an_instance_the_call_already_tried() {
        let loads = Loads::new(BalanceConfig::default());
        let out = Outliers::new(EjectConfig::default());
        let ks = keys();
        for _ in 0..100 {
            let p = loads.pick(&ks, |k| k == "b", &out).unwrap();
            assert_ne!(p.key, "b");
        }
        let only = vec!["solo".to_owned()];
        assert!(
            loads.pick(&only, |k| k == "solo", &out).is_none(),
            "no other instance: no pick"
        );
        assert!(loads.pick(&[], none, &out).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn skips_ejected_instances_but_never_fails_for_them() {
        let loads = Loads::new(BalanceConfig::default());
        let out = Outliers::new(EjectConfig::default());
        let ks = keys();
        out.sync(&ks);
        for _ in 0..5 {
            out.record(&ks[2], false);
        }
        assert!(out.is_ejected(&ks[2]));
        for _ in 0..100 {
            assert_ne!(loads.pick(&ks, none, &out).unwrap().key, "c");
        }
        // Routed to the ejected one alone: still served.
        assert_eq!(loads.pick(&ks[2..], none, &out).unwrap().key, "c");
    }

    #[tokio::test(start_paused = true)]
    async fn pending_counts_follow_picks_and_gone_instances_are_forgotten() {
        let loads = Loads::new(BalanceConfig::default());
        let out = Outliers::new(EjectConfig::default());
        let ks = keys();
        let p = loads.pick(&ks[..1], none, &out).unwrap();
        assert_eq!(loads.states(&out)[0].pending, 1);
        drop(p);
        assert_eq!(loads.states(&out)[0].pending, 0);
        loads.pick(&ks[1..2], none, &out).unwrap().record(false);
        loads.sync(&ks[1..]);
        let left: Vec<String> = loads.states(&out).into_iter().map(|s| s.instance).collect();
        assert_eq!(left, vec!["b".to_owned()]);
    }

    /// Teaches `key` a latency of `ms` (from the default estimate, which
    /// the first sample slower than it replaces).
    async fn teach(loads: &Loads<String>, out: &Outliers<String>, key: &str, ms: u64) {
        let p = loads.pick(&[key.to_owned()], none, out).unwrap();
        tokio::time::advance(Duration::from_millis(ms)).await;
        p.record(false);
    }

    fn ewma_ms(loads: &Loads<String>, out: &Outliers<String>, key: &str) -> f64 {
        loads
            .states(out)
            .into_iter()
            .find(|s| s.instance == key)
            .unwrap()
            .ewma_ms
    }

    #[tokio::test(start_paused = true)]
    async fn the_estimate_decays_with_its_time_constant_and_blends_faster_samples() {
        let decay = Duration::from_secs(2);
        let loads = Loads::new(BalanceConfig {
            decay,
            ..BalanceConfig::default()
        });
        let out = Outliers::new(EjectConfig::default());
        teach(&loads, &out, "a", 100).await;
        assert!((ewma_ms(&loads, &out, "a") - 100.0).abs() < 1e-9);
        // One time constant later: e⁻¹ of the peak.
        tokio::time::advance(decay).await;
        let decayed = ewma_ms(&loads, &out, "a");
        assert!(
            (decayed - 100.0 * (-1.0f64).exp()).abs() < 1e-9,
            "{decayed}"
        );
        // A 10 ms sample 2.51 s after the peak, below the decayed
        // estimate: the estimate plus the sample's share (1 - w).
        tokio::time::advance(Duration::from_millis(500)).await;
        teach(&loads, &out, "a", 10).await;
        let w = (-2.51f64 / 2.0).exp();
        let expected = 100.0 * w + 10.0 * (1.0 - w);
        let got = ewma_ms(&loads, &out, "a");
        assert!((got - expected).abs() < 1e-6, "{got} ≠ {expected}");
        // A failure never lowers it.
        let p = loads.pick(&["a".to_owned()], none, &out).unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        p.record(true);
        let w = (-0.001f64 / 2.0).exp();
        let penalized = ewma_ms(&loads, &out, "a");
        assert!((penalized - expected * w).abs() < 1e-6, "{penalized}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cost_is_the_estimate_times_pending_plus_one() {
        // A long time constant keeps the estimates where they were put.
        let loads = Loads::new(BalanceConfig {
            default_rtt: Duration::from_millis(4),
            decay: Duration::from_secs(1_000),
        });
        let out = Outliers::new(EjectConfig::default());
        teach(&loads, &out, "a", 10).await;
        // b: 4 ms, two calls in flight, costs 12; a: 10 ms idle, costs 10.
        let busy: Vec<_> = (0..2)
            .map(|_| loads.pick(&["b".to_owned()], none, &out).unwrap())
            .collect();
        let ab = vec!["a".to_owned(), "b".to_owned()];
        for _ in 0..20 {
            assert_eq!(loads.pick(&ab, none, &out).unwrap().key, "a");
        }
        drop(busy);
        // Idle, b costs 4.
        for _ in 0..20 {
            assert_eq!(loads.pick(&ab, none, &out).unwrap().key, "b");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_that_left_is_kept_while_calls_to_it_are_in_flight() {
        let loads = Loads::new(BalanceConfig::default());
        let out = Outliers::new(EjectConfig::default());
        let ks = keys();
        let in_flight = loads.pick(&ks[2..], none, &out).unwrap();
        loads.pick(&ks[1..2], none, &out).unwrap().record(false);
        loads.sync(&ks[..1]);
        let names = |loads: &Loads<String>| -> Vec<String> {
            loads.states(&out).into_iter().map(|s| s.instance).collect()
        };
        assert_eq!(names(&loads), ["c"], "b left; c still has a call out");
        in_flight.record(false);
        loads.sync(&ks[..1]);
        assert!(names(&loads).is_empty());
        let layer = Balance::layer(loads, out.clone(), crate::testing::TextClassifier);
        assert!(format!("{layer:?}").starts_with("BalanceLayer"));
    }

    /// A dependency whose every call takes 10 ms and fails with `text`.
    fn slow_failing(
        text: &'static str,
    ) -> impl tower::Service<
        crate::testing::TestRequest,
        Response = (),
        Error = BoxError,
        Future = impl Future<Output = Result<(), BoxError>> + Send,
    > + Send
    + 'static {
        tower::service_fn(move |_req: crate::testing::TestRequest| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<(), BoxError>(text.into())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_tries_each_candidate_then_the_fallbacks_and_penalizes_failures_only() {
        use crate::testing::{TestRequest, TextClassifier};
        use tower::{Layer, ServiceExt};
        let loads = Loads::new(BalanceConfig::default());
        let out = Outliers::new(EjectConfig::default());
        let layer = Balance::layer(loads.clone(), out.clone(), TextClassifier);
        let mut req = TestRequest::new("Get");
        req.fallbacks = vec!["z".into()];
        let mut sent = Vec::new();
        for _ in 0..3 {
            let e = layer
                .layer(slow_failing("notfound"))
                .oneshot(req.clone())
                .await
                .unwrap_err();
            assert_eq!(e.to_string(), "notfound");
            sent.push(req.attempts.last().unwrap());
        }
        sent[..2].sort();
        assert_eq!(
            sent,
            ["a", "b", "z"],
            "each candidate once, then the fallback"
        );
        let e = layer
            .layer(slow_failing("notfound"))
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(e.downcast_ref(), Some(&BalanceError::NoInstance));

        // A 10 ms answer 1.01 s after a 100 ms peak: a caller mistake (a
        // real answer) blends in; an instance failure never lowers it.
        for (text, penalized) in [("notfound", false), ("down", true)] {
            teach(&loads, &out, "p", 100).await;
            tokio::time::advance(Duration::from_secs(1)).await;
            let mut req = TestRequest::new("Get");
            req.candidates = vec!["p".into()];
            let _ = layer.layer(slow_failing(text)).oneshot(req).await;
            let w = (-1.01f64).exp();
            let expected = if penalized {
                100.0 * w
            } else {
                100.0 * w + 10.0 * (1.0 - w)
            };
            let got = ewma_ms(&loads, &out, "p");
            assert!((got - expected).abs() < 1e-6, "{text}: {got} ≠ {expected}");
            // Let the estimate fall back below the next 100 ms peak.
            tokio::time::advance(Duration::from_secs(60)).await;
        }
    }

    #[tokio::test]
    async fn the_layer_is_ready_only_when_its_service_is() {
        use crate::testing::{TestRequest, TextClassifier, Unready};
        use tower::{Layer, ServiceExt};
        let layer = Balance::layer(
            Loads::<String>::new(BalanceConfig::default()),
            Outliers::new(EjectConfig::default()),
            TextClassifier,
        );
        let mut svc = layer.layer(Unready("busy"));
        let e = ServiceExt::<TestRequest>::ready(&mut svc)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.to_string(), "busy");
    }
}
