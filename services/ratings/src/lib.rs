//! The ratings service: star ratings and viewing progress.
//!
//! A stateless gRPC service (`ratings.v1.Ratings`), the system's write
//! path, in front of the data access layer, which it reaches only through
//! its driver client ([`fleet_dal_client::DalClient`]). It validates every
//! request before the dal sees it, stamps writes that arrive without a
//! timestamp (so the dal's last-write-wins keeps retries idempotent), turns
//! the dal's rating sums into averages, keeps finished titles out of
//! "continue watching" ([`progress`]), and is ready only while the dal
//! answers.

#![forbid(unsafe_code)]

mod app;
mod config;
pub mod progress;
mod service;
mod validate;

use std::process::ExitCode;

use fleet_config::Env;

pub use app::App;
pub use config::Config;

/// The service name: in logs, metrics, discovery and `x-fleet-served-by`.
pub const SERVICE: &str = "ratings";

/// Runs the ratings service until SIGTERM/Ctrl-C, then drains; returns the
/// exit code (64 for bad configuration).
pub fn main(env: Env) -> ExitCode {
    fleet_server::entry::serve::<App>(env)
}
