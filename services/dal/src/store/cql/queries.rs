//! The store's operations on Cassandra: the same answers as the embedded
//! store, query for query.

use std::collections::{BTreeMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use scylla::deserialize::row::DeserializeRow;
use scylla::response::PagingState;
use scylla::serialize::batch::BatchValues;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;

use fleet_proto::dal::v1::{Genre, Progress, Rating, RatingSummary, Title};
use fleet_seed::SeedConfig;

use super::super::token::{self, Kind};
use super::super::{
    Page, ProgressOutcome, RatingOutcome, SeedReport, StoreError, by_average_desc, newer,
};
use super::{Cas, CqlStore, applied, cas_outcome_unknown, corrupt, exec_error};

/// The one partition of `all_titles`.
const ALL_TITLES_SHARD: i32 = 0;
/// Compare-and-set attempts of one rating write before giving up.
const CAS_ATTEMPTS: u32 = 12;
/// Titles (or users) seeded side by side.
const SEED_PARALLELISM: usize = 16;

/// `(id, name, genre, year, runtime_min, synopsis)`.
pub(super) type TitleRow = (
    String,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i32>,
    Option<String>,
);

pub(super) fn title_from_row(r: TitleRow) -> Title {
    let (id, name, genre, year, runtime_min, synopsis) = r;
    Title {
        id,
        name: name.unwrap_or_default(),
        genre: genre.unwrap_or_default(),
        year: year.and_then(|y| u32::try_from(y).ok()).unwrap_or(0),
        runtime_min: runtime_min.and_then(|m| u32::try_from(m).ok()).unwrap_or(0),
        synopsis: synopsis.unwrap_or_default(),
    }
}

fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn unsigned(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

pub(super) fn count(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// The write timestamp (µs) of a rating's derived rows: its time, with
/// the stars breaking ties exactly as [`newer`] does.
pub(super) fn rating_ts(rated_at_ms: i64, stars: u32) -> i64 {
    rated_at_ms
        .saturating_mul(1000)
        .saturating_add(i64::from(stars))
}

/// The write timestamp (µs) of progress: its time; equal timestamps are
/// resolved by Cassandra in favour of the larger value, i.e. the larger
/// position, which is again what [`newer`] decides.
pub(super) fn progress_ts(updated_at_ms: i64) -> i64 {
    updated_at_ms.saturating_mul(1000)
}

/// `(user_id, stars, rated_at_ms)` of `ratings_by_title`; all null in a
/// partition that holds only its summary.
type TitleRatingRow = (Option<String>, Option<i32>, Option<i64>);

/// A stored rating row as the conditions need it (raw, nulls included).
#[derive(Clone, Copy, Debug, PartialEq)]
struct StoredRating {
    stars: Option<i32>,
    at: Option<i64>,
    prev_stars: Option<i32>,
    prev_at: Option<i64>,
}

impl StoredRating {
    fn key(&self) -> (i64, u32) {
        (self.at.unwrap_or(0), unsigned(self.stars))
    }
}

/// A title's summary with the version its next change must name.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct StoredSummary {
    count: i64,
    sum: i64,
    version: Option<i64>,
}

impl StoredSummary {
    fn to_proto(self, title_id: &str) -> RatingSummary {
        RatingSummary {
            title_id: title_id.to_owned(),
            count: count(Some(self.count)),
            stars_sum: count(Some(self.sum)),
        }
    }
}

impl CqlStore {
    // ---------------------------------------------------------------
    // query helpers: every one bounded by the caller's deadline

    /// All rows of an unpaged query.
    pub(super) async fn rows<T>(
        &self,
        table: &'static str,
        stmt: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let (session, _) = self.conn()?;
        let result = self
            .within(table, session.execute_unpaged(stmt, values))
            .await?
            .map_err(|e| exec_error(table, e))?;
        let rows = result.into_rows_result().map_err(|e| corrupt(table, e))?;
        rows.rows::<T>()
            .map_err(|e| corrupt(table, e))?
            .map(|r| r.map_err(|e| corrupt(table, e)))
            .collect()
    }

    /// The first row, if any.
    pub(super) async fn first<T>(
        &self,
        table: &'static str,
        stmt: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<T>, StoreError>
    where
        T: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        Ok(self.rows(table, stmt, values).await?.into_iter().next())
    }

    /// One page (of the statement's page size) from `state`, and the
    /// state of the next page, if the driver says there is one.
    async fn page<T>(
        &self,
        table: &'static str,
        stmt: &PreparedStatement,
        values: impl SerializeRow,
        state: PagingState,
    ) -> Result<(Vec<T>, Option<PagingState>), StoreError>
    where
        T: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let (session, _) = self.conn()?;
        let (result, next) = self
            .within(table, session.execute_single_page(stmt, values, state))
            .await?
            .map_err(|e| exec_error(table, e))?;
        let rows = result.into_rows_result().map_err(|e| corrupt(table, e))?;
        let items = rows
            .rows::<T>()
            .map_err(|e| corrupt(table, e))?
            .map(|r| r.map_err(|e| corrupt(table, e)))
            .collect::<Result<Vec<T>, _>>()?;
        let next = match next.into_paging_control_flow() {
            std::ops::ControlFlow::Continue(state) => Some(state),
            std::ops::ControlFlow::Break(()) => None,
        };
        Ok((items, next))
    }

    /// Every row of a (possibly whole-table) scan, page by page; each
    /// page is bounded by the budget.
    pub(super) async fn scan<T>(
        &self,
        table: &'static str,
        stmt: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static,
    {
        let (session, _) = self.conn()?;
        let pager = self
            .within(table, session.execute_iter(stmt.clone(), values))
            .await?
            .map_err(|e| StoreError::Unavailable(format!("{table}: {e}")))?;
        let mut rows = pager.rows_stream::<T>().map_err(|e| corrupt(table, e))?;
        let mut out = Vec::new();
        while let Some(row) = self.within(table, rows.next()).await? {
            out.push(row.map_err(|e| StoreError::Unavailable(format!("{table}: {e}")))?);
        }
        Ok(out)
    }

    pub(super) async fn exec(
        &self,
        table: &'static str,
        stmt: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<(), StoreError> {
        let (session, _) = self.conn()?;
        self.within(table, session.execute_unpaged(stmt, values))
            .await?
            .map_err(|e| exec_error(table, e))?;
        Ok(())
    }

    /// Runs a conditional batch (one compare-and-set round).
    async fn cas_batch(
        &self,
        table: &'static str,
        batch: &Batch,
        values: impl BatchValues,
    ) -> Result<Cas, StoreError> {
        let (session, _) = self.conn()?;
        let (budget, from_caller) = self.budget(table)?;
        match tokio::time::timeout(budget, session.batch(batch, values)).await {
            Ok(Ok(result)) => Ok(if applied(table, result)? {
                Cas::Applied
            } else {
                Cas::Lost
            }),
            Ok(Err(e)) if cas_outcome_unknown(&e) => {
                tracing::debug!(table, error = %e, "compare-and-set outcome unknown; re-reading");
                Ok(Cas::Unknown)
            }
            Ok(Err(e)) => Err(exec_error(table, e)),
            // The caller gave up: a retry of the same write finds out.
            Err(_) if from_caller => Err(StoreError::Timeout(format!(
                "{table}: the caller's deadline passed during a compare-and-set"
            ))),
            Err(_) => Ok(Cas::Unknown),
        }
    }

    /// Runs a batch; for a conditional one, whether it applied.
    pub(super) async fn batch(
        &self,
        table: &'static str,
        batch: &Batch,
        values: impl BatchValues,
        conditional: bool,
    ) -> Result<bool, StoreError> {
        let (session, _) = self.conn()?;
        let result = self
            .within(table, session.batch(batch, values))
            .await?
            .map_err(|e| exec_error(table, e))?;
        if conditional {
            applied(table, result)
        } else {
            Ok(true)
        }
    }

    // ---------------------------------------------------------------
    // titles

    /// One title.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn get_title(&self, id: &str) -> Result<Option<Title>, StoreError> {
        let (_, st) = self.conn()?;
        let row: Option<TitleRow> = self.first("titles", &st.title, (id,)).await?;
        Ok(row.map(title_from_row))
    }

    /// Titles by id in request order, unknown ids left out (one token-aware
    /// query per id, side by side).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn batch_get_titles(&self, ids: &[String]) -> Result<Vec<Title>, StoreError> {
        let found = futures::future::try_join_all(ids.iter().map(|id| self.get_title(id))).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn require_title(&self, id: &str) -> Result<(), StoreError> {
        if self.known_titles.contains_key(id) {
            return Ok(());
        }
        match self.get_title(id).await? {
            Some(_) => {
                self.known_titles.insert(id.to_owned(), ()).await;
                Ok(())
            }
            None => Err(StoreError::TitleNotFound(id.to_owned())),
        }
    }

    /// A page of titles of `genre` (all when `None`) in id order.
    ///
    /// # Errors
    /// [`StoreError::BadToken`].
    pub async fn list_titles(
        &self,
        genre: Option<&str>,
        limit: usize,
        page_token: Option<&[u8]>,
    ) -> Result<Page<Title>, StoreError> {
        let (_, st) = self.conn()?;
        let scope = genre.unwrap_or("");
        let state = match page_token {
            Some(t) => {
                PagingState::new_from_raw_bytes(token::decode_state(Kind::CqlTitles, scope, t)?)
            }
            None => PagingState::start(),
        };
        let (rows, next): (Vec<TitleRow>, _) = match genre {
            Some(g) => {
                let stmt = paged(&st.titles_of_genre, limit);
                self.page("titles_by_genre", &stmt, (g,), state).await?
            }
            None => {
                let stmt = paged(&st.titles_of_shard, limit);
                self.page("all_titles", &stmt, (ALL_TITLES_SHARD,), state)
                    .await?
            }
        };
        Ok(Page {
            items: rows.into_iter().map(title_from_row).collect(),
            next: next.map(|s| state_token(Kind::CqlTitles, scope, &s)),
        })
    }

    /// Genres and their title counts, by name.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn list_genres(&self) -> Result<Vec<Genre>, StoreError> {
        let (_, st) = self.conn()?;
        let names: Vec<(String,)> = self.scan("titles_by_genre", &st.genre_names, ()).await?;
        let counts = futures::future::try_join_all(names.into_iter().map(|(name,)| async move {
            let n: Option<(i64,)> = self
                .first("titles_by_genre", &st.genre_count, (&name,))
                .await?;
            Ok::<_, StoreError>(Genre {
                name,
                title_count: count(n.map(|n| n.0)),
            })
        }))
        .await?;
        let mut genres: Vec<Genre> = counts.into_iter().filter(|g| g.title_count > 0).collect();
        genres.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(genres)
    }

    // ---------------------------------------------------------------
    // ratings

    async fn stored_rating(
        &self,
        title_id: &str,
        user_id: &str,
        serial: bool,
    ) -> Result<(Option<StoredRating>, StoredSummary), StoreError> {
        let (_, st) = self.conn()?;
        let (row_stmt, sum_stmt) = if serial {
            (&st.rating_row_serial, &st.summary_serial)
        } else {
            (&st.rating_row, &st.summary)
        };
        let (row, summary) = futures::future::try_join(
            self.first::<(Option<i32>, Option<i64>, Option<i32>, Option<i64>)>(
                "ratings_by_title",
                row_stmt,
                (title_id, user_id),
            ),
            self.first::<(Option<i64>, Option<i64>, Option<i64>)>(
                "ratings_by_title",
                sum_stmt,
                (title_id,),
            ),
        )
        .await?;
        let row = row.map(|(stars, at, prev_stars, prev_at)| StoredRating {
            stars,
            at,
            prev_stars,
            prev_at,
        });
        let summary = summary.map_or_else(StoredSummary::default, |(c, s, v)| StoredSummary {
            count: c.unwrap_or(0),
            sum: s.unwrap_or(0),
            version: v,
        });
        Ok((row, summary))
    }

    /// Sets a rating, last write wins on `(rated_at_ms, stars)`; see the
    /// module docs for why the summary can never double-count.
    ///
    /// # Errors
    /// [`StoreError::TitleNotFound`]; [`StoreError::Unavailable`] when the
    /// compare-and-set keeps losing or Cassandra fails.
    pub async fn put_rating(&self, r: &Rating) -> Result<RatingOutcome, StoreError> {
        self.require_title(&r.title_id).await?;
        let (_, st) = self.conn()?;
        let stripe = crc32fast::hash(r.title_id.as_bytes()) as usize % self.title_locks.len();
        let _queued = match self.title_locks.get(stripe) {
            Some(lock) => Some(self.within("ratings_by_title", lock.lock()).await?),
            None => None,
        };
        let stars = int(r.stars);
        // Set when a round's outcome was unknown: finding this very
        // rating stored afterwards may mean that round applied it.
        let mut maybe_applied = false;
        for attempt in 0..CAS_ATTEMPTS {
            // The first read is a plain quorum read; after a lost race,
            // a serial read sees the winner's committed state.
            let (row, summary) = self
                .stored_rating(&r.title_id, &r.user_id, attempt > 0)
                .await?;
            if let Some(old) = &row
                && !newer((r.rated_at_ms, r.stars), old.key())
            {
                let ours = old.key() == (r.rated_at_ms, r.stars);
                if ours {
                    // This very rating is stored (a retry or duplicate, or
                    // our own round that timed out): make sure its derived
                    // row exists too, in case an earlier attempt died
                    // after its Paxos round.
                    self.write_user_rating(r, old.prev_at).await?;
                }
                return Ok(RatingOutcome {
                    rating: Rating {
                        user_id: r.user_id.clone(),
                        title_id: r.title_id.clone(),
                        stars: unsigned(old.stars),
                        rated_at_ms: old.at.unwrap_or(0),
                    },
                    applied: ours && maybe_applied,
                    summary: summary.to_proto(&r.title_id),
                });
            }
            let next = StoredSummary {
                count: summary.count + i64::from(row.is_none()),
                sum: (summary.sum + i64::from(stars)
                    - row.as_ref().and_then(|o| o.stars).map_or(0, i64::from))
                .max(0),
                version: Some(summary.version.unwrap_or(0) + 1),
            };
            let cas = (
                next.count,
                next.sum,
                next.version,
                r.title_id.as_str(),
                summary.version,
            );
            let round = match &row {
                None => {
                    self.cas_batch(
                        "ratings_by_title",
                        &st.rating_insert_cas,
                        (
                            (
                                r.title_id.as_str(),
                                r.user_id.as_str(),
                                stars,
                                r.rated_at_ms,
                            ),
                            cas,
                        ),
                    )
                    .await?
                }
                Some(old) => {
                    self.cas_batch(
                        "ratings_by_title",
                        &st.rating_update_cas,
                        (
                            (
                                stars,
                                r.rated_at_ms,
                                old.stars,
                                old.at,
                                r.title_id.as_str(),
                                r.user_id.as_str(),
                                old.stars,
                                old.at,
                            ),
                            cas,
                        ),
                    )
                    .await?
                }
            };
            if round == Cas::Unknown {
                maybe_applied = true;
            }
            if round == Cas::Applied {
                self.write_user_rating(r, row.and_then(|o| o.at)).await?;
                return Ok(RatingOutcome {
                    rating: r.clone(),
                    applied: true,
                    summary: next.to_proto(&r.title_id),
                });
            }
            // Someone changed the row or the summary since we read them,
            // or the round's outcome is unknown: re-read serially.
            self.cas_retries.inc();
            let pause = rand::random_range(0..(2u64 << attempt.min(5)));
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        Err(StoreError::Unavailable(format!(
            "rating of {} by {}: still contended after {CAS_ATTEMPTS} compare-and-set attempts",
            r.title_id, r.user_id
        )))
    }

    /// The user-side row of a rating that is stored in `ratings_by_title`,
    /// replacing the row of the rating it replaced (written at `prev_at`).
    async fn write_user_rating(&self, r: &Rating, prev_at: Option<i64>) -> Result<(), StoreError> {
        let (_, st) = self.conn()?;
        let ts = rating_ts(r.rated_at_ms, r.stars);
        let insert = (
            r.user_id.as_str(),
            r.rated_at_ms,
            r.title_id.as_str(),
            int(r.stars),
            ts,
        );
        match prev_at {
            Some(prev) if prev != r.rated_at_ms => {
                self.batch(
                    "ratings_by_user",
                    &st.move_user_rating,
                    (insert, (ts, r.user_id.as_str(), prev, r.title_id.as_str())),
                    false,
                )
                .await?;
            }
            _ => {
                self.exec("ratings_by_user", &st.insert_user_rating, insert)
                    .await?;
            }
        }
        Ok(())
    }

    /// A user's ratings, newest first.
    ///
    /// # Errors
    /// [`StoreError::BadToken`].
    pub async fn list_ratings_by_user(
        &self,
        user_id: &str,
        limit: usize,
        page_token: Option<&[u8]>,
    ) -> Result<Page<Rating>, StoreError> {
        let (_, st) = self.conn()?;
        let state = match page_token {
            Some(t) => PagingState::new_from_raw_bytes(token::decode_state(
                Kind::CqlRatingsByUser,
                user_id,
                t,
            )?),
            None => PagingState::start(),
        };
        let stmt = paged(&st.ratings_of_user, limit);
        let (rows, next): (Vec<(String, Option<i32>, i64)>, _) = self
            .page("ratings_by_user", &stmt, (user_id,), state)
            .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|(title_id, stars, rated_at_ms)| Rating {
                    user_id: user_id.to_owned(),
                    title_id,
                    stars: unsigned(stars),
                    rated_at_ms,
                })
                .collect(),
            next: next.map(|s| state_token(Kind::CqlRatingsByUser, user_id, &s)),
        })
    }

    /// A title's ratings by user id.
    ///
    /// # Errors
    /// [`StoreError::BadToken`].
    pub async fn list_ratings_by_title(
        &self,
        title_id: &str,
        limit: usize,
        page_token: Option<&[u8]>,
    ) -> Result<Page<Rating>, StoreError> {
        let (_, st) = self.conn()?;
        let state = match page_token {
            Some(t) => PagingState::new_from_raw_bytes(token::decode_state(
                Kind::CqlRatingsByTitle,
                title_id,
                t,
            )?),
            None => PagingState::start(),
        };
        let stmt = paged(&st.ratings_of_title, limit);
        let (rows, next): (Vec<TitleRatingRow>, _) = self
            .page("ratings_by_title", &stmt, (title_id,), state)
            .await?;
        Ok(Page {
            // A partition that holds only its summary answers one row of
            // nulls: not a rating.
            items: rows
                .into_iter()
                .filter_map(|(user_id, stars, at)| {
                    Some(Rating {
                        user_id: user_id?,
                        title_id: title_id.to_owned(),
                        stars: unsigned(stars),
                        rated_at_ms: at?,
                    })
                })
                .collect(),
            next: next.map(|s| state_token(Kind::CqlRatingsByTitle, title_id, &s)),
        })
    }

    /// Summaries in request order (count 0 when never rated).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn summaries(&self, ids: &[String]) -> Result<Vec<RatingSummary>, StoreError> {
        let (_, st) = self.conn()?;
        futures::stream::iter(ids.iter().cloned())
            .map(|id| async move {
                let row: Option<(Option<i64>, Option<i64>, Option<i64>)> =
                    self.first("ratings_by_title", &st.summary, (&id,)).await?;
                Ok::<_, StoreError>(RatingSummary {
                    title_id: id,
                    count: count(row.and_then(|r| r.0)),
                    stars_sum: count(row.and_then(|r| r.1)),
                })
            })
            .buffered(32)
            .try_collect()
            .await
    }

    /// Best-rated titles: scans the summaries (the static rows of
    /// `ratings_by_title`, or a genre's titles).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn top_rated(
        &self,
        limit: usize,
        genre: Option<&str>,
        min_count: u64,
    ) -> Result<Vec<RatingSummary>, StoreError> {
        let (_, st) = self.conn()?;
        let mut all = match genre {
            Some(g) => {
                let ids: Vec<(String,)> = self.scan("titles_by_genre", &st.genre_ids, (g,)).await?;
                let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
                self.summaries(&ids).await?
            }
            None => {
                let rows: Vec<(String, Option<i64>, Option<i64>)> =
                    self.scan("ratings_by_title", &st.all_summaries, ()).await?;
                rows.into_iter()
                    .map(|(title_id, c, s)| RatingSummary {
                        title_id,
                        count: count(c),
                        stars_sum: count(s),
                    })
                    .collect()
            }
        };
        all.retain(|s| s.count > 0 && s.count >= min_count);
        all.sort_by(by_average_desc);
        all.truncate(limit);
        Ok(all)
    }

    // ---------------------------------------------------------------
    // progress

    /// Records progress, last write wins on `(updated_at_ms, position_s)`.
    ///
    /// # Errors
    /// [`StoreError::TitleNotFound`].
    pub async fn put_progress(&self, p: &Progress) -> Result<ProgressOutcome, StoreError> {
        self.require_title(&p.title_id).await?;
        let (_, st) = self.conn()?;
        let row: Option<(Option<i32>, Option<i64>, Option<i64>)> = self
            .first(
                "progress",
                &st.progress_row,
                (p.user_id.as_str(), p.title_id.as_str()),
            )
            .await?;
        let new = (p.updated_at_ms, p.position_s);
        // The timestamp of the index row this write replaces.
        let replaces = match row {
            Some((pos, at, prev)) => {
                let old = (at.unwrap_or(0), unsigned(pos));
                if old == new {
                    // A retry or duplicate: replay it, to finish what a
                    // first attempt may have left undone.
                    prev
                } else if !newer(new, old) {
                    return Ok(ProgressOutcome {
                        applied: false,
                        current: Progress {
                            user_id: p.user_id.clone(),
                            title_id: p.title_id.clone(),
                            position_s: old.1,
                            updated_at_ms: old.0,
                        },
                    });
                } else {
                    at
                }
            }
            None => None,
        };
        let ts = progress_ts(p.updated_at_ms);
        let (user, title, pos) = (p.user_id.as_str(), p.title_id.as_str(), int(p.position_s));
        let truth = (user, title, pos, p.updated_at_ms, replaces, ts);
        let index = (user, p.updated_at_ms, title, pos, ts);
        match replaces {
            Some(prev) if prev != p.updated_at_ms => {
                self.batch(
                    "progress",
                    &st.move_progress,
                    (truth, index, (ts, user, prev, title)),
                    false,
                )
                .await?;
            }
            _ => {
                self.batch("progress", &st.put_progress, (truth, index), false)
                    .await?;
            }
        }
        Ok(ProgressOutcome {
            applied: true,
            current: p.clone(),
        })
    }

    /// A user's progress, newest first. Two concurrent writes of one
    /// title can leave an older index row behind (until `repair`); only
    /// the newest row of each title is returned.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn list_progress(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Progress>, StoreError> {
        let (_, st) = self.conn()?;
        let stmt = paged(&st.progress_of_user, limit.saturating_add(4));
        let mut state = PagingState::start();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        loop {
            let (rows, next): (Vec<(String, Option<i32>, i64)>, _) = self
                .page("progress_by_user", &stmt, (user_id,), state)
                .await?;
            for (title_id, pos, at) in rows {
                if out.len() == limit {
                    return Ok(out);
                }
                if seen.insert(title_id.clone()) {
                    out.push(Progress {
                        user_id: user_id.to_owned(),
                        title_id,
                        position_s: unsigned(pos),
                        updated_at_ms: at,
                    });
                }
            }
            match next {
                Some(s) if out.len() < limit => state = s,
                _ => return Ok(out),
            }
        }
    }

    // ---------------------------------------------------------------
    // seed

    /// Writes the seed data unless a previous run finished it. Every write
    /// is the ordinary idempotent one, so concurrent or interrupted seeds
    /// converge on the same data and never double-count.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn seed(&self, cfg: &SeedConfig) -> Result<SeedReport, StoreError> {
        let (_, st) = self.conn()?;
        let done: Option<(Option<i64>,)> =
            self.first("dal_meta", &st.meta_get, ("seeded",)).await?;
        if done.is_some() {
            return Ok(SeedReport::default());
        }
        let mut report = SeedReport::default();
        let titles = fleet_seed::titles(cfg);
        report.titles = futures::stream::iter(titles)
            .map(|t| async move {
                let (year, runtime) = (int(t.year), int(t.runtime_min));
                let row = (
                    t.id.as_str(),
                    t.name.as_str(),
                    t.genre,
                    year,
                    runtime,
                    t.synopsis.as_str(),
                );
                self.batch(
                    "titles",
                    &st.insert_title,
                    (
                        row,
                        row,
                        (
                            ALL_TITLES_SHARD,
                            t.id.as_str(),
                            t.name.as_str(),
                            t.genre,
                            year,
                            runtime,
                            t.synopsis.as_str(),
                        ),
                    ),
                    false,
                )
                .await?;
                self.known_titles.insert(t.id.clone(), ()).await;
                Ok::<_, StoreError>(1u64)
            })
            .buffer_unordered(SEED_PARALLELISM)
            .try_fold(0, |n, one| async move { Ok(n + one) })
            .await?;

        // One title's ratings in order (no contention with ourselves),
        // titles side by side.
        let mut by_title: BTreeMap<String, Vec<Rating>> = BTreeMap::new();
        for r in fleet_seed::ratings(cfg) {
            by_title
                .entry(r.title_id.clone())
                .or_default()
                .push(Rating {
                    user_id: r.user_id,
                    title_id: r.title_id,
                    stars: r.stars,
                    rated_at_ms: r.rated_at_ms,
                });
        }
        report.ratings = futures::stream::iter(by_title.into_values())
            .map(|ratings| async move {
                let mut applied = 0u64;
                for r in &ratings {
                    applied += u64::from(self.put_rating(r).await?.applied);
                }
                Ok::<_, StoreError>(applied)
            })
            .buffer_unordered(SEED_PARALLELISM)
            .try_fold(0, |n, k| async move { Ok(n + k) })
            .await?;

        let progress: Vec<Progress> = fleet_seed::progress(cfg)
            .into_iter()
            .map(|p| Progress {
                user_id: p.user_id,
                title_id: p.title_id,
                position_s: p.position_s,
                updated_at_ms: p.updated_at_ms,
            })
            .collect();
        report.progress = futures::stream::iter(progress)
            .map(|p| async move { self.put_progress(&p).await.map(|_| 1u64) })
            .buffer_unordered(SEED_PARALLELISM)
            .try_fold(0, |n, k| async move { Ok(n + k) })
            .await?;
        self.exec("dal_meta", &st.meta_set, ("seeded", 1i64))
            .await?;
        report.seeded = true;
        Ok(report)
    }
}

/// `stmt` with a page size of `limit` rows.
fn paged(stmt: &PreparedStatement, limit: usize) -> PreparedStatement {
    let mut s = stmt.clone();
    s.set_page_size(i32::try_from(limit.clamp(1, 10_000)).unwrap_or(100));
    s
}

fn state_token(kind: Kind, scope: &str, state: &PagingState) -> Vec<u8> {
    let bytes = state.as_bytes_slice().map_or(&[][..], |b| &b[..]);
    token::encode_state(kind, scope, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_timestamps_order_like_last_write_wins() {
        let pairs = [(5_i64, 1_u32), (5, 5), (6, 1), (1_767_225_600_000, 3)];
        for a in pairs {
            for b in pairs {
                assert_eq!(
                    newer(a, b),
                    rating_ts(a.0, a.1) > rating_ts(b.0, b.1),
                    "{a:?} vs {b:?}"
                );
            }
        }
        assert!(progress_ts(2) > progress_ts(1));
        assert_eq!(rating_ts(i64::MAX, 5), i64::MAX, "saturates, never wraps");
    }
}
