//! The `fleet` command-line tool.
//!
//! `fleet up` runs the whole topology as local processes on embedded
//! defaults, through `fleet-supervisor` (the library the end-to-end tests
//! also start the real binaries with); this crate keeps its flags and
//! what it prints. `fleet load` drives
//! open-loop load through the driver clients (see [`load`]); `fleet
//! gameday` runs Chaos Toolkit experiments against it (see [`gameday`]).

#![forbid(unsafe_code)]

pub mod dashboard;
pub mod gameday;
pub mod load;
pub mod observability;
pub mod route;
pub mod service;
pub mod status;
pub mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a command that failed.
const EXIT_FAILURE: u8 = 1;

/// The fleet tool: run, load-test and steer the system.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system locally: dal, catalog 1.2 and 1.3, ratings, edge.
    Up(up::UpArgs),
    /// Drive open-loop load at the edge or one service and report HDR
    /// latency percentiles.
    Load(Box<load::LoadArgs>),
    /// Show or change a service's routing table (weights, cohorts);
    /// `rollback` restores the previous one.
    Route(route::RouteArgs),
    /// Every instance by service, version, zone and health.
    Status(status::StatusArgs),
    /// Game days: run Chaos Toolkit experiments (kills, faults, cohorts)
    /// with automatic abort and rollback; or one action or probe.
    Gameday {
        /// What to do.
        #[command(subcommand)]
        command: gameday::GamedayCommand,
    },
    /// The live view: every instance's circuits, rates, errors and
    /// latency in the browser, and `/turbine.stream` (Hystrix format).
    Dashboard(dashboard::DashboardArgs),
    /// Run one service in this process (used by `fleet up`).
    #[command(hide = true)]
    Service {
        /// Which service.
        #[arg(value_enum)]
        name: service::ServiceName,
        /// Its own arguments (e.g. `dal migrate`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // A service builds its own runtime, so dispatch before making one.
        Command::Service { name, args } => service::run(name, args),
        Command::Up(args) => block_on(up::run(args)),
        // Load has its own exit statuses (bad input, breached thresholds).
        Command::Load(args) => load::main(*args),
        Command::Route(args) => block_on(route::run(args)),
        Command::Status(args) => block_on(status::run(args)),
        // Exit statuses of its own (deviated, bad input); the environment
        // is read here, once, for `env`-typed experiment configuration.
        Command::Gameday { command } => gameday::main(command, std::env::vars().collect()),
        Command::Dashboard(args) => block_on(dashboard::run(args)),
    }
}

fn block_on(f: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
