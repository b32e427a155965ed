//! Layer: the request context and its deadline budget.
//!
//! Builds the [`RequestContext`] every layer below and every driver client
//! runs in: the request id (the client's, if sane, else a new one), the
//! route's deadline budget, the sticky-cohort key (the user id), the W3C
//! trace parent, and the headers passed downstream. What a client may pass
//! on is decided here, once:
//!
//! * public version pins (`x-version-catalog`, `x-version-ratings`) from
//!   anyone — the pin layer below refuses versions nobody knows;
//! * pins of internal services (`x-version-dal`, …) and the fault scope
//!   only from game-day clients: a request whose `x-fleet-fault` is signed
//!   with the game-day key ([`fleet_edge_client::fault_signature`]); the
//!   verified bare scope goes downstream. Internal pins from anyone else
//!   are dropped; an `x-fleet-fault` that does not verify (malformed,
//!   expired — a replay —, another key, or no key configured) is refused
//!   with 401 `invalid_fault_header` before anything is called.
//!
//! When the budget runs out the answer is 504 and everything below is
//! dropped (downstream calls cancelled). The answer carries `x-request-id`
//! and `x-fleet-served-by`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleet_context::{RequestContext, headers};
use fleet_edge_client::fault_signature::GamedayKey;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::Budgets;
use crate::error::ApiError;
use crate::extract::BodyLimit;

/// The services whose version a public client may pin (the edge's own
/// dependencies); every other `x-version-*` header is internal.
pub const PUBLIC_PINS: [&str; 2] = ["x-version-catalog", "x-version-ratings"];

/// Longest propagated header value accepted.
const MAX_PROPAGATED_LEN: usize = 64;

/// What the context layer needs.
#[derive(Clone, Debug)]
pub struct ContextState {
    /// Per-route budgets.
    pub budgets: Budgets,
    /// The key a game-day client signs `x-fleet-fault` with; unset: no
    /// client is a game-day client.
    pub gameday_key: Option<GamedayKey>,
    /// Largest JSON body, for the body extractors.
    pub max_body: usize,
    /// Deepest JSON nesting, for the JSON extractor.
    pub max_json_depth: usize,
}

/// The route's budget: writes and user listings get `user`, the home page
/// `home`, browsing `browse`, a single title `title`.
pub fn budget_for(b: &Budgets, route: &str) -> std::time::Duration {
    match route {
        "/api/v1/titles/{id}" | "/api/v2/titles/{id}" => b.title,
        "/api/v1/titles" => b.browse,
        "/api/v1/users/{user}/home" => b.home,
        _ => b.user,
    }
}

/// The middleware (see the module docs).
pub async fn layer(
    State(state): State<Arc<ContextState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(fleet_metrics::OTHER, MatchedPath::as_str)
        .to_owned();
    let method = fleet_metrics::http_method_label(req.method().as_str());

    let mut cx = RequestContext::new()
        .with_budget(budget_for(&state.budgets, &route))
        .with_served_by_collector();
    if let Some(id) = req
        .headers()
        .get(headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        cx = cx.with_request_id(id);
    }
    if route.starts_with("/api/v1/users/{user}")
        && let Some(user) = req.uri().path().split('/').nth(4)
    {
        cx = cx.with_cohort_key(user);
    }
    let (gameday, refusal) =
        match verified_scope(req.headers(), state.gameday_key.as_ref(), SystemTime::now()) {
            Ok(Some(scope)) => {
                cx = cx.with_propagated(HeaderName::from_static(headers::FAULT_PREFIX), scope);
                (true, None)
            }
            Ok(None) => (false, None),
            Err(e) => (false, Some(e)),
        };
    for (name, value) in propagated(req.headers(), gameday) {
        cx = cx.with_propagated(name, value);
    }
    req.extensions_mut().insert(BodyLimit {
        bytes: state.max_body,
        json_depth: state.max_json_depth,
    });

    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        http.method = method,
        http.route = %route,
        request_id = %cx.request_id(),
        trace_id = tracing::field::Empty,
        // Baggage every hop's span carries (see fleet-server's gRPC
        // context layer): the cohort key and a game-day fault scope.
        cohort = tracing::field::Empty,
        fault_scope = tracing::field::Empty,
    );
    if let Some(key) = cx.cohort_key() {
        span.record("cohort", key);
    }
    if let Some(scope) = cx.fault_scope() {
        span.record("fault_scope", scope);
    }
    fleet_telemetry::set_parent_from(&span, req.headers());
    let trace_id = span.in_scope(fleet_telemetry::current_trace_id);
    if let Some(id) = &trace_id {
        span.record("trace_id", id.as_str());
    }
    let deadline = cx.deadline();
    let work = async move {
        if let Some(refusal) = refusal {
            return refusal.into_response();
        }
        match deadline {
            Some(d) => tokio::time::timeout_at(d, next.run(req))
                .await
                .unwrap_or_else(|_| ApiError::deadline_exceeded().into_response()),
            None => next.run(req).await,
        }
    };
    let mut resp = cx.clone().scope(work).instrument(span.clone()).await;

    if let Some(trace_id) = trace_id {
        // For the metrics layer outside: the latency exemplar.
        resp.extensions_mut()
            .insert(fleet_metrics::TraceExemplar { trace_id });
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(cx.request_id()) {
        h.insert(HeaderName::from_static(headers::REQUEST_ID), v);
    }
    let served = cx.served_by();
    if !served.is_empty()
        && let Ok(v) = HeaderValue::from_str(&served.join(","))
    {
        h.insert(HeaderName::from_static(headers::SERVED_BY), v);
    }
    let status = resp.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _enter = span.enter();
    if status >= 500 {
        tracing::warn!(status, elapsed_ms, "served with error");
    } else {
        tracing::debug!(status, elapsed_ms, "served");
    }
    resp
}

/// The headers of a request that go downstream: public pins from anyone,
/// internal pins only from game-day clients, none longer than 64 bytes.
/// (The fault scope is added apart, once verified: see [`verified_scope`].)
pub fn propagated(h: &HeaderMap, gameday: bool) -> Vec<(HeaderName, HeaderValue)> {
    h.iter()
        .filter(|(name, value)| {
            let n = name.as_str();
            n.starts_with(headers::VERSION_PIN_PREFIX)
                && (gameday || PUBLIC_PINS.contains(&n))
                && value.len() <= MAX_PROPAGATED_LEN
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// The fault scope of a signed `x-fleet-fault` header, as the value to
/// pass downstream: `Ok(None)` without the header, `Err` (401
/// `invalid_fault_header`) when it does not verify with `key` at `now`, or
/// when there is no key.
pub fn verified_scope(
    h: &HeaderMap,
    key: Option<&GamedayKey>,
    now: SystemTime,
) -> Result<Option<HeaderValue>, ApiError> {
    let mut values = h.get_all(headers::FAULT_PREFIX).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_fault_header(
            "more than one x-fleet-fault header",
        ));
    }
    let Some(key) = key else {
        return Err(ApiError::invalid_fault_header(
            "game days are not enabled on this edge (no GAMEDAY_KEY)",
        ));
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid_fault_header("x-fleet-fault is not visible ASCII"))?;
    let scope = key
        .verify(text, now)
        .map_err(|e| ApiError::invalid_fault_header(e.to_string()))?;
    // A verified scope is 1..=64 characters of [A-Za-z0-9._-]: a valid
    // header value.
    HeaderValue::from_str(scope)
        .map(Some)
        .map_err(|_| ApiError::invalid_fault_header("invalid fault scope"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_route_has_its_budget() {
        let b = Budgets {
            title: Duration::from_millis(1),
            browse: Duration::from_millis(2),
            home: Duration::from_millis(3),
            user: Duration::from_millis(4),
        };
        assert_eq!(budget_for(&b, "/api/v1/titles/{id}"), b.title);
        assert_eq!(budget_for(&b, "/api/v1/titles"), b.browse);
        assert_eq!(budget_for(&b, "/api/v1/users/{user}/home"), b.home);
        assert_eq!(
            budget_for(&b, "/api/v1/users/{user}/ratings/{title}"),
            b.user
        );
    }

    fn key() -> GamedayKey {
        GamedayKey::new("0123456789abcdef-game-day").unwrap()
    }

    #[test]
    fn only_a_fault_header_signed_with_the_key_and_not_expired_verifies() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        assert_eq!(verified_scope(&h, Some(&key()), now), Ok(None));
        assert_eq!(verified_scope(&h, None, now), Ok(None));

        let signed = key().sign("drill-7", Duration::from_secs(60), now).unwrap();
        h.insert("x-fleet-fault", HeaderValue::from_str(&signed).unwrap());
        assert_eq!(
            verified_scope(&h, Some(&key()), now),
            Ok(Some(HeaderValue::from_static("drill-7")))
        );
        let refused = |r: Result<Option<HeaderValue>, ApiError>| {
            let e = r.unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::UNAUTHORIZED);
            assert_eq!(e.code, "invalid_fault_header");
            e.message
        };
        // No key here; another key; the header replayed after its expiry.
        assert!(refused(verified_scope(&h, None, now)).contains("GAMEDAY_KEY"));
        let other = GamedayKey::new("another-key-entirely-16").unwrap();
        assert!(refused(verified_scope(&h, Some(&other), now)).contains("does not match"));
        let later = now + Duration::from_secs(61);
        assert!(refused(verified_scope(&h, Some(&key()), later)).contains("expired"));
        // The bare scope of old, unsigned.
        h.insert("x-fleet-fault", HeaderValue::from_static("drill-7"));
        assert!(refused(verified_scope(&h, Some(&key()), now)).contains("malformed"));
        // Two headers.
        h.insert("x-fleet-fault", HeaderValue::from_str(&signed).unwrap());
        h.append("x-fleet-fault", HeaderValue::from_str(&signed).unwrap());
        assert!(refused(verified_scope(&h, Some(&key()), now)).contains("more than one"));
    }

    #[test]
    fn internal_pins_and_fault_scopes_need_the_game_day_credential() {
        let mut h = HeaderMap::new();
        h.insert("x-version-catalog", HeaderValue::from_static("1.3"));
        h.insert("x-version-dal", HeaderValue::from_static("9.9"));
        h.insert("x-fleet-fault", HeaderValue::from_static("drill"));
        h.insert("authorization", HeaderValue::from_static("secret"));
        let names = |v: Vec<(HeaderName, HeaderValue)>| {
            let mut n: Vec<String> = v.into_iter().map(|(n, _)| n.to_string()).collect();
            n.sort();
            n
        };
        assert_eq!(names(propagated(&h, false)), ["x-version-catalog"]);
        // The raw fault header never goes down as such (the verified scope
        // is added apart).
        assert_eq!(
            names(propagated(&h, true)),
            ["x-version-catalog", "x-version-dal"]
        );
        h.insert(
            "x-version-ratings",
            HeaderValue::from_str(&"1".repeat(65)).unwrap(),
        );
        assert_eq!(names(propagated(&h, false)), ["x-version-catalog"]);
    }
}
