//! The look-aside cache in front of the store: titles and rating summaries.
//!
//! Two implementations of one trait, [`Cache`], chosen by configuration
//! ([`from_config`]):
//!
//! * [`LocalCache`] (moka, in-process) — the embedded default;
//! * [`RedisCache`] (`REDIS_URL`) — shared by every dal instance,
//!   EVCache-style: read-through, jittered TTLs, replace on write, short
//!   negative caching, and optional at runtime — Redis down, slow or
//!   answering garbage only costs cache hits (counted in
//!   `fleet_dal_cache_errors_total`), never a request or a write.
//!
//! Both serve the same calls; the gRPC handlers never know which one runs.

mod local;
mod redis;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use fleet_metrics::Metrics;
use fleet_proto::dal::v1::{RatingSummary, Title};

use crate::store::{Check, Store, StoreError};

pub(crate) use self::redis::redact_url;
pub use self::redis::{RedisCache, RedisConfig};
pub use local::LocalCache;

/// Cache sizes and lifetimes.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// Most entries per cache; `CACHE_CAPACITY`, default 100 000.
    pub capacity: u64,
    /// Lifetime of a cached title; `CACHE_TITLE_TTL`, default 5 min.
    pub title_ttl: Duration,
    /// Lifetime of a cached summary; `CACHE_SUMMARY_TTL`, default 30 s.
    pub summary_ttl: Duration,
    /// Lifetime of a cached "no such title"; `CACHE_NEGATIVE_TTL`, default 2 s.
    pub negative_ttl: Duration,
    /// Relative spread of TTLs (0.1 = ±10 %); `CACHE_TTL_JITTER`.
    pub jitter: f64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            title_ttl: Duration::from_secs(300),
            summary_ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(2),
            jitter: 0.1,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CacheLabels {
    pub cache: &'static str,
    pub result: &'static str,
}

/// Registers `fleet_dal_cache_lookups_total{cache,result}`.
pub(crate) fn lookups_family(metrics: &Metrics) -> Family<CacheLabels, Counter> {
    let lookups = Family::<CacheLabels, Counter>::default();
    metrics.register(
        "dal_cache_lookups",
        "Look-aside cache lookups by cache and result (hit, negative_hit, miss)",
        lookups.clone(),
    );
    lookups
}

/// Per-key TTL: base ± jitter, derived from a per-process random hash of
/// the key (no RNG on the hot path, still different on every instance).
pub(crate) struct Jittered<F> {
    pub hasher: RandomState,
    pub jitter: f64,
    pub ttl: F,
}

impl<F> Jittered<F> {
    pub fn spread(&self, key: &str, base: Duration) -> Duration {
        let h = self.hasher.hash_one(key);
        // h mapped to [-1, 1).
        #[allow(clippy::cast_precision_loss)]
        let unit = (h % 2_000_001) as f64 / 1_000_000.0 - 1.0;
        base.mul_f64((1.0 + unit * self.jitter).max(0.01))
    }
}

/// The look-aside cache seam: what the gRPC service and `dal repair` ask of
/// a cache. One implementation per cache ([`LocalCache`], [`RedisCache`]);
/// callers hold a [`SharedCache`]. A cache never fails a call: what it
/// cannot answer is a miss.
#[async_trait]
pub trait Cache: Send + Sync + std::fmt::Debug {
    /// Which cache this is, for logs and reports.
    fn kind(&self) -> &'static str;

    /// Cached titles, one slot per id: `Some(Some(t))` hit, `Some(None)`
    /// known missing, `None` not cached (or the cache failed).
    async fn titles(&self, ids: &[String]) -> Vec<Option<Option<Arc<Title>>>>;

    /// Caches titles, or that an id has none.
    async fn put_titles(&self, entries: Vec<(String, Option<Arc<Title>>)>);

    /// Cached summaries, one slot per id (`None`: not cached).
    async fn summaries(&self, ids: &[String]) -> Vec<Option<RatingSummary>>;

    /// Caches summaries just read from the store (never over an entry a
    /// write put there meanwhile, where the cache can tell).
    async fn fill_summaries(&self, summaries: Vec<RatingSummary>);

    /// Drops a title's cached summary after a committed write; the next
    /// read fills it from the store. (Putting the write's own result in
    /// the cache instead would race: concurrent writes finish in any order,
    /// and an older summary could land last.) When Redis cannot take the
    /// delete, it is retried as soon as Redis answers again.
    async fn invalidate_summary(&self, title_id: &str);

    /// Checks every cached entry against the store and drops what
    /// drifted or cannot be decoded. The in-process cache lives and dies
    /// with its server, so it has nothing to check (the default).
    ///
    /// # Errors
    /// [`StoreError`] when the store or Redis cannot be read.
    async fn repair(&self, _store: &dyn Store) -> Result<Vec<Check>, StoreError> {
        Ok(Vec::new())
    }
}

/// The cache every caller holds (cheap to clone).
pub type SharedCache = Arc<dyn Cache>;

/// The cache the configuration selects: Redis when `redis` is given
/// (connecting lazily: Redis need not be up yet), else the in-process
/// cache.
///
/// # Errors
/// When the Redis client cannot be created (a URL the driver refuses).
pub fn from_config(
    config: &CacheConfig,
    redis: Option<&RedisConfig>,
    metrics: &Metrics,
) -> Result<SharedCache, StoreError> {
    Ok(match redis {
        Some(r) => Arc::new(RedisCache::new(config, r, metrics)?),
        None => Arc::new(LocalCache::new(config, metrics)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        let j = Jittered {
            hasher: RandomState::new(),
            jitter: 0.1,
            ttl: (),
        };
        let base = Duration::from_secs(100);
        let spread: Vec<_> = (0..200).map(|i| j.spread(&format!("k{i}"), base)).collect();
        assert!(
            spread
                .iter()
                .all(|d| *d >= Duration::from_secs(90) && *d <= Duration::from_secs(110))
        );
        assert!(spread.iter().any(|d| *d != spread[0]), "keys spread out");
    }
}
