//! The server-side request layer every gRPC service runs behind.
//!
//! Per call it builds the [`RequestContext`] from the incoming metadata
//! (request id, `grpc-timeout`, caller, propagated headers), opens a span
//! whose parent is the caller's `traceparent`, refuses work whose deadline
//! has already passed, runs the handler inside the context so driver clients
//! pick up the *remaining* budget, stops the handler (dropping its future,
//! which cancels its downstream and storage calls) when the deadline passes,
//! records per-operation metrics (labelled by known methods only), and tags the response with the instance
//! that served it.
//!
//! tonic itself also enforces `grpc-timeout`, but answers CANCELLED; this
//! layer fires [`SERVER_DEADLINE_LEAD`] earlier so the caller gets the
//! meaningful DEADLINE_EXCEEDED instead.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use tokio::time::Instant;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument;

use fleet_context::{RequestContext, headers};
use fleet_metrics::RpcMetrics;

use crate::methods::KnownMethods;

/// How much earlier than the caller's deadline the server gives up.
pub const SERVER_DEADLINE_LEAD: Duration = Duration::from_millis(2);

/// Builds [`GrpcContext`] services.
#[derive(Clone, Debug)]
pub struct GrpcContextLayer {
    service: &'static str,
    metrics: RpcMetrics,
    served_by: HeaderValue,
    methods: KnownMethods,
}

impl GrpcContextLayer {
    /// The layer for `service`, recording into `metrics` and tagging
    /// responses with `served_by` (`service/version/instance`). Metric
    /// labels name only `methods` the server serves; any other path is
    /// recorded as `other`, so random paths add no series.
    pub fn new(
        service: &'static str,
        metrics: RpcMetrics,
        served_by: &str,
        methods: KnownMethods,
    ) -> Self {
        Self {
            service,
            metrics,
            served_by: HeaderValue::from_str(served_by)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            methods,
        }
    }
}

impl<S> Layer<S> for GrpcContextLayer {
    type Service = GrpcContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcContext {
            inner,
            shared: Arc::new(self.clone()),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct GrpcContext<S> {
    inner: S,
    shared: Arc<GrpcContextLayer>,
}

impl<S, B> Service<Request<B>> for GrpcContext<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let shared = self.shared.clone();
        let operation = shared.methods.label(req.uri().path());
        // The readied service handles this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let cx = match RequestContext::from_headers(req.headers(), started) {
            Ok(cx) => cx,
            Err(e) => {
                let resp = finish(
                    &shared,
                    &operation,
                    started,
                    tonic::Status::invalid_argument(e.to_string()).into_http(),
                );
                return Box::pin(async move { Ok(resp) });
            }
        };
        let span = tracing::info_span!(
            "rpc",
            otel.name = %req.uri().path(),
            rpc.service = shared.service,
            rpc.method = %operation,
            request_id = %cx.request_id(),
            caller = cx.caller().unwrap_or(""),
            // service/version/instance: which version a request was
            // routed to, on its trace (Jaeger shows it as a tag).
            served_by = shared.served_by.to_str().unwrap_or(""),
            trace_id = tracing::field::Empty,
            // The request's baggage, on every hop's span: the sticky-cohort
            // key and the game-day fault scope (absent when not carried).
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
        if let Some(id) = span.in_scope(fleet_telemetry::current_trace_id) {
            span.record("trace_id", id.as_str());
        }

        if cx.is_expired() {
            let resp = finish(
                &shared,
                &operation,
                started,
                tonic::Status::deadline_exceeded(
                    "the caller's deadline passed before the call arrived",
                )
                .into_http(),
            );
            return Box::pin(async move { Ok(resp) });
        }
        let deadline = cx.deadline();
        let fut = inner.call(req);
        Box::pin(
            async move {
                let _in_flight = shared.metrics.start(shared.service, &operation);
                let work = cx.scope(fut);
                let result = match deadline {
                    Some(d) => {
                        let stop_at = d.checked_sub(SERVER_DEADLINE_LEAD).unwrap_or(d);
                        match tokio::time::timeout_at(stop_at, work).await {
                            Ok(r) => r,
                            Err(_) => Ok(tonic::Status::deadline_exceeded(
                                "deadline exceeded while serving; work was cancelled",
                            )
                            .into_http()),
                        }
                    }
                    None => work.await,
                };
                result.map(|resp| finish(&shared, &operation, started, resp))
            }
            .instrument(span),
        )
    }
}

fn finish(
    shared: &GrpcContextLayer,
    operation: &str,
    started: Instant,
    mut resp: Response<tonic::body::Body>,
) -> Response<tonic::body::Body> {
    let code = response_code(&resp);
    let elapsed = started.elapsed();
    shared
        .metrics
        .record(shared.service, operation, code_name(code), elapsed);
    match code {
        Code::Ok => tracing::debug!(
            code = code_name(code),
            elapsed_ms = elapsed.as_millis() as u64,
            "served"
        ),
        Code::Internal
        | Code::Unknown
        | Code::DataLoss
        | Code::Unavailable
        | Code::DeadlineExceeded => {
            tracing::warn!(
                code = code_name(code),
                elapsed_ms = elapsed.as_millis() as u64,
                "served with error"
            )
        }
        _ => tracing::info!(
            code = code_name(code),
            elapsed_ms = elapsed.as_millis() as u64,
            "served with error"
        ),
    }
    resp.headers_mut()
        .insert(headers::SERVED_BY, shared.served_by.clone());
    resp
}

/// The status of a unary response. Handler errors travel as trailers-only
/// responses, so `grpc-status` is in the headers; success puts it in the
/// trailers, which are not seen here, so no header means OK.
fn response_code(resp: &Response<tonic::body::Body>) -> Code {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from)
}

/// The canonical upper-case name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
