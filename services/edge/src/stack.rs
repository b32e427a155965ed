//! The edge's HTTP stack, assembled in one place, outermost layer first.
//!
//! 1. **Request context** ([`context`]): request id (the client's, if
//!    sane, else a new one), W3C trace parent, the route's deadline budget,
//!    the sticky-cohort key (the user id), version-pin headers, and — only
//!    for game-day clients that show the token — the fault-scope header;
//!    everything below runs inside it, so driver clients send the remaining
//!    budget and the headers downstream. It also records the route's
//!    metrics and stamps `x-request-id` / `x-fleet-served-by` on the answer.
//!    Rate limiting per client address, injected faults and the budget's
//!    504 live here too, because each needs the context's request id.
//! 2. **Panic guard**: a bug answers 500 in the JSON error shape instead of
//!    dropping the connection.
//! 3. **Load shedding**: at most `EDGE_MAX_CONCURRENCY` requests in
//!    flight; the next one gets 503 + `Retry-After` at once (tower's
//!    `LoadShed` over a shared `GlobalConcurrencyLimit`), so latency does
//!    not collapse under overload.
//! 4. The routes, whose extractors validate all input first.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use fleet_context::{RequestContext, headers};
use fleet_metrics::HttpMetrics;
use fleet_resilience::fault::{FaultAction, FaultRequest, FaultTable, abort_status};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tracing::Instrument as _;

use crate::config::Budgets;
use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::state::EdgeState;
use crate::{home, openapi, titles, users};

/// Header a game-day client sends (with the admin token) so that its
/// `x-fleet-fault` header is honoured (named once, in the edge client).
pub use fleet_edge_client::GAMEDAY_TOKEN;

/// What the stack needs besides the handlers' state.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Per-route budgets.
    pub budgets: Budgets,
    /// Route metrics.
    pub metrics: HttpMetrics,
    /// This instance's fault rules (`/admin/faults` on the admin port).
    pub faults: FaultTable,
    /// What `x-fleet-gameday-token` must equal (the admin token); unset: no
    /// client may scope faults.
    pub gameday_token: Option<String>,
    /// Largest JSON body.
    pub max_body: usize,
    /// Requests in flight before shedding.
    pub max_concurrency: usize,
    /// Requests per second per client address; 0 is off.
    pub rate_limit: u32,
}

struct Shared {
    cfg: StackConfig,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// The whole public router: `/api/v1/…` behind the stack above.
pub fn router(state: EdgeState, cfg: StackConfig) -> Router {
    let limiter = NonZeroU32::new(cfg.rate_limit).map(|rps| {
        let burst = rps.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        RateLimiter::keyed(Quota::per_second(rps).allow_burst(burst))
    });
    let shed_metrics = cfg.metrics.clone();
    let max_concurrency = cfg.max_concurrency;
    let shared = Arc::new(Shared { cfg, limiter });
    let doc = openapi::document();
    Router::new()
        .route("/api/v1/titles", get(titles::list_titles))
        .route("/api/v1/titles/{id}", get(titles::get_title))
        .route("/api/v2/titles/{id}", get(titles::get_title_v2))
        .route("/api/v1/users/{user}/home", get(home::home))
        .route("/api/v1/users/{user}/ratings", get(users::list_ratings))
        .route(
            "/api/v1/users/{user}/ratings/{title}",
            put(users::rate_title),
        )
        .route(
            "/api/v1/users/{user}/progress/{title}",
            put(users::record_progress),
        )
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc,
                    )
                }
            }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
        // Inner layers first (each `.layer` wraps what is above it).
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
                    let m = shed_metrics.clone();
                    async move {
                        m.shed();
                        ApiError::overloaded()
                    }
                }))
                .layer(LoadShedLayer::new())
                .layer(GlobalConcurrencyLimitLayer::new(max_concurrency)),
        )
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("handler panicked");
                ApiError::internal().into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(shared, context))
}

/// The route's budget: writes and user listings get `user`, the home page
/// `home`, browsing `browse`, a single title `title`.
fn budget_for(b: &Budgets, route: &str) -> Duration {
    match route {
        "/api/v1/titles/{id}" | "/api/v2/titles/{id}" => b.title,
        "/api/v1/titles" => b.browse,
        "/api/v1/users/{user}/home" => b.home,
        _ => b.user,
    }
}

/// Layer 1 of the stack (see the module docs).
async fn context(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let cfg = &shared.cfg;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = req.method().as_str().to_owned();

    let mut cx = RequestContext::new()
        .with_budget(budget_for(&cfg.budgets, &route))
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
    let gameday = is_gameday(req.headers(), cfg.gameday_token.as_deref());
    for (name, value) in req.headers() {
        let pin = name.as_str().starts_with(headers::VERSION_PIN_PREFIX);
        let fault = gameday && name.as_str() == headers::FAULT_PREFIX;
        if (pin || fault) && value.len() <= 64 {
            cx = cx.with_propagated(name.clone(), value.clone());
        }
    }
    let fault_scope = if gameday {
        cx.propagated(headers::FAULT_PREFIX)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    } else {
        None
    };
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    req.extensions_mut().insert(BodyLimit(cfg.max_body));

    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        http.method = %method,
        http.route = %route,
        request_id = %cx.request_id(),
        trace_id = tracing::field::Empty,
    );
    fleet_telemetry::set_parent_from(&span, req.headers());
    if let Some(id) = span.in_scope(fleet_telemetry::current_trace_id) {
        span.record("trace_id", id.as_str());
    }
    let deadline = cx.deadline();

    let work = async {
        if let (Some(limiter), Some(ip)) = (&shared.limiter, client)
            && let Err(not_until) = limiter.check_key(&ip)
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return ApiError::rate_limited(wait).into_response();
        }
        let fault = cfg.faults.decide(&FaultRequest {
            operation: &route,
            caller: None,
            header: fault_scope.as_deref(),
        });
        let run = async {
            match fault {
                Some(FaultAction::Delay { ms }) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Some(FaultAction::Abort { code }) => {
                    let status = abort_status(&code).map_or(503, |s| s.http);
                    return ApiError::injected(status).into_response();
                }
                Some(FaultAction::Hang) => std::future::pending::<()>().await,
                None => {}
            }
            next.run(req).await
        };
        match deadline {
            Some(d) => tokio::time::timeout_at(d, run)
                .await
                .unwrap_or_else(|_| ApiError::deadline_exceeded().into_response()),
            None => run.await,
        }
    };
    let mut resp = cx.clone().scope(work).instrument(span.clone()).await;

    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    cfg.metrics.record(&route, &method, status, elapsed);
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
    let _enter = span.enter();
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(status, elapsed_ms, "served with error");
    } else {
        tracing::debug!(status, elapsed_ms, "served");
    }
    resp
}

/// True when the request shows the game-day token.
fn is_gameday(h: &axum::http::HeaderMap, token: Option<&str>) -> bool {
    let (Some(expected), Some(given)) = (token, h.get(GAMEDAY_TOKEN).and_then(|v| v.to_str().ok()))
    else {
        return false;
    };
    fleet_server::admin::constant_time_eq(expected.as_bytes(), given.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut h = axum::http::HeaderMap::new();
        assert!(!is_gameday(&h, Some("0123456789abcdef")));
        h.insert(GAMEDAY_TOKEN, HeaderValue::from_static("0123456789abcdeX"));
        assert!(!is_gameday(&h, Some("0123456789abcdef")));
        assert!(!is_gameday(&h, None));
        h.insert(GAMEDAY_TOKEN, HeaderValue::from_static("0123456789abcdef"));
        assert!(is_gameday(&h, Some("0123456789abcdef")));
    }
}
