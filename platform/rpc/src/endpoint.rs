//! The endpoint: the innermost service of a driver client's stack, one gRPC
//! attempt on the instance the balancer chose, over that instance's lazily
//! connected channel.
//!
//! It writes the metadata every hop carries — `grpc-timeout` (what is left
//! of the deadline), request id, caller, `traceparent`, propagated headers
//! and, on a retry, `grpc-previous-rpc-attempts` — bounds the attempt by
//! the deadline, and reads what the answer says about a failure: the
//! server's retry pushback and whether the failure came from deeper down.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http::uri::PathAndQuery;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use fleet_context::{RequestContext, format_grpc_timeout, headers};
use fleet_resilience::classify::Pushback;
use fleet_resilience::{BoxError, BoxFuture};

use crate::call::Call;
use crate::classify::{
    AttemptError, ORIGIN_DOWNSTREAM, ORIGIN_HEADER, PREVIOUS_ATTEMPTS_HEADER, PUSHBACK_HEADER,
    parse_pushback,
};
use crate::codec::RawCodec;
use crate::dependency::Shared;
use crate::error::{RpcError, Unavailable};

/// One gRPC attempt (cheap to clone).
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

fn attempt_error(error: RpcError) -> BoxError {
    Box::new(AttemptError {
        error,
        downstream: false,
        pushback: Pushback::None,
    })
}

impl tower::Service<Call> for Endpoint {
    type Response = Bytes;
    type Error = BoxError;
    type Future = BoxFuture<Bytes>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Call) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let name = shared.config.name;
            let now = Instant::now();
            if req.deadline <= now {
                return Err(attempt_error(RpcError::DeadlineExceeded {
                    dependency: name,
                }));
            }
            let Some(target) = req.attempts.last() else {
                return Err(attempt_error(RpcError::Internal {
                    dependency: name,
                    message: "no instance chosen".into(),
                }));
            };
            let Some(instance) = shared.instances().into_iter().find(|i| i.id == target) else {
                return Err(attempt_error(RpcError::Unavailable {
                    dependency: name,
                    reason: Unavailable::Transport,
                    message: format!("{target} left"),
                    retry_after: None,
                }));
            };
            let channel = shared.channel_for(&instance).map_err(attempt_error)?;

            let mut h = HeaderMap::new();
            match &req.cx {
                Some(cx) => cx.write_headers(&mut h, Some(shared.config.caller)),
                None => RequestContext::new().write_headers(&mut h, Some(shared.config.caller)),
            }
            fleet_telemetry::inject(&mut h);
            h.insert(
                headers::GRPC_TIMEOUT,
                format_grpc_timeout(req.deadline - now),
            );
            let previous = req.attempts.count().saturating_sub(1);
            if previous > 0 {
                h.insert(PREVIOUS_ATTEMPTS_HEADER, http::HeaderValue::from(previous));
            }
            let mut request = tonic::Request::new(req.body.clone());
            *request.metadata_mut() = MetadataMap::from_headers(h);

            let mut grpc = tonic::client::Grpc::new(channel);
            let path = PathAndQuery::from_static(req.op.path);
            let call = async move {
                grpc.ready().await.map_err(|e| {
                    attempt_error(RpcError::Unavailable {
                        dependency: name,
                        reason: Unavailable::Transport,
                        message: format!("{}: {e}", instance.id),
                        retry_after: None,
                    })
                })?;
                grpc.unary(request, path, RawCodec)
                    .await
                    .map_err(|status| from_status(name, &status))
            };
            let response = match tokio::time::timeout_at(req.deadline, call).await {
                Err(_) => {
                    return Err(attempt_error(RpcError::DeadlineExceeded {
                        dependency: name,
                    }));
                }
                Ok(r) => r?,
            };
            if let (Some(cx), Some(who)) = (
                &req.cx,
                response
                    .metadata()
                    .get(headers::SERVED_BY)
                    .and_then(|v| v.to_str().ok()),
            ) {
                cx.record_served_by(who);
            }
            Ok(response.into_inner())
        })
    }
}

/// A failed answer, with what its metadata says.
fn from_status(name: &'static str, status: &tonic::Status) -> BoxError {
    let md = status.metadata();
    let pushback = parse_pushback(md.get(PUSHBACK_HEADER).and_then(|v| v.to_str().ok()));
    let downstream = md
        .get(ORIGIN_HEADER)
        .is_some_and(|v| v.as_bytes() == ORIGIN_DOWNSTREAM.as_bytes());
    let mut error = RpcError::from_status(name, status);
    if let (RpcError::Unavailable { retry_after, .. }, Pushback::After(d)) = (&mut error, pushback)
    {
        *retry_after = Some(d);
    }
    Box::new(AttemptError {
        error,
        downstream,
        pushback,
    })
}
