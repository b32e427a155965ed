//! [`App`]: what a catalog instance is made of, bound and ready to run.

use fleet_config::{ConfigError, Env};
use fleet_dal_client::DalClient;
use fleet_discovery::Discovery;
use fleet_metrics::Metrics;
use fleet_proto::catalog::v1::catalog_server::CatalogServer;
use fleet_proto::catalog::v2::catalog_server::CatalogServer as CatalogV2Server;
use fleet_server::ServiceHost;
use fleet_server::entry::BoxError;
use tonic::service::Routes;

use crate::config::Config;
use crate::service::{CatalogService, Features};

/// The fully qualified gRPC service 1.x serves (2.x serves
/// [`crate::v2::GRPC_SERVICE`] instead).
pub const GRPC_SERVICE: &str = "catalog.v1.Catalog";

/// A catalog instance with its listeners bound (port 0 picks a free port).
#[derive(Debug)]
pub struct App {
    host: ServiceHost,
    service: CatalogService,
    features: Features,
}

impl fleet_server::App for App {
    type Config = Config;
    const SERVICE: &'static str = crate::SERVICE;

    fn config(env: &Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }

    /// Binds the gRPC and admin listeners, builds the dal client and
    /// registers the readiness check (a dal instance is known).
    ///
    /// # Errors
    /// When a listener cannot be bound.
    async fn build(config: Config) -> Result<Self, BoxError> {
        let version = config.server.identity.version.clone();
        let features = Features::for_version(&version);
        let metrics = Metrics::new(crate::SERVICE, &version.to_string());
        // Consul when CONSUL_HTTP_ADDR is set, else the static DAL_ADDRS.
        let discovery = Discovery::new(config.server.discovery.clone(), &metrics)?;
        let dal = DalClient::new(
            discovery
                .dependency(config.dal, config.dal_instances, metrics.grpc_client())
                .await,
        );
        let host = ServiceHost::bind(config.server, metrics).await?;
        // Ready while at least one dal instance is known: a slow or failing
        // dal is handled per request (deadline, breaker, balancer), and an
        // instance that took itself out of rotation for it would only
        // move the load onto its peers, which meet the same dal.
        let known = dal.dependency().clone();
        host.readiness()
            .add_required("dal", move || known.instances().len());
        tracing::debug!(%version, badges = features.badges, "catalog built");
        Ok(Self {
            host,
            service: CatalogService::new(dal, features),
            features,
        })
    }

    fn host(&self) -> &ServiceHost {
        &self.host
    }

    /// Serves until the shutdown token is cancelled, then drains.
    ///
    /// # Errors
    /// When the server fails (not on a normal shutdown).
    async fn run(self) -> Result<(), BoxError> {
        // Interface major 2 is a different contract: 2.x serves catalog.v2
        // only, so a v1 caller can never be answered by it (nor by mistake).
        if self.host.identity().version.major == 2 {
            let routes = Routes::new(CatalogV2Server::new(self.service.v2()));
            self.host
                .run_grpc(routes, &[crate::v2::GRPC_SERVICE])
                .await?;
        } else {
            let routes = Routes::new(CatalogServer::new(self.service));
            self.host.run_grpc(routes, &[GRPC_SERVICE]).await?;
        }
        Ok(())
    }
}

impl App {
    /// The features of the release this instance runs.
    pub fn features(&self) -> Features {
        self.features
    }
}

// Tests start this service through the one harness
// (`fleet_testkit::TestService::start::<App>(&env)`); only tests turn on
// `test-util`.
#[cfg(feature = "test-util")]
fleet_testkit::impl_test_app!(App);
