//! The embedded default: one redb file under `DATA_DIR`.
//!
//! redb is a pure-Rust, ACID, copy-on-write B-tree store (well kept, no C
//! toolchain, crash safe with fsync on commit), so the embedded default
//! survives restarts and kills like a real database does. The tables mirror
//! the Cassandra schema one for one — a table per query — so the two
//! backends answer every query the same way and `repair` checks the same
//! invariants on both. One file per group of tables: `titles`, `ratings`
//! (with the summaries), `progress`; `schema` holds the `meta` table,
//! migrations, seeding and the repair run. Values are the dal's own
//! records (`crate::record`), never proto messages.
//!
//! Concurrency: redb serializes write transactions, and every write reads
//! what is stored and decides last-write-wins inside its one transaction
//! (see `ratings`), so a duplicated or concurrent write sees the other's
//! result and can never double-count a summary.
//!
//! Cancellation: redb is blocking, so every call runs on the blocking pool
//! and asks its [`Caller`] before each blocking step (see
//! `store::caller`).

mod progress;
mod ratings;
mod schema;
mod titles;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, WriteTransaction};

use fleet_proto::dal::v1::{Genre, Progress, Rating, RatingSummary, Title};
use fleet_seed::SeedConfig;

use super::caller::{AbandonedCounter, Caller};
use super::{Page, ProgressOutcome, RatingOutcome, RepairReport, SeedReport, Store, StoreError};

pub use schema::SCHEMA_VERSION;

/// A scan asks its caller whether it still waits once per this many rows.
const SCAN_CHECK_ROWS: usize = 256;

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

/// The open redb file; its blocking methods live beside their tables.
struct Redb {
    db: Database,
    path: PathBuf,
    /// Calls stopped because their caller gave up (see [`Caller`]).
    abandoned: AbandonedCounter,
}

/// The redb-backed store (cheap to clone).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Redb>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn inverted(ms: i64) -> u64 {
    u64::MAX - u64::try_from(ms).unwrap_or(0)
}

fn from_inverted(inv: u64) -> i64 {
    i64::try_from(u64::MAX - inv).unwrap_or(i64::MAX)
}

/// The write transaction back while the caller still waits for `step`;
/// else it is rolled back and the caller's error returned.
fn still_wanted(
    tx: WriteTransaction,
    caller: &Caller,
    step: &'static str,
) -> Result<WriteTransaction, StoreError> {
    match caller.check(step) {
        Ok(()) => Ok(tx),
        Err(e) => {
            tx.abort()?;
            Err(e)
        }
    }
}

impl Redb {
    /// Sets a rating. Waiting for the write lock is the step that can take
    /// long, so the caller is asked again once it is held, and before the
    /// commit: a caller that gave up meanwhile gets nothing written (the
    /// transaction is rolled back).
    fn put_rating(&self, rating: &Rating, caller: &Caller) -> Result<RatingOutcome, StoreError> {
        let tx = self.db.begin_write()?;
        let tx = still_wanted(tx, caller, "apply")?;
        let outcome = ratings::apply(&tx, rating)?;
        if outcome.applied {
            let tx = still_wanted(tx, caller, "commit")?;
            tx.commit()?;
        } else {
            tx.abort()?;
        }
        Ok(outcome)
    }

    /// Records progress; like [`Self::put_rating`], nothing is written for
    /// a caller that gave up.
    fn put_progress(
        &self,
        progress: &Progress,
        caller: &Caller,
    ) -> Result<ProgressOutcome, StoreError> {
        let tx = self.db.begin_write()?;
        let tx = still_wanted(tx, caller, "apply")?;
        let outcome = progress::apply(&tx, progress)?;
        let tx = still_wanted(tx, caller, "commit")?;
        tx.commit()?;
        Ok(outcome)
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` and applies migrations
    /// (blocking: call it off the async workers).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the directory or file cannot be
    /// used (e.g. another process holds it).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("dal.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let inner = Redb {
            db,
            path,
            abandoned: AbandonedCounter::default(),
        };
        inner.migrate()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// `fleet_dal_store_abandoned_total{op,step}`: calls stopped because
    /// their caller gave up.
    pub fn abandoned(&self) -> &AbandonedCounter {
        &self.inner.abandoned
    }

    /// Holds redb's one write lock until the returned transaction is
    /// dropped, so tests can keep a write waiting for it.
    #[cfg(test)]
    fn hold_write_lock(&self) -> Result<WriteTransaction, StoreError> {
        Ok(self.inner.db.begin_write()?)
    }

    /// Runs the blocking call `op` off the async workers, for the caller
    /// of the current request: nothing starts once its deadline passed,
    /// and `f` is handed the [`Caller`] to check again before each further
    /// blocking step; dropping the returned future tells it the caller
    /// left.
    async fn blocking<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Redb, &Caller) -> Result<T, StoreError> + Send + 'static,
    {
        let caller = Caller::current(op, self.abandoned());
        caller.check("queue")?;
        let watch = caller.watch();
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            // The blocking pool may have queued it: check again.
            caller.check("start")?;
            f(&inner, &caller)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")));
        watch.finished();
        result?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn register_metrics(&self, metrics: &fleet_metrics::Metrics) {
        metrics.register(
            "dal_store_abandoned",
            "Embedded-store calls stopped before a step because their caller gave up",
            self.abandoned().clone(),
        );
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking("ping", |s, _| s.ping()).await
    }

    async fn get_title(&self, id: String) -> Result<Option<Title>, StoreError> {
        self.blocking("get_title", move |s, _| s.get_title(&id))
            .await
    }

    async fn batch_get_titles(&self, ids: Vec<String>) -> Result<Vec<Title>, StoreError> {
        self.blocking("batch_get_titles", move |s, _| s.batch_get_titles(&ids))
            .await
    }

    async fn list_titles(
        &self,
        genre: Option<String>,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Title>, StoreError> {
        self.blocking("list_titles", move |s, _| {
            s.list_titles(genre.as_deref(), limit, token.as_deref())
        })
        .await
    }

    async fn list_genres(&self) -> Result<Vec<Genre>, StoreError> {
        self.blocking("list_genres", |s, c| s.list_genres(c)).await
    }

    async fn put_rating(&self, rating: Rating) -> Result<RatingOutcome, StoreError> {
        self.blocking("put_rating", move |s, c| s.put_rating(&rating, c))
            .await
    }

    async fn list_ratings_by_user(
        &self,
        user_id: String,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Rating>, StoreError> {
        self.blocking("list_ratings_by_user", move |s, _| {
            s.list_ratings_by_user(&user_id, limit, token.as_deref())
        })
        .await
    }

    async fn list_ratings_by_title(
        &self,
        title_id: String,
        limit: usize,
        token: Option<Vec<u8>>,
    ) -> Result<Page<Rating>, StoreError> {
        self.blocking("list_ratings_by_title", move |s, _| {
            s.list_ratings_by_title(&title_id, limit, token.as_deref())
        })
        .await
    }

    async fn summaries(&self, ids: Vec<String>) -> Result<Vec<RatingSummary>, StoreError> {
        self.blocking("summaries", move |s, _| s.summaries(&ids))
            .await
    }

    async fn top_rated(
        &self,
        limit: usize,
        genre: Option<String>,
        min_count: u64,
    ) -> Result<Vec<RatingSummary>, StoreError> {
        self.blocking("top_rated", move |s, c| {
            s.top_rated(limit, genre.as_deref(), min_count, c)
        })
        .await
    }

    async fn put_progress(&self, progress: Progress) -> Result<ProgressOutcome, StoreError> {
        self.blocking("put_progress", move |s, c| s.put_progress(&progress, c))
            .await
    }

    async fn list_progress(
        &self,
        user_id: String,
        limit: usize,
    ) -> Result<Vec<Progress>, StoreError> {
        self.blocking("list_progress", move |s, _| {
            s.list_progress(&user_id, limit)
        })
        .await
    }

    async fn migrate(&self) -> Result<u64, StoreError> {
        self.blocking("migrate", |s, _| s.migrate()).await
    }

    async fn seed(&self, cfg: SeedConfig) -> Result<SeedReport, StoreError> {
        self.blocking("seed", move |s, _| s.seed(&cfg)).await
    }

    async fn repair(&self) -> Result<RepairReport, StoreError> {
        self.blocking("repair", |s, _| s.repair()).await
    }

    #[cfg(feature = "test-util")]
    async fn inject_drift(&self) -> Result<(), StoreError> {
        self.blocking("inject_drift", |s, _| s.inject_drift()).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fleet_context::RequestContext;

    use super::super::caller::AbandonLabels;
    use super::*;
    use crate::record::Format;

    fn seeded() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let cfg = SeedConfig {
            titles: 20,
            users: 5,
            seed: 3,
        };
        store.inner.seed(&cfg).unwrap();
        (dir, store)
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
        let store = embedded.clone();
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
        let store = embedded.clone();
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
        let store = embedded.clone();
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

    /// A file the previous release wrote (protobuf values, schema 1)
    /// opens, migrates to schema 2 with every value rewritten as a record,
    /// and reads the same data. (Catches: a migration that skips the
    /// rewrite — formats stay `LegacyProto` — or a reader without the
    /// protobuf fallback — the reads fail `Corrupt`.)
    #[tokio::test]
    async fn a_schema_1_file_is_rewritten_as_records_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let title = Title {
            id: "t00001".into(),
            name: "Old Film".into(),
            genre: "drama".into(),
            year: 1950,
            runtime_min: 90,
            synopsis: "written by the previous release".into(),
        };
        let rating = Rating {
            user_id: "u00001".into(),
            title_id: "t00001".into(),
            stars: 4,
            rated_at_ms: 1_600_000_000_000,
        };
        let progress = Progress {
            user_id: "u00001".into(),
            title_id: "t00001".into(),
            position_s: 600,
            updated_at_ms: 1_600_000_000_001,
        };
        {
            let old = EmbeddedStore::open(dir.path()).unwrap();
            old.inner
                .write_as_schema_1(&title, &rating, &progress)
                .unwrap();
            assert!(
                old.inner
                    .formats()
                    .unwrap()
                    .iter()
                    .all(|f| *f == Format::LegacyProto)
            );
            // What the previous release stored reads before migrating.
            assert_eq!(
                old.get_title("t00001".into()).await.unwrap(),
                Some(title.clone())
            );
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let formats = store.inner.formats().unwrap();
        assert_eq!(
            formats,
            vec![Format::Record; 4],
            "title, 2 ratings, progress"
        );
        assert_eq!(store.migrate().await.unwrap(), 2);
        assert_eq!(store.get_title("t00001".into()).await.unwrap(), Some(title));
        let by_title = store
            .list_ratings_by_title("t00001".into(), 10, None)
            .await
            .unwrap();
        assert_eq!(by_title.items, vec![rating.clone()]);
        assert_eq!(
            store.list_progress("u00001".into(), 10).await.unwrap(),
            vec![progress]
        );
        assert_eq!(store.repair().await.unwrap().found(), 0);
        // A later write of the same rating is a duplicate, not a new one.
        let again = store.put_rating(rating).await.unwrap();
        assert!(!again.applied);
        assert_eq!(again.summary.count, 1);
    }

    /// Data survives closing and reopening the file; seeding stays done.
    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SeedConfig {
            titles: 50,
            users: 20,
            seed: 7,
        };
        let r = Rating {
            user_id: "u12345".into(),
            title_id: "t00004".into(),
            stars: 5,
            rated_at_ms: 3_000_000_000_000,
        };
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert!(store.seed(cfg).await.unwrap().seeded);
            assert!(store.put_rating(r.clone()).await.unwrap().applied);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mine = store
            .list_ratings_by_user("u12345".into(), 10, None)
            .await
            .unwrap();
        assert_eq!(mine.items, vec![r]);
        assert!(!store.seed(cfg).await.unwrap().seeded);
    }
}
