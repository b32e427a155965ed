//! Versioned schema migrations: `migrations/NNNN_name.cql`, compiled in.
//!
//! Safe to run twice and concurrently (several dal instances starting at
//! once, or `dal migrate` jobs racing):
//!
//! 1. the keyspace and the two bookkeeping tables are created with
//!    `IF NOT EXISTS` (the driver waits for schema agreement after each);
//! 2. `schema_migrations` is read at the serial consistency; if every
//!    migration of this build is recorded (with the same checksum) there is
//!    nothing to do and no lock is taken;
//! 3. otherwise one runner claims the `schema_migration_lock` row with an
//!    LWT (`IF NOT EXISTS`, with a TTL so a runner that dies releases it),
//!    re-reads, applies what is still missing — statement by statement,
//!    each `IF NOT EXISTS`, so a migration interrupted half-way is just
//!    run again — records each version with an LWT and releases the lock.
//!    The others wait for the lock and then find everything applied.
//!
//! A recorded migration whose checksum differs from this build's file
//! stops the run: shipped migrations are never edited, the next change is
//! a new file.
//!
//! **Scylla and tablets.** Scylla 6.0 and later create keyspaces with
//! tablets by default, and tablets keyspaces reject lightweight
//! transactions until Scylla 2025.4 ("LWT is not yet supported with
//! tablets", scylladb#18066) — yet the migration lock and every rating
//! write are LWTs. So the keyspace is created with
//! `AND tablets = {'enabled': false}` when the server is a Scylla that
//! knows tablets (it has `system_schema.scylla_keyspaces`); Cassandra
//! rejects that option, so it gets the plain statement. The flavour is
//! read from the server's own schema tables ([`ServerFlavour::detect`]),
//! never configured. A keyspace that already exists is left as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::{Consistency, SerialConsistency, Statement};

use super::{CqlStore, StoreError, applied};

/// One migration file.
#[derive(Clone, Copy, Debug)]
struct Migration {
    version: i32,
    name: &'static str,
    cql: &'static str,
}

/// Every migration, in order. Append; never edit or reorder.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    cql: include_str!("../../../migrations/0001_initial.cql"),
}];

/// The schema version this build migrates to.
pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// How long a runner holds the lock before it lapses on its own.
const LEASE_TTL_S: i32 = 120;
/// How long a runner waits for another one's lock.
const LOCK_WAIT: Duration = Duration::from_secs(180);
/// Schema changes take seconds on a busy cluster.
const DDL_TIMEOUT: Duration = Duration::from_secs(60);

/// The statements of a migration file: `--` comment lines dropped, split
/// on `;`.
fn statements(cql: &str) -> Vec<String> {
    let code: String = cql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A migration's DDL with its table named in `keyspace` (the files name
/// tables bare; the session never runs `USE`).
fn in_keyspace(keyspace: &str, stmt: &str) -> String {
    for lead in ["CREATE TABLE IF NOT EXISTS ", "ALTER TABLE "] {
        if let Some(rest) = stmt.strip_prefix(lead)
            && !rest.split_whitespace().next().unwrap_or("").contains('.')
        {
            return format!("{lead}{keyspace}.{rest}");
        }
    }
    stmt.to_owned()
}

/// What kind of CQL server the dal talks to, as far as the schema cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ServerFlavour {
    /// Apache Cassandra (no `scylla_*` tables).
    Cassandra,
    /// ScyllaDB. `tablets` is true when the server knows the keyspace
    /// `tablets` option (6.0 and later, with `system_schema.scylla_keyspaces`).
    Scylla {
        /// Whether `CREATE KEYSPACE … AND tablets = {…}` is understood.
        tablets: bool,
    },
}

impl ServerFlavour {
    /// Reads the flavour from the server's schema tables: Scylla has
    /// `system.scylla_local` (every release), and
    /// `system_schema.scylla_keyspaces` since tablets exist.
    async fn detect(session: &Session) -> Result<Self, StoreError> {
        let mut st = Statement::new(
            "SELECT keyspace_name, table_name FROM system_schema.tables \
             WHERE keyspace_name IN ('system', 'system_schema')",
        );
        st.set_request_timeout(Some(DDL_TIMEOUT));
        let rows = session
            .query_unpaged(st, ())
            .await
            .map_err(|e| unavailable("reading the server's schema tables", e))?
            .into_rows_result()
            .map_err(|e| unavailable("reading the server's schema tables", e))?;
        let mut tables = Vec::new();
        for row in rows
            .rows::<(String, String)>()
            .map_err(|e| unavailable("reading the server's schema tables", e))?
        {
            tables.push(row.map_err(|e| unavailable("system_schema.tables", e))?);
        }
        Ok(Self::from_tables(
            tables.iter().map(|(k, t)| (k.as_str(), t.as_str())),
        ))
    }

    /// The flavour given the `(keyspace, table)` names of the server's
    /// `system` and `system_schema` keyspaces.
    fn from_tables<'a>(tables: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let (mut scylla, mut tablets) = (false, false);
        for (ks, table) in tables {
            scylla |= ks == "system" && table == "scylla_local";
            tablets |= ks == "system_schema" && table == "scylla_keyspaces";
        }
        if scylla {
            Self::Scylla { tablets }
        } else {
            Self::Cassandra
        }
    }
}

/// The `CREATE KEYSPACE` statement for this server: on a Scylla with
/// tablets, tablets are disabled (our LWTs need vnodes; see the module
/// docs); Cassandra and older Scylla reject the option, so they never see it.
fn create_keyspace(keyspace: &str, replication: &str, flavour: ServerFlavour) -> String {
    let base = format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}");
    match flavour {
        ServerFlavour::Scylla { tablets: true } => {
            format!("{base} AND tablets = {{'enabled': false}}")
        }
        ServerFlavour::Scylla { tablets: false } | ServerFlavour::Cassandra => base,
    }
}

fn checksum(cql: &str) -> i64 {
    i64::from(crc32fast::hash(cql.as_bytes()))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

async fn ddl(session: &Session, cql: &str) -> Result<(), StoreError> {
    let mut st = Statement::new(cql);
    st.set_request_timeout(Some(DDL_TIMEOUT));
    st.set_consistency(Consistency::All);
    session
        .query_unpaged(st, ())
        .await
        .map_err(|e| unavailable(&format!("schema change failed ({cql})"), e))?;
    Ok(())
}

impl CqlStore {
    fn serial(&self, cql: &str) -> Statement {
        let mut st = Statement::new(cql);
        st.set_consistency(match self.config.serial_consistency {
            SerialConsistency::Serial => Consistency::Serial,
            SerialConsistency::LocalSerial => Consistency::LocalSerial,
        });
        st.set_request_timeout(Some(self.config.request_timeout));
        st
    }

    fn lwt(&self, cql: &str) -> Statement {
        let mut st = Statement::new(cql);
        st.set_consistency(self.config.write_consistency);
        st.set_serial_consistency(Some(self.config.serial_consistency));
        st.set_request_timeout(Some(self.config.request_timeout));
        st
    }

    /// The keyspace's replication: NetworkTopologyStrategy in the
    /// configured datacenter, or auto-expanded to every datacenter.
    fn replication(&self, session: &Session) -> String {
        let dc = self.config.datacenter.as_deref();
        let rf = self.config.replication_factor.unwrap_or_else(|| {
            let state = session.get_cluster_state();
            let nodes = state
                .get_nodes_info()
                .iter()
                .filter(|n| dc.is_none_or(|dc| n.datacenter.as_deref() == Some(dc)))
                .count();
            u32::try_from(nodes.clamp(1, 3)).unwrap_or(1)
        });
        match dc {
            Some(dc) => format!("{{'class': 'NetworkTopologyStrategy', '{dc}': {rf}}}"),
            None => format!("{{'class': 'NetworkTopologyStrategy', 'replication_factor': {rf}}}"),
        }
    }

    /// Applies what is missing; see the module docs.
    pub(super) async fn migrate_schema(&self) -> Result<u64, StoreError> {
        let session = self.session()?;
        let ks = &self.config.keyspace;
        let flavour = ServerFlavour::detect(session).await?;
        tracing::info!(?flavour, keyspace = %ks, "creating the keyspace if it is missing");
        ddl(
            session,
            &create_keyspace(ks, &self.replication(session), flavour),
        )
        .await?;
        ddl(
            session,
            &format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, \
                 name text, checksum bigint, applied_at timestamp)"
            ),
        )
        .await?;
        ddl(
            session,
            &format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_migration_lock (name text PRIMARY KEY, \
                 owner text, since timestamp)"
            ),
        )
        .await?;
        self.use_keyspace().await?;
        if self.pending(session).await?.is_empty() {
            return Ok(SCHEMA_VERSION);
        }
        let owner = format!("{:016x}", rand::random::<u64>());
        self.lock(session, &owner).await?;
        let outcome = self.apply_pending(session, &owner).await;
        let release = self.lwt(&format!(
            "DELETE FROM {ks}.schema_migration_lock WHERE name = 'schema' IF owner = ?"
        ));
        if let Err(e) = session.query_unpaged(release, (&owner,)).await {
            tracing::warn!(error = %e, "could not release the migration lock; it lapses on its own");
        }
        outcome?;
        Ok(SCHEMA_VERSION)
    }

    async fn apply_pending(&self, session: &Session, owner: &str) -> Result<(), StoreError> {
        let ks = &self.config.keyspace;
        for m in self.pending(session).await? {
            // Renew the lease before each migration.
            let renew = self.lwt(&format!(
                "UPDATE {ks}.schema_migration_lock USING TTL {LEASE_TTL_S} SET owner = ? \
                 WHERE name = 'schema' IF owner = ?"
            ));
            let r = session
                .query_unpaged(renew, (owner, owner))
                .await
                .map_err(|e| unavailable("renewing the migration lock", e))?;
            if !applied("schema_migration_lock", r)? {
                return Err(StoreError::Unavailable(
                    "lost the migration lock (lease lapsed); run `dal migrate` again".into(),
                ));
            }
            tracing::info!(version = m.version, name = m.name, "applying migration");
            for stmt in statements(m.cql) {
                ddl(session, &in_keyspace(ks, &stmt)).await?;
            }
            let record = self.lwt(&format!(
                "INSERT INTO {ks}.schema_migrations (version, name, checksum, applied_at) \
                 VALUES (?, ?, ?, toTimestamp(now())) IF NOT EXISTS"
            ));
            session
                .query_unpaged(record, (m.version, m.name, checksum(m.cql)))
                .await
                .map_err(|e| unavailable("recording a migration", e))?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
        }
        Ok(())
    }

    /// Migrations of this build not yet recorded.
    ///
    /// # Errors
    /// When a recorded migration's checksum differs from this build's.
    async fn pending(&self, session: &Session) -> Result<Vec<Migration>, StoreError> {
        let ks = &self.config.keyspace;
        let rows = session
            .query_unpaged(
                self.serial(&format!(
                    "SELECT version, name, checksum FROM {ks}.schema_migrations"
                )),
                (),
            )
            .await
            .map_err(|e| unavailable("reading schema_migrations", e))?
            .into_rows_result()
            .map_err(|e| unavailable("reading schema_migrations", e))?;
        let mut recorded = BTreeMap::new();
        for row in rows
            .rows::<(i32, Option<String>, Option<i64>)>()
            .map_err(|e| unavailable("reading schema_migrations", e))?
        {
            let (version, name, sum) = row.map_err(|e| unavailable("schema_migrations", e))?;
            recorded.insert(version, (name, sum));
        }
        let mut out = Vec::new();
        for m in MIGRATIONS {
            match recorded.get(&m.version) {
                None => out.push(*m),
                Some((_, Some(sum))) if *sum == checksum(m.cql) => {}
                Some((name, _)) => {
                    return Err(StoreError::Unavailable(format!(
                        "migration {} ({}) was applied from a different file than this build's \
                         {:04}_{}.cql: shipped migrations must never change",
                        m.version,
                        name.as_deref().unwrap_or("?"),
                        m.version,
                        m.name
                    )));
                }
            }
        }
        if let Some(newest) = recorded.keys().next_back()
            && i64::from(*newest) > i64::try_from(SCHEMA_VERSION).unwrap_or(i64::MAX)
        {
            tracing::warn!(
                recorded = newest,
                known = SCHEMA_VERSION,
                "the schema is newer than this build"
            );
        }
        Ok(out)
    }

    async fn lock(&self, session: &Session, owner: &str) -> Result<(), StoreError> {
        let ks = &self.config.keyspace;
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            let claim = self.lwt(&format!(
                "INSERT INTO {ks}.schema_migration_lock (name, owner, since) \
                 VALUES ('schema', ?, toTimestamp(now())) IF NOT EXISTS USING TTL {LEASE_TTL_S}"
            ));
            let r = session
                .query_unpaged(claim, (owner,))
                .await
                .map_err(|e| unavailable("claiming the migration lock", e))?;
            if applied("schema_migration_lock", r)? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "another runner held the migration lock for more than {LOCK_WAIT:?}"
                )));
            }
            tracing::info!("another runner is migrating; waiting");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICATION: &str = "{'class': 'NetworkTopologyStrategy', 'dc1': 3}";

    #[test]
    fn keyspace_ddl_disables_tablets_on_scylla_with_tablets_only() {
        assert_eq!(
            create_keyspace(
                "fleet",
                REPLICATION,
                ServerFlavour::Scylla { tablets: true }
            ),
            "CREATE KEYSPACE IF NOT EXISTS fleet WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'dc1': 3} AND tablets = {'enabled': false}"
        );
        // Cassandra rejects the tablets option ("Unknown property"), and so
        // does a Scylla from before tablets.
        let plain = "CREATE KEYSPACE IF NOT EXISTS fleet WITH replication = \
                     {'class': 'NetworkTopologyStrategy', 'dc1': 3}";
        assert_eq!(
            create_keyspace("fleet", REPLICATION, ServerFlavour::Cassandra),
            plain
        );
        assert_eq!(
            create_keyspace(
                "fleet",
                REPLICATION,
                ServerFlavour::Scylla { tablets: false }
            ),
            plain
        );
    }

    #[test]
    fn server_flavour_comes_from_the_scylla_schema_tables() {
        // Table names as Cassandra 5.0 and Scylla 6.2 list them.
        let cassandra = [
            ("system", "local"),
            ("system", "peers_v2"),
            ("system_schema", "keyspaces"),
            ("system_schema", "tables"),
        ];
        assert_eq!(
            ServerFlavour::from_tables(cassandra),
            ServerFlavour::Cassandra
        );
        let scylla_5 = [
            ("system", "local"),
            ("system", "scylla_local"),
            ("system_schema", "keyspaces"),
        ];
        assert_eq!(
            ServerFlavour::from_tables(scylla_5),
            ServerFlavour::Scylla { tablets: false }
        );
        let scylla_6 = [
            ("system", "local"),
            ("system", "scylla_local"),
            ("system_schema", "keyspaces"),
            ("system_schema", "scylla_keyspaces"),
        ];
        assert_eq!(
            ServerFlavour::from_tables(scylla_6),
            ServerFlavour::Scylla { tablets: true }
        );
    }

    #[test]
    fn migration_files_split_into_ddl_statements() {
        for m in MIGRATIONS {
            let stmts = statements(m.cql);
            assert!(!stmts.is_empty());
            for s in &stmts {
                assert!(
                    s.starts_with("CREATE TABLE IF NOT EXISTS") || s.starts_with("ALTER TABLE"),
                    "{s}"
                );
                assert!(!s.contains("--"), "comments stripped: {s}");
            }
        }
        assert_eq!(
            in_keyspace(
                "ks",
                "CREATE TABLE IF NOT EXISTS titles (id text PRIMARY KEY)"
            ),
            "CREATE TABLE IF NOT EXISTS ks.titles (id text PRIMARY KEY)"
        );
        assert_eq!(
            in_keyspace("ks", "ALTER TABLE ks.titles ADD x int"),
            "ALTER TABLE ks.titles ADD x int"
        );
        assert_eq!(
            statements(MIGRATIONS[0].cql).len(),
            8,
            "one statement per table"
        );
        let versions: Vec<_> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i32> = (1..=i32::try_from(MIGRATIONS.len()).unwrap()).collect();
        assert_eq!(versions, expected, "numbered 1, 2, … without gaps");
    }
}
