//! The embedded default: one redb file under `DATA_DIR`.
//!
//! redb is a pure-Rust, ACID, copy-on-write B-tree store (well kept, no C
//! toolchain, crash safe with fsync on commit), so the embedded default
//! survives restarts and kills like a real database does. The tables mirror
//! the Cassandra schema one for one — a table per query — so the two
//! backends answer every query the same way and `repair` checks the same
//! invariants on both.
//!
//! Concurrency: redb serializes write transactions, and every rating write
//! reads the stored rating, decides last-write-wins on `rated_at_ms`, and
//! updates the by-user row, the by-title row, the time index and the summary
//! in that one transaction. A duplicated or concurrent write therefore sees
//! the other's result and can never double-count the summary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use fleet_proto::dal::v1::{Genre, Progress, Rating, RatingSummary, Title};
use fleet_seed::SeedConfig;

use super::caller::{AbandonedCounter, Caller};
use super::token::{self, Kind};
use super::{
    Page, ProgressOutcome, RatingOutcome, RepairReport, SeedReport, StoreError, by_average_desc,
    newer,
};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// id → Title (protobuf).
const TITLES: TableDefinition<&str, &[u8]> = TableDefinition::new("titles");
/// (genre, id) → ().
const TITLES_BY_GENRE: TableDefinition<(&str, &str), ()> = TableDefinition::new("titles_by_genre");
/// (user, title) → Rating (protobuf): the source of truth for a rating.
const RATINGS_BY_USER: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("ratings_by_user");
/// (user, u64::MAX - rated_at_ms, title) → stars: a user's ratings, newest first.
const RATINGS_BY_USER_TIME: TableDefinition<(&str, u64, &str), u32> =
    TableDefinition::new("ratings_by_user_time");
/// (title, user) → Rating (protobuf).
const RATINGS_BY_TITLE: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("ratings_by_title");
/// title → (count, stars_sum).
const SUMMARIES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("rating_summaries");
/// (user, title) → Progress (protobuf).
const PROGRESS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("progress");
/// (user, u64::MAX - updated_at_ms, title) → position_s: newest first.
const PROGRESS_BY_TIME: TableDefinition<(&str, u64, &str), u32> =
    TableDefinition::new("progress_by_time");

/// A scan asks its caller whether it still waits once per this many rows.
const SCAN_CHECK_ROWS: usize = 256;

const SCHEMA_KEY: &str = "schema_version";
const SEEDED_KEY: &str = "seeded";

/// The redb-backed store.
pub struct EmbeddedStore {
    db: Database,
    path: PathBuf,
    /// Calls stopped because their caller gave up (see [`Caller`]).
    abandoned: AbandonedCounter,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn inverted(ms: i64) -> u64 {
    u64::MAX - u64::try_from(ms).unwrap_or(0)
}

fn from_inverted(inv: u64) -> i64 {
    i64::try_from(u64::MAX - inv).unwrap_or(i64::MAX)
}

fn decode<M: Message + Default>(table: &'static str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

fn summary(title_id: &str, (count, stars_sum): (u64, u64)) -> RatingSummary {
    RatingSummary {
        title_id: title_id.to_owned(),
        count,
        stars_sum,
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` and applies migrations.
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
        let store = Self {
            db,
            path,
            abandoned: AbandonedCounter::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// `fleet_dal_store_abandoned_total{op,step}`: calls stopped because
    /// their caller gave up.
    pub fn abandoned(&self) -> &AbandonedCounter {
        &self.abandoned
    }

    /// Holds redb's one write lock until the returned transaction is
    /// dropped, so tests can keep a write waiting for it.
    #[cfg(test)]
    pub(crate) fn hold_write_lock(&self) -> Result<WriteTransaction, StoreError> {
        Ok(self.db.begin_write()?)
    }

    /// Checks the file answers a read.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn ping(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        tx.open_table(META)?.get(SCHEMA_KEY)?;
        Ok(())
    }

    /// Creates every table and records the schema version (idempotent).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn migrate(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(TITLES)?;
            tx.open_table(TITLES_BY_GENRE)?;
            tx.open_table(RATINGS_BY_USER)?;
            tx.open_table(RATINGS_BY_USER_TIME)?;
            tx.open_table(RATINGS_BY_TITLE)?;
            tx.open_table(SUMMARIES)?;
            tx.open_table(PROGRESS)?;
            tx.open_table(PROGRESS_BY_TIME)?;
            let mut meta = tx.open_table(META)?;
            let current = meta.get(SCHEMA_KEY)?.map(|v| v.value()).unwrap_or(0);
            if current < SCHEMA_VERSION {
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
            }
        }
        tx.commit()?;
        Ok(SCHEMA_VERSION)
    }

    /// One title.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn get_title(&self, id: &str) -> Result<Option<Title>, StoreError> {
        let tx = self.db.begin_read()?;
        let titles = tx.open_table(TITLES)?;
        titles
            .get(id)?
            .map(|v| decode("titles", v.value()))
            .transpose()
    }

    /// Titles by id in request order.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn batch_get_titles(&self, ids: &[String]) -> Result<Vec<Title>, StoreError> {
        let tx = self.db.begin_read()?;
        let titles = tx.open_table(TITLES)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = titles.get(id.as_str())? {
                out.push(decode("titles", v.value())?);
            }
        }
        Ok(out)
    }

    /// A page of titles ordered by id.
    ///
    /// # Errors
    /// [`StoreError::BadToken`].
    pub fn list_titles(
        &self,
        genre: Option<&str>,
        limit: usize,
        page_token: Option<&[u8]>,
    ) -> Result<Page<Title>, StoreError> {
        let after = page_token
            .map(|t| token::decode(Kind::Titles, false, t))
            .transpose()?
            .map(|(_, id)| id);
        let tx = self.db.begin_read()?;
        let titles = tx.open_table(TITLES)?;
        let mut items = Vec::new();
        let mut more = false;
        match genre {
            None => {
                let start = after.as_deref().unwrap_or("");
                for row in titles.range(start..)? {
                    let (k, v) = row?;
                    if after.as_deref() == Some(k.value()) {
                        continue;
                    }
                    if items.len() == limit {
                        more = true;
                        break;
                    }
                    items.push(decode::<Title>("titles", v.value())?);
                }
            }
            Some(genre) => {
                let by_genre = tx.open_table(TITLES_BY_GENRE)?;
                let start = (genre, after.as_deref().unwrap_or(""));
                for row in by_genre.range(start..)? {
                    let (k, _) = row?;
                    let (g, id) = k.value();
                    if g != genre {
                        break;
                    }
                    if after.as_deref() == Some(id) {
                        continue;
                    }
                    if items.len() == limit {
                        more = true;
                        break;
                    }
                    if let Some(v) = titles.get(id)? {
                        items.push(decode::<Title>("titles", v.value())?);
                    }
                }
            }
        }
        let next = if more {
            items
                .last()
                .map(|t| token::encode(Kind::Titles, None, &t.id))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Genres and their title counts, by name.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn list_genres(&self, caller: &Caller) -> Result<Vec<Genre>, StoreError> {
        let tx = self.db.begin_read()?;
        let by_genre = tx.open_table(TITLES_BY_GENRE)?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (i, row) in by_genre.iter()?.enumerate() {
            caller.check_every(i, SCAN_CHECK_ROWS, "scan")?;
            let (k, _) = row?;
            *counts.entry(k.value().0.to_owned()).or_default() += 1;
        }
        Ok(counts
            .into_iter()
            .map(|(name, title_count)| Genre { name, title_count })
            .collect())
    }

    /// Sets a rating; see the module docs for why it cannot double-count.
    /// Waiting for the write lock is the step that can take long, so the
    /// caller is asked again once it is held, and before the commit: a
    /// caller that gave up meanwhile gets nothing written (the transaction
    /// is rolled back).
    ///
    /// # Errors
    /// [`StoreError::TitleNotFound`]; [`StoreError::Timeout`] or
    /// [`StoreError::Abandoned`] when the caller gave up.
    pub fn put_rating(
        &self,
        rating: &Rating,
        caller: &Caller,
    ) -> Result<RatingOutcome, StoreError> {
        let tx = self.db.begin_write()?;
        let tx = still_wanted(tx, caller, "apply")?;
        let outcome = apply_rating(&tx, rating)?;
        if outcome.applied {
            let tx = still_wanted(tx, caller, "commit")?;
            tx.commit()?;
        } else {
            tx.abort()?;
        }
        Ok(outcome)
    }

    /// A user's ratings, newest first.
    ///
    /// # Errors
    /// [`StoreError::BadToken`].
    pub fn list_ratings_by_user(
        &self,
        user_id: &str,
        limit: usize,
        page_token: Option<&[u8]>,
    ) -> Result<Page<Rating>, StoreError> {
        let after = page_token
            .map(|t| token::decode(Kind::RatingsByUser, true, t))
            .transpose()?
            .map(|(ts, id)| (ts.unwrap_or(0), id));
        let tx = self.db.begin_read()?;
        let index = tx.open_table(RATINGS_BY_USER_TIME)?;
        let start = match &after {
            Some((inv, id)) => (user_id, *inv, id.as_str()),
            None => (user_id, 0, ""),
        };
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        for row in index.range(start..)? {
            let (k, v) = row?;
            let (user, inv, title) = k.value();
            if user != user_id {
                break;
            }
            if after
                .as_ref()
                .is_some_and(|(a_inv, a_id)| *a_inv == inv && a_id == title)
            {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            last = Some((inv, title.to_owned()));
            items.push(Rating {
                user_id: user.to_owned(),
                title_id: title.to_owned(),
                stars: v.value(),
                rated_at_ms: from_inverted(inv),
            });
        }
        let next = match (more, last) {
            (true, Some((inv, id))) => Some(token::encode(Kind::RatingsByUser, Some(inv), &id)),
            _ => None,
        };
        Ok(Page { items, next })
    }

    /// A title's ratings by user id.
    ///
    /// # Errors
    /// [`StoreError::BadToken`].
    pub fn list_ratings_by_title(
        &self,
        title_id: &str,
        limit: usize,
        page_token: Option<&[u8]>,
    ) -> Result<Page<Rating>, StoreError> {
        let after = page_token
            .map(|t| token::decode(Kind::RatingsByTitle, false, t))
            .transpose()?
            .map(|(_, id)| id);
        let tx = self.db.begin_read()?;
        let by_title = tx.open_table(RATINGS_BY_TITLE)?;
        let start = (title_id, after.as_deref().unwrap_or(""));
        let mut items: Vec<Rating> = Vec::new();
        let mut more = false;
        for row in by_title.range(start..)? {
            let (k, v) = row?;
            let (title, user) = k.value();
            if title != title_id {
                break;
            }
            if after.as_deref() == Some(user) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(decode("ratings_by_title", v.value())?);
        }
        let next = if more {
            items
                .last()
                .map(|r| token::encode(Kind::RatingsByTitle, None, &r.user_id))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Summaries in request order (count 0 when never rated).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn summaries(&self, ids: &[String]) -> Result<Vec<RatingSummary>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SUMMARIES)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let v = table.get(id.as_str())?.map_or((0, 0), |v| v.value());
            out.push(summary(id, v));
        }
        Ok(out)
    }

    /// Best-rated titles.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn top_rated(
        &self,
        limit: usize,
        genre: Option<&str>,
        min_count: u64,
        caller: &Caller,
    ) -> Result<Vec<RatingSummary>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SUMMARIES)?;
        let in_genre: Option<BTreeSet<String>> = match genre {
            Some(g) => {
                let by_genre = tx.open_table(TITLES_BY_GENRE)?;
                let mut ids = BTreeSet::new();
                for row in by_genre.range((g, "")..)? {
                    let (k, _) = row?;
                    let (kg, id) = k.value();
                    if kg != g {
                        break;
                    }
                    ids.insert(id.to_owned());
                }
                Some(ids)
            }
            None => None,
        };
        let mut all = Vec::new();
        for (i, row) in table.iter()?.enumerate() {
            caller.check_every(i, SCAN_CHECK_ROWS, "scan")?;
            let (k, v) = row?;
            let s = summary(k.value(), v.value());
            if s.count == 0 || s.count < min_count {
                continue;
            }
            if in_genre
                .as_ref()
                .is_some_and(|ids| !ids.contains(&s.title_id))
            {
                continue;
            }
            all.push(s);
        }
        all.sort_by(by_average_desc);
        all.truncate(limit);
        Ok(all)
    }

    /// Records progress, last write wins on `updated_at_ms`; like
    /// [`Self::put_rating`], nothing is written for a caller that gave up.
    ///
    /// # Errors
    /// [`StoreError::TitleNotFound`]; [`StoreError::Timeout`] or
    /// [`StoreError::Abandoned`] when the caller gave up.
    pub fn put_progress(
        &self,
        progress: &Progress,
        caller: &Caller,
    ) -> Result<ProgressOutcome, StoreError> {
        let tx = self.db.begin_write()?;
        let tx = still_wanted(tx, caller, "apply")?;
        let outcome = apply_progress(&tx, progress)?;
        let tx = still_wanted(tx, caller, "commit")?;
        tx.commit()?;
        Ok(outcome)
    }

    /// A user's progress, newest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn list_progress(&self, user_id: &str, limit: usize) -> Result<Vec<Progress>, StoreError> {
        let tx = self.db.begin_read()?;
        let index = tx.open_table(PROGRESS_BY_TIME)?;
        let mut out = Vec::new();
        for row in index.range((user_id, 0u64, "")..)? {
            let (k, v) = row?;
            let (user, inv, title) = k.value();
            if user != user_id || out.len() == limit {
                break;
            }
            out.push(Progress {
                user_id: user.to_owned(),
                title_id: title.to_owned(),
                position_s: v.value(),
                updated_at_ms: from_inverted(inv),
            });
        }
        Ok(out)
    }

    /// Writes the seed data in one transaction, once.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn seed(&self, cfg: &SeedConfig) -> Result<SeedReport, StoreError> {
        let tx = self.db.begin_write()?;
        let mut report = SeedReport::default();
        {
            let meta = tx.open_table(META)?;
            if meta.get(SEEDED_KEY)?.is_some() {
                return Ok(report);
            }
        }
        {
            let mut titles = tx.open_table(TITLES)?;
            let mut by_genre = tx.open_table(TITLES_BY_GENRE)?;
            for t in fleet_seed::titles(cfg) {
                let title = Title {
                    id: t.id,
                    name: t.name,
                    genre: t.genre.to_owned(),
                    year: t.year,
                    runtime_min: t.runtime_min,
                    synopsis: t.synopsis,
                };
                titles.insert(title.id.as_str(), title.encode_to_vec().as_slice())?;
                by_genre.insert((title.genre.as_str(), title.id.as_str()), ())?;
                report.titles += 1;
            }
        }
        for r in fleet_seed::ratings(cfg) {
            let rating = Rating {
                user_id: r.user_id,
                title_id: r.title_id,
                stars: r.stars,
                rated_at_ms: r.rated_at_ms,
            };
            if apply_rating(&tx, &rating)?.applied {
                report.ratings += 1;
            }
        }
        for p in fleet_seed::progress(cfg) {
            let progress = Progress {
                user_id: p.user_id,
                title_id: p.title_id,
                position_s: p.position_s,
                updated_at_ms: p.updated_at_ms,
            };
            apply_progress(&tx, &progress)?;
            report.progress += 1;
        }
        tx.open_table(META)?.insert(SEEDED_KEY, 1)?;
        tx.commit()?;
        report.seeded = true;
        Ok(report)
    }

    /// Checks every denormalized table against its source of truth and
    /// fixes what drifted, in one transaction.
    ///
    /// Sources of truth: `titles` for `titles_by_genre`; `ratings_by_user`
    /// for `ratings_by_title`, the time index and the summaries; `progress`
    /// for its time index.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn repair(&self) -> Result<RepairReport, StoreError> {
        let tx = self.db.begin_write()?;
        let mut report = RepairReport::default();
        report.checks.push(repair_genres(&tx)?);
        let (by_title, index, summaries) = repair_ratings(&tx)?;
        report.checks.push(by_title);
        report.checks.push(index);
        report.checks.push(summaries);
        report.checks.push(repair_progress(&tx)?);
        tx.commit()?;
        Ok(report)
    }

    /// Breaks every denormalized table behind the store's back (see
    /// `Store::inject_drift`): a wrong summary, a ghost rating by title, a
    /// ghost time-index row, a title under a wrong genre, a ghost progress
    /// row.
    ///
    /// # Errors
    /// [`StoreError`].
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_drift(&self) -> Result<(), StoreError> {
        let ghost = Rating {
            user_id: "u_ghost".into(),
            title_id: "t00002".into(),
            stars: 5,
            rated_at_ms: 1,
        };
        let tx = self.db.begin_write()?;
        {
            tx.open_table(SUMMARIES)?.insert("t00001", (999, 999))?;
            tx.open_table(RATINGS_BY_TITLE)?
                .insert(("t00002", "u_ghost"), ghost.encode_to_vec().as_slice())?;
            tx.open_table(RATINGS_BY_USER_TIME)?
                .insert(("u_ghost", 1, "t00002"), 5)?;
            tx.open_table(TITLES_BY_GENRE)?
                .insert(("nope", "t00001"), ())?;
            tx.open_table(PROGRESS_BY_TIME)?
                .insert(("u_ghost", 1, "t00001"), 1)?;
        }
        tx.commit()?;
        Ok(())
    }
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

fn apply_rating(tx: &WriteTransaction, r: &Rating) -> Result<RatingOutcome, StoreError> {
    if tx.open_table(TITLES)?.get(r.title_id.as_str())?.is_none() {
        return Err(StoreError::TitleNotFound(r.title_id.clone()));
    }
    let mut by_user = tx.open_table(RATINGS_BY_USER)?;
    let key = (r.user_id.as_str(), r.title_id.as_str());
    let existing: Option<Rating> = by_user
        .get(key)?
        .map(|v| decode("ratings_by_user", v.value()))
        .transpose()?;
    let mut summaries = tx.open_table(SUMMARIES)?;
    let current = summaries
        .get(r.title_id.as_str())?
        .map_or((0, 0), |v| v.value());
    let apply = existing
        .as_ref()
        .is_none_or(|old| newer((r.rated_at_ms, r.stars), (old.rated_at_ms, old.stars)));
    if !apply {
        let stored = existing.unwrap_or_else(|| r.clone());
        return Ok(RatingOutcome {
            rating: stored,
            applied: false,
            summary: summary(&r.title_id, current),
        });
    }
    by_user.insert(key, r.encode_to_vec().as_slice())?;
    let mut index = tx.open_table(RATINGS_BY_USER_TIME)?;
    let (count, sum) = match &existing {
        Some(old) => {
            index.remove((
                old.user_id.as_str(),
                inverted(old.rated_at_ms),
                old.title_id.as_str(),
            ))?;
            (
                current.0,
                (current.1 + u64::from(r.stars)).saturating_sub(u64::from(old.stars)),
            )
        }
        None => (current.0 + 1, current.1 + u64::from(r.stars)),
    };
    index.insert(
        (
            r.user_id.as_str(),
            inverted(r.rated_at_ms),
            r.title_id.as_str(),
        ),
        r.stars,
    )?;
    tx.open_table(RATINGS_BY_TITLE)?.insert(
        (r.title_id.as_str(), r.user_id.as_str()),
        r.encode_to_vec().as_slice(),
    )?;
    summaries.insert(r.title_id.as_str(), (count, sum))?;
    Ok(RatingOutcome {
        rating: r.clone(),
        applied: true,
        summary: summary(&r.title_id, (count, sum)),
    })
}

fn apply_progress(tx: &WriteTransaction, p: &Progress) -> Result<ProgressOutcome, StoreError> {
    if tx.open_table(TITLES)?.get(p.title_id.as_str())?.is_none() {
        return Err(StoreError::TitleNotFound(p.title_id.clone()));
    }
    let mut table = tx.open_table(PROGRESS)?;
    let key = (p.user_id.as_str(), p.title_id.as_str());
    let existing: Option<Progress> = table
        .get(key)?
        .map(|v| decode("progress", v.value()))
        .transpose()?;
    if let Some(old) = existing {
        if old == *p {
            return Ok(ProgressOutcome {
                applied: true,
                current: old,
            });
        }
        if !newer(
            (p.updated_at_ms, p.position_s),
            (old.updated_at_ms, old.position_s),
        ) {
            return Ok(ProgressOutcome {
                applied: false,
                current: old,
            });
        }
        tx.open_table(PROGRESS_BY_TIME)?.remove((
            old.user_id.as_str(),
            inverted(old.updated_at_ms),
            old.title_id.as_str(),
        ))?;
    }
    table.insert(key, p.encode_to_vec().as_slice())?;
    tx.open_table(PROGRESS_BY_TIME)?.insert(
        (
            p.user_id.as_str(),
            inverted(p.updated_at_ms),
            p.title_id.as_str(),
        ),
        p.position_s,
    )?;
    Ok(ProgressOutcome {
        applied: true,
        current: p.clone(),
    })
}

type Check = (&'static str, u64, u64);

fn repair_genres(tx: &WriteTransaction) -> Result<Check, StoreError> {
    let mut expected = BTreeSet::new();
    for row in tx.open_table(TITLES)?.iter()? {
        let (_, v) = row?;
        let t: Title = decode("titles", v.value())?;
        expected.insert((t.genre, t.id));
    }
    let mut by_genre = tx.open_table(TITLES_BY_GENRE)?;
    let mut actual = BTreeSet::new();
    for row in by_genre.iter()? {
        let (k, _) = row?;
        let (g, id) = k.value();
        actual.insert((g.to_owned(), id.to_owned()));
    }
    let mut found = 0;
    for (g, id) in actual.difference(&expected) {
        by_genre.remove((g.as_str(), id.as_str()))?;
        found += 1;
    }
    for (g, id) in expected.difference(&actual) {
        by_genre.insert((g.as_str(), id.as_str()), ())?;
        found += 1;
    }
    Ok(("titles_by_genre", found, found))
}

fn repair_ratings(tx: &WriteTransaction) -> Result<(Check, Check, Check), StoreError> {
    // The truth: every rating by (title, user).
    let mut truth: BTreeMap<(String, String), Rating> = BTreeMap::new();
    for row in tx.open_table(RATINGS_BY_USER)?.iter()? {
        let (_, v) = row?;
        let r: Rating = decode("ratings_by_user", v.value())?;
        truth.insert((r.title_id.clone(), r.user_id.clone()), r);
    }

    // ratings_by_title must equal the truth.
    let mut by_title = tx.open_table(RATINGS_BY_TITLE)?;
    let mut actual: BTreeMap<(String, String), Rating> = BTreeMap::new();
    for row in by_title.iter()? {
        let (k, v) = row?;
        let (t, u) = k.value();
        let r: Rating = decode("ratings_by_title", v.value())?;
        actual.insert((t.to_owned(), u.to_owned()), r);
    }
    let mut by_title_found = 0;
    for (key, r) in &actual {
        if !truth.contains_key(key) {
            by_title.remove((key.0.as_str(), key.1.as_str()))?;
            by_title_found += 1;
        } else if truth.get(key) != Some(r) {
            by_title_found += 1;
        }
    }
    for (key, r) in &truth {
        if actual.get(key) != Some(r) {
            if !actual.contains_key(key) {
                by_title_found += 1;
            }
            by_title.insert(
                (key.0.as_str(), key.1.as_str()),
                r.encode_to_vec().as_slice(),
            )?;
        }
    }

    // The time index must hold exactly one row per rating.
    let mut index = tx.open_table(RATINGS_BY_USER_TIME)?;
    let expected: BTreeMap<(String, u64, String), u32> = truth
        .values()
        .map(|r| {
            (
                (
                    r.user_id.clone(),
                    inverted(r.rated_at_ms),
                    r.title_id.clone(),
                ),
                r.stars,
            )
        })
        .collect();
    let mut present: BTreeMap<(String, u64, String), u32> = BTreeMap::new();
    for row in index.iter()? {
        let (k, v) = row?;
        let (u, inv, t) = k.value();
        present.insert((u.to_owned(), inv, t.to_owned()), v.value());
    }
    let mut index_found = 0;
    for (k, stars) in &present {
        if expected.get(k) != Some(stars) {
            index.remove((k.0.as_str(), k.1, k.2.as_str()))?;
            index_found += 1;
        }
    }
    for (k, stars) in &expected {
        if present.get(k) != Some(stars) {
            index.insert((k.0.as_str(), k.1, k.2.as_str()), *stars)?;
            if !present.contains_key(k) {
                index_found += 1;
            }
        }
    }

    // Summaries recomputed from the truth.
    let mut sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in truth.values() {
        let e = sums.entry(r.title_id.clone()).or_default();
        e.0 += 1;
        e.1 += u64::from(r.stars);
    }
    let mut table = tx.open_table(SUMMARIES)?;
    let mut stored: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for row in table.iter()? {
        let (k, v) = row?;
        stored.insert(k.value().to_owned(), v.value());
    }
    let mut summary_found = 0;
    for (id, v) in &stored {
        if !sums.contains_key(id) && *v != (0, 0) {
            table.remove(id.as_str())?;
            summary_found += 1;
        }
    }
    for (id, v) in &sums {
        if stored.get(id) != Some(v) {
            table.insert(id.as_str(), *v)?;
            summary_found += 1;
        }
    }
    Ok((
        ("ratings_by_title", by_title_found, by_title_found),
        ("ratings_by_user_time", index_found, index_found),
        ("rating_summaries", summary_found, summary_found),
    ))
}

fn repair_progress(tx: &WriteTransaction) -> Result<Check, StoreError> {
    let mut expected: BTreeMap<(String, u64, String), u32> = BTreeMap::new();
    for row in tx.open_table(PROGRESS)?.iter()? {
        let (_, v) = row?;
        let p: Progress = decode("progress", v.value())?;
        expected.insert(
            (p.user_id, inverted(p.updated_at_ms), p.title_id),
            p.position_s,
        );
    }
    let mut index = tx.open_table(PROGRESS_BY_TIME)?;
    let mut present: BTreeMap<(String, u64, String), u32> = BTreeMap::new();
    for row in index.iter()? {
        let (k, v) = row?;
        let (u, inv, t) = k.value();
        present.insert((u.to_owned(), inv, t.to_owned()), v.value());
    }
    let mut found = 0;
    for (k, pos) in &present {
        if expected.get(k) != Some(pos) {
            index.remove((k.0.as_str(), k.1, k.2.as_str()))?;
            found += 1;
        }
    }
    for (k, pos) in &expected {
        if present.get(k) != Some(pos) {
            index.insert((k.0.as_str(), k.1, k.2.as_str()), *pos)?;
            if !present.contains_key(k) {
                found += 1;
            }
        }
    }
    Ok(("progress_by_time", found, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller outside any request: no deadline, never leaves.
    fn waiting() -> Caller {
        Caller::current("test", &AbandonedCounter::default())
    }

    fn small() -> SeedConfig {
        SeedConfig {
            titles: 50,
            users: 20,
            seed: 7,
        }
    }

    fn rating(user: &str, title: &str, stars: u32, at: i64) -> Rating {
        Rating {
            user_id: user.into(),
            title_id: title.into(),
            stars,
            rated_at_ms: at,
        }
    }

    fn seeded() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(store.seed(&small()).unwrap().seeded);
        (dir, store)
    }

    #[test]
    fn seeding_is_once_and_consistent() {
        let (_dir, store) = seeded();
        assert!(!store.seed(&small()).unwrap().seeded);
        assert_eq!(store.repair().unwrap().found(), 0);
        let genres = store.list_genres(&waiting()).unwrap();
        assert_eq!(genres.iter().map(|g| g.title_count).sum::<u64>(), 50);
    }

    #[test]
    fn duplicate_and_stale_writes_never_double_count() {
        let (_dir, store) = seeded();
        let before = store.summaries(&["t00003".into()]).unwrap()[0].clone();
        let r = rating("u99999", "t00003", 4, 2_000_000_000_000);
        let first = store.put_rating(&r, &waiting()).unwrap();
        assert!(first.applied);
        assert_eq!(first.summary.count, before.count + 1);
        assert_eq!(first.summary.stars_sum, before.stars_sum + 4);
        // The same write again: no change.
        let dup = store.put_rating(&r, &waiting()).unwrap();
        assert!(!dup.applied);
        assert_eq!(dup.summary, first.summary);
        // An older write loses.
        let stale = store
            .put_rating(
                &rating("u99999", "t00003", 1, 1_999_999_999_999),
                &waiting(),
            )
            .unwrap();
        assert!(!stale.applied);
        assert_eq!(stale.rating.stars, 4);
        // A newer one replaces: count unchanged, sum adjusted.
        let newer = store
            .put_rating(
                &rating("u99999", "t00003", 2, 2_000_000_000_001),
                &waiting(),
            )
            .unwrap();
        assert!(newer.applied);
        assert_eq!(newer.summary.count, before.count + 1);
        assert_eq!(newer.summary.stars_sum, before.stars_sum + 2);
        let mine = store.list_ratings_by_user("u99999", 10, None).unwrap();
        assert_eq!(mine.items.len(), 1);
        assert_eq!(mine.items[0].stars, 2);
        assert_eq!(store.repair().unwrap().found(), 0);
    }

    #[test]
    fn concurrent_writes_of_one_rating_count_once() {
        let (_dir, store) = seeded();
        let store = std::sync::Arc::new(store);
        let before = store.summaries(&["t00010".into()]).unwrap()[0].clone();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    // Half send the same write, half a newer one.
                    let at = 2_000_000_000_000 + i64::from(i % 2);
                    store
                        .put_rating(&rating("u77777", "t00010", 3 + (i % 2), at), &waiting())
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let after = store.summaries(&["t00010".into()]).unwrap()[0].clone();
        assert_eq!(after.count, before.count + 1);
        assert_eq!(after.stars_sum, before.stars_sum + 4);
        assert_eq!(store.repair().unwrap().found(), 0);
    }

    #[test]
    fn pages_cover_everything_once() {
        let (_dir, store) = seeded();
        for genre in [None, Some("drama")] {
            let mut seen = Vec::new();
            let mut token = None;
            loop {
                let page = store.list_titles(genre, 7, token.as_deref()).unwrap();
                assert!(page.items.len() <= 7);
                seen.extend(page.items.into_iter().map(|t| t.id));
                match page.next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(seen, sorted, "ordered, no duplicates");
            if genre.is_none() {
                assert_eq!(seen.len(), 50);
            }
        }
        let user = "u00001";
        let all = store.list_ratings_by_user(user, 1000, None).unwrap().items;
        let mut paged = Vec::new();
        let mut token = None;
        loop {
            let page = store
                .list_ratings_by_user(user, 2, token.as_deref())
                .unwrap();
            paged.extend(page.items);
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(all, paged);
        assert!(
            all.windows(2).all(|w| w[0].rated_at_ms >= w[1].rated_at_ms),
            "newest first"
        );
        assert!(matches!(
            store.list_titles(None, 5, Some(b"\x02junk")),
            Err(StoreError::BadToken(_))
        ));
    }

    #[test]
    fn progress_is_last_write_wins_and_newest_first() {
        let (_dir, store) = seeded();
        let p = |title: &str, pos, at| Progress {
            user_id: "u88888".into(),
            title_id: title.into(),
            position_s: pos,
            updated_at_ms: at,
        };
        assert!(
            store
                .put_progress(&p("t00001", 10, 100), &waiting())
                .unwrap()
                .applied
        );
        assert!(
            store
                .put_progress(&p("t00002", 20, 200), &waiting())
                .unwrap()
                .applied
        );
        let stale = store.put_progress(&p("t00001", 5, 50), &waiting()).unwrap();
        assert!(!stale.applied);
        assert_eq!(stale.current.position_s, 10);
        assert!(
            store
                .put_progress(&p("t00001", 30, 300), &waiting())
                .unwrap()
                .applied
        );
        let list = store.list_progress("u88888", 10).unwrap();
        let ids: Vec<_> = list.iter().map(|p| p.title_id.as_str()).collect();
        assert_eq!(ids, ["t00001", "t00002"]);
        assert_eq!(list[0].position_s, 30);
        assert!(matches!(
            store.put_progress(&p("t99999", 1, 1), &waiting()),
            Err(StoreError::TitleNotFound(_))
        ));
    }

    #[test]
    fn repair_finds_and_fixes_drift() {
        let (_dir, store) = seeded();
        // Break every denormalized table behind the store's back.
        store.inject_drift().unwrap();
        let report = store.repair().unwrap();
        assert!(report.found() >= 5, "{report:?}");
        assert_eq!(report.found(), report.fixed());
        assert_eq!(store.repair().unwrap().found(), 0);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.seed(&small()).unwrap();
            store
                .put_rating(
                    &rating("u12345", "t00004", 5, 3_000_000_000_000),
                    &waiting(),
                )
                .unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mine = store.list_ratings_by_user("u12345", 10, None).unwrap();
        assert_eq!(mine.items.len(), 1);
        assert!(!store.seed(&small()).unwrap().seeded);
    }
}
