//! What every handler shares: the driver clients and the fallback cache.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use fleet_catalog_client::CatalogClient;
use fleet_catalog_client::v2::CatalogV2Client;
use fleet_edge_client::model::HomeItem;
use fleet_ratings_client::RatingsClient;
use tokio::time::Instant;

/// Share of the remaining budget an optional part (one with a fallback)
/// may spend: the rest is kept for the parts the answer cannot do without,
/// so a slow optional dependency degrades the answer instead of timing it
/// out.
pub const OPTIONAL_SHARE: f64 = 0.5;

/// Call options for an optional part: at most [`OPTIONAL_SHARE`] of the
/// request's remaining budget (no limit of its own outside a request).
pub fn optional_part() -> fleet_rpc::CallOptions {
    match fleet_context::RequestContext::current().and_then(|cx| cx.remaining()) {
        Some(left) => fleet_rpc::CallOptions::timeout(left.mul_f64(OPTIONAL_SHARE)),
        None => fleet_rpc::CallOptions::default(),
    }
}

/// Handler state (cheap to clone).
#[derive(Clone, Debug)]
pub struct EdgeState {
    /// The catalog, through its driver client.
    pub catalog: CatalogClient,
    /// Catalog 2.x (`catalog.v2`), for `/api/v2/titles/{id}`.
    pub catalog_v2: CatalogV2Client,
    /// The ratings service, through its driver client.
    pub ratings: RatingsClient,
    /// The last top-rated row served whole: the home page's fallback when
    /// the ratings service or the catalog cannot produce a fresh one.
    pub top_rated: Arc<StaleCache<Vec<HomeItem>>>,
}

impl EdgeState {
    /// State over the two clients.
    pub fn new(
        catalog: CatalogClient,
        catalog_v2: CatalogV2Client,
        ratings: RatingsClient,
    ) -> Self {
        Self {
            catalog,
            catalog_v2,
            ratings,
            top_rated: Arc::new(StaleCache::new(Duration::from_secs(600))),
        }
    }
}

/// One value kept for fallbacks: the last good answer, served while no
/// older than `max_age`.
#[derive(Debug)]
pub struct StaleCache<T> {
    value: RwLock<Option<(T, Instant)>>,
    max_age: Duration,
}

impl<T: Clone> StaleCache<T> {
    /// An empty cache whose values are good for `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            value: RwLock::new(None),
            max_age,
        }
    }

    /// Remembers `value` as the last good one.
    pub fn put(&self, value: T) {
        *self.value.write().unwrap_or_else(PoisonError::into_inner) = Some((value, Instant::now()));
    }

    /// The last good value, unless it is too old.
    pub fn get(&self) -> Option<T> {
        self.value
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(_, at)| at.elapsed() <= self.max_age)
            .map(|(v, _)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stale_values_expire() {
        let c = StaleCache::new(Duration::from_secs(10));
        assert_eq!(c.get(), None::<u32>);
        c.put(7);
        assert_eq!(c.get(), Some(7));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(c.get(), None);
    }
}
