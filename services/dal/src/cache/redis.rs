//! Redis as the shared look-aside cache (`REDIS_URL`), EVCache-style.
//!
//! * **Read-through**: `MGET` the keys; misses go to the store and are
//!   written back (`SET … PX ttl`), titles as-is, summaries with `NX` so a
//!   fill that read the store before a concurrent write cannot overwrite
//!   the summary that write put there.
//! * **TTL with jitter** per key (as the in-process cache), so entries
//!   filled together do not expire together.
//! * **Invalidate on write**: after the store commits a rating, the
//!   title's summary entry is deleted (the next read fills it). If Redis
//!   cannot take the delete the key goes on a retry list and is deleted as
//!   soon as Redis answers again, so a stale summary does not outlive an
//!   outage by more than the retry interval.
//! * **Negative caching**: an unknown title id is cached as "missing" for
//!   `CACHE_NEGATIVE_TTL`.
//! * **Optional at runtime**: every call is bounded by `REDIS_TIMEOUT`;
//!   an error, a timeout or a value that does not decode (garbage, another
//!   program's key, a format from another version) is a miss, counted in
//!   `fleet_dal_cache_errors_total{cache,op,kind}`, and never reaches the
//!   caller. After three failures in a row Redis is bypassed for a second
//!   (`kind="bypassed"`), so a hung Redis costs one short timeout per
//!   second rather than one per request.
//!
//! Values: a tag byte then the dal's own record (`crate::record`, versioned;
//! values of the previous release, protobuf, still read for one release) —
//! `T` + title, `N` (no such title), `S` + summary — under
//! `<REDIS_KEY_PREFIX>t:<id>` and `…s:<id>`; a decoded value must name the
//! id of its key.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::RandomState;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use fleet_metrics::Metrics;
use fleet_proto::dal::v1::{RatingSummary, Title};

use super::{Cache, CacheConfig, CacheLabels, Jittered};
use crate::record::{self, SummaryV1, TitleV1};
use crate::store::{Check, Store, StoreError};

/// Connection settings (`REDIS_*`).
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `REDIS_URL`, e.g. `redis://cache:6379/0` (may carry a password:
    /// never printed).
    pub url: String,
    /// Bound of every cache call on a request path; `REDIS_TIMEOUT`,
    /// default 50 ms.
    pub timeout: Duration,
    /// Bound of one connection attempt; `REDIS_CONNECT_TIMEOUT`, default
    /// 250 ms.
    pub connect_timeout: Duration,
    /// Prefix of every key; `REDIS_KEY_PREFIX`, default `fleet:dal:v1:`
    /// (the version changes with the value format).
    pub key_prefix: String,
}

impl RedisConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(250),
            key_prefix: "fleet:dal:v1:".into(),
        }
    }
}

/// The URL with any password replaced.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    cache: &'static str,
    op: &'static str,
    kind: &'static str,
}

/// Consecutive failures that make the cache bypass Redis for a while.
const TRIP_AFTER: u32 = 3;
/// How long Redis is bypassed after tripping.
const BYPASS_FOR: Duration = Duration::from_secs(1);
/// How often keys whose replacement failed are retried.
const RETRY_EVERY: Duration = Duration::from_millis(200);
/// Most keys waiting for invalidation (beyond that, TTLs bound staleness).
const MAX_PENDING: usize = 100_000;
/// Bound of a call made by the repair job (not on a request path).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

struct Inner {
    conn: ConnectionManager,
    config: RedisConfig,
    ttl: CacheConfig,
    jitter: Jittered<()>,
    lookups: Family<CacheLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    epoch: Instant,
    failures: AtomicU32,
    bypass_until_ms: AtomicU64,
    pending: Mutex<HashSet<String>>,
}

/// The Redis cache (cheap to clone).
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

const TITLE: u8 = b'T';
const MISSING: u8 = b'N';
const SUMMARY: u8 = b'S';

fn encode_title(t: Option<&Title>) -> Vec<u8> {
    match t.map(|t| record::encode::<TitleV1>("cache_titles", t)) {
        Some(Ok(bytes)) => [&[TITLE][..], &bytes].concat(),
        // Not expected for a plain struct; an empty value reads as garbage
        // (a miss), never as a wrong answer.
        Some(Err(_)) => Vec::new(),
        None => vec![MISSING],
    }
}

fn encode_summary(s: &RatingSummary) -> Vec<u8> {
    match record::encode::<SummaryV1>("cache_summaries", s) {
        Ok(bytes) => [&[SUMMARY][..], &bytes].concat(),
        Err(_) => Vec::new(),
    }
}

/// A cached title value: `Some(Some(t))`, `Some(None)` (known missing),
/// or `None` when the bytes are not one of ours for this id.
fn decode_title(id: &str, v: &[u8]) -> Option<Option<Arc<Title>>> {
    match v.split_first() {
        Some((&MISSING, [])) => Some(None),
        Some((&TITLE, rest)) => record::read::<TitleV1>("cache_titles", rest)
            .ok()
            .filter(|t| t.id == id)
            .map(|t| Some(Arc::new(t))),
        _ => None,
    }
}

fn decode_summary(id: &str, v: &[u8]) -> Option<RatingSummary> {
    match v.split_first() {
        Some((&SUMMARY, rest)) => record::read::<SummaryV1>("cache_summaries", rest)
            .ok()
            .filter(|s| s.title_id == id),
        _ => None,
    }
}

/// What a batch lookup found for one key.
enum Slot<T> {
    Hit(T),
    Miss,
    Garbage,
}

impl RedisCache {
    /// A cache over a lazily connected Redis (nothing is sent until the
    /// first call, so Redis may be down at start), registering
    /// `fleet_dal_cache_lookups_total` and `fleet_dal_cache_errors_total`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the driver refuses the URL.
    pub fn new(
        ttl: &CacheConfig,
        config: &RedisConfig,
        metrics: &Metrics,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            StoreError::Unavailable(format!("REDIS_URL {}: {e}", redact_url(&config.url)))
        })?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        let errors = Family::<ErrorLabels, Counter>::default();
        metrics.register(
            "dal_cache_errors",
            "Cache calls that failed and were served from the store, by cache, operation \
             and kind (error, timeout, garbage, bypassed)",
            errors.clone(),
        );
        let inner = Arc::new(Inner {
            conn,
            config: config.clone(),
            ttl: ttl.clone(),
            jitter: Jittered {
                hasher: RandomState::new(),
                jitter: ttl.jitter,
                ttl: (),
            },
            lookups: super::lookups_family(metrics),
            errors,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            bypass_until_ms: AtomicU64::new(0),
            pending: Mutex::new(HashSet::new()),
        });
        tokio::spawn(retry_invalidations(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    fn title_key(&self, id: &str) -> String {
        format!("{}t:{id}", self.inner.config.key_prefix)
    }

    fn summary_key(&self, id: &str) -> String {
        format!("{}s:{id}", self.inner.config.key_prefix)
    }

    fn count(&self, cache: &'static str, result: &'static str) {
        self.inner
            .lookups
            .get_or_create(&CacheLabels { cache, result })
            .inc();
    }

    fn ttl_ms(&self, key: &str, base: Duration) -> u64 {
        let ttl = self.inner.jitter.spread(key, base);
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Runs one Redis call within `REDIS_TIMEOUT`, unless Redis is being
    /// bypassed; any failure is counted and becomes `None`.
    async fn call<T>(
        &self,
        cache: &'static str,
        op: &'static str,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        self.inner
            .call(cache, op, self.inner.config.timeout, true, f)
            .await
    }

    /// Looks up keys with one `MGET`.
    async fn mget<T>(
        &self,
        cache: &'static str,
        keys: &[String],
        ids: &[String],
        decode: impl Fn(&str, &[u8]) -> Option<T>,
    ) -> Vec<Slot<T>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let mut conn = self.inner.conn.clone();
        let got: Option<Vec<Option<Vec<u8>>>> = self
            .call(cache, "get", async move {
                redis::cmd("MGET").arg(keys).query_async(&mut conn).await
            })
            .await;
        let Some(values) = got.filter(|v| v.len() == ids.len()) else {
            return ids.iter().map(|_| Slot::Miss).collect();
        };
        let mut garbage = Vec::new();
        let slots: Vec<Slot<T>> = ids
            .iter()
            .zip(values)
            .zip(keys)
            .map(|((id, v), key)| match v {
                None => Slot::Miss,
                Some(bytes) => match decode(id, &bytes) {
                    Some(t) => Slot::Hit(t),
                    None => {
                        garbage.push(key.clone());
                        Slot::Garbage
                    }
                },
            })
            .collect();
        if !garbage.is_empty() {
            self.inner.error(cache, "get", "garbage", garbage.len());
            tracing::warn!(
                keys = garbage.len(),
                "undecodable values in the Redis cache; dropping them"
            );
            let mut conn = self.inner.conn.clone();
            self.call(cache, "del", async move {
                redis::cmd("DEL")
                    .arg(&garbage)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        }
        slots
    }

    /// Cached titles, one slot per id.
    pub async fn titles(&self, ids: &[String]) -> Vec<Option<Option<Arc<Title>>>> {
        let keys: Vec<String> = ids.iter().map(|id| self.title_key(id)).collect();
        self.mget("titles", &keys, ids, decode_title)
            .await
            .into_iter()
            .map(|slot| match slot {
                Slot::Hit(Some(t)) => {
                    self.count("titles", "hit");
                    Some(Some(t))
                }
                Slot::Hit(None) => {
                    self.count("titles", "negative_hit");
                    Some(None)
                }
                Slot::Miss | Slot::Garbage => {
                    self.count("titles", "miss");
                    None
                }
            })
            .collect()
    }

    /// Caches titles (and "missing" markers) read from the store.
    pub async fn put_titles(&self, entries: &[(String, Option<Arc<Title>>)]) {
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (id, t) in entries {
            let key = self.title_key(id);
            let base = if t.is_some() {
                self.inner.ttl.title_ttl
            } else {
                self.inner.ttl.negative_ttl
            };
            let ttl = self.ttl_ms(&key, base);
            pipe.cmd("SET")
                .arg(&key)
                .arg(encode_title(t.as_deref()))
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        let mut conn = self.inner.conn.clone();
        self.call("titles", "set", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await;
    }

    /// Cached summaries, one slot per id.
    pub async fn summaries(&self, ids: &[String]) -> Vec<Option<RatingSummary>> {
        let keys: Vec<String> = ids.iter().map(|id| self.summary_key(id)).collect();
        self.mget("summaries", &keys, ids, decode_summary)
            .await
            .into_iter()
            .map(|slot| match slot {
                Slot::Hit(s) => {
                    self.count("summaries", "hit");
                    Some(s)
                }
                Slot::Miss | Slot::Garbage => {
                    self.count("summaries", "miss");
                    None
                }
            })
            .collect()
    }

    /// Caches summaries read from the store, each only if no entry exists
    /// (a write's replacement wins over a fill that read before it).
    pub async fn fill_summaries(&self, summaries: &[RatingSummary]) {
        if summaries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for s in summaries {
            let key = self.summary_key(&s.title_id);
            let ttl = self.ttl_ms(&key, self.inner.ttl.summary_ttl);
            pipe.cmd("SET")
                .arg(&key)
                .arg(encode_summary(s))
                .arg("PX")
                .arg(ttl)
                .arg("NX")
                .ignore();
        }
        let mut conn = self.inner.conn.clone();
        self.call("summaries", "set", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await;
    }

    /// Deletes a title's summary after a committed write; if Redis cannot
    /// take the delete, it is retried as soon as Redis answers again.
    pub async fn invalidate_summary(&self, title_id: &str) {
        let key = self.summary_key(title_id);
        let mut conn = self.inner.conn.clone();
        let k = key.clone();
        let done = self
            .call("summaries", "del", async move {
                redis::cmd("DEL").arg(&k).query_async::<()>(&mut conn).await
            })
            .await;
        if done.is_none() {
            self.inner.defer_invalidation(key);
        }
    }

    /// Keys waiting to be invalidated (a write's replacement failed).
    pub fn pending_invalidations(&self) -> usize {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Scans every key of ours and drops those that do not decode or do
    /// not match the store; `(what, found, fixed)` for titles and
    /// summaries.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be scanned;
    /// [`StoreError`] from the store.
    pub async fn repair(&self, store: &dyn Store) -> Result<Vec<Check>, StoreError> {
        // Keys whose replacement failed go first: they are known stale.
        self.inner.flush_pending(ADMIN_TIMEOUT).await;
        let titles = self.scan_keys("t:").await?;
        let mut found = 0;
        for chunk in titles.chunks(100) {
            let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
            let keys: Vec<String> = chunk.iter().map(|(k, _)| k.clone()).collect();
            let values = self.admin_mget(&keys).await?;
            let truth: BTreeMap<String, Title> = store
                .batch_get_titles(ids.clone())
                .await?
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect();
            let mut drop = Vec::new();
            for ((key, id), v) in keys.iter().zip(&ids).zip(values) {
                // A key that expired since the scan is not drift.
                let Some(v) = v else { continue };
                let ok = match decode_title(id, &v) {
                    Some(Some(t)) => truth.get(id) == Some(&*t),
                    Some(None) => !truth.contains_key(id),
                    None => false,
                };
                if !ok {
                    drop.push(key.clone());
                }
            }
            found += self.admin_del(drop).await?;
        }
        let title_check = ("cache_titles", found, found);

        let summaries = self.scan_keys("s:").await?;
        let mut found = 0;
        for chunk in summaries.chunks(100) {
            let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
            let keys: Vec<String> = chunk.iter().map(|(k, _)| k.clone()).collect();
            let values = self.admin_mget(&keys).await?;
            let truth = store.summaries(ids.clone()).await?;
            let mut drop = Vec::new();
            for (((key, id), v), t) in keys.iter().zip(&ids).zip(values).zip(&truth) {
                let Some(v) = v else { continue };
                if decode_summary(id, &v).as_ref() != Some(t) {
                    drop.push(key.clone());
                }
            }
            found += self.admin_del(drop).await?;
        }
        Ok(vec![title_check, ("cache_summaries", found, found)])
    }

    /// `(key, id)` of every key under `prefix` + `kind`.
    async fn scan_keys(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = format!("{}{kind}", self.inner.config.key_prefix);
        let pattern = format!("{}*", escape_glob(&prefix));
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let mut conn = self.inner.conn.clone();
            let pattern = pattern.clone();
            let (next, keys): (u64, Vec<String>) = self
                .inner
                .admin(async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            out.extend(keys.into_iter().filter_map(|k| {
                let id = k.strip_prefix(&prefix)?.to_owned();
                Some((k, id))
            }));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn admin_mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut conn = self.inner.conn.clone();
        let keys = keys.to_vec();
        self.inner
            .admin(async move { redis::cmd("MGET").arg(&keys).query_async(&mut conn).await })
            .await
    }

    async fn admin_del(&self, keys: Vec<String>) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let n = keys.len() as u64;
        let mut conn = self.inner.conn.clone();
        self.inner
            .admin(async move {
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok(n)
    }
}

/// Escapes Redis glob characters in a literal prefix.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn error(&self, cache: &'static str, op: &'static str, kind: &'static str, n: usize) {
        self.errors
            .get_or_create(&ErrorLabels { cache, op, kind })
            .inc_by(n as u64);
    }

    fn bypassing(&self) -> bool {
        self.now_ms() < self.bypass_until_ms.load(Ordering::Relaxed)
    }

    fn succeeded(&self) {
        if self.failures.swap(0, Ordering::Relaxed) >= TRIP_AFTER {
            tracing::info!("Redis answers again; cache back in use");
        }
    }

    fn failed(&self, error: &dyn fmt::Display) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= TRIP_AFTER {
            let until = self.now_ms() + u64::try_from(BYPASS_FOR.as_millis()).unwrap_or(1000);
            self.bypass_until_ms.store(until, Ordering::Relaxed);
            if n == TRIP_AFTER {
                tracing::warn!(%error, "Redis failing; serving from the store, bypassing the cache");
            }
        } else {
            tracing::debug!(%error, "Redis call failed; served from the store");
        }
    }

    async fn call<T>(
        &self,
        cache: &'static str,
        op: &'static str,
        timeout: Duration,
        may_bypass: bool,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        if may_bypass && self.bypassing() {
            self.error(cache, op, "bypassed", 1);
            return None;
        }
        match tokio::time::timeout(timeout, f).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.error(cache, op, "error", 1);
                self.failed(&e);
                None
            }
            Err(_) => {
                self.error(cache, op, "timeout", 1);
                self.failed(&format!("no answer within {timeout:?}"));
                None
            }
        }
    }

    /// A call of the repair job: longer bound, errors reported.
    async fn admin<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(ADMIN_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("redis: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis: no answer within {ADMIN_TIMEOUT:?}"
            ))),
        }
    }

    fn defer_invalidation(&self, key: String) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() < MAX_PENDING {
            pending.insert(key);
        } else {
            self.error("summaries", "del", "dropped", 1);
        }
    }

    /// Deletes the keys waiting for invalidation; keeps them on failure.
    async fn flush_pending(&self, timeout: Duration) {
        let keys: Vec<String> = {
            let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.iter().take(1000).cloned().collect()
        };
        if keys.is_empty() {
            return;
        }
        let mut conn = self.conn.clone();
        let del = keys.clone();
        let done = self
            .call("summaries", "del", timeout, false, async move {
                redis::cmd("DEL")
                    .arg(&del)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        if done.is_some() {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for k in &keys {
                pending.remove(k);
            }
            tracing::info!(
                keys = keys.len(),
                "invalidated summaries a failed write left stale"
            );
        }
    }
}

async fn retry_invalidations(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let waiting = !inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if waiting && !inner.bypassing() {
            let timeout = inner.config.timeout.max(Duration::from_millis(100));
            inner.flush_pending(timeout).await;
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn titles(&self, ids: &[String]) -> Vec<Option<Option<Arc<Title>>>> {
        RedisCache::titles(self, ids).await
    }

    async fn put_titles(&self, entries: Vec<(String, Option<Arc<Title>>)>) {
        RedisCache::put_titles(self, &entries).await;
    }

    async fn summaries(&self, ids: &[String]) -> Vec<Option<RatingSummary>> {
        RedisCache::summaries(self, ids).await
    }

    async fn fill_summaries(&self, summaries: Vec<RatingSummary>) {
        RedisCache::fill_summaries(self, &summaries).await;
    }

    async fn invalidate_summary(&self, title_id: &str) {
        RedisCache::invalidate_summary(self, title_id).await;
    }

    async fn repair(&self, store: &dyn Store) -> Result<Vec<Check>, StoreError> {
        RedisCache::repair(self, store).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        let t = Title {
            id: "t1".into(),
            name: "A".into(),
            ..Title::default()
        };
        assert_eq!(
            decode_title("t1", &encode_title(Some(&t))),
            Some(Some(Arc::new(t.clone())))
        );
        assert_eq!(decode_title("t1", &encode_title(None)), Some(None));
        assert_eq!(
            decode_title("t2", &encode_title(Some(&t))),
            None,
            "other id"
        );
        for junk in [
            &b""[..],
            b"not protobuf",
            b"T\xff\xff\xff",
            b"N extra",
            b"S",
        ] {
            assert_eq!(decode_title("t1", junk), None, "{junk:?}");
        }
        let s = RatingSummary {
            title_id: "t1".into(),
            count: 2,
            stars_sum: 7,
        };
        assert_eq!(decode_summary("t1", &encode_summary(&s)), Some(s.clone()));
        assert_eq!(decode_summary("t9", &encode_summary(&s)), None);
        assert_eq!(decode_summary("t1", &encode_title(Some(&t))), None);
        assert_eq!(encode_title(Some(&t))[1], 0x0f, "a record, not protobuf");
    }

    /// Values the previous release cached (tag byte + protobuf) still
    /// read during this release. (Catches: a cache that turned every old
    /// entry into a counted `garbage` error on upgrade.)
    #[test]
    fn values_of_the_previous_release_still_read() {
        use prost::Message;
        let t = Title {
            id: "t1".into(),
            name: "A".into(),
            ..Title::default()
        };
        let old = [&[TITLE][..], &t.encode_to_vec()].concat();
        assert_eq!(decode_title("t1", &old), Some(Some(Arc::new(t))));
        let s = RatingSummary {
            title_id: "t1".into(),
            count: 2,
            stars_sum: 7,
        };
        let old = [&[SUMMARY][..], &s.encode_to_vec()].concat();
        assert_eq!(decode_summary("t1", &old), Some(s));
    }

    #[test]
    fn passwords_are_never_printed() {
        let c = RedisConfig::new("redis://user:hunter2@cache:6379/0");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("cache:6379"), "{shown}");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(escape_glob("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
