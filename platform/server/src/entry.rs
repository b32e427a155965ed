//! The one `main` every service binary runs.
//!
//! telemetry → load and validate config (exit 64 on bad config) → build the
//! app → run until SIGTERM/Ctrl-C → drain within the grace period → exit 0 (1 when
//! the grace period ran out and requests in flight were aborted).
//! Service binaries call [`serve`] (an [`App`]'s whole `main`) from a
//! three-line `main.rs`; `fleet up` calls the very same function, so a
//! service behaves identically whether started on its own, in a
//! container, or by the fleet tool.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use fleet_config::{ConfigError, Env};
use fleet_telemetry::TelemetryConfig;

use crate::app::App;

/// Exit status for unusable configuration: 64 (`EX_USAGE` in sysexits.h),
/// the house convention for "the operator must fix the settings".
pub const EXIT_CONFIG: u8 = 64;
/// Exit status when the service failed at runtime.
pub const EXIT_FAILURE: u8 = 1;

/// A boxed error from a service's start-up or run.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Runs a service to completion and returns the process exit code.
///
/// `load` turns the environment into the service's config; `start` builds
/// and runs the app until `shutdown` is cancelled (on the first SIGTERM or
/// Ctrl-C), then drains.
pub fn run<C, F, Fut>(
    service: &'static str,
    env: Env,
    load: impl FnOnce(&Env) -> Result<C, ConfigError>,
    start: F,
) -> ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service}: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(async move {
        let telemetry = match TelemetryConfig::from_env(&env, service) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{service}: invalid configuration: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let _guard = match fleet_telemetry::init(&telemetry) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{service}: failed to start telemetry: {}", chain(&e));
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let config = match load(&env) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "invalid configuration");
                eprintln!("{service}: invalid configuration: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let shutdown = crate::shutdown::on_signal();
        match start(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let error = chain(e.as_ref());
                tracing::error!(%error, "service failed");
                eprintln!("{service}: {error}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}

/// Runs the service `A` to completion ([`run`] with `A`'s config and
/// [`start`]) and returns the process exit code: a service's whole `main`.
pub fn serve<A: App>(env: Env) -> ExitCode {
    run(A::SERVICE, env, A::config, start::<A>)
}

/// Builds `A` and runs it until `stop` (the signal token) or the app's own
/// shutdown token is cancelled, then drains: [`run`]'s `start` for an [`App`].
///
/// # Errors
/// When the app cannot be built or its server fails.
pub async fn start<A: App>(config: A::Config, stop: CancellationToken) -> Result<(), BoxError> {
    let app = A::build(config).await?;
    let shutdown = app.shutdown_token();
    // The signal token belongs to the entry point; the app has its own.
    // Forward the one to the other, and end this task with the app.
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => shutdown.cancel(),
            () = shutdown.cancelled() => {}
        }
    });
    app.run().await
}

/// An error and its sources on one line (`a: b: c`), for the log.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chains_read_outer_to_inner() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
