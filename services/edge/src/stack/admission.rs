//! Layer: adaptive concurrency (Gradient2) and deadline-aware admission,
//! the HTTP face of [`fleet_resilience::adaptive`].
//!
//! A refused request gets 503 `overloaded` with `Retry-After` at once:
//! either the learned concurrency limit is reached, or the request's
//! remaining budget (after any game-day delay above) is below its route's
//! recent median, so working on it would most likely end in a 504 anyway.
//! Refusals are counted in `fleet_admission_refused_total` by route
//! template; the limit is `fleet_concurrency_limit`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse as _, Response};
use fleet_metrics::AdmissionMetrics;
use fleet_resilience::adaptive::{AdaptiveLayer, AdaptiveLimiter, AdmissionPolicy, Refused};

use crate::error::ApiError;

/// How the edge names operations (route templates) and answers refusals.
#[derive(Clone, Debug)]
pub struct HttpAdmission {
    metrics: AdmissionMetrics,
}

/// The layer over `limiter`, reporting to `metrics`.
pub fn layer(limiter: AdaptiveLimiter, metrics: AdmissionMetrics) -> AdaptiveLayer<HttpAdmission> {
    metrics.set_limit(limiter.limit());
    AdaptiveLayer::new(limiter, HttpAdmission { metrics })
}

impl AdmissionPolicy<Request, Response> for HttpAdmission {
    fn operation(&self, req: &Request) -> Arc<str> {
        req.extensions()
            .get::<MatchedPath>()
            .map_or(fleet_metrics::OTHER, MatchedPath::as_str)
            .into()
    }

    fn refuse(&self, operation: &str, refused: &Refused) -> Response {
        self.metrics.refused(operation, refused.reason());
        ApiError::refused(refused.retry_after()).into_response()
    }

    fn limit_changed(&self, limit: usize) {
        self.metrics.set_limit(limit);
    }
}
