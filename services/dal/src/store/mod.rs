//! Storage behind the dal's API.
//!
//! The data model is denormalized per query, exactly as it is on Cassandra:
//! titles by id, titles by genre (paged), ratings by user (newest first),
//! ratings by title, one rating summary per title, viewing progress by user
//! (newest first). [`Store`] is the seam the gRPC service talks to (as a
//! [`SharedStore`]); each backend is one implementation of it, so adding a
//! backend never touches the handlers.
//!
//! Two backends answer every method identically (one conformance suite,
//! `tests/store_conformance.rs`, runs against both): [`EmbeddedStore`]
//! (redb, the default) and [`CqlStore`] (Cassandra/Scylla through the
//! `scylla` driver, when `SCYLLA_NODES` is set). What the embedded store
//! persists are the dal's own versioned records (`crate::record`), never
//! the proto messages.

pub mod caller;
pub mod cql;
pub mod embedded;
pub mod token;

use std::sync::Arc;

use async_trait::async_trait;

use fleet_proto::dal::v1::{Genre, Progress, Rating, RatingSummary, Title};
use fleet_seed::SeedConfig;

pub use caller::Caller;
pub use cql::{CqlConfig, CqlStore, Startup};
pub use embedded::EmbeddedStore;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The title a write refers to does not exist.
    #[error("no title with id {0:?}")]
    TitleNotFound(String),
    /// A page token that this store did not issue.
    #[error("invalid page_token: {0}")]
    BadToken(&'static str),
    /// The store is unreachable or refused the operation.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The caller's deadline passed before the store answered.
    #[error("storage did not answer within the caller's deadline: {0}")]
    Timeout(String),
    /// The caller gave up (dropped the call) before the store finished;
    /// nothing further was done for it.
    #[error("the caller left before the store finished: {0}")]
    Abandoned(String),
    /// Data in the store could not be decoded (or a record encoded).
    #[error("corrupt record in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// What a rating write did.
#[derive(Clone, Debug, PartialEq)]
pub struct RatingOutcome {
    /// The rating stored after the call.
    pub rating: Rating,
    /// Whether this call changed stored state.
    pub applied: bool,
    /// The title's summary after the call.
    pub summary: RatingSummary,
}

/// What a progress write did.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressOutcome {
    /// Whether the request's progress is the stored one.
    pub applied: bool,
    /// What is stored after the call.
    pub current: Progress,
}

/// One page of rows and the token for the next.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next: Option<Vec<u8>>,
}

/// One check of a repair run: `(what, found, fixed)`.
pub type Check = (&'static str, u64, u64);

/// Counts from a check/repair run, per table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// `(what, found, fixed)` per kind of drift checked.
    pub checks: Vec<Check>,
}

impl RepairReport {
    /// Total drift found.
    pub fn found(&self) -> u64 {
        self.checks.iter().map(|c| c.1).sum()
    }

    /// Total drift fixed.
    pub fn fixed(&self) -> u64 {
        self.checks.iter().map(|c| c.2).sum()
    }
}

/// Counts of what seeding wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Titles written.
    pub titles: u64,
    /// Ratings written.
    pub ratings: u64,
    /// Progress rows written.
    pub progress: u64,
    /// False when the store was already seeded and nothing was written.
    pub seeded: bool,
}

/// The storage seam: everything the gRPC service, the admin commands and
/// the cache's repair ask of a backend. One implementation per backend
/// ([`EmbeddedStore`], [`CqlStore`]); both pass one conformance suite
/// (`tests/store_conformance.rs`). Callers hold a [`SharedStore`].
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which backend this is, for logs and reports.
    fn backend(&self) -> &'static str;

    /// Registers the backend's own metrics (the embedded store's
    /// `fleet_dal_store_abandoned_total{op,step}`; Cassandra registers
    /// its own when it starts).
    fn register_metrics(&self, metrics: &fleet_metrics::Metrics);

    /// Answers when the store is usable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn ping(&self) -> Result<(), StoreError>;

    /// One title.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn get_title(&self, id: String) -> Result<Option<Title>, StoreError>;

    /// Titles by id, in request order; unknown ids left out.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn batch_get_titles(&self, ids: Vec<String>) -> Result<Vec<Title>, StoreError>;

    /// A page of titles of `genre` (all when `None`), ordered by id.
    ///
    /// # Errors
    /// [`StoreError::BadToken`] for a token this store did not issue.
    async fn list_titles(
        &self,
        genre: Option<String>,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Title>, StoreError>;

    /// Genres with their title counts, by name.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn list_genres(&self) -> Result<Vec<Genre>, StoreError>;

    /// Sets a rating (last write wins on `(rated_at_ms, stars)`), never
    /// double-counting the summary.
    ///
    /// # Errors
    /// [`StoreError::TitleNotFound`] when the title does not exist.
    async fn put_rating(&self, rating: Rating) -> Result<RatingOutcome, StoreError>;

    /// A user's ratings, newest first.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn list_ratings_by_user(
        &self,
        user_id: String,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Rating>, StoreError>;

    /// A title's ratings, ordered by user id.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn list_ratings_by_title(
        &self,
        title_id: String,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Rating>, StoreError>;

    /// Summaries of the given titles, in request order (count 0 for titles
    /// never rated).
    ///
    /// # Errors
    /// [`StoreError`].
    async fn summaries(&self, ids: Vec<String>) -> Result<Vec<RatingSummary>, StoreError>;

    /// Best-rated titles by average, then count, then id
    /// ([`by_average_desc`]); titles rated fewer than `min_count` times
    /// (and never) left out.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn top_rated(
        &self,
        limit: usize,
        genre: Option<String>,
        min_count: u64,
    ) -> Result<Vec<RatingSummary>, StoreError>;

    /// Records progress (last write wins on `(updated_at_ms, position_s)`).
    ///
    /// # Errors
    /// [`StoreError::TitleNotFound`] when the title does not exist.
    async fn put_progress(&self, progress: Progress) -> Result<ProgressOutcome, StoreError>;

    /// A user's progress, most recent first.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn list_progress(
        &self,
        user_id: String,
        limit: usize,
    ) -> Result<Vec<Progress>, StoreError>;

    /// Applies schema migrations (idempotent); returns the schema version.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn migrate(&self) -> Result<u64, StoreError>;

    /// Writes the seed data unless the store was seeded already.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn seed(&self, cfg: SeedConfig) -> Result<SeedReport, StoreError>;

    /// Finds and fixes drift between the denormalized tables (not the
    /// cache: see [`crate::cache::Cache::repair`]).
    ///
    /// # Errors
    /// [`StoreError`].
    async fn repair(&self) -> Result<RepairReport, StoreError>;

    /// Damages every denormalized table behind the store's back (and only
    /// that: every source of truth stays intact) — a wrong summary of
    /// `t00001`, a ghost rating of `t00002` by title and in the time index,
    /// `t00001` under a wrong genre, a ghost progress row — so tests can
    /// check that `repair` finds and fixes at least five kinds of drift.
    ///
    /// # Errors
    /// [`StoreError`].
    #[cfg(feature = "test-util")]
    async fn inject_drift(&self) -> Result<(), StoreError>;
}

/// The store every caller holds (cheap to clone).
pub type SharedStore = Arc<dyn Store>;

/// Last write wins on `(timestamp, value)`: the value breaks exact ties so
/// every replica of the decision picks the same winner. Both backends
/// decide with this one function.
pub(crate) fn newer(new: (i64, u32), old: (i64, u32)) -> bool {
    new > old
}

/// Best first: by average (compared without floats, a/b vs c/d as a·d vs
/// c·b), then by count, then by id.
pub(crate) fn by_average_desc(a: &RatingSummary, b: &RatingSummary) -> std::cmp::Ordering {
    let left = u128::from(a.stars_sum) * u128::from(b.count);
    let right = u128::from(b.stars_sum) * u128::from(a.count);
    right
        .cmp(&left)
        .then(b.count.cmp(&a.count))
        .then_with(|| a.title_id.cmp(&b.title_id))
}
