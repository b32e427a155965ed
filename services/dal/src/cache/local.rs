//! The in-process look-aside cache of the embedded default (moka).
//!
//! Read-through for titles and rating summaries: a hit never touches the
//! store; a miss reads the store and fills the cache. Entries live for a TTL
//! with per-key jitter, so entries written together (e.g. by the seed) do not
//! all expire in the same instant; a missing title is cached briefly as
//! "missing" (negative caching) so a flood of lookups of an unknown id is not
//! a flood of store reads. A rating write drops its title's summary entry
//! after the store commits, so a reader never sees an older summary than the
//! write it just made.

use std::hash::RandomState;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache as Moka;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use fleet_metrics::Metrics;
use fleet_proto::dal::v1::{RatingSummary, Title};

use super::{Cache, CacheConfig, CacheLabels, Jittered};

impl Expiry<String, Option<Arc<Title>>> for Jittered<CacheConfig> {
    fn expire_after_create(
        &self,
        key: &String,
        value: &Option<Arc<Title>>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let base = if value.is_some() {
            self.ttl.title_ttl
        } else {
            self.ttl.negative_ttl
        };
        Some(self.spread(key, base))
    }
}

impl Expiry<String, RatingSummary> for Jittered<Duration> {
    fn expire_after_create(
        &self,
        key: &String,
        _value: &RatingSummary,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.spread(key, self.ttl))
    }

    fn expire_after_update(
        &self,
        key: &String,
        _value: &RatingSummary,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.spread(key, self.ttl))
    }
}

/// The caches (cheap to clone).
#[derive(Clone)]
pub struct LocalCache {
    titles: Moka<String, Option<Arc<Title>>>,
    summaries: Moka<String, RatingSummary>,
    lookups: Family<CacheLabels, Counter>,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("titles", &self.titles.entry_count())
            .field("summaries", &self.summaries.entry_count())
            .finish()
    }
}

impl LocalCache {
    /// Builds the caches and registers `fleet_dal_cache_lookups_total`.
    pub fn new(config: &CacheConfig, metrics: &Metrics) -> Self {
        let titles = Moka::builder()
            .max_capacity(config.capacity)
            .expire_after(Jittered {
                hasher: RandomState::new(),
                jitter: config.jitter,
                ttl: config.clone(),
            })
            .build();
        let summaries = Moka::builder()
            .max_capacity(config.capacity)
            .expire_after(Jittered {
                hasher: RandomState::new(),
                jitter: config.jitter,
                ttl: config.summary_ttl,
            })
            .build();
        let lookups = super::lookups_family(metrics);
        Self {
            titles,
            summaries,
            lookups,
        }
    }

    fn count(&self, cache: &'static str, result: &'static str) {
        self.lookups
            .get_or_create(&CacheLabels { cache, result })
            .inc();
    }

    /// A cached title: `Some(Some(t))` hit, `Some(None)` known missing,
    /// `None` not cached.
    pub async fn title(&self, id: &str) -> Option<Option<Arc<Title>>> {
        let got = self.titles.get(id).await;
        match &got {
            Some(Some(_)) => self.count("titles", "hit"),
            Some(None) => self.count("titles", "negative_hit"),
            None => self.count("titles", "miss"),
        }
        got
    }

    /// Caches a title, or that `id` has none.
    pub async fn put_title(&self, id: String, title: Option<Arc<Title>>) {
        self.titles.insert(id, title).await;
    }

    /// A cached summary.
    pub async fn summary(&self, id: &str) -> Option<RatingSummary> {
        let got = self.summaries.get(id).await;
        self.count("summaries", if got.is_some() { "hit" } else { "miss" });
        got
    }

    /// Caches a summary read from the store.
    pub async fn put_summary(&self, summary: RatingSummary) {
        self.summaries
            .insert(summary.title_id.clone(), summary)
            .await;
    }

    /// Drops a cached summary.
    pub async fn invalidate_summary(&self, id: &str) {
        self.summaries.invalidate(id).await;
    }
}

#[async_trait]
impl Cache for LocalCache {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn titles(&self, ids: &[String]) -> Vec<Option<Option<Arc<Title>>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.title(id).await);
        }
        out
    }

    async fn put_titles(&self, entries: Vec<(String, Option<Arc<Title>>)>) {
        for (id, t) in entries {
            self.put_title(id, t).await;
        }
    }

    async fn summaries(&self, ids: &[String]) -> Vec<Option<RatingSummary>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.summary(id).await);
        }
        out
    }

    async fn fill_summaries(&self, summaries: Vec<RatingSummary>) {
        for s in summaries {
            self.put_summary(s).await;
        }
    }

    async fn invalidate_summary(&self, title_id: &str) {
        LocalCache::invalidate_summary(self, title_id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hits_misses_and_negative_entries() {
        let cache = LocalCache::new(&CacheConfig::default(), &Metrics::new("dal", "1.0.0"));
        assert!(cache.title("t1").await.is_none());
        cache.put_title("t1".into(), None).await;
        assert_eq!(cache.title("t1").await, Some(None));
        let s = RatingSummary {
            title_id: "t2".into(),
            count: 1,
            stars_sum: 5,
        };
        cache.put_summary(s.clone()).await;
        assert_eq!(cache.summary("t2").await, Some(s));
        cache.invalidate_summary("t2").await;
        assert_eq!(cache.summary("t2").await, None);
    }
}
