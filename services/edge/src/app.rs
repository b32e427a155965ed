//! [`App`]: what an edge instance is made of, bound and ready to run.

use fleet_catalog_client::CatalogClient;
use fleet_catalog_client::v2::CatalogV2Client;
use fleet_config::{ConfigError, Env};
use fleet_discovery::Discovery;
use fleet_metrics::Metrics;
use fleet_ratings_client::RatingsClient;
use fleet_server::ServiceHost;
use fleet_server::entry::BoxError;

use crate::config::Config;
use crate::stack::rate_limit::ClientLimiter;
use crate::stack::{self, StackConfig};
use crate::state::EdgeState;
use fleet_resilience::adaptive::AdaptiveLimiter;

/// An edge instance with its listeners bound (port 0 picks a free port).
#[derive(Debug)]
pub struct App {
    host: ServiceHost,
    state: EdgeState,
    stack: StackConfig,
}

impl fleet_server::App for App {
    type Config = Config;
    const SERVICE: &'static str = crate::SERVICE;

    fn config(env: &Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }

    /// Binds the HTTP and admin listeners, builds the catalog and ratings
    /// clients and registers their readiness checks.
    ///
    /// # Errors
    /// When a listener cannot be bound.
    async fn build(config: Config) -> Result<Self, BoxError> {
        let version = config.server.identity.version.to_string();
        let metrics = Metrics::new(crate::SERVICE, &version);
        // Consul when CONSUL_HTTP_ADDR is set, else the static *_ADDRS
        // lists; route tables from Consul KV, else ROUTES_DIR.
        let discovery = Discovery::new(config.server.discovery.clone(), &metrics)?;
        let catalog = CatalogClient::new(
            discovery
                .dependency(
                    config.catalog,
                    config.catalog_instances.clone(),
                    metrics.grpc_client(),
                )
                .await,
        );
        // The same catalog instances, filtered to interface major 2.
        let catalog_v2 = CatalogV2Client::new(
            discovery
                .dependency(
                    config.catalog_v2,
                    config.catalog_instances.clone(),
                    metrics.grpc_client(),
                )
                .await,
        );
        let ratings = RatingsClient::new(
            discovery
                .dependency(
                    config.ratings,
                    config.ratings_instances,
                    metrics.grpc_client(),
                )
                .await,
        );
        let host = ServiceHost::bind(config.server, metrics).await?;
        // Readiness means "I can serve": the catalog is required, so the
        // edge is unready only while no catalog instance is known at all;
        // ratings is optional (every ratings part has a fallback), so it
        // has no say. A slow or failing instance is the breakers' and the
        // balancer's business, per request.
        let known = catalog.dependency().clone();
        host.readiness()
            .add_required("catalog", move || known.instances().len());
        let stack = StackConfig {
            budgets: config.budgets,
            metrics: host.metrics().http_server(),
            admission_metrics: host.metrics().admission(),
            limiter: AdaptiveLimiter::new(host.config().concurrency.clone()),
            faults: host.faults().clone(),
            gameday_key: config.gameday_key.clone(),
            max_body: config.max_body,
            limits: config.limits,
            max_concurrency: config.max_concurrency,
            rate_limit: ClientLimiter::new(
                config.rate_limit,
                config.rate_limit_max_clients,
                config.trusted_proxies,
            ),
        };
        Ok(Self {
            host,
            state: EdgeState::new(catalog, catalog_v2, ratings),
            stack,
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
        let router = stack::router(self.state, self.stack);
        self.host.run_http(router).await?;
        Ok(())
    }
}

// Tests start this service through the one harness
// (`fleet_testkit::TestService::start::<App>(&env)`); only tests turn on
// `test-util`.
#[cfg(feature = "test-util")]
fleet_testkit::impl_test_app!(App);
