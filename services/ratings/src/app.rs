//! [`App`]: what a ratings instance is made of, bound and ready to run.

use fleet_config::{ConfigError, Env};
use fleet_dal_client::DalClient;
use fleet_discovery::Discovery;
use fleet_metrics::Metrics;
use fleet_proto::ratings::v1::ratings_server::RatingsServer;
use fleet_server::ServiceHost;
use fleet_server::entry::BoxError;
use tonic::service::Routes;

use crate::config::Config;
use crate::service::RatingsService;

/// The fully qualified gRPC service this app serves.
pub const GRPC_SERVICE: &str = "ratings.v1.Ratings";

/// A ratings instance with its listeners bound (port 0 picks a free port).
#[derive(Debug)]
pub struct App {
    host: ServiceHost,
    service: RatingsService,
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
        let metrics = Metrics::new(crate::SERVICE, &version.to_string());
        // Consul when CONSUL_HTTP_ADDR is set, else the static DAL_ADDRS.
        let discovery = Discovery::new(config.server.discovery.clone(), &metrics)?;
        let dal = DalClient::new(
            discovery
                .dependency(config.dal, config.dal_instances, metrics.grpc_client())
                .await,
        );
        let top_rated_min_count = config.top_rated_min_count;
        let host = ServiceHost::bind(config.server, metrics).await?;
        // Ready while at least one dal instance is known: a slow or failing
        // dal is handled per request (deadline, breaker, balancer), and an
        // instance that took itself out of rotation for it would only
        // move the load onto its peers, which meet the same dal.
        let known = dal.dependency().clone();
        host.readiness()
            .add_required("dal", move || known.instances().len());
        Ok(Self {
            host,
            service: RatingsService::new(dal, top_rated_min_count),
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
        let routes = Routes::new(RatingsServer::new(self.service));
        self.host.run_grpc(routes, &[GRPC_SERVICE]).await?;
        Ok(())
    }
}

// Tests start this service through the one harness
// (`fleet_testkit::TestService::start::<App>(&env)`); only tests turn on
// `test-util`.
#[cfg(feature = "test-util")]
fleet_testkit::impl_test_app!(App);
