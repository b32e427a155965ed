//! The catalog service: titles, genres and browse pages.
//!
//! A stateless gRPC service (`catalog.v1.Catalog`) in front of the data
//! access layer, which it reaches only through its driver client
//! ([`fleet_dal_client::DalClient`]). It validates every request before the
//! dal sees it, maps the dal's failures to meaningful gRPC statuses, and is
//! ready only while the dal answers.
//!
//! One build serves two feature releases of interface 1, chosen by
//! `SERVICE_VERSION`: 1.2.x returns titles as stored; 1.3.x adds
//! [`badges`] to every title.

#![forbid(unsafe_code)]

mod app;
pub mod badges;
mod config;
mod service;
mod v2;

use std::process::ExitCode;

use fleet_config::Env;

pub use app::App;
pub use config::Config;
pub use service::Features;

/// The service name: in logs, metrics, discovery and `x-fleet-served-by`.
pub const SERVICE: &str = "catalog";

/// Runs the catalog until SIGTERM/Ctrl-C, then drains; returns the exit
/// code (64 for bad configuration).
pub fn main(env: Env) -> ExitCode {
    fleet_server::entry::serve::<App>(env)
}
