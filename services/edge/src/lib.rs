//! The edge: the only public door, JSON over HTTP.
//!
//! Serves the `/api/v1/` JSON API (see [`openapi`]) with axum. Every request
//! is validated completely before any backend is called, gets a deadline
//! budget per route, and fans out over gRPC to the catalog and ratings
//! services through their driver clients. Optional parts of a response
//! (rating summaries, home-page rows) declare a fallback and say when they
//! degraded; past its concurrency limit the edge sheds load with 503 +
//! `Retry-After` at once. The stack is assembled in [`stack`].

#![forbid(unsafe_code)]

mod app;
pub mod config;
pub mod error;
pub mod extract;
mod home;
pub mod openapi;
pub mod stack;
pub mod state;
mod titles;
mod users;

use std::process::ExitCode;

use fleet_config::Env;

pub use app::App;
pub use config::Config;
// The query strings of the listing routes, for code that decodes them
// outside a request (the fuzz targets in `fuzz/`).
pub use titles::ListQuery;
pub use users::RatingsQuery;

/// The service name: in logs, metrics and `x-fleet-caller`.
pub const SERVICE: &str = "edge";

/// Runs the edge until SIGTERM/Ctrl-C, then drains; returns the exit code
/// (64 for bad configuration).
pub fn main(env: Env) -> ExitCode {
    fleet_server::entry::serve::<App>(env)
}
