//! Layer: static load shedding, the hard cap.
//!
//! At most `EDGE_MAX_CONCURRENCY` requests in flight; the next one gets
//! 503 `overloaded` + `Retry-After` at once (tower's `LoadShed` over a
//! shared `GlobalConcurrencyLimit`) instead of queueing, so latency does
//! not collapse under overload. The adaptive limit inside usually refuses
//! first; this bound holds whatever it has learned.

use std::future::Ready;

use axum::error_handling::HandleErrorLayer;
use axum::response::{IntoResponse as _, Response};
use fleet_metrics::HttpMetrics;
use tower::layer::util::{Identity, Stack};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, ServiceBuilder};

use crate::error::ApiError;

/// Error handling (503) around load shedding around the shared limit.
pub type ShedLayer<F> = ServiceBuilder<
    Stack<
        GlobalConcurrencyLimitLayer,
        Stack<LoadShedLayer, Stack<HandleErrorLayer<F, ()>, Identity>>,
    >,
>;

/// The layer: `max_concurrency` in flight, shed requests counted in
/// `fleet_http_server_shed_total`.
pub fn layer(
    max_concurrency: usize,
    metrics: HttpMetrics,
) -> ShedLayer<impl Fn(BoxError) -> Ready<Response> + Clone + Send + Sync + 'static> {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: BoxError| {
            metrics.shed();
            std::future::ready(ApiError::overloaded().into_response())
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(max_concurrency))
}
