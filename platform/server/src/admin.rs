//! The admin HTTP port: probes, metrics, instance info, and the token
//! guard for admin changes.
//!
//! The admin port is separate from the service port so probes and scrapes
//! never compete with traffic, and so only it needs to be reachable from the
//! platform (kubelet, Prometheus, Consul) — never from the public.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use fleet_config::Secret;
use fleet_metrics::Metrics;

use crate::config::Identity;
use crate::readiness::Readiness;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    identity: Arc<Identity>,
    metrics: Metrics,
    readiness: Readiness,
    info: Arc<Info>,
    started: Instant,
}

/// `/admin/info`: who and where this instance is.
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    /// Service name.
    pub service: String,
    /// Running version.
    pub version: String,
    /// Instance id.
    pub instance_id: String,
    /// Zone.
    pub zone: String,
    /// The main listener (gRPC, or HTTP for the edge).
    pub addr: String,
    /// The admin listener.
    pub admin_addr: String,
    /// Process id.
    pub pid: u32,
    /// Start time, seconds since the Unix epoch.
    pub started_at_s: u64,
}

impl AdminState {
    /// The state of one instance's admin port.
    pub fn new(
        identity: Identity,
        metrics: Metrics,
        readiness: Readiness,
        addr: String,
        admin_addr: String,
    ) -> Self {
        let info = Info {
            service: identity.service.to_owned(),
            version: identity.version.to_string(),
            instance_id: identity.instance_id.clone(),
            zone: identity.zone.clone(),
            addr,
            admin_addr,
            pid: std::process::id(),
            started_at_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        Self {
            identity: Arc::new(identity),
            metrics,
            readiness,
            info: Arc::new(info),
            started: Instant::now(),
        }
    }
}

/// The standard admin routes: `/healthz`, `/readyz`, `/metrics`, `/admin/info`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/info", get(info))
        .with_state(state)
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "service": s.identity.service,
        "uptime_s": s.started.elapsed().as_secs(),
    }))
}

/// `/readyz`'s body: the state plus how many rounds of checks ran.
#[derive(serde::Serialize)]
struct ReadyBody {
    #[serde(flatten)]
    state: crate::readiness::ReadyState,
    rounds: u64,
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let state = s.readiness.state();
    let status = if state.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let rounds = s.readiness.rounds();
    (status, Json(ReadyBody { state, rounds }))
}

/// `/metrics`: OpenMetrics (with the latency histograms' trace exemplars)
/// to a scraper that accepts it, as Prometheus does; the text format 0.0.4
/// to anyone else.
async fn metrics(State(s): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(fleet_metrics::accepts_openmetrics);
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(fleet_metrics::OPENMETRICS_CONTENT_TYPE),
            )],
            s.metrics.encode_openmetrics(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(fleet_metrics::PROMETHEUS_TEXT_CONTENT_TYPE),
            )],
            s.metrics.encode(),
        )
    }
}

async fn info(State(s): State<AdminState>) -> impl IntoResponse {
    Json((*s.info).clone())
}

/// The JSON error shape, also on the admin port.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({
            "error": { "code": code, "message": message.into(), "request_id": "" }
        })),
    )
        .into_response()
}

/// Wraps `router` so every request needs `Authorization: Bearer <token>`.
/// With no token configured, every request is refused: admin changes are
/// off unless the operator turns them on.
pub fn require_token(router: Router, token: Option<Secret>) -> Router {
    let token: Arc<Option<Secret>> = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                let Some(expected) = token.as_ref().as_ref() else {
                    return error_response(
                        StatusCode::FORBIDDEN,
                        "admin_disabled",
                        "admin changes are disabled: set ADMIN_TOKEN on this instance",
                    );
                };
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                match given {
                    Some(g) if expected.matches(g.as_bytes()) => next.run(req).await,
                    _ => error_response(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)",
                    ),
                }
            }
        },
    ))
}

/// Wraps the live-stream routes: a request needs `Authorization: Bearer
/// <token>` — or, for readers that cannot set headers (the stock Hystrix
/// dashboard, Turbine), `?access_token=<token>` (RFC 6750 §2.3) — where the
/// token is the admin token or the read-only viewer token. Without either
/// configured the streams are closed (403).
pub fn require_viewer(router: Router, admin: Option<Secret>, viewer: Option<Secret>) -> Router {
    let tokens: Arc<Vec<Secret>> = Arc::new(admin.into_iter().chain(viewer).collect());
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let tokens = tokens.clone();
            async move {
                if tokens.is_empty() {
                    return error_response(
                        StatusCode::FORBIDDEN,
                        "streams_disabled",
                        "the streams are closed: set ADMIN_TOKEN or VIEWER_TOKEN on this instance",
                    );
                }
                let given = fleet_config::presented_credential(
                    req.headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok()),
                    req.uri().query(),
                );
                // Every token is compared, so timing tells nothing of which.
                let ok = given.is_some_and(|g| {
                    tokens
                        .iter()
                        .fold(false, |ok, t| t.matches(g.as_bytes()) | ok)
                });
                if ok {
                    next.run(req).await
                } else {
                    error_response(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "missing or wrong token (Authorization: Bearer <ADMIN_TOKEN or VIEWER_TOKEN>, or ?access_token=)",
                    )
                }
            }
        },
    ))
}
