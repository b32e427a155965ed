//! [`App`]: the dal assembled — store, cache, gRPC service, host.

use std::sync::Arc;
use std::time::Duration;

use fleet_config::{ConfigError, Env};
use fleet_metrics::Metrics;
use fleet_proto::dal::v1::data_access_server::DataAccessServer;
use fleet_server::ServiceHost;
use fleet_server::entry::BoxError;

use crate::cache;
use crate::config::Config;
use crate::service::DalService;
use crate::store::{CqlStore, EmbeddedStore, SharedStore, Startup};

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "dal.v1.DataAccess";

/// How long a one-off admin process (`dal migrate|seed|repair`) waits for
/// Cassandra before it gives up.
pub const ADMIN_CONNECT_WAIT: Duration = Duration::from_secs(60);

/// Opens the embedded store under `DATA_DIR` (migrating it).
///
/// # Errors
/// When the store cannot be opened (e.g. another process holds the file).
pub async fn open_embedded(config: &Config) -> Result<SharedStore, BoxError> {
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir)).await??;
    Ok(Arc::new(store))
}

/// Opens the store the configuration selects, for a one-off admin
/// process: Cassandra when `SCYLLA_NODES` is set — waiting (up to
/// [`ADMIN_CONNECT_WAIT`]) until it is connected, migrated if
/// `SCYLLA_MIGRATE_ON_START` allows, and its statements prepared — else
/// the embedded store.
///
/// # Errors
/// When the store cannot be opened or Cassandra does not become ready.
pub async fn open_store(config: &Config, metrics: &Metrics) -> Result<SharedStore, BoxError> {
    match &config.cql {
        None => open_embedded(config).await,
        Some(cql) => {
            let startup = Startup {
                migrate: cql.migrate_on_start,
                prepare: true,
                seed: None,
            };
            let store = CqlStore::start(cql.clone(), startup, metrics);
            store.wait_ready(ADMIN_CONNECT_WAIT).await?;
            Ok(store)
        }
    }
}

/// A bound, ready-to-run dal instance.
#[derive(Debug)]
pub struct App {
    host: ServiceHost,
    service: DalService,
}

impl fleet_server::App for App {
    type Config = Config;
    const SERVICE: &'static str = crate::SERVICE;

    fn config(env: &Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }

    /// Opens the store, seeds it when asked and empty, binds the listeners.
    ///
    /// With Cassandra (`SCYLLA_NODES`) nothing here waits for it: the store
    /// connects, migrates and seeds in the background, retrying with
    /// backoff, and the instance reports not-ready (`/readyz` 503, gRPC
    /// health `NOT_SERVING`, the readiness check saying what it waits for)
    /// until it can serve. Redis (`REDIS_URL`) is connected lazily and is
    /// never a readiness condition: without it the dal serves from the
    /// store.
    ///
    /// # Errors
    /// When the embedded store cannot be opened or a listener cannot be
    /// bound.
    async fn build(config: Config) -> Result<Self, BoxError> {
        let version = config.server.identity.version.to_string();
        let metrics = Metrics::new("dal", &version);
        let store: SharedStore = match &config.cql {
            Some(cql) => {
                tracing::info!(
                    nodes = %cql.nodes.join(","),
                    keyspace = %cql.keyspace,
                    "using Cassandra; connecting in the background"
                );
                let startup = Startup {
                    migrate: cql.migrate_on_start,
                    prepare: true,
                    seed: config.seed.then_some(config.seed_config),
                };
                CqlStore::start(cql.clone(), startup, &metrics)
            }
            None => {
                let store = open_embedded(&config).await?;
                if config.seed {
                    let report = store.seed(config.seed_config).await?;
                    if report.seeded {
                        tracing::info!(
                            titles = report.titles,
                            ratings = report.ratings,
                            progress = report.progress,
                            "seeded the store"
                        );
                    }
                }
                store
            }
        };
        store.register_metrics(&metrics);
        let cache = cache::from_config(&config.cache, config.redis.as_ref(), &metrics)?;
        tracing::info!(
            store = store.backend(),
            cache = cache.kind(),
            "storage selected"
        );
        let host = ServiceHost::bind(config.server, metrics).await?;
        let probe = store.clone();
        host.readiness().add("store", move || {
            let store = probe.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        });
        Ok(Self {
            host,
            service: DalService::new(store, cache),
        })
    }

    fn host(&self) -> &ServiceHost {
        &self.host
    }

    /// Serves until the shutdown token is cancelled, then drains.
    ///
    /// # Errors
    /// When the server fails.
    async fn run(self) -> Result<(), BoxError> {
        let routes = tonic::service::Routes::new(DataAccessServer::new(self.service));
        self.host.run_grpc(routes, &[SERVICE_NAME]).await?;
        Ok(())
    }
}

// Tests start this service through the one harness
// (`fleet_testkit::TestService::start::<App>(&env)`); only tests turn on
// `test-util`.
#[cfg(feature = "test-util")]
fleet_testkit::impl_test_app!(App);
