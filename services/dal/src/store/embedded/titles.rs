//! The title tables: `titles` (id → title record, the source of truth) and
//! `titles_by_genre` ((genre, id) → (), derived).

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use fleet_proto::dal::v1::{Genre, Title};

use super::super::token::{self, Kind};
use super::super::{Check, Page, StoreError};
use super::{Caller, Redb, SCAN_CHECK_ROWS};
use crate::record::{self, TitleV1};

/// id → title record (`crate::record::TitleV1`).
pub(super) const TITLES: TableDefinition<&str, &[u8]> = TableDefinition::new("titles");
/// (genre, id) → ().
pub(super) const TITLES_BY_GENRE: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("titles_by_genre");

/// A stored title.
pub(super) fn read(bytes: &[u8]) -> Result<Title, StoreError> {
    record::read::<TitleV1>("titles", bytes)
}

/// Writes a title and its genre row (the seed's only title write).
pub(super) fn insert(tx: &WriteTransaction, title: &Title) -> Result<(), StoreError> {
    let bytes = record::encode::<TitleV1>("titles", title)?;
    tx.open_table(TITLES)?
        .insert(title.id.as_str(), bytes.as_slice())?;
    tx.open_table(TITLES_BY_GENRE)?
        .insert((title.genre.as_str(), title.id.as_str()), ())?;
    Ok(())
}

/// Whether a title exists (writes refer to existing titles only).
pub(super) fn exists(tx: &WriteTransaction, id: &str) -> Result<bool, StoreError> {
    Ok(tx.open_table(TITLES)?.get(id)?.is_some())
}

/// The ids of the titles of `genre`.
pub(super) fn ids_in_genre(
    by_genre: &ReadOnlyTable<(&'static str, &'static str), ()>,
    genre: &str,
) -> Result<BTreeSet<String>, StoreError> {
    let mut ids = BTreeSet::new();
    for row in by_genre.range((genre, "")..)? {
        let (k, _) = row?;
        let (g, id) = k.value();
        if g != genre {
            break;
        }
        ids.insert(id.to_owned());
    }
    Ok(ids)
}

impl Redb {
    /// One title.
    pub(super) fn get_title(&self, id: &str) -> Result<Option<Title>, StoreError> {
        let tx = self.db.begin_read()?;
        let titles = tx.open_table(TITLES)?;
        titles.get(id)?.map(|v| read(v.value())).transpose()
    }

    /// Titles by id in request order.
    pub(super) fn batch_get_titles(&self, ids: &[String]) -> Result<Vec<Title>, StoreError> {
        let tx = self.db.begin_read()?;
        let titles = tx.open_table(TITLES)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = titles.get(id.as_str())? {
                out.push(read(v.value())?);
            }
        }
        Ok(out)
    }

    /// A page of titles ordered by id.
    pub(super) fn list_titles(
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
                    items.push(read(v.value())?);
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
                        items.push(read(v.value())?);
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
    pub(super) fn list_genres(&self, caller: &Caller) -> Result<Vec<Genre>, StoreError> {
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
}

/// `titles_by_genre` must hold exactly one row per title, under its genre.
pub(super) fn repair(tx: &WriteTransaction) -> Result<Check, StoreError> {
    let mut expected = BTreeSet::new();
    for row in tx.open_table(TITLES)?.iter()? {
        let (_, v) = row?;
        let t = read(v.value())?;
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
