//! The rating tables: `ratings_by_user` ((user, title) → rating record, the
//! source of truth), and derived from it `ratings_by_title` ((title, user)
//! → rating record), `ratings_by_user_time` ((user, inverted time, title) →
//! stars: newest first) and `rating_summaries` (title → (count, stars_sum)).
//!
//! A rating write reads the stored rating, decides last-write-wins on
//! `(rated_at_ms, stars)`, and updates all four tables in the one redb
//! write transaction (redb serializes them), so a duplicated or
//! concurrent write sees the other's result and never double-counts.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use fleet_proto::dal::v1::{Rating, RatingSummary};

use super::super::token::{self, Kind};
use super::super::{Check, Page, RatingOutcome, StoreError, by_average_desc, newer};
use super::{Caller, Redb, SCAN_CHECK_ROWS, from_inverted, inverted, titles};
use crate::record::{self, RatingV1};

/// (user, title) → rating record: the source of truth for a rating.
pub(super) const RATINGS_BY_USER: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("ratings_by_user");
/// (user, u64::MAX - rated_at_ms, title) → stars: a user's ratings, newest first.
pub(super) const RATINGS_BY_USER_TIME: TableDefinition<(&str, u64, &str), u32> =
    TableDefinition::new("ratings_by_user_time");
/// (title, user) → rating record.
pub(super) const RATINGS_BY_TITLE: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("ratings_by_title");
/// title → (count, stars_sum).
pub(super) const SUMMARIES: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("rating_summaries");

/// A stored rating of `table`.
pub(super) fn read(table: &'static str, bytes: &[u8]) -> Result<Rating, StoreError> {
    record::read::<RatingV1>(table, bytes)
}

fn summary(title_id: &str, (count, stars_sum): (u64, u64)) -> RatingSummary {
    RatingSummary {
        title_id: title_id.to_owned(),
        count,
        stars_sum,
    }
}

impl Redb {
    /// A user's ratings, newest first.
    pub(super) fn list_ratings_by_user(
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
    pub(super) fn list_ratings_by_title(
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
            items.push(read("ratings_by_title", v.value())?);
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
    pub(super) fn summaries(&self, ids: &[String]) -> Result<Vec<RatingSummary>, StoreError> {
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
    pub(super) fn top_rated(
        &self,
        limit: usize,
        genre: Option<&str>,
        min_count: u64,
        caller: &Caller,
    ) -> Result<Vec<RatingSummary>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SUMMARIES)?;
        let in_genre: Option<BTreeSet<String>> = match genre {
            Some(g) => Some(titles::ids_in_genre(
                &tx.open_table(titles::TITLES_BY_GENRE)?,
                g,
            )?),
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
}

/// Applies a rating inside `tx` (see the module docs).
pub(super) fn apply(tx: &WriteTransaction, r: &Rating) -> Result<RatingOutcome, StoreError> {
    if !titles::exists(tx, &r.title_id)? {
        return Err(StoreError::TitleNotFound(r.title_id.clone()));
    }
    let mut by_user = tx.open_table(RATINGS_BY_USER)?;
    let key = (r.user_id.as_str(), r.title_id.as_str());
    let existing: Option<Rating> = by_user
        .get(key)?
        .map(|v| read("ratings_by_user", v.value()))
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
    let bytes = record::encode::<RatingV1>("ratings_by_user", r)?;
    by_user.insert(key, bytes.as_slice())?;
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
    tx.open_table(RATINGS_BY_TITLE)?
        .insert((r.title_id.as_str(), r.user_id.as_str()), bytes.as_slice())?;
    summaries.insert(r.title_id.as_str(), (count, sum))?;
    Ok(RatingOutcome {
        rating: r.clone(),
        applied: true,
        summary: summary(&r.title_id, (count, sum)),
    })
}

/// Checks `ratings_by_title`, the time index and the summaries against
/// `ratings_by_user`, fixing what drifted.
pub(super) fn repair(tx: &WriteTransaction) -> Result<[Check; 3], StoreError> {
    // The truth: every rating by (title, user).
    let mut truth: BTreeMap<(String, String), Rating> = BTreeMap::new();
    for row in tx.open_table(RATINGS_BY_USER)?.iter()? {
        let (_, v) = row?;
        let r = read("ratings_by_user", v.value())?;
        truth.insert((r.title_id.clone(), r.user_id.clone()), r);
    }

    // ratings_by_title must equal the truth.
    let mut by_title = tx.open_table(RATINGS_BY_TITLE)?;
    let mut actual: BTreeMap<(String, String), Rating> = BTreeMap::new();
    for row in by_title.iter()? {
        let (k, v) = row?;
        let (t, u) = k.value();
        let r = read("ratings_by_title", v.value())?;
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
            let bytes = record::encode::<RatingV1>("ratings_by_title", r)?;
            by_title.insert((key.0.as_str(), key.1.as_str()), bytes.as_slice())?;
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
    Ok([
        ("ratings_by_title", by_title_found, by_title_found),
        ("ratings_by_user_time", index_found, index_found),
        ("rating_summaries", summary_found, summary_found),
    ])
}
