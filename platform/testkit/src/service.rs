//! One way to start a service in-process on loopback port 0: build its
//! app from an environment, run it on its own task, read its bound
//! addresses, wait for `/readyz`, stop it (and stop it on drop).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleet_config::Env;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::probe;

/// The error a service's start-up or run ends with (the same type as
/// `fleet_server::entry::BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A service's app as a test starts it. Every service implements it for
/// its `App` behind its `test-util` feature, which only tests turn on:
/// this crate names no service, so a service may dev-depend on it.
pub trait TestApp: Sized + Send + 'static {
    /// Loads the configuration from `env` and builds the app, its
    /// listeners bound (port 0 → a free port).
    ///
    /// # Errors
    /// Bad configuration, or a listener or store that cannot be opened.
    fn build(env: &Env) -> impl Future<Output = Result<Self, BoxError>>;
    /// The listener callers use: gRPC, or HTTP for the edge.
    fn addr(&self) -> SocketAddr;
    /// The admin listener (`/readyz`, `/metrics`, `/admin/…`).
    fn admin_addr(&self) -> SocketAddr;
    /// Cancelling it drains the app and ends [`TestApp::run`].
    fn shutdown_token(&self) -> CancellationToken;
    /// Serves until the shutdown token is cancelled, then drains.
    fn run(self) -> impl Future<Output = Result<(), BoxError>> + Send + 'static;
}

/// The settings every in-process test service starts with — listeners on
/// loopback port 0, readiness re-checked every 50 ms, a 2 s drain — with
/// `extra` added over them (a later pair replaces an earlier one).
pub fn loopback_env<K, V>(extra: impl IntoIterator<Item = (K, V)>) -> Env
where
    K: Into<String>,
    V: Into<String>,
{
    let base = Env::from_pairs([
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("READINESS_INTERVAL", "50ms"),
        ("SHUTDOWN_GRACE", "2s"),
    ]);
    extra.into_iter().fold(base, |env, (k, v)| env.with(k, v))
}

/// A service running in-process on its own task. Dropping it cancels the
/// app's shutdown token (it drains in the background); [`TestService::stop`]
/// also waits and checks that it stopped cleanly.
pub struct TestService {
    /// The address callers use: gRPC, or HTTP for the edge.
    pub addr: SocketAddr,
    /// The admin address (`/readyz`, `/metrics`, `/admin/…`).
    pub admin: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), BoxError>>>,
    dirs: Vec<tempfile::TempDir>,
}

impl TestService {
    /// Builds `A` from `env` and runs it; does not wait for readiness.
    ///
    /// # Panics
    /// When the app does not build (a test's configuration is wrong).
    pub async fn start<A: TestApp>(env: &Env) -> Self {
        let app = match A::build(env).await {
            Ok(app) => app,
            Err(e) => panic!("{} did not start: {e}", std::any::type_name::<A>()),
        };
        Self {
            addr: app.addr(),
            admin: app.admin_addr(),
            stop: app.shutdown_token(),
            task: Some(tokio::spawn(app.run())),
            dirs: Vec::new(),
        }
    }

    /// As [`TestService::start`], with `data_var` (e.g. `DATA_DIR`) set to a
    /// fresh temporary directory that lives as long as the service.
    ///
    /// # Panics
    /// When the directory cannot be made or the app does not build.
    pub async fn start_with_data<A: TestApp>(env: Env, data_var: &str) -> Self {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("temporary data directory: {e}"),
        };
        let env = env.with(data_var, dir.path().display().to_string());
        Self::start::<A>(&env).await.keep(dir)
    }

    /// Keeps `dir` (the service's data) until the service is dropped.
    #[must_use]
    pub fn keep(mut self, dir: tempfile::TempDir) -> Self {
        self.dirs.push(dir);
        self
    }

    /// Whether the app's task is still running (it has neither returned
    /// nor panicked).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// `/readyz`'s status code and body (see [`probe::readyz_body`]).
    pub async fn readyz(&self) -> (u16, String) {
        probe::readyz_body(self.admin).await
    }

    /// The Prometheus text of the admin port (see [`probe::metrics`]).
    pub async fn metrics(&self) -> String {
        probe::metrics(self.admin).await
    }

    /// Waits until `/readyz` answers 200.
    ///
    /// # Panics
    /// When it does not within `limit`.
    pub async fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let (code, body) = self.readyz().await;
            if code == 200 {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{} not ready after {limit:?}: {code} {body}",
                self.admin
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drains and stops the app; it must stop cleanly within 10 s.
    ///
    /// # Panics
    /// When it does not, or its run ended with an error or a panic.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let Some(task) = self.task.take() else { return };
        let result = match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => panic!("{}: the app's task panicked: {join}", self.addr),
            Err(_) => panic!("{}: not stopped within the grace period", self.addr),
        };
        assert!(result.is_ok(), "{}: {result:?}", self.addr);
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Implements [`TestApp`] for a service's `$app` through its
/// `fleet_server::App` implementation (config from the environment, build,
/// main and admin address, shutdown token, run): written once here. The
/// expansion names `fleet_server`, which every service depends on; this
/// crate does not, so `fleet-server`'s own tests may use it.
///
/// ```text
/// #[cfg(feature = "test-util")]
/// fleet_testkit::impl_test_app!(App);
/// ```
#[macro_export]
macro_rules! impl_test_app {
    ($app:ty) => {
        impl $crate::TestApp for $app {
            async fn build(env: &$crate::Env) -> ::std::result::Result<Self, $crate::BoxError> {
                let config = <$app as ::fleet_server::App>::config(env)?;
                <$app as ::fleet_server::App>::build(config).await
            }

            fn addr(&self) -> ::std::net::SocketAddr {
                <$app as ::fleet_server::App>::main_addr(self)
            }

            fn admin_addr(&self) -> ::std::net::SocketAddr {
                <$app as ::fleet_server::App>::admin_addr(self)
            }

            fn shutdown_token(&self) -> $crate::CancellationToken {
                <$app as ::fleet_server::App>::shutdown_token(self)
            }

            fn run(
                self,
            ) -> impl ::std::future::Future<Output = ::std::result::Result<(), $crate::BoxError>>
            + ::std::marker::Send
            + 'static {
                <$app as ::fleet_server::App>::run(self)
            }
        }
    };
}
