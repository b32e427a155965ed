//! Every statement the store runs, prepared once per session.
//!
//! Each carries its consistency level explicitly (reads, writes and the
//! serial phase of LWTs are configured separately) and says whether it is
//! idempotent, which is what lets the driver's retry policy retry it:
//! reads and writes with an explicit `USING TIMESTAMP` are; conditional
//! (LWT) statements are not, because a blind retry of a Paxos round whose
//! outcome is unknown could apply twice — the store re-reads and decides
//! instead.

use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use super::CqlConfig;

/// The prepared statements (cheap to share; cloned per call when a page
/// size must be set).
pub(super) struct Statements {
    pub ping: PreparedStatement,

    pub title: PreparedStatement,
    pub titles_of_shard: PreparedStatement,
    pub titles_of_genre: PreparedStatement,
    pub genre_names: PreparedStatement,
    pub genre_count: PreparedStatement,
    pub genre_ids: PreparedStatement,
    /// titles, titles_by_genre, all_titles in one logged batch.
    pub insert_title: Batch,
    pub insert_genre_row: PreparedStatement,
    pub insert_all_row: PreparedStatement,
    pub delete_genre_row: PreparedStatement,
    pub delete_all_row: PreparedStatement,

    pub rating_row: PreparedStatement,
    pub rating_row_serial: PreparedStatement,
    pub summary: PreparedStatement,
    pub summary_serial: PreparedStatement,
    pub all_summaries: PreparedStatement,
    pub ratings_of_title: PreparedStatement,
    pub ratings_of_title_serial: PreparedStatement,
    pub ratings_of_user: PreparedStatement,
    /// New rating row + summary CAS (conditional batch, one partition).
    pub rating_insert_cas: Batch,
    /// Replaced rating row + summary CAS (conditional batch, one partition).
    pub rating_update_cas: Batch,
    /// The summary alone (repair, drift injection).
    pub summary_cas: PreparedStatement,
    pub insert_user_rating: PreparedStatement,
    pub delete_user_rating: PreparedStatement,
    /// Insert the new by-user row, delete the replaced one.
    pub move_user_rating: Batch,

    pub progress_row: PreparedStatement,
    pub progress_of_user: PreparedStatement,
    pub insert_progress_index: PreparedStatement,
    pub delete_progress_index: PreparedStatement,
    /// Truth + index row (first progress of a title, or same timestamp).
    pub put_progress: Batch,
    /// Truth + index row + delete of the replaced index row.
    pub move_progress: Batch,

    pub meta_get: PreparedStatement,
    pub meta_set: PreparedStatement,

    pub scan_titles: PreparedStatement,
    pub scan_titles_by_genre: PreparedStatement,
    pub scan_ratings_by_title: PreparedStatement,
    pub scan_ratings_by_user: PreparedStatement,
    pub scan_progress: PreparedStatement,
    pub scan_progress_by_user: PreparedStatement,
}

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statements").finish_non_exhaustive()
    }
}

/// Rows per page of a full-table scan (repair, top rated).
const SCAN_PAGE: i32 = 1000;

struct Preparer<'a> {
    session: &'a Session,
    config: &'a CqlConfig,
}

impl Preparer<'_> {
    async fn read(&self, cql: &str) -> Result<PreparedStatement, PrepareError> {
        let mut p = self
            .session
            .prepare(qualify(&self.config.keyspace, cql))
            .await?;
        p.set_consistency(self.config.read_consistency);
        p.set_is_idempotent(true);
        Ok(p)
    }

    async fn scan(&self, cql: &str) -> Result<PreparedStatement, PrepareError> {
        let mut p = self.read(cql).await?;
        p.set_page_size(SCAN_PAGE);
        Ok(p)
    }

    /// A read of Paxos-managed state: sees every committed (and completes
    /// any in-flight) LWT, so a compare-and-set retry starts from the truth.
    async fn serial_read(&self, cql: &str) -> Result<PreparedStatement, PrepareError> {
        let mut p = self
            .session
            .prepare(qualify(&self.config.keyspace, cql))
            .await?;
        p.set_consistency(match self.config.serial_consistency {
            SerialConsistency::Serial => Consistency::Serial,
            SerialConsistency::LocalSerial => Consistency::LocalSerial,
        });
        p.set_is_idempotent(true);
        Ok(p)
    }

    /// A write that states its own timestamp: replaying it changes nothing.
    async fn write(&self, cql: &str) -> Result<PreparedStatement, PrepareError> {
        let mut p = self
            .session
            .prepare(qualify(&self.config.keyspace, cql))
            .await?;
        p.set_consistency(self.config.write_consistency);
        p.set_is_idempotent(true);
        Ok(p)
    }

    /// A conditional (LWT) write: never retried blindly.
    async fn cas(&self, cql: &str) -> Result<PreparedStatement, PrepareError> {
        let mut p = self
            .session
            .prepare(qualify(&self.config.keyspace, cql))
            .await?;
        p.set_consistency(self.config.write_consistency);
        p.set_serial_consistency(Some(self.config.serial_consistency));
        p.set_is_idempotent(false);
        Ok(p)
    }

    fn batch(&self, statements: &[&PreparedStatement], conditional: bool) -> Batch {
        let mut b = Batch::new(BatchType::Logged);
        for s in statements {
            b.append_statement((*s).clone());
        }
        b.set_consistency(self.config.write_consistency);
        if conditional {
            b.set_serial_consistency(Some(self.config.serial_consistency));
        }
        b.set_is_idempotent(!conditional);
        b
    }
}

/// `cql` with every table after FROM, INTO or UPDATE prefixed by the
/// keyspace: statements are prepared fully qualified, never relying on a
/// session-wide `USE` (which Cassandra 5 warns about, and which makes a
/// prepared statement's table depend on connection state).
fn qualify(keyspace: &str, cql: &str) -> String {
    let mut out = String::with_capacity(cql.len() + 4 * keyspace.len());
    let mut after_keyword = false;
    for (i, word) in cql.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if after_keyword
            && !word.is_empty()
            && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            out.push_str(keyspace);
            out.push('.');
        }
        out.push_str(word);
        after_keyword = matches!(
            word.to_ascii_uppercase().as_str(),
            "FROM" | "INTO" | "UPDATE"
        );
    }
    out
}

const TITLE_COLUMNS: &str = "id, name, genre, year, runtime_min, synopsis";

impl Statements {
    /// Prepares everything against the session's keyspace.
    pub(super) async fn prepare(
        session: &Session,
        config: &CqlConfig,
    ) -> Result<Self, PrepareError> {
        let p = Preparer { session, config };
        let mut ping = session
            .prepare("SELECT release_version FROM system.local")
            .await?;
        ping.set_consistency(Consistency::LocalOne);
        ping.set_is_idempotent(true);

        let insert_title_row = p
            .write(&format!(
                "INSERT INTO titles ({TITLE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .await?;
        let insert_genre_row = p
            .write(&format!(
                "INSERT INTO titles_by_genre ({TITLE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .await?;
        let insert_all_row = p
            .write(&format!(
                "INSERT INTO all_titles (shard, {TITLE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?;
        let insert_title = p.batch(
            &[&insert_title_row, &insert_genre_row, &insert_all_row],
            false,
        );

        let rating_insert = p
            .cas(
                "INSERT INTO ratings_by_title (title_id, user_id, stars, rated_at_ms) \
                 VALUES (?, ?, ?, ?) IF NOT EXISTS",
            )
            .await?;
        let rating_update = p
            .cas(
                "UPDATE ratings_by_title SET stars = ?, rated_at_ms = ?, prev_stars = ?, \
                 prev_rated_at_ms = ? WHERE title_id = ? AND user_id = ? \
                 IF stars = ? AND rated_at_ms = ?",
            )
            .await?;
        let summary_cas = p
            .cas(
                "UPDATE ratings_by_title SET rating_count = ?, stars_sum = ?, version = ? \
                 WHERE title_id = ? IF version = ?",
            )
            .await?;
        let insert_user_rating = p
            .write(
                "INSERT INTO ratings_by_user (user_id, rated_at_ms, title_id, stars) \
                 VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?;
        let delete_user_rating = p
            .write(
                "DELETE FROM ratings_by_user USING TIMESTAMP ? \
                 WHERE user_id = ? AND rated_at_ms = ? AND title_id = ?",
            )
            .await?;

        let insert_progress = p
            .write(
                "INSERT INTO progress (user_id, title_id, position_s, updated_at_ms, \
                 prev_updated_at_ms) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?;
        let insert_progress_index = p
            .write(
                "INSERT INTO progress_by_user (user_id, updated_at_ms, title_id, position_s) \
                 VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?;
        let delete_progress_index = p
            .write(
                "DELETE FROM progress_by_user USING TIMESTAMP ? \
                 WHERE user_id = ? AND updated_at_ms = ? AND title_id = ?",
            )
            .await?;

        Ok(Self {
            ping,
            title: p
                .read(&format!("SELECT {TITLE_COLUMNS} FROM titles WHERE id = ?"))
                .await?,
            titles_of_shard: p
                .read(&format!(
                    "SELECT {TITLE_COLUMNS} FROM all_titles WHERE shard = ?"
                ))
                .await?,
            titles_of_genre: p
                .read(&format!(
                    "SELECT {TITLE_COLUMNS} FROM titles_by_genre WHERE genre = ?"
                ))
                .await?,
            genre_names: p.scan("SELECT DISTINCT genre FROM titles_by_genre").await?,
            genre_count: p
                .read("SELECT COUNT(*) FROM titles_by_genre WHERE genre = ?")
                .await?,
            genre_ids: p
                .scan("SELECT id FROM titles_by_genre WHERE genre = ?")
                .await?,
            move_user_rating: p.batch(&[&insert_user_rating, &delete_user_rating], false),
            rating_insert_cas: p.batch(&[&rating_insert, &summary_cas], true),
            rating_update_cas: p.batch(&[&rating_update, &summary_cas], true),
            put_progress: p.batch(&[&insert_progress, &insert_progress_index], false),
            move_progress: p.batch(
                &[
                    &insert_progress,
                    &insert_progress_index,
                    &delete_progress_index,
                ],
                false,
            ),
            insert_title,
            insert_genre_row,
            insert_all_row,
            delete_genre_row: p
                .write("DELETE FROM titles_by_genre WHERE genre = ? AND id = ?")
                .await?,
            delete_all_row: p
                .write("DELETE FROM all_titles WHERE shard = ? AND id = ?")
                .await?,

            rating_row: p
                .read(
                    "SELECT stars, rated_at_ms, prev_stars, prev_rated_at_ms \
                     FROM ratings_by_title WHERE title_id = ? AND user_id = ?",
                )
                .await?,
            rating_row_serial: p
                .serial_read(
                    "SELECT stars, rated_at_ms, prev_stars, prev_rated_at_ms \
                     FROM ratings_by_title WHERE title_id = ? AND user_id = ?",
                )
                .await?,
            summary: p
                .read(
                    "SELECT rating_count, stars_sum, version FROM ratings_by_title \
                     WHERE title_id = ? LIMIT 1",
                )
                .await?,
            summary_serial: p
                .serial_read(
                    "SELECT rating_count, stars_sum, version FROM ratings_by_title \
                     WHERE title_id = ? LIMIT 1",
                )
                .await?,
            all_summaries: p
                .scan("SELECT DISTINCT title_id, rating_count, stars_sum FROM ratings_by_title")
                .await?,
            ratings_of_title: p
                .read(
                    "SELECT user_id, stars, rated_at_ms FROM ratings_by_title \
                     WHERE title_id = ?",
                )
                .await?,
            ratings_of_title_serial: p
                .serial_read(
                    "SELECT user_id, stars, rating_count, stars_sum, version \
                     FROM ratings_by_title WHERE title_id = ?",
                )
                .await?,
            ratings_of_user: p
                .read(
                    "SELECT title_id, stars, rated_at_ms FROM ratings_by_user \
                     WHERE user_id = ?",
                )
                .await?,
            summary_cas,
            insert_user_rating,
            delete_user_rating,

            progress_row: p
                .read(
                    "SELECT position_s, updated_at_ms, prev_updated_at_ms FROM progress \
                     WHERE user_id = ? AND title_id = ?",
                )
                .await?,
            progress_of_user: p
                .read(
                    "SELECT title_id, position_s, updated_at_ms FROM progress_by_user \
                     WHERE user_id = ?",
                )
                .await?,
            insert_progress_index,
            delete_progress_index,

            meta_get: p.read("SELECT value FROM dal_meta WHERE key = ?").await?,
            meta_set: p
                .write("INSERT INTO dal_meta (key, value) VALUES (?, ?)")
                .await?,

            scan_titles: p
                .scan(&format!("SELECT {TITLE_COLUMNS} FROM titles"))
                .await?,
            scan_titles_by_genre: p
                .scan(&format!("SELECT {TITLE_COLUMNS} FROM titles_by_genre"))
                .await?,
            scan_ratings_by_title: p
                .scan(
                    "SELECT title_id, user_id, stars, rated_at_ms, rating_count, stars_sum \
                     FROM ratings_by_title",
                )
                .await?,
            scan_ratings_by_user: p
                .scan(
                    "SELECT user_id, rated_at_ms, title_id, stars, WRITETIME(stars) \
                     FROM ratings_by_user",
                )
                .await?,
            scan_progress: p
                .scan(
                    "SELECT user_id, title_id, position_s, updated_at_ms, \
                     WRITETIME(position_s) FROM progress",
                )
                .await?,
            scan_progress_by_user: p
                .scan(
                    "SELECT user_id, updated_at_ms, title_id, position_s, \
                     WRITETIME(position_s) FROM progress_by_user",
                )
                .await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::qualify;

    #[test]
    fn tables_are_qualified_with_the_keyspace() {
        assert_eq!(
            qualify("ks", "SELECT COUNT(*) FROM titles_by_genre WHERE genre = ?"),
            "SELECT COUNT(*) FROM ks.titles_by_genre WHERE genre = ?"
        );
        assert_eq!(
            qualify(
                "ks",
                "DELETE FROM ratings_by_user USING TIMESTAMP ? WHERE a = ?"
            ),
            "DELETE FROM ks.ratings_by_user USING TIMESTAMP ? WHERE a = ?"
        );
        assert_eq!(
            qualify("ks", "INSERT INTO t (a) VALUES (?)"),
            "INSERT INTO ks.t (a) VALUES (?)"
        );
        assert_eq!(qualify("ks", "UPDATE x SET a = ?"), "UPDATE ks.x SET a = ?");
        assert_eq!(
            qualify("ks", "SELECT release_version FROM system.local"),
            "SELECT release_version FROM system.local",
            "already qualified"
        );
    }
}
