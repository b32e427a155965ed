//! Check and repair on Cassandra: scan every table, compare each derived
//! table with its source of truth, fix what drifted.
//!
//! Sources of truth: `titles` for `titles_by_genre` and `all_titles`;
//! the rows of `ratings_by_title` for its static summary columns and for
//! `ratings_by_user`; `progress` for `progress_by_user`.
//!
//! Repair may run while the dal serves writes. A difference seen in the
//! scans is re-checked against the truth before anything is changed (a
//! write that landed between the two scans is not drift), summaries are
//! fixed with the same compare-and-set on the version as a rating write,
//! and derived rows are written with the timestamps the write path uses
//! (or deleted at their own write time), so repair never overrides a
//! newer write. Only confirmed drift is counted; every confirmed
//! difference is fixed, so `found == fixed` unless a fix fails, which
//! fails the run.
//!
//! It scans whole tables into memory: fine for the reference data set
//! (thousands of titles, tens of thousands of ratings); a production
//! system would repair token range by token range.

use std::collections::{BTreeMap, BTreeSet};

use fleet_proto::dal::v1::Title;

use super::super::{RepairReport, StoreError};
use scylla::statement::prepared::PreparedStatement;

use super::CqlStore;
use super::queries::{TitleRow, progress_ts, rating_ts, title_from_row};
use super::statements::Statements;

type Check = (&'static str, u64, u64);

/// `(title_id, user_id, stars, rated_at_ms, rating_count, stars_sum)`.
type RatingScanRow = (
    String,
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// `(user_id, stars, rating_count, stars_sum, version)`, read serially.
type SerialSummaryRow = (
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// `(stars, rated_at_ms, prev_stars, prev_rated_at_ms)`.
type RatingRow = (Option<i32>, Option<i64>, Option<i32>, Option<i64>);

/// `(user_id, title_id, position_s, updated_at_ms, WRITETIME(position_s))`.
type ProgressScanRow = (String, String, Option<i32>, Option<i64>, Option<i64>);

/// `(key fields…, value, WRITETIME(value))` of a time-ordered index row.
type IndexRow = (String, i64, String, Option<i32>, Option<i64>);

fn unsigned(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// A rating (or progress) row as both its tables hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: i64,
    value: u32,
}

fn cql_int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(0)
}

/// A per-user index ordered by time (`(user_id, at, title_id, value)`),
/// derived from a source table keyed by user and title.
#[derive(Clone, Copy, Debug)]
enum TimeIndex {
    /// From `ratings_by_title`; the value is the stars.
    RatingsByUser,
    /// From `progress`; the value is the position.
    ProgressByUser,
}

impl TimeIndex {
    fn table(self) -> &'static str {
        match self {
            Self::RatingsByUser => "ratings_by_user",
            Self::ProgressByUser => "progress_by_user",
        }
    }

    /// Its scan, insert and delete.
    fn statements(
        self,
        st: &Statements,
    ) -> (&PreparedStatement, &PreparedStatement, &PreparedStatement) {
        match self {
            Self::RatingsByUser => (
                &st.scan_ratings_by_user,
                &st.insert_user_rating,
                &st.delete_user_rating,
            ),
            Self::ProgressByUser => (
                &st.scan_progress_by_user,
                &st.insert_progress_index,
                &st.delete_progress_index,
            ),
        }
    }

    /// The write time the write path gives a row holding `e`.
    fn timestamp(self, e: Entry) -> i64 {
        match self {
            Self::RatingsByUser => rating_ts(e.at, e.value),
            Self::ProgressByUser => progress_ts(e.at),
        }
    }
}

impl CqlStore {
    /// Finds and fixes drift; see the module docs.
    ///
    /// # Errors
    /// [`StoreError`] when a scan or a fix fails (run it again).
    pub async fn repair(&self) -> Result<RepairReport, StoreError> {
        let (_, st) = self.conn()?;
        let titles: BTreeMap<String, Title> = self
            .scan::<TitleRow>("titles", &st.scan_titles, ())
            .await?
            .into_iter()
            .map(|r| {
                let t = title_from_row(r);
                (t.id.clone(), t)
            })
            .collect();
        let mut report = RepairReport::default();
        report.checks.push(self.repair_genres(&titles).await?);
        report.checks.push(self.repair_all_titles(&titles).await?);
        let rows: Vec<RatingScanRow> = self
            .scan("ratings_by_title", &st.scan_ratings_by_title, ())
            .await?;
        report.checks.push(self.repair_summaries(&rows).await?);
        report
            .checks
            .push(self.repair_ratings_by_user(&rows).await?);
        report.checks.push(self.repair_progress().await?);
        Ok(report)
    }

    async fn repair_genres(&self, titles: &BTreeMap<String, Title>) -> Result<Check, StoreError> {
        let (_, st) = self.conn()?;
        let actual: BTreeMap<(String, String), Title> = self
            .scan::<TitleRow>("titles_by_genre", &st.scan_titles_by_genre, ())
            .await?
            .into_iter()
            .map(|r| {
                let t = title_from_row(r);
                ((t.genre.clone(), t.id.clone()), t)
            })
            .collect();
        let mut found = 0;
        for ((genre, id), t) in &actual {
            if titles.get(id).is_none_or(|truth| truth.genre != *genre) {
                self.exec("titles_by_genre", &st.delete_genre_row, (genre, id))
                    .await?;
                found += 1;
            } else if titles.get(id) != Some(t) {
                found += 1;
            }
        }
        for t in titles.values() {
            if actual.get(&(t.genre.clone(), t.id.clone())) != Some(t) {
                self.exec("titles_by_genre", &st.insert_genre_row, title_values(t))
                    .await?;
                if !actual.contains_key(&(t.genre.clone(), t.id.clone())) {
                    found += 1;
                }
            }
        }
        Ok(("titles_by_genre", found, found))
    }

    async fn repair_all_titles(
        &self,
        titles: &BTreeMap<String, Title>,
    ) -> Result<Check, StoreError> {
        let (_, st) = self.conn()?;
        let actual: BTreeMap<String, Title> = self
            .scan::<TitleRow>("all_titles", &st.titles_of_shard, (0i32,))
            .await?
            .into_iter()
            .map(|r| {
                let t = title_from_row(r);
                (t.id.clone(), t)
            })
            .collect();
        let mut found = 0;
        for id in actual.keys() {
            if !titles.contains_key(id) {
                self.exec("all_titles", &st.delete_all_row, (0i32, id))
                    .await?;
                found += 1;
            }
        }
        for t in titles.values() {
            if actual.get(&t.id) != Some(t) {
                let (id, name, genre, year, runtime, synopsis) = title_values(t);
                self.exec(
                    "all_titles",
                    &st.insert_all_row,
                    (0i32, id, name, genre, year, runtime, synopsis),
                )
                .await?;
                found += 1;
            }
        }
        Ok(("all_titles", found, found))
    }

    /// Every title's static summary must equal the count and sum of its
    /// rows.
    async fn repair_summaries(&self, rows: &[RatingScanRow]) -> Result<Check, StoreError> {
        // title → (rows counted, stars summed, stored count, stored sum)
        let mut per_title: BTreeMap<&str, (i64, i64, i64, i64)> = BTreeMap::new();
        for (title, user, stars, _, c, s) in rows {
            let e = per_title.entry(title.as_str()).or_default();
            e.2 = c.unwrap_or(0);
            e.3 = s.unwrap_or(0);
            if user.is_some() {
                e.0 += 1;
                e.1 += i64::from(stars.unwrap_or(0));
            }
        }
        let mut found = 0;
        for (title, (n, sum, c, s)) in per_title {
            if (n, sum) != (c, s) && self.fix_summary(title).await? {
                found += 1;
            }
        }
        Ok(("rating_summaries", found, found))
    }

    /// Recomputes one title's summary from a serial read of its partition
    /// and sets it with a compare-and-set on the version. `false` when
    /// the summary turned out right after all.
    async fn fix_summary(&self, title: &str) -> Result<bool, StoreError> {
        let (_, st) = self.conn()?;
        for _ in 0..10 {
            let rows: Vec<SerialSummaryRow> = self
                .rows("ratings_by_title", &st.ratings_of_title_serial, (title,))
                .await?;
            let (mut n, mut sum) = (0i64, 0i64);
            let (mut c, mut s, mut version) = (0, 0, None);
            for (user, stars, rc, ss, v) in &rows {
                (c, s, version) = (rc.unwrap_or(0), ss.unwrap_or(0), *v);
                if user.is_some() {
                    n += 1;
                    sum += i64::from(stars.unwrap_or(0));
                }
            }
            if (n, sum) == (c, s) {
                return Ok(false);
            }
            let next = Some(version.unwrap_or(0) + 1);
            let (session, _) = self.conn()?;
            let r = session.execute_unpaged(&st.summary_cas, (n, sum, next, title, version));
            let result = self
                .within("ratings_by_title", r)
                .await?
                .map_err(|e| super::exec_error("ratings_by_title", e))?;
            if super::applied("ratings_by_title", result)? {
                tracing::info!(
                    title_id = title,
                    count = n,
                    stars_sum = sum,
                    "summary repaired"
                );
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!(
            "summary of {title}: still contended after 10 attempts"
        )))
    }

    /// `ratings_by_user` must hold exactly one row per rating, the newest.
    async fn repair_ratings_by_user(&self, rows: &[RatingScanRow]) -> Result<Check, StoreError> {
        // (user, title) → the rating ratings_by_title holds.
        let truth = rows
            .iter()
            .filter_map(|(title, user, stars, at, _, _)| {
                Some((
                    (user.clone()?, title.clone()),
                    Entry {
                        at: (*at)?,
                        value: unsigned(*stars),
                    },
                ))
            })
            .collect();
        self.repair_time_index(TimeIndex::RatingsByUser, &truth)
            .await
    }

    /// `index` must hold exactly the entries of `truth`, keyed
    /// `(user, title)`: a row that differs is deleted at its own write time
    /// (and rewritten when only its value drifted), a missing one is
    /// written with the write path's timestamp. Every difference is
    /// re-checked against the source table first, so a write that landed
    /// since the scans is never taken for drift.
    async fn repair_time_index(
        &self,
        index: TimeIndex,
        truth: &BTreeMap<(String, String), Entry>,
    ) -> Result<Check, StoreError> {
        let (_, st) = self.conn()?;
        let (scan, insert, delete) = index.statements(st);
        let table = index.table();
        let actual: Vec<IndexRow> = self.scan(table, scan, ()).await?;
        let mut present = BTreeSet::new();
        let mut found = 0;
        for (user, at, title, value, written) in &actual {
            let row = Entry {
                at: *at,
                value: unsigned(*value),
            };
            let key = (user.clone(), title.clone());
            present.insert((key.clone(), row));
            if truth.get(&key) == Some(&row) {
                continue;
            }
            let now = self.current(index, user, title).await?;
            if now == Some(row) {
                continue;
            }
            let written = written.unwrap_or(0);
            self.exec(table, delete, (written, user, *at, title))
                .await?;
            if let Some(now) = now.filter(|n| n.at == row.at) {
                // Same position, wrong value: the truth must win over the
                // row just deleted.
                let ts = index.timestamp(now).max(written + 1);
                self.exec(table, insert, (user, now.at, title, cql_int(now.value), ts))
                    .await?;
            }
            found += 1;
        }
        for ((user, title), e) in truth {
            if present.contains(&((user.clone(), title.clone()), *e)) {
                continue;
            }
            if self.current(index, user, title).await? != Some(*e) {
                continue;
            }
            let ts = index.timestamp(*e);
            self.exec(table, insert, (user, e.at, title, cql_int(e.value), ts))
                .await?;
            found += 1;
        }
        Ok((table, found, found))
    }

    /// What the source table of `index` holds for `(user, title)` now.
    async fn current(
        &self,
        index: TimeIndex,
        user: &str,
        title: &str,
    ) -> Result<Option<Entry>, StoreError> {
        match index {
            TimeIndex::RatingsByUser => self.current_rating(title, user).await,
            TimeIndex::ProgressByUser => self.current_progress(user, title).await,
        }
    }

    async fn current_rating(&self, title: &str, user: &str) -> Result<Option<Entry>, StoreError> {
        let (_, st) = self.conn()?;
        let row: Option<RatingRow> = self
            .first("ratings_by_title", &st.rating_row, (title, user))
            .await?;
        Ok(row.and_then(|(stars, at, _, _)| {
            Some(Entry {
                at: at?,
                value: unsigned(stars),
            })
        }))
    }

    async fn current_progress(&self, user: &str, title: &str) -> Result<Option<Entry>, StoreError> {
        let (_, st) = self.conn()?;
        let row: Option<(Option<i32>, Option<i64>, Option<i64>)> = self
            .first("progress", &st.progress_row, (user, title))
            .await?;
        Ok(row.and_then(|(pos, at, _)| {
            Some(Entry {
                at: at?,
                value: unsigned(pos),
            })
        }))
    }

    /// `progress_by_user` must hold exactly one row per progress entry.
    async fn repair_progress(&self) -> Result<Check, StoreError> {
        let (_, st) = self.conn()?;
        let truth_rows: Vec<ProgressScanRow> = self.scan("progress", &st.scan_progress, ()).await?;
        let truth = truth_rows
            .into_iter()
            .filter_map(|(user, title, pos, at, _)| {
                Some((
                    (user, title),
                    Entry {
                        at: at?,
                        value: unsigned(pos),
                    },
                ))
            })
            .collect();
        self.repair_time_index(TimeIndex::ProgressByUser, &truth)
            .await
    }

    /// See `Store::inject_drift`: a wrong summary, a ghost rating by user,
    /// a title under a wrong genre, a title missing from `all_titles`, a
    /// ghost progress row.
    ///
    /// # Errors
    /// [`StoreError`].
    #[cfg(feature = "test-util")]
    pub async fn inject_drift(&self) -> Result<(), StoreError> {
        let (session, st) = self.conn()?;
        // Random positions, so drift injected again is new drift (and not
        // shadowed by the tombstones of the last repair).
        let at: i64 = rand::random_range(1..1_000_000_000);
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> = self
            .first("ratings_by_title", &st.summary_serial, ("t00001",))
            .await?;
        let version = row.and_then(|r| r.2);
        let r = session
            .execute_unpaged(
                &st.summary_cas,
                (999i64, 999i64, version, "t00001", version),
            )
            .await
            .map_err(|e| super::exec_error("ratings_by_title", e))?;
        if !super::applied("ratings_by_title", r)? {
            return Err(StoreError::Unavailable("summary changed meanwhile".into()));
        }
        self.exec(
            "ratings_by_user",
            &st.insert_user_rating,
            ("u_ghost", at, "t00002", 5i32, rating_ts(at, 5)),
        )
        .await?;
        self.exec(
            "titles_by_genre",
            &st.insert_genre_row,
            ("t00001", "ghost", "nope", 2000i32, 90i32, "ghost"),
        )
        .await?;
        self.exec("all_titles", &st.delete_all_row, (0i32, "t00002"))
            .await?;
        self.exec(
            "progress_by_user",
            &st.insert_progress_index,
            ("u_ghost", at, "t00001", 1i32, progress_ts(at)),
        )
        .await?;
        Ok(())
    }
}

fn title_values(t: &Title) -> (&str, &str, &str, i32, i32, &str) {
    (
        t.id.as_str(),
        t.name.as_str(),
        t.genre.as_str(),
        i32::try_from(t.year).unwrap_or(0),
        i32::try_from(t.runtime_min).unwrap_or(0),
        t.synopsis.as_str(),
    )
}
