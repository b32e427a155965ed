//! Outlier ejection (Envoy's outlier detection, consecutive gateway
//! failures): [`Outliers`] holds each instance's record; the [`Eject`]
//! layer, just above the endpoint, feeds it; the balancer skips ejected
//! instances.
//!
//! Semantics, as Envoy's:
//!
//! * `consecutive_failures` gateway failures in a row (connection failures,
//!   UNAVAILABLE from the instance itself, timeouts — as the classifier
//!   says) eject an instance; any real answer resets the count. Errors an
//!   instance passes up from deeper down are real answers: a healthy
//!   middle instance is never ejected for a dead store.
//! * An ejection lasts `base_ejection × n`, n the number of times the
//!   instance has been ejected (capped at `max_ejection`); n goes down by
//!   one for every `interval` the instance then stays un-ejected.
//! * At most `max_ejection_percent` of the known instances are ejected at
//!   once (but at least one may be, as Envoy allows), and never the last
//!   one left: an ejection over the cap is skipped.
//! * Discovery's list is the set of known instances ([`Outliers::sync`]):
//!   instances that left are forgotten, the others keep their record.
//!
//! Written here because tower has no outlier detection.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::classify::{Class, Classify};
use crate::request::ResilientRequest;
use crate::{BoxError, BoxFuture};

/// Outlier detection settings (per dependency).
#[derive(Clone, Debug, PartialEq)]
pub struct EjectConfig {
    /// Consecutive gateway failures that eject an instance; default 5.
    pub consecutive_failures: u32,
    /// Ejection length per time ejected; default 5 s.
    pub base_ejection: Duration,
    /// Longest ejection; default 60 s.
    pub max_ejection: Duration,
    /// Most instances ejected at once, in percent of the known ones (at
    /// least one may be, never the last); default 50.
    pub max_ejection_percent: u32,
    /// How long an instance must stay un-ejected to have its ejection
    /// count lowered by one; default 10 s.
    pub interval: Duration,
}

impl Default for EjectConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            max_ejection_percent: 50,
            interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Default)]
struct Host {
    consecutive: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

impl Host {
    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }
}

#[derive(Debug)]
struct Inner<K> {
    hosts: HashMap<K, Host>,
    known: usize,
}

/// The ejection records of one dependency's instances (cheap to clone;
/// clones share them).
#[derive(Debug)]
pub struct Outliers<K> {
    config: Arc<EjectConfig>,
    inner: Arc<Mutex<Inner<K>>>,
}

impl<K> Clone for Outliers<K> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<K: Clone + Eq + Hash + std::fmt::Display> Outliers<K> {
    /// No records yet.
    pub fn new(config: EjectConfig) -> Self {
        Self {
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Inner {
                hosts: HashMap::new(),
                known: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Discovery's current list: forgets instances that left, keeps the
    /// records of the others.
    pub fn sync(&self, known: &[K]) {
        let mut inner = self.lock();
        inner.hosts.retain(|k, _| known.contains(k));
        inner.known = known.len();
    }

    /// Whether `key` is ejected now.
    pub fn is_ejected(&self, key: &K) -> bool {
        let now = Instant::now();
        self.lock().hosts.get(key).is_some_and(|h| h.ejected(now))
    }

    /// How many instances are ejected now.
    pub fn ejected_count(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .hosts
            .values()
            .filter(|h| h.ejected(now))
            .count()
    }

    /// Records an attempt's outcome on `key`: `healthy` false for a gateway
    /// failure.
    pub fn record(&self, key: &K, healthy: bool) {
        let now = Instant::now();
        let cfg = &*self.config;
        let mut inner = self.lock();
        if !inner.hosts.contains_key(key) {
            inner.hosts.insert(key.clone(), Host::default());
        }
        let known = inner.known.max(inner.hosts.len());
        let ejected_now = inner.hosts.values().filter(|h| h.ejected(now)).count();
        let Some(host) = inner.hosts.get_mut(key) else {
            return;
        };
        if healthy {
            host.consecutive = 0;
            return;
        }
        host.consecutive = host.consecutive.saturating_add(1);
        if host.consecutive < cfg.consecutive_failures || host.ejected(now) {
            return;
        }
        let cap = (known * cfg.max_ejection_percent as usize / 100).max(1);
        if ejected_now + 1 > cap || ejected_now + 1 >= known {
            tracing::debug!(instance = %key, ejected_now, known, "ejection skipped: at the cap");
            return;
        }
        // The count goes down by one per interval spent un-ejected since the
        // last ejection ended.
        if let Some(end) = host.ejected_until {
            let quiet = now.saturating_duration_since(end).as_nanos();
            let steps = quiet / cfg.interval.as_nanos().max(1);
            host.ejections = host
                .ejections
                .saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX));
        }
        host.ejections = host.ejections.saturating_add(1);
        let length = cfg
            .base_ejection
            .saturating_mul(host.ejections)
            .min(cfg.max_ejection.max(cfg.base_ejection));
        host.ejected_until = Some(now + length);
        host.consecutive = 0;
        tracing::warn!(instance = %key, ejection_ms = length.as_millis() as u64, times = host.ejections, "instance ejected");
    }
}

/// The service of [`EjectLayer`].
#[derive(Clone)]
pub struct Eject<S, K, C> {
    inner: S,
    layer: EjectLayer<K, C>,
}

/// Feeds each attempt's outcome into [`Outliers`].
#[derive(Clone)]
pub struct EjectLayer<K, C> {
    outliers: Outliers<K>,
    classifier: C,
}

impl<K, C> std::fmt::Debug for EjectLayer<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EjectLayer").finish_non_exhaustive()
    }
}

impl Eject<(), (), ()> {
    /// A layer recording into `outliers`, judging with `classifier`.
    pub fn layer<K, C: Classify>(outliers: Outliers<K>, classifier: C) -> EjectLayer<K, C> {
        EjectLayer {
            outliers,
            classifier,
        }
    }
}

impl<S, K: Clone, C: Clone> tower::Layer<S> for EjectLayer<K, C> {
    type Service = Eject<S, K, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Eject {
            inner,
            layer: self.clone(),
        }
    }
}

impl<S, K, C, Req> tower::Service<Req> for Eject<S, K, C>
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
        let target = req.attempts().last();
        let outliers = self.layer.outliers.clone();
        let classifier = self.layer.classifier.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let class = match &result {
                Ok(_) => Class::Success,
                Err(e) => classifier.classify(e),
            };
            if let (Some(target), Some(healthy)) = (target, class.instance_health()) {
                outliers.record(&target, healthy);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("i{i}")).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_grows_linearly_with_each_ejection_and_readmits() {
        let o = Outliers::new(EjectConfig::default());
        let ks = keys(4);
        o.sync(&ks);
        for _ in 0..4 {
            o.record(&ks[0], false);
        }
        assert!(!o.is_ejected(&ks[0]), "four in a row are not five");
        o.record(&ks[0], true);
        for _ in 0..4 {
            o.record(&ks[0], false);
        }
        assert!(!o.is_ejected(&ks[0]), "a real answer resets the count");
        o.record(&ks[0], false);
        assert!(o.is_ejected(&ks[0]));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!o.is_ejected(&ks[0]), "first ejection: 5 s");
        for _ in 0..5 {
            o.record(&ks[0], false);
        }
        tokio::time::advance(Duration::from_millis(9_900)).await;
        assert!(o.is_ejected(&ks[0]), "second ejection: 10 s");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!o.is_ejected(&ks[0]));
        // 20 s un-ejected lowers the count by two: back to 5 s.
        tokio::time::advance(Duration::from_secs(20)).await;
        for _ in 0..5 {
            o.record(&ks[0], false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!o.is_ejected(&ks[0]));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_instance_is_never_ejected_and_the_cap_holds() {
        let o = Outliers::new(EjectConfig::default());
        let ks = keys(2);
        o.sync(&ks);
        for k in &ks {
            for _ in 0..5 {
                o.record(k, false);
            }
        }
        assert_eq!(o.ejected_count(), 1, "one of two may go, never both");
        let o = Outliers::new(EjectConfig::default());
        let solo = keys(1);
        o.sync(&solo);
        for _ in 0..20 {
            o.record(&solo[0], false);
        }
        assert_eq!(o.ejected_count(), 0, "the only instance stays");
    }

    #[tokio::test(start_paused = true)]
    async fn instances_still_known_keep_their_ejection_through_a_sync() {
        let o = Outliers::new(EjectConfig::default());
        let ks = keys(3);
        o.sync(&ks);
        for _ in 0..5 {
            o.record(&ks[0], false);
        }
        // Discovery changes: i2 left, i0 and i1 remain.
        o.sync(&ks[..2]);
        assert!(o.is_ejected(&ks[0]), "i0's ejection survives");
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_ejects_for_gateway_failures_only() {
        use crate::testing::{TestRequest, TextClassifier, failing};
        use tower::{Layer, ServiceExt};
        let o = Outliers::new(EjectConfig::default());
        o.sync(&["a".to_owned(), "b".to_owned()]);
        let layer = Eject::layer(o.clone(), TextClassifier);
        let attempt = |text: &'static str| {
            let req = TestRequest::new("Get");
            req.attempts.push("a".to_owned());
            layer.layer(failing(text)).oneshot(req)
        };
        for _ in 0..10 {
            let _ = attempt("deeper").await;
            let _ = attempt("notfound").await;
        }
        assert!(
            !o.is_ejected(&"a".to_owned()),
            "answers from a live instance"
        );
        for _ in 0..5 {
            let _ = attempt("down").await;
        }
        assert!(o.is_ejected(&"a".to_owned()));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Fail(usize),
        Answer(usize),
        Advance(u64),
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..n).prop_map(Op::Fail),
            1 => (0..n).prop_map(Op::Answer),
            1 => (1u64..8_000).prop_map(Op::Advance),
        ]
    }

    fn case() -> impl Strategy<Value = (usize, u32, u32, Vec<Op>)> {
        (1usize..7, 0u32..=100, 1u32..4).prop_flat_map(|(n, pct, consecutive)| {
            (
                Just(n),
                Just(pct),
                Just(consecutive),
                proptest::collection::vec(op(n), 1..200),
            )
        })
    }

    proptest! {
        /// State machine: whatever the sequence of failures, answers and
        /// time, at most max(1, n·pct/100) instances are ejected, at least
        /// one never is, and an instance is ejected only on the failure
        /// that completes a run of `consecutive` gateway failures.
        #[test]
        fn the_ejection_cap_always_holds((n, pct, consecutive, ops) in case()) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let o = Outliers::new(EjectConfig {
                    consecutive_failures: consecutive,
                    max_ejection_percent: pct,
                    ..EjectConfig::default()
                });
                let ks = keys(n);
                o.sync(&ks);
                let cap = (n * pct as usize / 100).max(1);
                let mut run = vec![0u32; n];
                for op in ops {
                    let before: Vec<bool> = ks.iter().map(|k| o.is_ejected(k)).collect();
                    match op {
                        Op::Fail(i) => {
                            o.record(&ks[i], false);
                            run[i] += 1;
                            if o.is_ejected(&ks[i]) && !before[i] {
                                prop_assert!(run[i] >= consecutive, "ejected after {} failures", run[i]);
                                run[i] = 0;
                            }
                        }
                        Op::Answer(i) => {
                            o.record(&ks[i], true);
                            run[i] = 0;
                            prop_assert_eq!(o.is_ejected(&ks[i]), before[i], "an answer ejects nobody");
                        }
                        Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                    }
                    let ejected = o.ejected_count();
                    prop_assert!(ejected <= cap, "{} ejected of {}, cap {}", ejected, n, cap);
                    prop_assert!(ejected < n, "all {} ejected", n);
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_quiet_interval_forgives_one_ejection() {
        let o = Outliers::new(EjectConfig::default());
        let ks = keys(4);
        o.sync(&ks);
        let eject = |o: &Outliers<String>| {
            for _ in 0..5 {
                o.record(&ks[0], false);
            }
        };
        eject(&o);
        tokio::time::advance(Duration::from_secs(5)).await;
        eject(&o);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!o.is_ejected(&ks[0]), "second ejection: 10 s");
        // 10 s un-ejected: the count goes from 2 to 1, so the third
        // ejection is the second's length again, 10 s.
        tokio::time::advance(Duration::from_secs(10)).await;
        eject(&o);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(o.is_ejected(&ks[0]));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!o.is_ejected(&ks[0]));
    }

    #[tokio::test]
    async fn the_layer_is_ready_only_when_its_service_is() {
        use crate::testing::{TestRequest, TextClassifier, Unready};
        use tower::{Layer, ServiceExt};
        let layer = Eject::layer(
            Outliers::<String>::new(EjectConfig::default()),
            TextClassifier,
        );
        assert!(format!("{layer:?}").starts_with("EjectLayer"));
        let mut svc = layer.layer(Unready("busy"));
        let e = ServiceExt::<TestRequest>::ready(&mut svc)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.to_string(), "busy");
    }
}
