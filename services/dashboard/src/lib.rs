//! The fleet's live view: a Hystrix dashboard with Turbine built in.
//!
//! [`Dashboard`] finds every instance (the registry `fleet up` writes, or
//! Consul), keeps each one's `/hystrix.stream` open ([`collector`]),
//! aggregates them Turbine's way ([`aggregate`]) and serves:
//!
//! * `/` — the page: a tile per dependency operation (circuit, rate,
//!   error %, p50/p99, 60-second sparkline), bulkheads, the catalog's
//!   traffic by version beside its route table, instances with health and
//!   restarts, fault rules in force; static assets embedded in the binary;
//! * `/dashboard.stream` — the page's feed: one [`view::View`] a second as
//!   server-sent events (`/api/view`: the newest one as JSON);
//! * `/turbine.stream` — the aggregated Hystrix stream (`?cluster=<service>`
//!   to keep one calling service), readable by the stock Hystrix dashboard.
//!
//! `fleet dashboard` runs it; `docs/DASHBOARD.md` documents the mapping of
//! our resilience concepts onto Hystrix's.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod collector;
pub mod discover;
pub mod sse;
pub mod view;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_discovery::RouteStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::collector::{CollectorConfig, Hub};
pub use crate::discover::{Instance, Source};
use crate::view::{History, View};

/// How the dashboard runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the page and streams are served.
    pub addr: SocketAddr,
    /// Where instances are listed.
    pub source: Source,
    /// Where the catalog's route table is read (`None`: not shown).
    pub routes: Option<RouteStore>,
    /// Token for reading instances' fault rules (`None`: not shown).
    pub admin_token: Option<fleet_config::Secret>,
    /// What the data routes (`/api/view`, `/dashboard.stream`,
    /// `/turbine.stream`) require, as `Authorization: Bearer` or
    /// `?access_token=` (the page passes on the one it was opened with):
    /// they show every instance's state and fault rules, which the
    /// instances themselves give only for a token. `None`: open, allowed
    /// only on a loopback address.
    pub viewer_token: Option<fleet_config::Secret>,
    /// `?delay=` asked of every instance's stream; default 500 ms.
    pub stream_delay: Duration,
    /// How often the instance list is re-read; default 2 s.
    pub discovery_interval: Duration,
}

impl Config {
    /// Defaults for `addr` and `source`.
    pub fn new(addr: SocketAddr, source: Source) -> Self {
        Self {
            addr,
            source,
            routes: None,
            admin_token: None,
            viewer_token: None,
            stream_delay: Duration::from_millis(500),
            discovery_interval: Duration::from_secs(2),
        }
    }
}

/// The dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// Its listener could not be bound.
    #[error("failed to bind the dashboard on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("the dashboard's HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// Asked to serve beyond loopback with no viewer token.
    #[error(
        "the dashboard on {addr} would show every instance's state and fault rules to anyone \
         who can reach it: give it a viewer token, or bind a loopback address"
    )]
    Unprotected {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The HTTP client could not be built.
    #[error("failed to build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A bound dashboard, ready to run.
#[derive(Debug)]
pub struct Dashboard {
    config: Config,
    listener: TcpListener,
    addr: SocketAddr,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Dashboard {
    /// Binds the listener (port 0 picks a free one).
    ///
    /// # Errors
    /// [`DashboardError::Bind`]; [`DashboardError::Unprotected`] for a
    /// non-loopback address without a viewer token.
    pub async fn bind(config: Config) -> Result<Self, DashboardError> {
        if config.viewer_token.is_none() && !config.addr.ip().is_loopback() {
            return Err(DashboardError::Unprotected { addr: config.addr });
        }
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| DashboardError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind {
                addr: config.addr,
                source,
            })?;
        Ok(Self {
            config,
            listener,
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` is cancelled.
    ///
    /// # Errors
    /// [`DashboardError`] when the server fails.
    pub async fn run(self, stop: CancellationToken) -> Result<(), DashboardError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()
            .map_err(DashboardError::Client)?;
        let hub = Hub::default();
        let source_name = self.config.source.describe();
        let (tx, rx) = watch::channel(Arc::new(History::default().view(
            &[],
            now_ms(),
            source_name.clone(),
            None,
            None,
        )));
        tokio::spawn(refresh(
            self.config.clone(),
            hub.clone(),
            http,
            tx,
            stop.clone(),
        ));
        let app = web::router(web::WebState {
            hub,
            view: rx,
            stop: stop.clone(),
            viewer_token: self.config.viewer_token.clone(),
        });
        tracing::info!(addr = %self.addr, source = %source_name, "listening");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(DashboardError::Serve)
    }
}

/// Once a second: re-read the instance list when due, then publish a view.
async fn refresh(
    config: Config,
    hub: Hub,
    http: reqwest::Client,
    tx: watch::Sender<Arc<View>>,
    stop: CancellationToken,
) {
    let collector = CollectorConfig {
        stream_delay: config.stream_delay,
        admin_token: config.admin_token.clone(),
    };
    let mut history = History::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_discovery: Option<tokio::time::Instant> = None;
    let mut discovery_error = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let due = last_discovery.is_none_or(|t| t.elapsed() >= config.discovery_interval);
        if due {
            last_discovery = Some(tokio::time::Instant::now());
            match config.source.instances().await {
                Ok(instances) => {
                    discovery_error = None;
                    hub.set_instances(instances, &http, &collector, &stop);
                }
                Err(error) => {
                    // Keep watching the last known instances.
                    tracing::warn!(error = %error, "cannot list instances");
                    discovery_error = Some(format!("{error}"));
                }
            }
        }
        let routes = match &config.routes {
            Some(store) => match store.show("catalog").await {
                Ok(table) => table.and_then(|t| serde_json::to_value(t).ok()),
                Err(error) => {
                    tracing::debug!(%error, "cannot read the catalog route table");
                    None
                }
            },
            None => None,
        };
        let view = history.view(
            &hub.states(),
            now_ms(),
            config.source.describe(),
            discovery_error.clone(),
            routes,
        );
        if tx.send(Arc::new(view)).is_err() {
            return;
        }
    }
}
