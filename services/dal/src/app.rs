//! [`App`]: the dal assembled — store, cache, gRPC service, host.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use fleet_metrics::Metrics;
use fleet_proto::dal::v1::data_access_server::DataAccessServer;
use fleet_server::ServiceHost;
use fleet_server::entry::BoxError;

use crate::cache::LocalCache;
use crate::config::Config;
use crate::service::DalService;
use crate::store::{EmbeddedStore, Store};

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "dal.v1.DataAccess";

/// Opens the store the configuration selects and applies migrations.
///
/// # Errors
/// When the store cannot be opened (e.g. another process holds the file).
pub async fn open_store(config: &Config) -> Result<Store, BoxError> {
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir)).await??;
    Ok(Store::Embedded(Arc::new(store)))
}

/// A bound, ready-to-run dal instance.
#[derive(Debug)]
pub struct App {
    host: ServiceHost,
    service: DalService,
}

impl App {
    /// Opens the store, seeds it when asked and empty, binds the listeners.
    ///
    /// # Errors
    /// When the store cannot be opened or a listener cannot be bound.
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        let store = open_store(&config).await?;
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
        let version = config.server.identity.version.to_string();
        let metrics = Metrics::new("dal", &version);
        let cache = LocalCache::new(&config.cache, &metrics);
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

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.host.main_addr()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.host.admin_addr()
    }

    /// Cancelling this token drains and stops the instance.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.host.shutdown_token()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run(self) -> Result<(), BoxError> {
        let routes = tonic::service::Routes::new(DataAccessServer::new(self.service));
        self.host.run_grpc(routes, &[SERVICE_NAME]).await?;
        Ok(())
    }
}
