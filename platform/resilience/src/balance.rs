//! Client-side load balancing: power of two choices over a peak-EWMA
//! latency × pending-requests cost, with outlier ejection.
//!
//! tower's `p2c::Balance` with `PeakEwma` is the model (Finagle's
//! algorithm), but it cannot do two things the patterns require: pick
//! "any instance except the one that just failed" for a retry, and eject an
//! instance that keeps failing (Envoy's outlier detection) for a while with
//! re-admission. So the picker is written here, small and on the same cost
//! function: `cost = ewma_latency × (pending + 1)`, where the EWMA jumps up
//! at once on a slow response (peak-sensitive) and decays with time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Balancer settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BalanceConfig {
    /// Latency assumed for an instance never measured; default 5 ms.
    pub default_rtt: Duration,
    /// EWMA decay time; default 10 s.
    pub decay: Duration,
    /// Consecutive failures that eject an instance; default 5.
    pub consecutive_failures: u32,
    /// First ejection length, growing with each re-ejection; default 5 s.
    pub base_ejection: Duration,
    /// Longest ejection; default 60 s.
    pub max_ejection: Duration,
    /// Most instances ejected at once, in percent; default 50.
    pub max_ejection_percent: u32,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            default_rtt: Duration::from_millis(5),
            decay: Duration::from_secs(10),
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            max_ejection_percent: 50,
        }
    }
}

#[derive(Debug)]
struct Endpoint {
    pending: usize,
    /// Peak EWMA of latency, nanoseconds.
    ewma_ns: f64,
    stamp: Instant,
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

impl Endpoint {
    fn new(cfg: &BalanceConfig, now: Instant) -> Self {
        Self {
            pending: 0,
            #[allow(clippy::cast_precision_loss)]
            ewma_ns: cfg.default_rtt.as_nanos() as f64,
            stamp: now,
            consecutive_failures: 0,
            ejected_until: None,
            ejections: 0,
        }
    }

    fn cost(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let pending = (self.pending + 1) as f64;
        self.ewma_ns * pending
    }

    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }
}

/// Snapshot of one instance, for the stream and `fleet status`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EndpointState {
    /// Instance key.
    pub instance: String,
    /// Calls in flight.
    pub pending: usize,
    /// Latency estimate, ms.
    pub ewma_ms: f64,
    /// Currently ejected.
    pub ejected: bool,
}

/// Picks instances and learns from outcomes (cheap to clone).
#[derive(Clone, Debug)]
pub struct Balancer<K> {
    config: Arc<BalanceConfig>,
    endpoints: Arc<Mutex<HashMap<K, Endpoint>>>,
}

/// An instance picked for one attempt: counts as pending until dropped or
/// [`Balancer::record`]ed.
#[derive(Debug)]
pub struct Pick<K: Eq + Hash + Clone> {
    /// The chosen instance.
    pub key: K,
    balancer: Balancer<K>,
    started: Instant,
    done: bool,
}

impl<K: Eq + Hash + Clone> Drop for Pick<K> {
    fn drop(&mut self) {
        if !self.done {
            let mut eps = self.balancer.lock();
            if let Some(e) = eps.get_mut(&self.key) {
                e.pending = e.pending.saturating_sub(1);
            }
        }
    }
}

impl<K: Eq + Hash> Balancer<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Endpoint>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Eq + Hash + Clone + std::fmt::Display> Balancer<K> {
    /// A balancer with no instances known yet.
    pub fn new(config: BalanceConfig) -> Self {
        Self {
            config: Arc::new(config),
            endpoints: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Picks one of `candidates`, never `exclude` when another exists.
    /// Ejected instances are skipped unless ejecting them would leave more
    /// than `max_ejection_percent` out (then the ejection is ignored, as
    /// Envoy's panic threshold does). `None` when `candidates` is empty.
    pub fn pick(&self, candidates: &[K], exclude: Option<&K>) -> Option<Pick<K>> {
        let now = Instant::now();
        let mut eps = self.lock();
        // Forget instances discovery no longer lists.
        if eps.len() > candidates.len() * 2 + 8 {
            eps.retain(|k, e| candidates.contains(k) || e.pending > 0);
        }
        for k in candidates {
            eps.entry(k.clone())
                .or_insert_with(|| Endpoint::new(&self.config, now));
        }
        let mut pool: Vec<&K> = candidates.iter().filter(|k| Some(*k) != exclude).collect();
        if pool.is_empty() {
            pool = candidates.iter().collect();
        }
        let healthy: Vec<&K> = pool
            .iter()
            .copied()
            .filter(|k| !eps.get(*k).is_some_and(|e| e.ejected(now)))
            .collect();
        let ejected = pool.len() - healthy.len();
        let limit = pool.len() * self.config.max_ejection_percent as usize / 100;
        if !healthy.is_empty() && ejected <= limit.max(1) {
            pool = healthy;
        }
        let chosen = match pool.len() {
            0 => return None,
            1 => pool[0].clone(),
            n => {
                let a = rand::random_range(0..n);
                let mut b = rand::random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let cost = |k: &K| eps.get(k).map_or(0.0, Endpoint::cost);
                if cost(pool[a]) <= cost(pool[b]) {
                    pool[a].clone()
                } else {
                    pool[b].clone()
                }
            }
        };
        if let Some(e) = eps.get_mut(&chosen) {
            e.pending += 1;
        }
        drop(eps);
        Some(Pick {
            key: chosen,
            balancer: self.clone(),
            started: now,
            done: false,
        })
    }

    /// Reports how the attempt went: `healthy` false for failures that say
    /// the instance is sick (transport errors, UNAVAILABLE, timeouts).
    pub fn record(&self, mut pick: Pick<K>, healthy: bool) {
        pick.done = true;
        let now = Instant::now();
        let cfg = &self.config;
        let mut eps = self.lock();
        let Some(e) = eps.get_mut(&pick.key) else {
            return;
        };
        e.pending = e.pending.saturating_sub(1);
        #[allow(clippy::cast_precision_loss)]
        let rtt = now.saturating_duration_since(pick.started).as_nanos() as f64;
        if rtt > e.ewma_ns {
            e.ewma_ns = rtt;
        } else {
            let elapsed = now.saturating_duration_since(e.stamp).as_secs_f64();
            let w = (-elapsed / cfg.decay.as_secs_f64().max(1e-3)).exp();
            e.ewma_ns = e.ewma_ns * w + rtt * (1.0 - w);
        }
        e.stamp = now;
        if healthy {
            e.consecutive_failures = 0;
            if e.ejected_until.is_some_and(|t| now >= t) {
                e.ejected_until = None;
            }
            return;
        }
        e.consecutive_failures += 1;
        if e.consecutive_failures >= cfg.consecutive_failures && !e.ejected(now) {
            e.ejections += 1;
            let factor = 1u32 << (e.ejections - 1).min(10);
            let length = cfg
                .base_ejection
                .saturating_mul(factor)
                .min(cfg.max_ejection);
            e.ejected_until = Some(now + length);
            e.consecutive_failures = 0;
            tracing::warn!(instance = %pick.key, ejection_ms = length.as_millis() as u64, "instance ejected");
        }
    }

    /// Every known instance's state.
    pub fn states(&self) -> Vec<EndpointState> {
        let now = Instant::now();
        let eps = self.lock();
        let mut out: Vec<EndpointState> = eps
            .iter()
            .map(|(k, e)| EndpointState {
                instance: k.to_string(),
                pending: e.pending,
                ewma_ms: e.ewma_ns / 1e6,
                ejected: e.ejected(now),
            })
            .collect();
        out.sort_by(|a, b| a.instance.cmp(&b.instance));
        out
    }
}

/// Time an attempt took, for callers that need it besides the balancer.
pub fn elapsed_since(start: Instant) -> Duration {
    Instant::now().saturating_duration_since(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[tokio::test(start_paused = true)]
    async fn prefers_the_faster_instance() {
        let b = Balancer::new(BalanceConfig::default());
        let ks = keys();
        // Teach it: "a" is slow.
        for _ in 0..20 {
            let p = b.pick(&ks[..1], None).unwrap();
            tokio::time::advance(Duration::from_millis(50)).await;
            b.record(p, true);
        }
        let mut picked_a = 0;
        for _ in 0..300 {
            let p = b.pick(&ks, None).unwrap();
            if p.key == "a" {
                picked_a += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
            b.record(p, true);
        }
        // p2c never picks the worst of three when it compares it with another.
        assert!(picked_a < 20, "slow instance picked {picked_a}/300");
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_on_the_instance_that_failed() {
        let b = Balancer::new(BalanceConfig::default());
        let ks = keys();
        for _ in 0..100 {
            let p = b.pick(&ks, Some(&ks[1])).unwrap();
            assert_ne!(p.key, "b");
        }
        let only = vec!["solo".to_owned()];
        assert_eq!(b.pick(&only, Some(&only[0])).unwrap().key, "solo");
        assert!(b.pick(&[], None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_a_failing_instance_and_readmits_it() {
        let b = Balancer::new(BalanceConfig::default());
        let ks = keys();
        for _ in 0..5 {
            let p = b.pick(&ks[2..], None).unwrap();
            b.record(p, false);
        }
        assert!(b.states().iter().any(|s| s.instance == "c" && s.ejected));
        for _ in 0..100 {
            assert_ne!(b.pick(&ks, None).unwrap().key, "c");
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.states().iter().all(|s| !s.ejected), "re-admitted");
        // A second ejection lasts longer.
        for _ in 0..5 {
            let p = b.pick(&ks[2..], None).unwrap();
            b.record(p, false);
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(b.states().iter().any(|s| s.instance == "c" && s.ejected));
    }

    #[tokio::test(start_paused = true)]
    async fn never_ejects_more_than_the_limit() {
        let b = Balancer::new(BalanceConfig::default());
        let ks = vec!["a".to_owned(), "b".to_owned()];
        for k in 0..2 {
            for _ in 0..5 {
                let p = b.pick(&ks[k..=k], None).unwrap();
                b.record(p, false);
            }
        }
        // Both ejected: the balancer still picks rather than failing.
        assert!(b.pick(&ks, None).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn pending_counts_follow_picks() {
        let b = Balancer::new(BalanceConfig::default());
        let ks = keys();
        let p = b.pick(&ks[..1], None).unwrap();
        assert_eq!(b.states()[0].pending, 1);
        drop(p);
        assert_eq!(b.states()[0].pending, 0);
    }
}
