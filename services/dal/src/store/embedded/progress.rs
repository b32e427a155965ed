//! The progress tables: `progress` ((user, title) → progress record, the
//! source of truth) and `progress_by_time` ((user, inverted time, title) →
//! position: a user's progress, newest first). Last write wins on
//! `(updated_at_ms, position_s)`, both tables in one write transaction.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use fleet_proto::dal::v1::Progress;

use super::super::{Check, ProgressOutcome, StoreError, newer};
use super::{Redb, from_inverted, inverted, titles};
use crate::record::{self, ProgressV1};

/// (user, title) → progress record.
pub(super) const PROGRESS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("progress");
/// (user, u64::MAX - updated_at_ms, title) → position_s: newest first.
pub(super) const PROGRESS_BY_TIME: TableDefinition<(&str, u64, &str), u32> =
    TableDefinition::new("progress_by_time");

fn read(bytes: &[u8]) -> Result<Progress, StoreError> {
    record::read::<ProgressV1>("progress", bytes)
}

impl Redb {
    /// A user's progress, newest first.
    pub(super) fn list_progress(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Progress>, StoreError> {
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
}

/// Applies progress inside `tx` (last write wins).
pub(super) fn apply(tx: &WriteTransaction, p: &Progress) -> Result<ProgressOutcome, StoreError> {
    if !titles::exists(tx, &p.title_id)? {
        return Err(StoreError::TitleNotFound(p.title_id.clone()));
    }
    let mut table = tx.open_table(PROGRESS)?;
    let key = (p.user_id.as_str(), p.title_id.as_str());
    let existing: Option<Progress> = table.get(key)?.map(|v| read(v.value())).transpose()?;
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
    let bytes = record::encode::<ProgressV1>("progress", p)?;
    table.insert(key, bytes.as_slice())?;
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

/// `progress_by_time` must hold exactly one row per progress row.
pub(super) fn repair(tx: &WriteTransaction) -> Result<Check, StoreError> {
    let mut expected: BTreeMap<(String, u64, String), u32> = BTreeMap::new();
    for row in tx.open_table(PROGRESS)?.iter()? {
        let (_, v) = row?;
        let p = read(v.value())?;
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
