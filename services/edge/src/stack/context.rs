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
//!   (`x-fleet-fault`) only from game-day clients that show the token;
//!   from anyone else they are dropped.
//!
//! When the budget runs out the answer is 504 and everything below is
//! dropped (downstream calls cancelled). The answer carries `x-request-id`
//! and `x-fleet-served-by`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleet_context::{RequestContext, headers};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::Budgets;
use crate::error::ApiError;
use crate::extract::BodyLimit;

/// Header a game-day client sends (with the admin token) so that its
/// `x-fleet-fault` and internal pin headers are honoured.
pub use fleet_edge_client::GAMEDAY_TOKEN;

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
    /// What `x-fleet-gameday-token` must equal (the admin token); unset: no
    /// client is a game-day client.
    pub gameday_token: Option<String>,
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
    let gameday = is_gameday(req.headers(), state.gameday_token.as_deref());
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
    );
    fleet_telemetry::set_parent_from(&span, req.headers());
    if let Some(id) = span.in_scope(fleet_telemetry::current_trace_id) {
        span.record("trace_id", id.as_str());
    }
    let deadline = cx.deadline();
    let work = async move {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, next.run(req))
                .await
                .unwrap_or_else(|_| ApiError::deadline_exceeded().into_response()),
            None => next.run(req).await,
        }
    };
    let mut resp = cx.clone().scope(work).instrument(span.clone()).await;

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
/// internal pins and the fault scope only from game-day clients, none
/// longer than 64 bytes.
pub fn propagated(h: &HeaderMap, gameday: bool) -> Vec<(HeaderName, HeaderValue)> {
    h.iter()
        .filter(|(name, value)| {
            let n = name.as_str();
            let allowed = if n.starts_with(headers::VERSION_PIN_PREFIX) {
                gameday || PUBLIC_PINS.contains(&n)
            } else {
                gameday && n == headers::FAULT_PREFIX
            };
            allowed && value.len() <= MAX_PROPAGATED_LEN
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// True when the request shows the game-day token.
pub fn is_gameday(h: &HeaderMap, token: Option<&str>) -> bool {
    let (Some(expected), Some(given)) = (token, h.get(GAMEDAY_TOKEN).and_then(|v| v.to_str().ok()))
    else {
        return false;
    };
    fleet_server::admin::constant_time_eq(expected.as_bytes(), given.as_bytes())
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

    #[test]
    fn only_the_right_token_opens_fault_scoping() {
        let mut h = HeaderMap::new();
        assert!(!is_gameday(&h, Some("0123456789abcdef")));
        h.insert(GAMEDAY_TOKEN, HeaderValue::from_static("0123456789abcdeX"));
        assert!(!is_gameday(&h, Some("0123456789abcdef")));
        assert!(!is_gameday(&h, None));
        h.insert(GAMEDAY_TOKEN, HeaderValue::from_static("0123456789abcdef"));
        assert!(is_gameday(&h, Some("0123456789abcdef")));
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
        assert_eq!(
            names(propagated(&h, true)),
            ["x-fleet-fault", "x-version-catalog", "x-version-dal"]
        );
        h.insert(
            "x-version-ratings",
            HeaderValue::from_str(&"1".repeat(65)).unwrap(),
        );
        assert_eq!(names(propagated(&h, false)), ["x-version-catalog"]);
    }
}
