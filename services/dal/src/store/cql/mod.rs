//! Cassandra/Scylla through the `scylla` driver (`SCYLLA_NODES`).
//!
//! The tables are the embedded store's, one per query (see
//! `migrations/0001_initial.cql`); the difference is how a write stays
//! consistent across them without transactions:
//!
//! * **Ratings.** `ratings_by_title` is the source of truth, and the title's
//!   summary lives in its static columns. A rating write is one conditional
//!   batch on that one partition — the row (`IF NOT EXISTS`, or `IF` it
//!   still holds the value the writer read) and the summary (`IF version =`
//!   the version the writer read, set to `version + 1`) — so Paxos applies
//!   the row change and its delta to the count and sum together, exactly
//!   once, or not at all. A lost race re-reads at the serial consistency
//!   and tries again; a duplicate or retry finds its own rating already
//!   stored and changes nothing. No counter is ever incremented blindly.
//!   Then `ratings_by_user` (newest first) is written with
//!   `USING TIMESTAMP rated_at_ms·1000 + stars` and the replaced rating's
//!   row deleted at that timestamp: replays and reorderings converge on
//!   the newest rating, and a retry of a write whose first attempt died
//!   half-way finishes the job (the row remembers what it replaced).
//! * **Progress** is last-write-wins by the client's `updated_at_ms`: the
//!   truth row and the newest-first index row go in one logged batch
//!   `USING TIMESTAMP updated_at_ms·1000`, with the replaced index row
//!   deleted at the same timestamp.
//! * **Titles** are written by the seed only (a logged batch to the three
//!   title tables).
//!
//! Every query is prepared, states its consistency level (reads, writes
//! and the serial phase of LWTs are configured separately), is routed
//! token-aware to a replica in the preferred datacenter, and is bounded by
//! the caller's remaining deadline (`DEADLINE_EXCEEDED`) or, without one,
//! by `SCYLLA_REQUEST_TIMEOUT` (`UNAVAILABLE`). Paged listings hand out the
//! driver's paging state as the API's page token, checksummed and bound to
//! the listing (see [`super::token`]).
//!
//! The store connects in the background: until the session is up (and the
//! schema migrated, the statements prepared and the seed written, when
//! asked) every call answers `Unavailable` and [`CqlStore::ping`] says what
//! it is waiting for, so the dal starts, reports not-ready and keeps
//! retrying with backoff instead of crashing when Cassandra is down.
//!
//! **Recovery.** When Cassandra goes away after that, calls fail fast
//! (`Unavailable`: the driver has no connection to send them on) and the
//! driver refills its pools with exponential backoff — up to 10 s between
//! attempts, and its reconnection policy is not configurable in a stable
//! API. So a watchdog ([`SESSION_WATCH_EVERY`]) notices when the session
//! has no open connection left, keeps trying to build a fresh session
//! (bounded by the connect timeout), and swaps it in the moment Cassandra
//! answers: queries and readiness resume within about a second of the
//! store's return instead of up to one backoff period later. Prepared
//! statements carry no session; the driver re-prepares them where the
//! server forgot them.

mod migrate;
mod queries;
mod repair;
mod seam;
mod statements;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::statement::{Consistency, SerialConsistency};
use tokio::sync::{OnceCell, watch};

use fleet_context::RequestContext;
use fleet_metrics::Metrics;
use fleet_seed::SeedConfig;

use super::StoreError;
use statements::Statements;

pub use migrate::SCHEMA_VERSION;

/// Connection and query settings (`SCYLLA_*`), validated by
/// [`crate::config::Config::from_env`].
#[derive(Clone, PartialEq)]
pub struct CqlConfig {
    /// Contact points, `host:port`; `SCYLLA_NODES` (comma-separated). The
    /// driver discovers the rest of the cluster from them.
    pub nodes: Vec<String>,
    /// `SCYLLA_KEYSPACE`, default `fleet`.
    pub keyspace: String,
    /// The local datacenter (`SCYLLA_DATACENTER`): queries go to its
    /// replicas only and `LOCAL_*` consistency levels count in it. Unset:
    /// every node is treated alike (a single-datacenter cluster).
    pub datacenter: Option<String>,
    /// `SCYLLA_USERNAME` / `SCYLLA_PASSWORD` (both or neither).
    pub credentials: Option<(String, Secret)>,
    /// Replication factor when `dal migrate` creates the keyspace
    /// (`SCYLLA_REPLICATION_FACTOR`); unset: 3, capped at the number of
    /// nodes the cluster reports (so a single dev node gets 1).
    pub replication_factor: Option<u32>,
    /// Reads; `SCYLLA_READ_CONSISTENCY`, default `LOCAL_QUORUM`.
    pub read_consistency: Consistency,
    /// Writes, and the commit phase of LWTs; `SCYLLA_WRITE_CONSISTENCY`,
    /// default `LOCAL_QUORUM`.
    pub write_consistency: Consistency,
    /// The Paxos phase of LWTs and the reads that feed a compare-and-set;
    /// `SCYLLA_SERIAL_CONSISTENCY`, default `LOCAL_SERIAL`.
    pub serial_consistency: SerialConsistency,
    /// One connection attempt; `SCYLLA_CONNECT_TIMEOUT`, default 2 s.
    pub connect_timeout: Duration,
    /// A query's bound when the caller gave no deadline (admin processes)
    /// or a later one; `SCYLLA_REQUEST_TIMEOUT`, default 5 s.
    pub request_timeout: Duration,
    /// Apply migrations when the server starts; `SCYLLA_MIGRATE_ON_START`,
    /// default `true` (set `false` where `dal migrate` runs as a job).
    pub migrate_on_start: bool,
}

impl fmt::Debug for CqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CqlConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("datacenter", &self.datacenter)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("replication_factor", &self.replication_factor)
            .field("read_consistency", &self.read_consistency)
            .field("write_consistency", &self.write_consistency)
            .field("serial_consistency", &self.serial_consistency)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl CqlConfig {
    /// Defaults for everything but the contact points.
    pub fn new(nodes: Vec<String>) -> Self {
        Self {
            nodes,
            keyspace: "fleet".into(),
            datacenter: None,
            credentials: None,
            replication_factor: None,
            read_consistency: Consistency::LocalQuorum,
            write_consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            migrate_on_start: true,
        }
    }
}

/// A password: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// What the background connector does once the session is up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Startup {
    /// Apply migrations first.
    pub migrate: bool,
    /// Prepare the statements (everything but `dal migrate` needs them).
    pub prepare: bool,
    /// Write the seed data (unless seeded) before reporting ready.
    pub seed: Option<SeedConfig>,
}

/// Where the background connector is.
#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Connecting { attempt: u32, error: Option<String> },
    Connected,
    Migrating { error: Option<String> },
    Preparing { error: Option<String> },
    Seeding { error: Option<String> },
    Ready,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connecting {
                attempt,
                error: None,
            } => write!(f, "connecting to Cassandra (attempt {attempt})"),
            Self::Connecting {
                attempt,
                error: Some(e),
            } => write!(
                f,
                "connecting to Cassandra (attempt {attempt}, last error: {e})"
            ),
            Self::Connected => f.write_str("connected, statements not prepared"),
            Self::Migrating { error: None } => f.write_str("applying schema migrations"),
            Self::Migrating { error: Some(e) } => {
                write!(f, "applying schema migrations failed, retrying: {e}")
            }
            Self::Preparing { error: None } => f.write_str("preparing statements"),
            Self::Preparing { error: Some(e) } => write!(
                f,
                "preparing statements failed (has `dal migrate` run?): {e}"
            ),
            Self::Seeding { error: None } => f.write_str("writing the seed data"),
            Self::Seeding { error: Some(e) } => write!(f, "seeding failed, retrying: {e}"),
            Self::Ready => f.write_str("ready"),
        }
    }
}

/// The Cassandra/Scylla store.
pub struct CqlStore {
    config: CqlConfig,
    /// The first session: schema work and start-up use it.
    session: OnceCell<Arc<Session>>,
    /// The session queries use, once the watchdog replaced the first one
    /// (see "Recovery" in the module docs).
    replacement: RwLock<Option<Arc<Session>>>,
    /// Sessions the watchdog built (`fleet_dal_store_reconnects_total`).
    reconnects: Counter,
    statements: OnceCell<Arc<Statements>>,
    keyspace_in_use: AtomicBool,
    phase: watch::Sender<Phase>,
    /// Titles known to exist: a rating or progress write checks its title,
    /// and titles are never deleted, so a positive answer can be kept.
    known_titles: moka::future::Cache<String, ()>,
    cas_retries: Counter,
    /// Rating writes to one title queue here (per process) instead of
    /// racing each other in Paxos: Cassandra's compare-and-set degrades
    /// into timeouts under heavy contention on one partition, so only
    /// writes from different dal instances ever compete.
    title_locks: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of [`CqlStore::title_locks`].
const TITLE_LOCK_STRIPES: usize = 256;

impl fmt::Debug for CqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CqlStore")
            .field("config", &self.config)
            .field("phase", &*self.phase.borrow())
            .finish_non_exhaustive()
    }
}

/// Backoff between connection attempts: 200 ms doubling to 10 s, ±20 %.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200).saturating_mul(1 << attempt.min(6));
    base.min(Duration::from_secs(10))
        .mul_f64(rand::random_range(0.8..1.2))
}

impl CqlStore {
    /// Creates the store and starts connecting in the background; never
    /// fails and never waits. `metrics` gets
    /// `fleet_dal_store_cas_retries_total`.
    pub fn start(config: CqlConfig, startup: Startup, metrics: &Metrics) -> Arc<Self> {
        let cas_retries = Counter::default();
        metrics.register(
            "dal_store_cas_retries",
            "Rating writes that lost a compare-and-set race and retried",
            cas_retries.clone(),
        );
        let reconnects = Counter::default();
        metrics.register(
            "dal_store_reconnects",
            "Fresh Cassandra sessions built because the old one had lost every connection",
            reconnects.clone(),
        );
        let (phase, _) = watch::channel(Phase::Connecting {
            attempt: 1,
            error: None,
        });
        let store = Arc::new(Self {
            config,
            session: OnceCell::new(),
            replacement: RwLock::new(None),
            reconnects,
            statements: OnceCell::new(),
            keyspace_in_use: AtomicBool::new(false),
            phase,
            known_titles: moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            cas_retries,
            title_locks: (0..TITLE_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        });
        tokio::spawn(connect_loop(Arc::downgrade(&store), startup));
        store
    }

    /// The settings.
    pub fn config(&self) -> &CqlConfig {
        &self.config
    }

    /// Waits until the background connector is done (the session is up,
    /// and the statements prepared and seed written when asked).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] saying what it was still waiting for
    /// after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), StoreError> {
        self.wait_for(timeout, |p| matches!(p, Phase::Ready)).await
    }

    /// Waits until the session is up.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), StoreError> {
        self.wait_for(timeout, |_| self.session.initialized()).await
    }

    async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&Phase) -> bool,
    ) -> Result<(), StoreError> {
        let mut rx = self.phase.subscribe();
        let wait = async {
            loop {
                if done(&rx.borrow_and_update()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(()) if done(&self.phase.borrow()) => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
                "Cassandra at {} not ready after {timeout:?}: {}",
                self.config.nodes.join(","),
                *self.phase.borrow()
            ))),
        }
    }

    /// Ready when connected, prepared and seeded, and the node answers.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] naming what the connector waits for,
    /// or why the node did not answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let phase = self.phase.borrow().clone();
        if phase != Phase::Ready {
            return Err(StoreError::Unavailable(phase.to_string()));
        }
        let (session, st) = self.conn()?;
        let ping = session.execute_unpaged(&st.ping, ());
        match tokio::time::timeout(Duration::from_millis(900), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("Cassandra ping: {e}"))),
            Err(_) => Err(StoreError::Unavailable(
                "Cassandra ping: no answer within 900ms".into(),
            )),
        }
    }

    fn session(&self) -> Result<&Session, StoreError> {
        self.session
            .get()
            .map(|s| &**s)
            .ok_or_else(|| StoreError::Unavailable(self.phase.borrow().to_string()))
    }

    /// The session queries go to (the watchdog's replacement, if any)
    /// and the prepared statements.
    fn conn(&self) -> Result<(Arc<Session>, &Statements), StoreError> {
        let replaced = self
            .replacement
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match (
            replaced.or_else(|| self.session.get().cloned()),
            self.statements.get(),
        ) {
            (Some(s), Some(st)) => Ok((s, st)),
            _ => Err(StoreError::Unavailable(self.phase.borrow().to_string())),
        }
    }

    /// Whether the session queries use has no open connection to any
    /// node (Cassandra went away and the driver has not refilled yet).
    fn cut_off(&self) -> bool {
        self.conn().is_ok_and(|(session, _)| {
            !session
                .get_cluster_state()
                .get_nodes_info()
                .iter()
                .any(|node| node.is_connected())
        })
    }

    /// One round of the watchdog: when cut off, try a fresh session and
    /// swap it in if Cassandra answers. Returns whether it replaced one.
    async fn heal_session(&self) -> bool {
        if !self.cut_off() {
            return false;
        }
        match connect(&self.config).await {
            Ok(fresh) => {
                // The old session may have refilled meanwhile; either is
                // fine, the fresh one is known to be connected.
                *self
                    .replacement
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(fresh));
                self.reconnects.inc();
                tracing::info!(
                    nodes = %self.config.nodes.join(","),
                    "Cassandra answers again: replaced the session that had lost its connections"
                );
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "Cassandra still unreachable");
                false
            }
        }
    }

    /// How long the next query may take: the caller's remaining budget
    /// when it is the tighter bound (`true`), else the configured timeout.
    fn budget(&self, what: &str) -> Result<(Duration, bool), StoreError> {
        match RequestContext::current().and_then(|cx| cx.remaining()) {
            Some(left) if left.is_zero() => Err(StoreError::Timeout(format!(
                "{what}: no budget left to start"
            ))),
            Some(left) if left <= self.config.request_timeout => Ok((left, true)),
            _ => Ok((self.config.request_timeout, false)),
        }
    }

    /// Runs `fut` within the budget; dropping it on expiry cancels the
    /// query (the driver discards the late answer).
    async fn within<F: Future>(&self, what: &'static str, fut: F) -> Result<F::Output, StoreError> {
        let (budget, from_caller) = self.budget(what)?;
        tokio::time::timeout(budget, fut).await.map_err(|_| {
            if from_caller {
                StoreError::Timeout(format!("{what}: the caller's deadline passed"))
            } else {
                StoreError::Unavailable(format!("{what}: no answer within {budget:?}"))
            }
        })
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            if *p == phase {
                false
            } else {
                *p = phase;
                true
            }
        });
    }

    /// One pass of the connector; returns when it reached what `startup`
    /// asks for.
    async fn advance(&self, startup: &Startup, attempt: u32) -> Result<(), StoreError> {
        if !self.session.initialized() {
            self.set_phase(Phase::Connecting {
                attempt,
                error: None,
            });
            let session = connect(&self.config).await?;
            let _ = self.session.set(Arc::new(session));
            tracing::info!(nodes = %self.config.nodes.join(","), "connected to Cassandra");
        }
        if startup.migrate && !self.keyspace_in_use.load(Ordering::SeqCst) {
            self.set_phase(Phase::Migrating { error: None });
            if let Err(e) = self.migrate_schema().await {
                self.set_phase(Phase::Migrating {
                    error: Some(e.to_string()),
                });
                return Err(e);
            }
        }
        if !startup.prepare {
            self.set_phase(Phase::Connected);
            return Ok(());
        }
        if !self.statements.initialized() {
            self.set_phase(Phase::Preparing { error: None });
            if let Err(e) = self.prepare().await {
                self.set_phase(Phase::Preparing {
                    error: Some(e.to_string()),
                });
                return Err(e);
            }
        }
        if let Some(cfg) = startup.seed {
            self.set_phase(Phase::Seeding { error: None });
            match self.seed(&cfg).await {
                Ok(r) if r.seeded => tracing::info!(
                    titles = r.titles,
                    ratings = r.ratings,
                    progress = r.progress,
                    "seeded Cassandra"
                ),
                Ok(_) => {}
                Err(e) => {
                    self.set_phase(Phase::Seeding {
                        error: Some(e.to_string()),
                    });
                    return Err(e);
                }
            }
        }
        self.set_phase(Phase::Ready);
        Ok(())
    }

    /// Switches the session to the keyspace (which must exist) and
    /// prepares every statement.
    async fn prepare(&self) -> Result<(), StoreError> {
        let session = self.session()?;
        self.use_keyspace().await?;
        let st = Statements::prepare(session, &self.config)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot prepare statements: {e}")))?;
        let _ = self.statements.set(Arc::new(st));
        Ok(())
    }

    /// Checks that the keyspace exists (statements name it themselves;
    /// the session never runs `USE`).
    async fn use_keyspace(&self) -> Result<(), StoreError> {
        if self.keyspace_in_use.load(Ordering::SeqCst) {
            return Ok(());
        }
        let ks = &self.config.keyspace;
        let missing = |why: String| {
            StoreError::Unavailable(format!(
                "keyspace {ks} is not usable (has `dal migrate` run?): {why}"
            ))
        };
        let mut st = scylla::statement::Statement::new(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
        );
        st.set_consistency(Consistency::LocalOne);
        st.set_request_timeout(Some(self.config.request_timeout));
        let rows = self
            .session()?
            .query_unpaged(st, (ks,))
            .await
            .map_err(|e| missing(e.to_string()))?
            .into_rows_result()
            .map_err(|e| missing(e.to_string()))?;
        if rows.rows_num() == 0 {
            return Err(missing("it does not exist".into()));
        }
        self.keyspace_in_use.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Applies the migrations (see `migrations/`), then prepares the
    /// statements if that has not happened yet; returns the schema version.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when a migration fails or another
    /// process holds the migration lease for too long.
    pub async fn migrate(&self) -> Result<u64, StoreError> {
        let version = self.migrate_schema().await?;
        if !self.statements.initialized() {
            self.prepare().await?;
        }
        Ok(version)
    }
}

/// How often the session watchdog looks whether the session lost every
/// connection (and, while it has, tries a fresh one).
pub const SESSION_WATCH_EVERY: Duration = Duration::from_millis(500);

/// Runs as long as the store exists: see "Recovery" in the module docs.
async fn watch_session(store: Weak<CqlStore>) {
    let mut tick = tokio::time::interval(SESSION_WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = store.upgrade() else { return };
        s.heal_session().await;
    }
}

async fn connect_loop(store: Weak<CqlStore>, startup: Startup) {
    let mut attempt = 1;
    loop {
        let Some(s) = store.upgrade() else { return };
        match s.advance(&startup, attempt).await {
            Ok(()) => {
                tokio::spawn(watch_session(store.clone()));
                return;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "Cassandra store not ready; retrying");
                if !s.session.initialized() {
                    s.set_phase(Phase::Connecting {
                        attempt,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
        drop(s);
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Builds a session: token-aware, datacenter-aware routing; consistency,
/// timeouts and credentials from the configuration.
async fn connect(config: &CqlConfig) -> Result<Session, StoreError> {
    let mut policy = DefaultPolicy::builder()
        .token_aware(true)
        .permit_dc_failover(false);
    if let Some(dc) = &config.datacenter {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let profile = ExecutionProfile::builder()
        .consistency(config.read_consistency)
        .serial_consistency(Some(config.serial_consistency))
        .request_timeout(Some(config.request_timeout))
        .load_balancing_policy(policy.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(config.connect_timeout)
        .default_execution_profile_handle(profile.into_handle())
        .schema_agreement_timeout(Duration::from_secs(60));
    if let Some(dc) = &config.datacenter {
        builder = builder.prefer_datacenter(dc.clone());
    }
    if let Some((user, password)) = &config.credentials {
        builder = builder.user(user, &password.0);
    }
    // The builder waits for the control connection; bound it so a node
    // that accepts TCP but never answers cannot hold the connector.
    let limit = config.connect_timeout.saturating_mul(3);
    match tokio::time::timeout(limit, builder.build()).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no session within {limit:?}"
        ))),
    }
}

/// A driver error as the API sees it: a paging state the server refused
/// is the caller's bad token; everything else means the store is
/// unavailable right now.
fn exec_error(what: &'static str, e: ExecutionError) -> StoreError {
    if let ExecutionError::LastAttemptError(RequestAttemptError::DbError(_, msg)) = &e
        && msg.to_ascii_lowercase().contains("paging state")
    {
        return StoreError::BadToken("not a position this listing issued");
    }
    StoreError::Unavailable(format!("{what}: {e}"))
}

fn corrupt(table: &'static str, e: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: e.to_string(),
    }
}

/// What a compare-and-set round did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cas {
    /// It applied.
    Applied,
    /// Its condition was false: someone else changed the row first.
    Lost,
    /// No answer in time: it may or may not have applied (Paxos may still
    /// finish it). Only a serial read can tell.
    Unknown,
}

/// Whether an error of a conditional write leaves its outcome open: a
/// write timeout in the Paxos or commit phase.
pub(super) fn cas_outcome_unknown(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::WriteTimeout { .. },
            _
        ))
    )
}

/// Whether a conditional statement or batch applied (`[applied]`).
fn applied(table: &'static str, result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(|e| corrupt(table, e))?;
    let first = rows
        .maybe_first_row::<scylla::value::Row>()
        .map_err(|e| corrupt(table, e))?;
    match first.and_then(|r| r.columns.into_iter().next().flatten()) {
        Some(scylla::value::CqlValue::Boolean(b)) => Ok(b),
        other => Err(corrupt(
            table,
            format!("conditional write answered without [applied]: {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) < Duration::from_millis(500));
        assert!(backoff(30) <= Duration::from_secs(12));
        assert!(backoff(30) >= Duration::from_secs(8));
    }

    #[test]
    fn phases_read_well_in_readiness() {
        let p = Phase::Connecting {
            attempt: 3,
            error: Some("Connection refused".into()),
        };
        assert_eq!(
            p.to_string(),
            "connecting to Cassandra (attempt 3, last error: Connection refused)"
        );
        assert!(
            Phase::Preparing {
                error: Some("x".into())
            }
            .to_string()
            .contains("dal migrate")
        );
    }

    #[test]
    fn secrets_are_never_printed() {
        let mut c = CqlConfig::new(vec!["127.0.0.1:9042".into()]);
        c.credentials = Some(("fleet".into(), Secret("hunter2".into())));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && shown.contains("fleet"));
    }
}
