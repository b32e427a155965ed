//! Sends one [`Request`] through the right driver client and classifies
//! the answer.
//!
//! The load goes through the same clients every other caller uses (the
//! edge's HTTP client, the gRPC driver clients), so a run is also their
//! stress test. For gRPC targets the client's own protection is turned
//! off — no retries, no circuit breaker, a bulkhead as wide as
//! `--concurrency` — so the figures are the service's, not the client's.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_edge_client::{EdgeClient, EdgeError, RequestOptions};
use fleet_rpc::{CallOptions, Dependency, DependencyConfig, InstanceSource, RpcError};

use crate::load::args::Target;
use crate::load::mix::{Op, Request, Service};

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it succeeded.
    pub ok: bool,
    /// Its status: the HTTP status (`200`, `503`), the gRPC code (`OK`,
    /// `UNAVAILABLE`), or `timeout` / `transport` / `protocol` when there
    /// was no proper answer. Borrowed for every common status: one
    /// allocation per request was a visible share of the generator's CPU.
    pub status: Cow<'static, str>,
}

impl Outcome {
    fn ok(status: impl Into<Cow<'static, str>>) -> Self {
        Self {
            ok: true,
            status: status.into(),
        }
    }

    fn failed(status: impl Into<Cow<'static, str>>) -> Self {
        Self {
            ok: false,
            status: status.into(),
        }
    }
}

/// Why the clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The edge client refused the target.
    #[error("edge client: {0}")]
    Edge(#[from] EdgeError),
}

/// The client for the run's target (cheap to clone).
#[derive(Clone, Debug)]
pub enum Driver {
    /// The edge's JSON API.
    Edge {
        /// The client.
        client: EdgeClient,
        /// Headers and timeout for every call.
        opts: RequestOptions,
    },
    /// catalog over gRPC.
    Catalog(fleet_catalog_client::CatalogClient, CallOptions),
    /// ratings over gRPC.
    Ratings(fleet_ratings_client::RatingsClient, CallOptions),
    /// dal over gRPC.
    Dal(fleet_dal_client::DalClient, CallOptions),
}

impl Driver {
    /// A client for `target` (inside a tokio runtime: gRPC connections are
    /// made lazily on it).
    ///
    /// # Errors
    /// [`DriverError`] when the client refuses the target.
    pub fn new(
        target: &Target,
        timeout: Duration,
        concurrency: usize,
        headers: &[(String, String)],
    ) -> Result<Self, DriverError> {
        match target {
            Target::Edge(url) => {
                let client = EdgeClient::new(url)?.with_timeout(timeout);
                let mut opts = RequestOptions {
                    timeout: Some(timeout),
                    ..RequestOptions::default()
                };
                for (k, v) in headers {
                    opts = opts.header(k.clone(), v.clone());
                }
                Ok(Self::Edge { client, opts })
            }
            Target::Grpc { addr, service } => {
                let dep = dependency(*service, *addr, timeout, concurrency);
                let call = CallOptions::timeout(timeout);
                Ok(match service {
                    Service::Catalog => {
                        Self::Catalog(fleet_catalog_client::CatalogClient::new(dep), call)
                    }
                    Service::Ratings => {
                        Self::Ratings(fleet_ratings_client::RatingsClient::new(dep), call)
                    }
                    // Edge never reaches here: parse_target refuses it.
                    Service::Dal | Service::Edge => {
                        Self::Dal(fleet_dal_client::DalClient::new(dep), call)
                    }
                })
            }
        }
    }

    /// Sends `req` and classifies the answer; never fails itself.
    pub async fn execute(&self, req: &Request) -> Outcome {
        match self {
            Self::Edge { client, opts } => edge(client, opts, req).await,
            Self::Catalog(c, o) => grpc(match req.op {
                Op::Browse => c.list_titles(Some(req.genre), 20, None, *o).await.map(drop),
                Op::Genres => c.list_genres(*o).await.map(drop),
                _ => c.get_title(&req.title, *o).await.map(drop),
            }),
            Self::Ratings(c, o) => grpc(match req.op {
                Op::Progress => c
                    .record_progress(
                        fleet_ratings_client::Progress {
                            user_id: req.user.clone(),
                            title_id: req.title.clone(),
                            position_s: req.position_s,
                            updated_at_ms: now_ms(),
                        },
                        *o,
                    )
                    .await
                    .map(drop),
                Op::Ratings => c.list_user_ratings(&req.user, 20, None, *o).await.map(drop),
                Op::Continue => c.continue_watching(&req.user, 10, *o).await.map(drop),
                Op::Top => c.top_rated(10, Some(req.genre), *o).await.map(drop),
                _ => c
                    .rate_title(
                        fleet_ratings_client::Rating {
                            user_id: req.user.clone(),
                            title_id: req.title.clone(),
                            stars: req.stars,
                            rated_at_ms: now_ms(),
                        },
                        *o,
                    )
                    .await
                    .map(drop),
            }),
            Self::Dal(c, o) => grpc(match req.op {
                Op::Browse => c.list_titles(Some(req.genre), 20, None, *o).await.map(drop),
                Op::Ratings => c
                    .list_ratings_by_user(&req.user, 20, None, *o)
                    .await
                    .map(drop),
                _ => c.get_title(&req.title, *o).await.map(drop),
            }),
        }
    }
}

/// A dependency on one static address with the client-side protection off.
fn dependency(
    service: Service,
    addr: std::net::SocketAddr,
    timeout: Duration,
    concurrency: usize,
) -> Dependency {
    let mut config = DependencyConfig::new(service.name(), "load", 1);
    config.connect_timeout = Duration::from_secs(1).min(timeout);
    config.request_timeout = timeout;
    config.hop_margin = Duration::ZERO;
    config.bulkhead = concurrency;
    config.breaker.enabled = false;
    config.retry.max_retries = 0;
    let instance = fleet_rpc::Instance {
        id: fleet_rpc::InstanceId::new(addr.to_string()),
        addr,
        // The client speaks major 1; what runs there is the server's affair.
        version: semver::Version::new(1, 0, 0),
        zone: "local".to_owned(),
    };
    let metrics = fleet_metrics::Metrics::new("load", env!("CARGO_PKG_VERSION")).grpc_client();
    Dependency::new(config, InstanceSource::Static(vec![instance]), metrics)
}

async fn edge(client: &EdgeClient, opts: &RequestOptions, req: &Request) -> Outcome {
    let result = match req.op {
        Op::Browse => client
            .list_titles(Some(req.genre), Some(20), None, opts)
            .await
            .map(|r| r.status),
        Op::Home => client.home(&req.user, opts).await.map(|r| r.status),
        Op::Rate => client
            .rate_title(&req.user, &req.title, req.stars, opts)
            .await
            .map(|r| r.status),
        Op::Progress => client
            .record_progress(&req.user, &req.title, req.position_s, opts)
            .await
            .map(|r| r.status),
        Op::Ratings => client
            .list_ratings(&req.user, Some(20), None, opts)
            .await
            .map(|r| r.status),
        _ => client.get_title(&req.title, opts).await.map(|r| r.status),
    };
    match result {
        Ok(status) => Outcome::ok(http_status(status)),
        Err(EdgeError::Api { status, .. }) => Outcome::failed(http_status(status)),
        Err(EdgeError::Protocol { status, .. }) => Outcome::failed(format!("{status} protocol")),
        Err(EdgeError::Timeout(_)) => Outcome::failed("timeout"),
        Err(EdgeError::Transport(_)) => Outcome::failed("transport"),
        Err(EdgeError::InvalidRequest(_)) => Outcome::failed("invalid_request"),
    }
}

/// An HTTP status as text, without allocating for the ones the API uses.
fn http_status(status: u16) -> Cow<'static, str> {
    Cow::Borrowed(match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return Cow::Owned(other.to_string()),
    })
}

fn grpc(result: Result<(), RpcError>) -> Outcome {
    match result {
        Ok(()) => Outcome::ok("OK"),
        Err(RpcError::Unavailable { reason, .. }) => {
            Outcome::failed(format!("UNAVAILABLE ({reason:?})"))
        }
        Err(e) => Outcome::failed(e.code_name()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_read_as_their_code_and_common_ones_do_not_allocate() {
        assert!(matches!(http_status(503), Cow::Borrowed("503")));
        assert!(matches!(http_status(200), Cow::Borrowed("200")));
        assert_eq!(http_status(418), "418");
        assert!(matches!(http_status(418), Cow::Owned(_)));
    }
}
