//! Adaptive concurrency and deadline-aware admission for gRPC servers: the
//! gRPC face of [`fleet_resilience::adaptive`].
//!
//! A refused call is answered at once with `RESOURCE_EXHAUSTED` and
//! `grpc-retry-pushback-ms` (gRFC A6: how long the client should wait
//! before retrying), and counted in `fleet_admission_refused_total`; the
//! limit in force is `fleet_concurrency_limit`.

use std::sync::Arc;

use fleet_metrics::AdmissionMetrics;
use fleet_resilience::adaptive::{AdaptiveLayer, AdaptiveLimiter, AdmissionPolicy, Refused};
use fleet_resilience::fault::grpc_error;
use http::HeaderValue;

use crate::methods::KnownMethods;

/// The metadata key of a server's retry pushback (gRFC A6).
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// gRPC `RESOURCE_EXHAUSTED`.
const RESOURCE_EXHAUSTED: u16 = 8;

/// How a gRPC server names operations and answers refusals.
#[derive(Clone, Debug)]
pub struct GrpcAdmission {
    methods: KnownMethods,
    metrics: AdmissionMetrics,
}

impl GrpcAdmission {
    /// The layer: `limiter` over the calls of `methods`, reported to
    /// `metrics`.
    pub fn layer(
        limiter: AdaptiveLimiter,
        methods: KnownMethods,
        metrics: AdmissionMetrics,
    ) -> AdaptiveLayer<Self> {
        metrics.set_limit(limiter.limit());
        AdaptiveLayer::new(limiter, Self { methods, metrics })
    }
}

impl<B, R: Default> AdmissionPolicy<http::Request<B>, http::Response<R>> for GrpcAdmission {
    fn operation(&self, req: &http::Request<B>) -> Arc<str> {
        self.methods.label(req.uri().path())
    }

    fn refuse(&self, operation: &str, refused: &Refused) -> http::Response<R> {
        self.metrics.refused(operation, refused.reason());
        let mut resp = grpc_error(RESOURCE_EXHAUSTED, &refused.to_string());
        let pushback = u64::try_from(refused.retry_after().as_millis()).unwrap_or(u64::MAX);
        resp.headers_mut()
            .insert(RETRY_PUSHBACK, HeaderValue::from(pushback));
        resp
    }

    fn limit_changed(&self, limit: usize) {
        self.metrics.set_limit(limit);
    }
}
