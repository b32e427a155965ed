//! Fault injection: delay, abort with a chosen status, or hang — scoped by
//! operation, version, caller, percentage and an opt-in request header —
//! set and cleared at runtime through the admin port.
//!
//! Rules live in a [`FaultTable`] shared by the request path and the admin
//! API. A rule is validated whole before it is stored; a bad spec is refused
//! with a message naming the field, and the table is left as it was.
//!
//! The admin API (mounted by the service host behind `ADMIN_TOKEN`):
//!
//! * `GET /admin/faults` — the rules in force;
//! * `POST /admin/faults` — add a rule (JSON, below); answers its id;
//! * `DELETE /admin/faults/{id}` — remove one; `DELETE /admin/faults` — all.
//!
//! ```json
//! {"operation":"GetTitle","percent":50,"action":{"type":"delay","ms":300}}
//! {"action":{"type":"abort","code":"UNAVAILABLE"},"caller":"edge"}
//! {"action":{"type":"hang"},"header":"gameday-7","ttl_s":120}
//! ```
//!
//! `operation` is a gRPC method name (`GetTitle`) or, at the edge, a route
//! (`GET /api/v1/titles/{id}`); `code` a gRPC code name or an HTTP status
//! (`503`); `version` a version prefix of whole components (`1.3` is 1.3.x, never 1.30); `header` limits the rule to
//! requests carrying `x-fleet-fault: <value>`, which only game-day clients
//! may send past the edge.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Header that scopes a rule to opted-in requests.
pub const FAULT_HEADER: &str = "x-fleet-fault";
/// Most rules in force at once.
pub const MAX_RULES: usize = 32;
/// Longest injected delay.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// What a rule does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Wait, then serve normally.
    Delay {
        /// Milliseconds (1..=60000).
        ms: u64,
    },
    /// Answer at once with an error.
    Abort {
        /// A gRPC code name (`UNAVAILABLE`) or an HTTP status (`503`).
        code: String,
    },
    /// Never answer (until the caller gives up or its deadline passes).
    Hang,
}

/// A rule as the admin API accepts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Only this operation; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Share of matching requests affected, 0 < p ≤ 100; default 100.
    #[serde(default = "hundred")]
    pub percent: f64,
    /// Only when this instance's version is within this one, compared by
    /// whole components (`1.1` is 1.1.x, never 1.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Only requests from this caller (`x-fleet-caller`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// Only requests carrying `x-fleet-fault: <header>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Removes itself after this many seconds (≤ 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// What to do.
    pub action: FaultAction,
}

fn hundred() -> f64 {
    100.0
}

/// A rejected fault spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault: {0}")]
pub struct InvalidFault(pub String);

/// The status an abort answers with, in both protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortStatus {
    /// gRPC code number.
    pub grpc: u16,
    /// HTTP status.
    pub http: u16,
}

const GRPC_CODES: [(&str, u16, u16); 16] = [
    ("CANCELLED", 1, 499),
    ("UNKNOWN", 2, 500),
    ("INVALID_ARGUMENT", 3, 400),
    ("DEADLINE_EXCEEDED", 4, 504),
    ("NOT_FOUND", 5, 404),
    ("ALREADY_EXISTS", 6, 409),
    ("PERMISSION_DENIED", 7, 403),
    ("RESOURCE_EXHAUSTED", 8, 429),
    ("FAILED_PRECONDITION", 9, 400),
    ("ABORTED", 10, 409),
    ("OUT_OF_RANGE", 11, 400),
    ("UNIMPLEMENTED", 12, 501),
    ("INTERNAL", 13, 500),
    ("UNAVAILABLE", 14, 503),
    ("DATA_LOSS", 15, 500),
    ("UNAUTHENTICATED", 16, 401),
];

/// Parses an abort code: a gRPC code name or an HTTP status 400..=599.
///
/// # Errors
/// [`InvalidFault`] for anything else.
pub fn abort_status(code: &str) -> Result<AbortStatus, InvalidFault> {
    if let Some((_, grpc, http)) = GRPC_CODES
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(code))
    {
        return Ok(AbortStatus {
            grpc: *grpc,
            http: *http,
        });
    }
    match code.parse::<u16>() {
        Ok(http @ 400..=599) => {
            let grpc = match http {
                400 => 3,
                401 => 16,
                403 => 7,
                404 => 5,
                409 => 10,
                429 => 8,
                501 => 12,
                503 => 14,
                504 => 4,
                _ => 13,
            };
            Ok(AbortStatus { grpc, http })
        }
        _ => Err(InvalidFault(format!(
            "action.code {code:?} is neither a gRPC code name (e.g. UNAVAILABLE) nor an HTTP status 400..599"
        ))),
    }
}

fn short(field: &str, v: &Option<String>) -> Result<(), InvalidFault> {
    match v {
        Some(s) if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) => Err(
            InvalidFault(format!("{field} must be 1..128 printable characters")),
        ),
        _ => Ok(()),
    }
}

impl FaultSpec {
    /// Checks every field.
    ///
    /// # Errors
    /// [`InvalidFault`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidFault> {
        if !(self.percent > 0.0 && self.percent <= 100.0) {
            return Err(InvalidFault("percent must be > 0 and ≤ 100".into()));
        }
        short("operation", &self.operation)?;
        short("version", &self.version)?;
        short("caller", &self.caller)?;
        short("header", &self.header)?;
        if self.ttl_s.is_some_and(|t| t == 0 || t > 86_400) {
            return Err(InvalidFault("ttl_s must be within 1..=86400".into()));
        }
        match &self.action {
            FaultAction::Delay { ms } if *ms == 0 || *ms > MAX_DELAY.as_millis() as u64 => {
                Err(InvalidFault(format!(
                    "action.ms must be within 1..={}",
                    MAX_DELAY.as_millis()
                )))
            }
            FaultAction::Abort { code } => abort_status(code).map(|_| ()),
            _ => Ok(()),
        }
    }
}

/// A stored rule.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRule {
    /// Its id.
    pub id: u64,
    /// The spec.
    #[serde(flatten)]
    pub spec: FaultSpec,
    #[serde(skip)]
    expires: Option<Instant>,
}

/// What the request path needs to know about a request.
#[derive(Clone, Debug, Default)]
pub struct FaultRequest<'a> {
    /// Operation (method or route).
    pub operation: &'a str,
    /// `x-fleet-caller`.
    pub caller: Option<&'a str>,
    /// `x-fleet-fault`.
    pub header: Option<&'a str>,
}

/// The rules of one instance (cheap to clone; clones share).
#[derive(Clone, Debug)]
pub struct FaultTable {
    rules: Arc<RwLock<BTreeMap<u64, FaultRule>>>,
    next_id: Arc<AtomicU64>,
    version: Arc<str>,
}

impl FaultTable {
    /// An empty table for an instance running `version`.
    pub fn new(version: &str) -> Self {
        Self {
            rules: Arc::new(RwLock::new(BTreeMap::new())),
            next_id: Arc::new(AtomicU64::new(1)),
            version: version.into(),
        }
    }

    /// Validates and adds a rule; returns its id.
    ///
    /// # Errors
    /// [`InvalidFault`]; the table is unchanged.
    pub fn add(&self, spec: FaultSpec) -> Result<u64, InvalidFault> {
        spec.validate()?;
        let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        rules.retain(|_, r| r.expires.is_none_or(|e| e > now));
        if rules.len() >= MAX_RULES {
            return Err(InvalidFault(format!("at most {MAX_RULES} rules at once")));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let expires = spec.ttl_s.map(|t| now + Duration::from_secs(t));
        tracing::warn!(id, spec = ?spec, "fault rule added");
        rules.insert(id, FaultRule { id, spec, expires });
        Ok(id)
    }

    /// Removes one rule; false when there was none.
    pub fn remove(&self, id: u64) -> bool {
        let removed = self
            .rules
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .is_some();
        if removed {
            tracing::warn!(id, "fault rule removed");
        }
        removed
    }

    /// Removes every rule; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        let n = rules.len();
        rules.clear();
        n
    }

    /// The rules in force.
    pub fn list(&self) -> Vec<FaultRule> {
        let now = Instant::now();
        self.rules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|r| r.expires.is_none_or(|e| e > now))
            .cloned()
            .collect()
    }

    /// The action for a request, if a rule matches (and wins its dice roll).
    pub fn decide(&self, req: &FaultRequest<'_>) -> Option<FaultAction> {
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        if rules.is_empty() {
            return None;
        }
        let now = Instant::now();
        rules
            .values()
            .filter(|r| r.expires.is_none_or(|e| e > now))
            .find(|r| {
                let s = &r.spec;
                s.operation.as_deref().is_none_or(|o| o == req.operation)
                    && s.version
                        .as_deref()
                        .is_none_or(|v| version_matches(v, &self.version))
                    && s.caller.as_deref().is_none_or(|c| Some(c) == req.caller)
                    && s.header.as_deref().is_none_or(|h| Some(h) == req.header)
                    && (s.percent >= 100.0 || rand::random_range(0.0..100.0) < s.percent)
            })
            .map(|r| r.spec.action.clone())
    }
}

/// Whether `version` (`1.10.2`) is within the rule's `prefix`, compared
/// component by component: `1.1` matches `1.1.0` and `1.1.7`, never
/// `1.10.0`; `1` matches every 1.x; `1.3.2` only itself.
fn version_matches(prefix: &str, version: &str) -> bool {
    let mut have = version.split(['.', '-', '+']);
    prefix.split('.').all(|want| have.next() == Some(want))
}

// ---------------------------------------------------------------------------
// The gRPC server layer.

/// Tower layer that applies a [`FaultTable`] to gRPC requests. Put it inside
/// the request-context layer, so a hang still ends at the caller's deadline.
#[derive(Clone, Debug)]
pub struct GrpcFaultLayer {
    table: FaultTable,
}

impl GrpcFaultLayer {
    /// A layer over `table`.
    pub fn new(table: FaultTable) -> Self {
        Self { table }
    }
}

impl<S> tower::Layer<S> for GrpcFaultLayer {
    type Service = GrpcFault<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcFault {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service of [`GrpcFaultLayer`].
#[derive(Clone, Debug)]
pub struct GrpcFault<S> {
    inner: S,
    table: FaultTable,
}

type BoxFut<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

fn header<'a, B>(req: &'a http::Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A gRPC trailers-only error response.
pub fn grpc_error<B: Default>(code: u16, message: &str) -> http::Response<B> {
    let mut resp = http::Response::new(B::default());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(message) {
        h.insert("grpc-message", v);
    }
    resp
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for GrpcFault<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = http::Response<ResB>;
    type Error = S::Error;
    type Future = BoxFut<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let operation = req.uri().path().rsplit('/').next().unwrap_or("");
        let action = self.table.decide(&FaultRequest {
            operation,
            caller: header(&req, "x-fleet-caller"),
            header: header(&req, FAULT_HEADER),
        });
        // Take the service that was driven to readiness; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        match action {
            None => Box::pin(inner.call(req)),
            Some(FaultAction::Delay { ms }) => Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                inner.call(req).await
            }),
            Some(FaultAction::Abort { code }) => {
                let grpc = abort_status(&code).map_or(14, |s| s.grpc);
                Box::pin(async move { Ok(grpc_error(grpc, "fault injected")) })
            }
            Some(FaultAction::Hang) => Box::pin(async move {
                futures::future::pending::<()>().await;
                inner.call(req).await
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// The admin API.

#[derive(Serialize)]
struct Created {
    id: u64,
}

fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

async fn list(State(t): State<FaultTable>) -> Json<Vec<FaultRule>> {
    Json(t.list())
}

async fn add(State(t): State<FaultTable>, body: axum::body::Bytes) -> Response {
    if body.len() > 4096 {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "a fault spec is at most 4 KiB",
        );
    }
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "invalid_fault", e.to_string()),
    };
    match t.add(spec) {
        Ok(id) => (StatusCode::CREATED, Json(Created { id })).into_response(),
        Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_fault", e.0),
    }
}

async fn remove_one(State(t): State<FaultTable>, Path(id): Path<String>) -> Response {
    match id.parse::<u64>() {
        Ok(id) if t.remove(id) => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => json_error(StatusCode::NOT_FOUND, "not_found", "no such fault rule"),
        Err(_) => json_error(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "fault ids are numbers",
        ),
    }
}

async fn clear(State(t): State<FaultTable>) -> Response {
    let n = t.clear();
    tracing::warn!(removed = n, "fault rules cleared");
    StatusCode::NO_CONTENT.into_response()
}

/// `/admin/faults` routes over `table` (wrap them with the admin token).
pub fn admin_router(table: FaultTable) -> Router {
    Router::new()
        .route("/admin/faults", get(list).post(add).delete(clear))
        .route("/admin/faults/{id}", delete(remove_one))
        .with_state(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<FaultSpec, String> {
        let s: FaultSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.0)?;
        Ok(s)
    }

    #[test]
    fn specs_are_validated_whole() {
        assert!(spec(r#"{"action":{"type":"delay","ms":300},"operation":"GetTitle"}"#).is_ok());
        assert!(spec(r#"{"action":{"type":"abort","code":"503"}}"#).is_ok());
        assert!(spec(r#"{"action":{"type":"hang"},"header":"gd-1","ttl_s":60}"#).is_ok());
        for bad in [
            r#"{"action":{"type":"delay","ms":0}}"#,
            r#"{"action":{"type":"delay","ms":600000}}"#,
            r#"{"action":{"type":"abort","code":"TEAPOT"}}"#,
            r#"{"action":{"type":"abort","code":"200"}}"#,
            r#"{"action":{"type":"explode"}}"#,
            r#"{"action":{"type":"hang"},"percent":0}"#,
            r#"{"action":{"type":"hang"},"percent":101}"#,
            r#"{"action":{"type":"hang"},"ttl_s":0}"#,
            r#"{"action":{"type":"hang"},"operation":""}"#,
            r#"{"action":{"type":"hang"},"surprise":1}"#,
            r#"{"percent":50}"#,
            "not json",
        ] {
            assert!(spec(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn matching_and_expiry() {
        let t = FaultTable::new("1.3.0");
        let id = t
            .add(spec(r#"{"operation":"GetTitle","version":"1.3","caller":"edge","action":{"type":"abort","code":"UNAVAILABLE"}}"#).unwrap())
            .unwrap();
        let hit = FaultRequest {
            operation: "GetTitle",
            caller: Some("edge"),
            header: None,
        };
        assert!(t.decide(&hit).is_some());
        assert!(
            t.decide(&FaultRequest {
                operation: "ListTitles",
                ..hit.clone()
            })
            .is_none()
        );
        assert!(
            t.decide(&FaultRequest {
                caller: Some("ratings"),
                ..hit.clone()
            })
            .is_none()
        );
        assert!(t.remove(id));
        assert!(t.decide(&hit).is_none());
        t.add(spec(r#"{"header":"gd","ttl_s":10,"action":{"type":"hang"}}"#).unwrap())
            .unwrap();
        assert!(t.decide(&hit).is_none(), "needs the opt-in header");
        let opted = FaultRequest {
            header: Some("gd"),
            ..hit.clone()
        };
        assert_eq!(t.decide(&opted), Some(FaultAction::Hang));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(t.decide(&opted).is_none(), "expired");
        let other = FaultTable::new("1.2.4");
        other
            .add(spec(r#"{"version":"1.3","action":{"type":"hang"}}"#).unwrap())
            .unwrap();
        assert!(other.decide(&hit).is_none(), "version scoped");
    }

    #[test]
    fn a_version_rule_matches_whole_components_only() {
        for (rule, version, hit) in [
            ("1.1", "1.1.0", true),
            ("1.1", "1.1.7", true),
            ("1.1", "1.10.0", false),
            ("1.1", "1.12.3", false),
            ("1", "1.10.0", true),
            ("1", "10.0.0", false),
            ("1.3.2", "1.3.2", true),
            ("1.3.2", "1.3.20", false),
            ("1.3", "1.3.0-rc.1", true),
        ] {
            let t = FaultTable::new(version);
            t.add(
                spec(&format!(
                    r#"{{"version":"{rule}","action":{{"type":"hang"}}}}"#
                ))
                .unwrap(),
            )
            .unwrap();
            let fired = t.decide(&FaultRequest::default()).is_some();
            assert_eq!(fired, hit, "rule {rule} on {version}");
        }
    }

    #[tokio::test]
    async fn percentage_is_roughly_honoured() {
        let t = FaultTable::new("1.0.0");
        t.add(spec(r#"{"percent":25,"action":{"type":"delay","ms":1}}"#).unwrap())
            .unwrap();
        let req = FaultRequest::default();
        let hits = (0..4000).filter(|_| t.decide(&req).is_some()).count();
        assert!((800..1200).contains(&hits), "{hits}");
    }

    #[tokio::test]
    async fn grpc_layer_aborts_with_a_grpc_status() {
        use tower::{Layer, ServiceExt};
        let t = FaultTable::new("1.0.0");
        t.add(
            spec(r#"{"operation":"GetTitle","action":{"type":"abort","code":"UNAVAILABLE"}}"#)
                .unwrap(),
        )
        .unwrap();
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("served")))
        });
        let svc = GrpcFaultLayer::new(t).layer(inner);
        let req = http::Request::builder()
            .uri("/catalog.v1.Catalog/GetTitle")
            .body(())
            .unwrap();
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.headers()["grpc-status"], "14");
        let req = http::Request::builder()
            .uri("/catalog.v1.Catalog/ListTitles")
            .body(())
            .unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.body(), "served");
    }

    #[test]
    fn an_http_status_aborts_with_the_matching_grpc_code() {
        for (http, grpc) in [
            (400, 3),
            (401, 16),
            (403, 7),
            (404, 5),
            (409, 10),
            (429, 8),
            (500, 13),
            (501, 12),
            (503, 14),
            (504, 4),
            (418, 13),
            (599, 13),
        ] {
            assert_eq!(
                abort_status(&http.to_string()),
                Ok(AbortStatus { grpc, http }),
                "{http}"
            );
        }
        assert_eq!(
            abort_status("unavailable"),
            Ok(AbortStatus {
                grpc: 14,
                http: 503
            })
        );
    }

    #[test]
    fn limits_are_inclusive() {
        let long = "x".repeat(128);
        for ok in [
            format!(r#"{{"operation":"{long}","action":{{"type":"hang"}}}}"#),
            r#"{"ttl_s":86400,"action":{"type":"hang"}}"#.to_owned(),
            r#"{"action":{"type":"delay","ms":60000}}"#.to_owned(),
        ] {
            assert!(spec(&ok).is_ok(), "{ok}");
        }
        for bad in [
            format!(r#"{{"operation":"{long}y","action":{{"type":"hang"}}}}"#),
            r#"{"caller":"a\u0007b","action":{"type":"hang"}}"#.to_owned(),
            r#"{"ttl_s":86401,"action":{"type":"hang"}}"#.to_owned(),
            r#"{"action":{"type":"delay","ms":60001}}"#.to_owned(),
        ] {
            assert!(spec(&bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_rules_leave_at_their_ttl_and_free_their_places() {
        let t = FaultTable::new("1.0.0");
        let forever = t
            .add(spec(r#"{"operation":"Keep","action":{"type":"hang"}}"#).unwrap())
            .unwrap();
        for _ in 1..MAX_RULES {
            t.add(spec(r#"{"ttl_s":1,"action":{"type":"hang"}}"#).unwrap())
                .unwrap();
        }
        assert_eq!(t.list().len(), MAX_RULES);
        let one_more = || t.add(spec(r#"{"ttl_s":5,"action":{"type":"hang"}}"#).unwrap());
        assert!(one_more().is_err(), "full");
        let req = FaultRequest {
            operation: "Other",
            ..FaultRequest::default()
        };
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(t.list().len(), MAX_RULES);
        assert!(one_more().is_err(), "none expired yet");
        assert_eq!(t.decide(&req), Some(FaultAction::Hang));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.decide(&req), None, "gone at exactly their ttl");
        let left: Vec<u64> = t.list().iter().map(|r| r.id).collect();
        assert_eq!(left, [forever]);
        one_more().unwrap();
        assert_eq!(t.clear(), 2);
        assert!(t.list().is_empty());
    }

    /// A gRPC service that is never ready.
    #[derive(Clone)]
    struct UnreadyGrpc;

    impl tower::Service<http::Request<()>> for UnreadyGrpc {
        type Response = http::Response<String>;
        type Error = String;
        type Future = std::future::Ready<Result<Self::Response, String>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Err("busy".into()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(String::new())))
        }
    }

    #[tokio::test]
    async fn the_grpc_layer_reads_caller_and_opt_in_headers_and_passes_readiness_on() {
        use tower::{Layer, ServiceExt};
        let t = FaultTable::new("1.0.0");
        t.add(
            spec(
                r#"{"caller":"edge","header":"gd-7","action":{"type":"abort","code":"INTERNAL"}}"#,
            )
            .unwrap(),
        )
        .unwrap();
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("served")))
        });
        let svc = GrpcFaultLayer::new(t.clone()).layer(inner);
        let req = |caller: &str, fault: &str| {
            http::Request::builder()
                .uri("/catalog.v1.Catalog/GetTitle")
                .header("x-fleet-caller", caller)
                .header(FAULT_HEADER, fault)
                .body(())
                .unwrap()
        };
        let resp = svc.clone().oneshot(req("edge", "gd-7")).await.unwrap();
        assert_eq!(resp.headers()["grpc-status"], "13");
        for (caller, fault) in [("edge", "gd-8"), ("ratings", "gd-7")] {
            let resp = svc.clone().oneshot(req(caller, fault)).await.unwrap();
            assert_eq!(resp.body(), "served", "{caller} {fault}");
        }
        let mut unready = GrpcFaultLayer::new(t).layer(UnreadyGrpc);
        let e = ServiceExt::<http::Request<()>>::ready(&mut unready)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e, "busy");
    }

    /// One HTTP/1.1 exchange over a real socket: (status, body).
    async fn http(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn the_admin_api_adds_lists_removes_and_clears_rules() {
        let t = FaultTable::new("1.0.0");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, admin_router(t)).await.unwrap();
        });
        let (status, body) = http(
            addr,
            "POST",
            "/admin/faults",
            r#"{"operation":"GetTitle","action":{"type":"hang"}}"#,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_u64()
            .unwrap();
        let (status, body) = http(
            addr,
            "POST",
            "/admin/faults",
            r#"{"action":{"type":"delay","ms":0}}"#,
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert!(body.contains(r#""code":"invalid_fault""#), "{body}");
        let big = format!(
            r#"{{"operation":"{}","action":{{"type":"hang"}}}}"#,
            "x".repeat(4096)
        );
        assert_eq!(http(addr, "POST", "/admin/faults", &big).await.0, 413);
        let exact = format!(
            r#"{{"caller":"{}","action":{{"type":"hang"}}}}"#,
            "x".repeat(4096 - 38)
        );
        assert_eq!(exact.len(), 4096);
        assert_eq!(
            http(addr, "POST", "/admin/faults", &exact).await.0,
            422,
            "4 KiB is read (and the caller too long)"
        );
        let (status, body) = http(addr, "GET", "/admin/faults", "").await;
        assert_eq!(status, 200);
        let rules: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["operation"], "GetTitle");
        assert_eq!(http(addr, "DELETE", "/admin/faults/nope", "").await.0, 400);
        assert_eq!(
            http(addr, "DELETE", &format!("/admin/faults/{id}"), "")
                .await
                .0,
            204
        );
        assert_eq!(
            http(addr, "DELETE", &format!("/admin/faults/{id}"), "")
                .await
                .0,
            404
        );
        http(
            addr,
            "POST",
            "/admin/faults",
            r#"{"action":{"type":"hang"}}"#,
        )
        .await;
        assert_eq!(http(addr, "DELETE", "/admin/faults", "").await.0, 204);
        assert_eq!(http(addr, "GET", "/admin/faults", "").await.1, "[]");
        server.abort();
    }
}
