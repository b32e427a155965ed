//! Storage behind the dal's API.
//!
//! The data model is denormalized per query, exactly as it is on Cassandra:
//! titles by id, titles by genre (paged), ratings by user (newest first),
//! ratings by title, one rating summary per title, viewing progress by user
//! (newest first). [`Store`] is the one type the gRPC service talks to; each
//! backend is a variant, so adding one never touches the handlers.
//!
//! Two backends answer every method identically (one test suite runs
//! against both): [`EmbeddedStore`] (redb, the default) and [`CqlStore`]
//! (Cassandra/Scylla through the `scylla` driver, when `SCYLLA_NODES` is
//! set).

pub mod cql;
pub mod embedded;
pub mod token;

use std::sync::Arc;

use fleet_proto::dal::v1::{Genre, Progress, Rating, RatingSummary, Title};
use fleet_seed::SeedConfig;

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
    /// Data in the store could not be decoded.
    #[error("corrupt record in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::from(redb::Error::from(e))
            }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

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

/// The storage backend (cheap to clone).
#[derive(Clone, Debug)]
pub enum Store {
    /// The embedded default: a redb file under `DATA_DIR`.
    Embedded(Arc<EmbeddedStore>),
    /// Cassandra/Scylla (`SCYLLA_NODES`).
    Cql(Arc<CqlStore>),
}

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

/// Runs a blocking store call off the async workers.
async fn blocking<T, F>(store: &Arc<EmbeddedStore>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
}

impl Store {
    /// Answers when the store is usable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, EmbeddedStore::ping).await,
            Self::Cql(s) => s.ping().await,
        }
    }

    /// One title.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn get_title(&self, id: String) -> Result<Option<Title>, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, move |s| s.get_title(&id)).await,
            Self::Cql(s) => s.get_title(&id).await,
        }
    }

    /// Titles by id, in request order; unknown ids left out.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn batch_get_titles(&self, ids: Vec<String>) -> Result<Vec<Title>, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, move |s| s.batch_get_titles(&ids)).await,
            Self::Cql(s) => s.batch_get_titles(&ids).await,
        }
    }

    /// A page of titles of `genre` (all when `None`), ordered by id.
    ///
    /// # Errors
    /// [`StoreError::BadToken`] for a token this store did not issue.
    pub async fn list_titles(
        &self,
        genre: Option<String>,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Title>, StoreError> {
        match self {
            Self::Embedded(s) => {
                blocking(s, move |s| {
                    s.list_titles(genre.as_deref(), limit, token.as_deref())
                })
                .await
            }
            Self::Cql(s) => {
                s.list_titles(genre.as_deref(), limit, token.as_deref())
                    .await
            }
        }
    }

    /// Genres with their title counts.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn list_genres(&self) -> Result<Vec<Genre>, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, EmbeddedStore::list_genres).await,
            Self::Cql(s) => s.list_genres().await,
        }
    }

    /// Sets a rating (last write wins on `rated_at_ms`), never
    /// double-counting the summary.
    ///
    /// # Errors
    /// [`StoreError::TitleNotFound`] when the title does not exist.
    pub async fn put_rating(&self, rating: Rating) -> Result<RatingOutcome, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, move |s| s.put_rating(&rating)).await,
            Self::Cql(s) => s.put_rating(&rating).await,
        }
    }

    /// A user's ratings, newest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn list_ratings_by_user(
        &self,
        user_id: String,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Rating>, StoreError> {
        match self {
            Self::Embedded(s) => {
                blocking(s, move |s| {
                    s.list_ratings_by_user(&user_id, limit, token.as_deref())
                })
                .await
            }
            Self::Cql(s) => {
                s.list_ratings_by_user(&user_id, limit, token.as_deref())
                    .await
            }
        }
    }

    /// A title's ratings, ordered by user id.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn list_ratings_by_title(
        &self,
        title_id: String,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Rating>, StoreError> {
        match self {
            Self::Embedded(s) => {
                blocking(s, move |s| {
                    s.list_ratings_by_title(&title_id, limit, token.as_deref())
                })
                .await
            }
            Self::Cql(s) => {
                s.list_ratings_by_title(&title_id, limit, token.as_deref())
                    .await
            }
        }
    }

    /// Summaries of the given titles (count 0 for titles never rated).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn summaries(&self, ids: Vec<String>) -> Result<Vec<RatingSummary>, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, move |s| s.summaries(&ids)).await,
            Self::Cql(s) => s.summaries(&ids).await,
        }
    }

    /// Best-rated titles by average then count.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn top_rated(
        &self,
        limit: usize,
        genre: Option<String>,
        min_count: u64,
    ) -> Result<Vec<RatingSummary>, StoreError> {
        match self {
            Self::Embedded(s) => {
                blocking(s, move |s| s.top_rated(limit, genre.as_deref(), min_count)).await
            }
            Self::Cql(s) => s.top_rated(limit, genre.as_deref(), min_count).await,
        }
    }

    /// Records progress (last write wins on `updated_at_ms`).
    ///
    /// # Errors
    /// [`StoreError::TitleNotFound`] when the title does not exist.
    pub async fn put_progress(&self, progress: Progress) -> Result<ProgressOutcome, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, move |s| s.put_progress(&progress)).await,
            Self::Cql(s) => s.put_progress(&progress).await,
        }
    }

    /// A user's progress, most recent first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn list_progress(
        &self,
        user_id: String,
        limit: usize,
    ) -> Result<Vec<Progress>, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, move |s| s.list_progress(&user_id, limit)).await,
            Self::Cql(s) => s.list_progress(&user_id, limit).await,
        }
    }

    /// Applies schema migrations (idempotent); returns the schema version.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn migrate(&self) -> Result<u64, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, EmbeddedStore::migrate).await,
            Self::Cql(s) => s.migrate().await,
        }
    }

    /// Writes the seed data unless the store was seeded already.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn seed(&self, cfg: SeedConfig) -> Result<SeedReport, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, move |s| s.seed(&cfg)).await,
            Self::Cql(s) => s.seed(&cfg).await,
        }
    }

    /// Finds and fixes drift between the denormalized tables (not the
    /// cache: see [`crate::cache::Cache::repair`]).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn repair(&self) -> Result<RepairReport, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, EmbeddedStore::repair).await,
            Self::Cql(s) => s.repair().await,
        }
    }

    /// Which backend this is, for logs and reports.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Cql(_) => "cassandra",
        }
    }

    /// Damages every denormalized table behind the store's back (and only
    /// that: every source of truth stays intact), so tests can check that
    /// `repair` finds and fixes at least five kinds of drift.
    ///
    /// # Errors
    /// [`StoreError`].
    #[cfg(feature = "test-util")]
    pub async fn inject_drift(&self) -> Result<(), StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, EmbeddedStore::inject_drift).await,
            Self::Cql(s) => s.inject_drift().await,
        }
    }
}
