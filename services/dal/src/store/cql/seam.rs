//! [`CqlStore`] behind the [`Store`] seam: each method is the query of the
//! same name (`queries`, `migrate`, `repair`); Cassandra's queries are
//! futures, cancelled by being dropped, so no blocking-pool hand-off is
//! needed here (compare the embedded store).

use async_trait::async_trait;

use fleet_proto::dal::v1::{Genre, Progress, Rating, RatingSummary, Title};
use fleet_seed::SeedConfig;

use super::super::{
    Page, ProgressOutcome, RatingOutcome, RepairReport, SeedReport, Store, StoreError,
};
use super::CqlStore;

#[async_trait]
impl Store for CqlStore {
    fn backend(&self) -> &'static str {
        "cassandra"
    }

    /// Nothing to add: [`CqlStore::start`] registers the store's metrics.
    fn register_metrics(&self, _metrics: &fleet_metrics::Metrics) {}

    async fn ping(&self) -> Result<(), StoreError> {
        CqlStore::ping(self).await
    }

    async fn get_title(&self, id: String) -> Result<Option<Title>, StoreError> {
        CqlStore::get_title(self, &id).await
    }

    async fn batch_get_titles(&self, ids: Vec<String>) -> Result<Vec<Title>, StoreError> {
        CqlStore::batch_get_titles(self, &ids).await
    }

    async fn list_titles(
        &self,
        genre: Option<String>,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Title>, StoreError> {
        CqlStore::list_titles(self, genre.as_deref(), limit, token.as_deref()).await
    }

    async fn list_genres(&self) -> Result<Vec<Genre>, StoreError> {
        CqlStore::list_genres(self).await
    }

    async fn put_rating(&self, rating: Rating) -> Result<RatingOutcome, StoreError> {
        CqlStore::put_rating(self, &rating).await
    }

    async fn list_ratings_by_user(
        &self,
        user_id: String,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Rating>, StoreError> {
        CqlStore::list_ratings_by_user(self, &user_id, limit, token.as_deref()).await
    }

    async fn list_ratings_by_title(
        &self,
        title_id: String,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Rating>, StoreError> {
        CqlStore::list_ratings_by_title(self, &title_id, limit, token.as_deref()).await
    }

    async fn summaries(&self, ids: Vec<String>) -> Result<Vec<RatingSummary>, StoreError> {
        CqlStore::summaries(self, &ids).await
    }

    async fn top_rated(
        &self,
        limit: usize,
        genre: Option<String>,
        min_count: u64,
    ) -> Result<Vec<RatingSummary>, StoreError> {
        CqlStore::top_rated(self, limit, genre.as_deref(), min_count).await
    }

    async fn put_progress(&self, progress: Progress) -> Result<ProgressOutcome, StoreError> {
        CqlStore::put_progress(self, &progress).await
    }

    async fn list_progress(
        &self,
        user_id: String,
        limit: usize,
    ) -> Result<Vec<Progress>, StoreError> {
        CqlStore::list_progress(self, &user_id, limit).await
    }

    async fn migrate(&self) -> Result<u64, StoreError> {
        CqlStore::migrate(self).await
    }

    async fn seed(&self, cfg: SeedConfig) -> Result<SeedReport, StoreError> {
        CqlStore::seed(self, &cfg).await
    }

    async fn repair(&self) -> Result<RepairReport, StoreError> {
        CqlStore::repair(self).await
    }

    #[cfg(feature = "test-util")]
    async fn inject_drift(&self) -> Result<(), StoreError> {
        CqlStore::inject_drift(self).await
    }
}
