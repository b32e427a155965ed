//! The `meta` table and what spans every table: migrations (including the
//! rewrite of the older protobuf rows as records), seeding, the repair
//! run and the test hook that injects drift.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use fleet_proto::dal::v1::{Progress, Rating, Title};
use fleet_seed::SeedConfig;

use super::super::{RepairReport, SeedReport, StoreError};
use super::Redb;
use super::progress::{self, PROGRESS, PROGRESS_BY_TIME};
use super::ratings::{self, RATINGS_BY_TITLE, RATINGS_BY_USER, RATINGS_BY_USER_TIME, SUMMARIES};
use super::titles::{self, TITLES, TITLES_BY_GENRE};
use crate::record::{self, Format, ProgressV1, RatingV1, Record, TitleV1};

/// The schema version this build writes.
///
/// * 1 — the tables, values as protobuf;
/// * 2 — values as the dal's own records (`crate::record`); migrating
///   from 1 rewrites every protobuf row.
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";
const SEEDED_KEY: &str = "seeded";

/// Rewrites the protobuf rows of a table keyed by id as records.
fn rewrite_by_id<R: Record>(
    tx: &WriteTransaction,
    def: TableDefinition<'_, &'static str, &'static [u8]>,
    name: &'static str,
) -> Result<u64, StoreError> {
    let mut table = tx.open_table(def)?;
    let mut legacy = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let (message, format) = record::decode::<R>(name, v.value())?;
        if format == Format::LegacyProto {
            legacy.push((k.value().to_owned(), record::encode::<R>(name, &message)?));
        }
    }
    for (k, bytes) in &legacy {
        table.insert(k.as_str(), bytes.as_slice())?;
    }
    Ok(u64::try_from(legacy.len()).unwrap_or(u64::MAX))
}

/// Rewrites the protobuf rows of a table keyed by a pair of ids as records.
fn rewrite_by_pair<R: Record>(
    tx: &WriteTransaction,
    def: TableDefinition<'_, (&'static str, &'static str), &'static [u8]>,
    name: &'static str,
) -> Result<u64, StoreError> {
    let mut table = tx.open_table(def)?;
    let mut legacy = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let (message, format) = record::decode::<R>(name, v.value())?;
        if format == Format::LegacyProto {
            let (a, b) = k.value();
            legacy.push((
                a.to_owned(),
                b.to_owned(),
                record::encode::<R>(name, &message)?,
            ));
        }
    }
    for (a, b, bytes) in &legacy {
        table.insert((a.as_str(), b.as_str()), bytes.as_slice())?;
    }
    Ok(u64::try_from(legacy.len()).unwrap_or(u64::MAX))
}

impl Redb {
    /// Checks the file answers a read.
    pub(super) fn ping(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        tx.open_table(META)?.get(SCHEMA_KEY)?;
        Ok(())
    }

    /// Creates every table, rewrites rows of an older schema, and records
    /// the schema version (idempotent, one transaction).
    pub(super) fn migrate(&self) -> Result<u64, StoreError> {
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
            let current = tx
                .open_table(META)?
                .get(SCHEMA_KEY)?
                .map(|v| v.value())
                .unwrap_or(0);
            if current < 2 {
                let rewritten = rewrite_by_id::<TitleV1>(&tx, TITLES, "titles")?
                    + rewrite_by_pair::<RatingV1>(&tx, RATINGS_BY_USER, "ratings_by_user")?
                    + rewrite_by_pair::<RatingV1>(&tx, RATINGS_BY_TITLE, "ratings_by_title")?
                    + rewrite_by_pair::<ProgressV1>(&tx, PROGRESS, "progress")?;
                if rewritten > 0 {
                    tracing::info!(
                        rows = rewritten,
                        from = current,
                        to = SCHEMA_VERSION,
                        "rewrote protobuf rows as records"
                    );
                }
            }
            if current < SCHEMA_VERSION {
                tx.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
            }
        }
        tx.commit()?;
        Ok(SCHEMA_VERSION)
    }

    /// Writes the seed data in one transaction, once.
    pub(super) fn seed(&self, cfg: &SeedConfig) -> Result<SeedReport, StoreError> {
        let tx = self.db.begin_write()?;
        let mut report = SeedReport::default();
        if tx.open_table(META)?.get(SEEDED_KEY)?.is_some() {
            return Ok(report);
        }
        for t in fleet_seed::titles(cfg) {
            let title = Title {
                id: t.id,
                name: t.name,
                genre: t.genre.to_owned(),
                year: t.year,
                runtime_min: t.runtime_min,
                synopsis: t.synopsis,
            };
            titles::insert(&tx, &title)?;
            report.titles += 1;
        }
        for r in fleet_seed::ratings(cfg) {
            let rating = Rating {
                user_id: r.user_id,
                title_id: r.title_id,
                stars: r.stars,
                rated_at_ms: r.rated_at_ms,
            };
            if ratings::apply(&tx, &rating)?.applied {
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
            progress::apply(&tx, &progress)?;
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
    pub(super) fn repair(&self) -> Result<RepairReport, StoreError> {
        let tx = self.db.begin_write()?;
        let mut report = RepairReport::default();
        report.checks.push(titles::repair(&tx)?);
        report.checks.extend(ratings::repair(&tx)?);
        report.checks.push(progress::repair(&tx)?);
        tx.commit()?;
        Ok(report)
    }

    /// Breaks every denormalized table behind the store's back (see
    /// `Store::inject_drift`).
    #[cfg(feature = "test-util")]
    pub(super) fn inject_drift(&self) -> Result<(), StoreError> {
        let ghost = Rating {
            user_id: "u_ghost".into(),
            title_id: "t00002".into(),
            stars: 5,
            rated_at_ms: 1,
        };
        let ghost = record::encode::<RatingV1>("ratings_by_title", &ghost)?;
        let tx = self.db.begin_write()?;
        {
            tx.open_table(SUMMARIES)?.insert("t00001", (999, 999))?;
            tx.open_table(RATINGS_BY_TITLE)?
                .insert(("t00002", "u_ghost"), ghost.as_slice())?;
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

    /// Writes rows as the previous release did (protobuf values, schema
    /// version 1), for the migration test.
    #[cfg(test)]
    pub(super) fn write_as_schema_1(
        &self,
        title: &Title,
        rating: &Rating,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        use prost::Message;
        let tx = self.db.begin_write()?;
        {
            tx.open_table(TITLES)?
                .insert(title.id.as_str(), title.encode_to_vec().as_slice())?;
            tx.open_table(TITLES_BY_GENRE)?
                .insert((title.genre.as_str(), title.id.as_str()), ())?;
            let r = rating.encode_to_vec();
            tx.open_table(RATINGS_BY_USER)?.insert(
                (rating.user_id.as_str(), rating.title_id.as_str()),
                r.as_slice(),
            )?;
            tx.open_table(RATINGS_BY_TITLE)?.insert(
                (rating.title_id.as_str(), rating.user_id.as_str()),
                r.as_slice(),
            )?;
            tx.open_table(RATINGS_BY_USER_TIME)?.insert(
                (
                    rating.user_id.as_str(),
                    super::inverted(rating.rated_at_ms),
                    rating.title_id.as_str(),
                ),
                rating.stars,
            )?;
            tx.open_table(SUMMARIES)?
                .insert(rating.title_id.as_str(), (1, u64::from(rating.stars)))?;
            tx.open_table(PROGRESS)?.insert(
                (progress.user_id.as_str(), progress.title_id.as_str()),
                progress.encode_to_vec().as_slice(),
            )?;
            tx.open_table(PROGRESS_BY_TIME)?.insert(
                (
                    progress.user_id.as_str(),
                    super::inverted(progress.updated_at_ms),
                    progress.title_id.as_str(),
                ),
                progress.position_s,
            )?;
            tx.open_table(META)?.insert(SCHEMA_KEY, 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The format of every stored value (for the migration test).
    #[cfg(test)]
    pub(super) fn formats(&self) -> Result<Vec<Format>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(TITLES)?.iter()? {
            out.push(record::decode::<TitleV1>("titles", row?.1.value())?.1);
        }
        for def in [RATINGS_BY_USER, RATINGS_BY_TITLE] {
            for row in tx.open_table(def)?.iter()? {
                out.push(record::decode::<RatingV1>("ratings", row?.1.value())?.1);
            }
        }
        for row in tx.open_table(PROGRESS)?.iter()? {
            out.push(record::decode::<ProgressV1>("progress", row?.1.value())?.1);
        }
        Ok(out)
    }
}
