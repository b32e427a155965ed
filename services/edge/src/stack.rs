//! The edge's HTTP stack, assembled in one place, outermost layer first.
//!
//! Each concern is one middleware in its own file under `stack/`; this
//! file only says in which order they run and why. A request passes, in
//! order:
//!
//! 1. [`metrics`] — route metrics with bounded labels; outermost so every
//!    answer is counted, the budget's 504 included.
//! 2. [`context`] — the request context: request id, the route's budget
//!    (504 when it runs out), cohort key, trace parent, and which headers
//!    go downstream (internal pins and fault scopes only for game-day
//!    clients).
//! 3. [`limits`] — URL length (414), header count and bytes (431),
//!    declared body size (413): refused before anything else reads the
//!    request, inside the context so the answer carries its request id.
//! 4. [`rate_limit`] — per-client token buckets (429), clients keyed by
//!    peer or, behind a trusted proxy, `X-Forwarded-For`; bounded map.
//! 5. [`pins`] — a public version pin must name a version that exists
//!    (else 400 `unknown_version`, before any backend is called).
//! 6. [`faults`] — the edge's own game-day faults; inside the context so
//!    a delay spends the budget and a hang ends in 504.
//! 7. [`panic_guard`] — a panicking handler answers 500 in the JSON
//!    error shape.
//! 8. [`shed`] — the static cap `EDGE_MAX_CONCURRENCY`: 503 at once
//!    beyond it.
//! 9. [`admission`] — the adaptive (Gradient2) limit and deadline-aware
//!    admission: 503 + `Retry-After` at once rather than queue, or start
//!    work whose budget is below the route's recent median.
//! 10. The routes, whose extractors validate all input first.

pub mod admission;
pub mod context;
pub mod faults;
pub mod limits;
pub mod metrics;
pub mod panic_guard;
pub mod pins;
pub mod rate_limit;
pub mod shed;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, put};
use fleet_edge_client::fault_signature::GamedayKey;
use fleet_metrics::{AdmissionMetrics, HttpMetrics};
use fleet_resilience::adaptive::AdaptiveLimiter;
use fleet_resilience::fault::FaultTable;
use tower::ServiceBuilder;

use crate::config::{Budgets, RequestLimits};
use crate::error::ApiError;
use crate::state::EdgeState;
use crate::{home, openapi, titles, users};

/// What the stack needs besides the handlers' state.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Per-route budgets.
    pub budgets: Budgets,
    /// Route metrics.
    pub metrics: HttpMetrics,
    /// The adaptive limit's metrics.
    pub admission_metrics: AdmissionMetrics,
    /// The adaptive limit (shared with whoever watches it).
    pub limiter: AdaptiveLimiter,
    /// This instance's fault rules (`/admin/faults` on the admin port).
    pub faults: FaultTable,
    /// The key `x-fleet-fault` must be signed with; unset: no client may
    /// scope faults or pin internal services.
    pub gameday_key: Option<GamedayKey>,
    /// Largest body.
    pub max_body: usize,
    /// URL, header and JSON depth limits.
    pub limits: RequestLimits,
    /// Requests in flight before shedding.
    pub max_concurrency: usize,
    /// Per-client rate limiting; `None` is off.
    pub rate_limit: Option<rate_limit::ClientLimiter>,
}

/// The whole public router: the API behind the stack above.
pub fn router(state: EdgeState, cfg: StackConfig) -> Router {
    let pins = Arc::new(pins::PinState {
        services: vec![
            pins::Pinnable {
                header: "x-version-catalog",
                dependencies: vec![
                    state.catalog.dependency().clone(),
                    state.catalog_v2.dependency().clone(),
                ],
            },
            pins::Pinnable {
                header: "x-version-ratings",
                dependencies: vec![state.ratings.dependency().clone()],
            },
        ],
    });
    let context = Arc::new(context::ContextState {
        budgets: cfg.budgets,
        gameday_key: cfg.gameday_key,
        max_body: cfg.max_body,
        max_json_depth: cfg.limits.max_json_depth,
    });
    let limits = Arc::new(limits::Limits {
        request: cfg.limits,
        max_body: cfg.max_body,
    });
    let doc = openapi::document();
    let routes = Router::new()
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
        .with_state(state);
    // `ServiceBuilder` lists layers outermost first.
    routes.layer(
        ServiceBuilder::new()
            .layer(from_fn_with_state(cfg.metrics.clone(), metrics::layer))
            .layer(from_fn_with_state(context, context::layer))
            .layer(from_fn_with_state(limits, limits::layer))
            .layer(from_fn_with_state(cfg.rate_limit, rate_limit::layer))
            .layer(from_fn_with_state(pins, pins::layer))
            .layer(from_fn_with_state(cfg.faults, faults::layer))
            .layer(panic_guard::layer())
            .layer(shed::layer(cfg.max_concurrency, cfg.metrics))
            .layer(admission::layer(cfg.limiter, cfg.admission_metrics)),
    )
}
