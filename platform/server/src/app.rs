//! [`App`]: the shape of every service shell, written once.
//!
//! A service says what is its own — its config, how it builds its clients,
//! store and readiness checks on a bound [`ServiceHost`], and what it serves
//! — and [`crate::entry::serve`] does the rest for all of them: runtime,
//! telemetry, config (exit 64 when invalid), signals, drain, exit code.
//! The test harness (`fleet-testkit`) starts services through the same
//! trait, on port 0.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use fleet_config::{ConfigError, Env};

use crate::entry::BoxError;
use crate::host::ServiceHost;

/// A service instance built on a [`ServiceHost`], listeners bound.
pub trait App: Sized + Send + 'static {
    /// Its configuration, read once from the environment.
    type Config: Send + 'static;

    /// The service's name: in logs, metrics, discovery and exit messages.
    const SERVICE: &'static str;

    /// Reads and validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that is missing or invalid.
    fn config(env: &Env) -> Result<Self::Config, ConfigError>;

    /// Binds the listeners (port 0 picks a free port) and builds what the
    /// service needs: clients, store, readiness checks.
    ///
    /// # Errors
    /// When a listener cannot be bound or a dependency cannot be set up.
    fn build(config: Self::Config) -> impl Future<Output = Result<Self, BoxError>>;

    /// The host the instance runs on.
    fn host(&self) -> &ServiceHost;

    /// Serves until [`App::shutdown_token`] is cancelled, then drains.
    ///
    /// # Errors
    /// When the server fails (not on a normal shutdown).
    fn run(self) -> impl Future<Output = Result<(), BoxError>> + Send + 'static;

    /// The bound main address (gRPC, or the edge's public HTTP).
    fn main_addr(&self) -> SocketAddr {
        self.host().main_addr()
    }

    /// The bound admin address (`/healthz`, `/readyz`, `/metrics`, …).
    fn admin_addr(&self) -> SocketAddr {
        self.host().admin_addr()
    }

    /// Cancelling this token drains and stops the instance.
    fn shutdown_token(&self) -> CancellationToken {
        self.host().shutdown_token()
    }
}
