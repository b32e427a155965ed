//! `fleet service <name> [args]`: run one service in this process.
//!
//! `fleet up` starts every instance as `fleet service <name>`, so a fresh
//! clone needs only `cargo run -p fleet -- up`: one binary carries all four
//! services (like busybox), and each child runs exactly the code of that
//! service's own binary (`fleet_<name>::main`).

use std::process::ExitCode;

use fleet_config::Env;

/// The services this binary can run.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ServiceName {
    /// The edge (JSON over HTTP).
    Edge,
    /// The catalog service.
    Catalog,
    /// The ratings service.
    Ratings,
    /// The data access layer (also `migrate`, `seed`, `repair`).
    Dal,
}

/// Runs `name` with the process environment; returns its exit code.
pub fn run(name: ServiceName, args: Vec<String>) -> ExitCode {
    let env = Env::from_process();
    match name {
        ServiceName::Edge => fleet_edge::main(env),
        ServiceName::Catalog => fleet_catalog::main(env),
        ServiceName::Ratings => fleet_ratings::main(env),
        ServiceName::Dal => {
            let argv = std::iter::once("dal".to_owned()).chain(args);
            fleet_dal::main_with_args(env, argv)
        }
    }
}
