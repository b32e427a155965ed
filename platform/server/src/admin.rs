//! The admin HTTP port: probes, metrics, instance info, and the token
//! guard for admin changes.
//!
//! The admin port is separate from the service port so probes and scrapes
//! never compete with traffic, and so only it needs to be reachable from the
//! platform (kubelet, Prometheus, Consul) — never from the public.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

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

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.metrics.encode(),
    )
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
pub fn require_token(router: Router, token: Option<String>) -> Router {
    let token: Arc<Option<String>> = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                let Some(expected) = token.as_deref() else {
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
                    Some(g) if constant_time_eq(g.as_bytes(), expected.as_bytes()) => {
                        next.run(req).await
                    }
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

/// Compares without an early exit, so timing does not reveal a token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
