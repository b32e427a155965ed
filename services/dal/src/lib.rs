//! The data access layer: the only service that touches storage.
//!
//! `dal` (or `dal serve`) runs the `dal.v1.DataAccess` gRPC service; the
//! twelve-factor admin one-off processes run the same code against the same
//! configuration and exit:
//!
//! * `dal migrate` — applies schema migrations (versioned, idempotent, safe
//!   to repeat and to run concurrently);
//! * `dal seed` — writes the seed data unless already seeded;
//! * `dal repair` — checks the denormalized tables against their source of
//!   truth, and the Redis cache against the store, fixes drift and prints
//!   counts found/fixed per table.
//!
//! Storage is the embedded store and an in-process cache by default,
//! Cassandra/Scylla when `SCYLLA_NODES` is set and Redis when `REDIS_URL`
//! is (see `config`).

#![forbid(unsafe_code)]

pub mod app;
pub mod cache;
pub mod config;
pub mod record;
pub mod service;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod validate;

use std::process::ExitCode;

use clap::Parser;

use fleet_config::Env;
use fleet_metrics::Metrics;
use fleet_server::entry::{self, BoxError};

use crate::store::{CqlStore, Startup};

pub use app::App;
pub use config::Config;

/// The service name: in logs, metrics, discovery and `x-fleet-served-by`.
pub const SERVICE: &str = "dal";

/// The dal's command line.
#[derive(Debug, Parser)]
#[command(
    name = "dal",
    about = "The data access layer (configured by environment; see CONTRIBUTING.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply schema migrations and exit.
    Migrate,
    /// Write the seed data (unless already seeded) and exit.
    Seed,
    /// Find and fix drift between the denormalized tables, print counts, exit.
    Repair,
}

/// Runs the dal server with `env`.
pub fn main(env: Env) -> ExitCode {
    main_with_args(env, ["dal"])
}

/// Runs the dal as the command line `argv` (program name first) asks.
/// Bad arguments exit 64 with a usage message.
pub fn main_with_args<I, S>(env: Env, argv: I) -> ExitCode
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(entry::EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => entry::serve::<App>(env),
        Command::Migrate => entry::run(SERVICE, env, Config::from_env, |c, _| migrate(c)),
        Command::Seed => entry::run(SERVICE, env, Config::from_env, |c, _| seed(c)),
        Command::Repair => entry::run(SERVICE, env, Config::from_env, |c, _| repair(c)),
    }
}

fn admin_metrics(config: &Config) -> Metrics {
    Metrics::new(SERVICE, &config.server.identity.version.to_string())
}

async fn migrate(config: Config) -> Result<(), BoxError> {
    let version = match &config.cql {
        None => app::open_embedded(&config).await?.migrate().await?,
        Some(cql) => {
            // Only a session: the statements cannot be prepared before the
            // tables exist.
            let store = CqlStore::start(cql.clone(), Startup::default(), &admin_metrics(&config));
            store.wait_connected(app::ADMIN_CONNECT_WAIT).await?;
            store.migrate().await?
        }
    };
    tracing::info!(schema_version = version, "migrated");
    println!("migrate: schema at version {version}");
    Ok(())
}

async fn seed(config: Config) -> Result<(), BoxError> {
    let store = app::open_store(&config, &admin_metrics(&config)).await?;
    let r = store.seed(config.seed_config).await?;
    tracing::info!(
        titles = r.titles,
        ratings = r.ratings,
        progress = r.progress,
        seeded = r.seeded,
        "seed done"
    );
    if r.seeded {
        println!(
            "seed: wrote {} titles, {} ratings, {} progress rows",
            r.titles, r.ratings, r.progress
        );
    } else {
        println!("seed: already seeded, nothing written");
    }
    Ok(())
}

async fn repair(config: Config) -> Result<(), BoxError> {
    let metrics = admin_metrics(&config);
    let store = app::open_store(&config, &metrics).await?;
    let cache = cache::from_config(&config.cache, config.redis.as_ref(), &metrics)?;
    println!("repair: store {}, cache {}", store.backend(), cache.kind());
    let mut report = store.repair().await?;
    // The cache last: entries are compared with the repaired store.
    report.checks.extend(cache.repair(store.as_ref()).await?);
    for (what, found, fixed) in &report.checks {
        tracing::info!(table = what, found, fixed, "repair check");
        println!("repair: {what:<22} found {found:>6}  fixed {fixed:>6}");
    }
    println!(
        "repair: total found {} fixed {} remaining {}",
        report.found(),
        report.fixed(),
        report.found() - report.fixed()
    );
    Ok(())
}
