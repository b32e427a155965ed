//! `fleet dashboard`: the live view of every instance — a Hystrix
//! dashboard with Turbine built in (see the `fleet-dashboard` crate).
//!
//! Instances come from Consul when `CONSUL_HTTP_ADDR` is set, else from the
//! registry `fleet up` writes (`<data-dir>/run/registry.json`); the fault
//! rules shown are read with `fleet up`'s admin token
//! (`<data-dir>/run/admin-token`, or `ADMIN_TOKEN`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use fleet_dashboard::{Config, Dashboard, Source};
use fleet_discovery::{ConsulClient, DEFAULT_KV_PREFIX, RouteStore};
use tokio_util::sync::CancellationToken;

/// Flags of `fleet dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Where to serve the page, `/dashboard.stream` and `/turbine.stream`
    /// (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7979")]
    pub addr: SocketAddr,
    /// The Consul agent to ask for instances and route tables.
    #[arg(long, env = "CONSUL_HTTP_ADDR")]
    pub consul: Option<String>,
    /// Without Consul: where `fleet up` keeps its data and run files.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Token to read instances' fault rules (default: `fleet up`'s).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<fleet_config::Secret>,
    /// Token the dashboard's data (`/api/view`, `/dashboard.stream`,
    /// `/turbine.stream`) requires, at least 16 characters: open the page
    /// as `/?access_token=<token>`. Required for a non-loopback `--addr`.
    #[arg(long, env = "DASHBOARD_VIEWER_TOKEN", hide_env_values = true, value_parser = parse_viewer_token)]
    pub viewer_token: Option<fleet_config::Secret>,
    /// `?delay=` asked of every instance's `/hystrix.stream`, 100ms–10s.
    #[arg(long, default_value = "500ms", value_parser = parse_delay)]
    pub stream_delay: Duration,
}

fn parse_viewer_token(s: &str) -> Result<fleet_config::Secret, String> {
    if s.len() >= 16 {
        Ok(fleet_config::Secret::new(s))
    } else {
        Err("at least 16 characters".into())
    }
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if (Duration::from_millis(100)..=Duration::from_secs(10)).contains(&d) {
        Ok(d)
    } else {
        Err(format!("{s} is outside 100ms..=10s"))
    }
}

/// The dashboard's configuration from the flags.
///
/// # Errors
/// When the Consul address is invalid.
pub fn config(args: &DashboardArgs) -> anyhow::Result<Config> {
    let run_dir = args.data_dir.join("run");
    let (source, routes) = match &args.consul {
        Some(addr) => {
            let client = ConsulClient::new(addr).context("invalid CONSUL_HTTP_ADDR")?;
            (
                Source::Consul(client.clone()),
                RouteStore::Consul {
                    client,
                    prefix: DEFAULT_KV_PREFIX.to_owned(),
                },
            )
        }
        None => (
            Source::Registry(run_dir.join("registry.json")),
            RouteStore::Dir(run_dir.join("routes")),
        ),
    };
    let admin_token = args.admin_token.clone().or_else(|| {
        std::fs::read_to_string(run_dir.join("admin-token"))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .map(fleet_config::Secret::from)
    });
    let mut config = Config::new(args.addr, source);
    config.routes = Some(routes);
    config.admin_token = admin_token;
    config.viewer_token = args.viewer_token.clone();
    config.stream_delay = args.stream_delay;
    Ok(config)
}

/// Runs `fleet dashboard` until Ctrl-C or SIGTERM.
///
/// # Errors
/// When the address cannot be bound or the server fails.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    let source = config.source.describe();
    let dashboard = Dashboard::bind(config).await?;
    println!(
        "dashboard: http://{}/   (instances from {source}; Hystrix: /turbine.stream)",
        dashboard.local_addr()
    );
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
        }
        signal.cancel();
    });
    dashboard.run(stop).await?;
    Ok(())
}

/// Starts the dashboard inside `fleet up` on `addr`, reading `data_dir`'s
/// registry; returns the address it serves, or `None` (printed) when it
/// cannot listen — the system runs without it. Stops when `stop` fires.
pub async fn start_beside_up(
    addr: SocketAddr,
    data_dir: &std::path::Path,
    stop: CancellationToken,
) -> Option<SocketAddr> {
    let args = DashboardArgs {
        addr,
        consul: None,
        data_dir: data_dir.to_path_buf(),
        admin_token: None,
        viewer_token: None,
        stream_delay: Duration::from_millis(500),
    };
    let started = match config(&args) {
        Ok(c) => Dashboard::bind(c).await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match started {
        Ok(d) => {
            let at = d.local_addr();
            tokio::spawn(async move {
                if let Err(error) = d.run(stop).await {
                    eprintln!("fleet: the dashboard stopped: {error:#}");
                }
            });
            Some(at)
        }
        Err(error) => {
            eprintln!("fleet: no dashboard ({error:#}); the system runs without it");
            None
        }
    }
}

/// `fleet up --dashboard`: where the dashboard listens, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DashboardAddr(
    /// The address; `None` for `off`.
    pub Option<SocketAddr>,
);

/// Parses `--dashboard`: an address, or `off`.
///
/// # Errors
/// When it is neither.
pub fn parse_addr_or_off(s: &str) -> Result<DashboardAddr, String> {
    if s == "off" {
        return Ok(DashboardAddr(None));
    }
    s.parse()
        .map(|a| DashboardAddr(Some(a)))
        .map_err(|e| format!("{s:?} is not an address (or `off`): {e}"))
}
