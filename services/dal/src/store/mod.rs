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

pub mod caller;
pub mod cql;
pub mod embedded;
pub mod token;

use std::sync::Arc;

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

/// Runs a blocking store call `op` off the async workers, for the caller
/// of the current request: nothing starts once its deadline passed, and
/// `f` is handed the [`Caller`] to check again before each further
/// blocking step; dropping the returned future tells it the caller left.
async fn blocking<T, F>(store: &Arc<EmbeddedStore>, op: &'static str, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&EmbeddedStore, &Caller) -> Result<T, StoreError> + Send + 'static,
{
    let caller = Caller::current(op, store.abandoned());
    caller.check("queue")?;
    let watch = caller.watch();
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || {
        // The blocking pool may have queued it: check again.
        caller.check("start")?;
        f(&store, &caller)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")));
    watch.finished();
    result?
}

impl Store {
    /// Answers when the store is usable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, "ping", |s, _| s.ping()).await,
            Self::Cql(s) => s.ping().await,
        }
    }

    /// One title.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn get_title(&self, id: String) -> Result<Option<Title>, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, "get_title", move |s, _| s.get_title(&id)).await,
            Self::Cql(s) => s.get_title(&id).await,
        }
    }

    /// Titles by id, in request order; unknown ids left out.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn batch_get_titles(&self, ids: Vec<String>) -> Result<Vec<Title>, StoreError> {
        match self {
            Self::Embedded(s) => {
                blocking(s, "batch_get_titles", move |s, _| s.batch_get_titles(&ids)).await
            }
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
                blocking(s, "list_titles", move |s, _| {
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
            Self::Embedded(s) => blocking(s, "list_genres", |s, c| s.list_genres(c)).await,
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
            Self::Embedded(s) => {
                blocking(s, "put_rating", move |s, c| s.put_rating(&rating, c)).await
            }
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
                blocking(s, "list_ratings_by_user", move |s, _| {
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
                blocking(s, "list_ratings_by_title", move |s, _| {
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
            Self::Embedded(s) => blocking(s, "summaries", move |s, _| s.summaries(&ids)).await,
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
                blocking(s, "top_rated", move |s, c| {
                    s.top_rated(limit, genre.as_deref(), min_count, c)
                })
                .await
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
            Self::Embedded(s) => {
                blocking(s, "put_progress", move |s, c| s.put_progress(&progress, c)).await
            }
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
            Self::Embedded(s) => {
                blocking(s, "list_progress", move |s, _| {
                    s.list_progress(&user_id, limit)
                })
                .await
            }
            Self::Cql(s) => s.list_progress(&user_id, limit).await,
        }
    }

    /// Applies schema migrations (idempotent); returns the schema version.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn migrate(&self) -> Result<u64, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, "migrate", |s, _| s.migrate()).await,
            Self::Cql(s) => s.migrate().await,
        }
    }

    /// Writes the seed data unless the store was seeded already.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn seed(&self, cfg: SeedConfig) -> Result<SeedReport, StoreError> {
        match self {
            Self::Embedded(s) => blocking(s, "seed", move |s, _| s.seed(&cfg)).await,
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
            Self::Embedded(s) => blocking(s, "repair", |s, _| s.repair()).await,
            Self::Cql(s) => s.repair().await,
        }
    }

    /// Registers the store's own metrics: for the embedded store,
    /// `fleet_dal_store_abandoned_total{op,step}` (calls stopped because
    /// their caller gave up; Cassandra queries are simply dropped).
    pub fn register_metrics(&self, metrics: &fleet_metrics::Metrics) {
        if let Self::Embedded(s) = self {
            metrics.register(
                "dal_store_abandoned",
                "Embedded-store calls stopped before a step because their caller gave up",
                s.abandoned().clone(),
            );
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
            Self::Embedded(s) => blocking(s, "inject_drift", |s, _| s.inject_drift()).await,
            Self::Cql(s) => s.inject_drift().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fleet_context::RequestContext;

    use super::caller::AbandonLabels;
    use super::*;

    fn seeded() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let cfg = SeedConfig {
            titles: 20,
            users: 5,
            seed: 3,
        };
        store.seed(&cfg).unwrap();
        (dir, Arc::new(store))
    }

    fn abandoned(s: &EmbeddedStore, op: &'static str) -> u64 {
        ["queue", "start", "apply", "commit"]
            .into_iter()
            .map(|step| {
                s.abandoned()
                    .get_or_create(&AbandonLabels { op, step })
                    .get()
            })
            .sum()
    }

    /// Waits (bounded) until `op` was counted as abandoned.
    async fn until_abandoned(s: &EmbeddedStore, op: &'static str) {
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while abandoned(s, op) == 0 {
            assert!(std::time::Instant::now() < give_up, "{op} never stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn rating(user: &str) -> Rating {
        Rating {
            user_id: user.into(),
            title_id: "t00001".into(),
            stars: 5,
            rated_at_ms: 1_700_000_000_000,
        }
    }

    /// The caller drops the call while the write waits for redb's write
    /// lock: once the lock is free, the write stops instead of committing.
    /// (Catches: no check after the lock is taken or before the commit —
    /// the rating would be stored and the summary counted.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_caller_left_does_no_further_store_work() {
        let (_dir, embedded) = seeded();
        let store = Store::Embedded(embedded.clone());
        let before = store.summaries(vec!["t00001".into()]).await.unwrap();
        let lock = embedded.hold_write_lock().unwrap();
        let call = store.put_rating(rating("u_left"));
        // The caller gives up while the write is stuck behind the lock.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), call)
                .await
                .is_err()
        );
        assert_eq!(abandoned(&embedded, "put_rating"), 0, "still queued");
        lock.abort().unwrap();
        until_abandoned(&embedded, "put_rating").await;

        let mine = store
            .list_ratings_by_user("u_left".into(), 10, None)
            .await
            .unwrap();
        assert!(mine.items.is_empty(), "nothing written: {mine:?}");
        let after = store.summaries(vec!["t00001".into()]).await.unwrap();
        assert_eq!(after, before, "summary untouched");
        assert_eq!(abandoned(&embedded, "put_rating"), 1);
    }

    /// The caller's deadline passes while the write waits for the lock:
    /// it answers `Timeout` and writes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_past_its_deadline_answers_timeout_and_writes_nothing() {
        let (_dir, embedded) = seeded();
        let store = Store::Embedded(embedded.clone());
        let lock = embedded.hold_write_lock().unwrap();
        let cx = RequestContext::new().with_budget(Duration::from_millis(50));
        let call = {
            let store = store.clone();
            tokio::spawn(cx.scope(async move {
                store
                    .put_progress(Progress {
                        user_id: "u_late".into(),
                        title_id: "t00002".into(),
                        position_s: 60,
                        updated_at_ms: 1_700_000_000_000,
                    })
                    .await
            }))
        };
        // Release the lock only once the deadline has passed.
        let cx_deadline = std::time::Instant::now() + Duration::from_millis(50);
        while std::time::Instant::now() < cx_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lock.abort().unwrap();
        let r = call.await.unwrap();
        assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");
        assert!(
            store
                .list_progress("u_late".into(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(abandoned(&embedded, "put_progress"), 1);
    }

    /// Nothing starts for a caller whose deadline already passed.
    #[tokio::test]
    async fn an_expired_caller_starts_no_store_work() {
        let (_dir, embedded) = seeded();
        let store = Store::Embedded(embedded.clone());
        let cx = RequestContext::new().with_budget(Duration::ZERO);
        let r = cx.scope(store.top_rated(10, None, 0)).await;
        assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");
        assert_eq!(
            embedded
                .abandoned()
                .get_or_create(&AbandonLabels {
                    op: "top_rated",
                    step: "queue"
                })
                .get(),
            1
        );
    }
}
