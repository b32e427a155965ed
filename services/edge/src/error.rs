//! [`ApiError`]: every error the edge answers, in the one JSON error shape,
//! and the one place a dependency's [`RpcError`] becomes an HTTP status.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleet_context::RequestContext;
use fleet_edge_client::model::{ErrorBody, ErrorDetail};
use fleet_rpc::{RpcError, Unavailable};

/// An error answer: status, machine-readable code, message for a person,
/// and, for 429/503, when to try again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `invalid_argument`, `not_found`, … (see the OpenAPI document).
    pub code: &'static str,
    /// What went wrong. Never carries a dependency's internals.
    pub message: String,
    /// `Retry-After`, in whole seconds (at least 1).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401: an `x-fleet-fault` header that does not verify with the
    /// game-day key (malformed, expired, another key, or no key here).
    pub fn invalid_fault_header(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_fault_header", message)
    }

    /// 400: a malformed path, query or body.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    }

    /// 414: the request target is longer than `limit` bytes.
    pub fn uri_too_long(limit: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the URL is longer than {limit} bytes"),
        )
    }

    /// 431: too many headers, or too many header bytes.
    pub fn header_fields_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_fields_too_large",
            message,
        )
    }

    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        )
    }

    /// 422: well-formed JSON whose values are wrong.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// 429.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this client; slow down",
            )
        }
    }

    /// 503 from load shedding.
    pub fn overloaded() -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the edge is at capacity; try again shortly",
            )
        }
    }

    /// 503 from adaptive admission: the learned concurrency limit is
    /// reached, or the budget left is below the route's recent median.
    pub fn refused(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the edge cannot serve this request in time now; try again shortly",
            )
        }
    }

    /// 400: a version pin names a version of `service` that no instance
    /// runs and no route table names.
    pub fn unknown_version(service: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unknown_version",
            format!(
                "x-version-{service} names no known {service} version (use major.minor, e.g. 1.3)"
            ),
        )
    }

    /// 503 while draining.
    pub fn draining() -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this edge instance is shutting down; try again",
            )
        }
    }

    /// 504: the route's budget ran out.
    pub fn deadline_exceeded() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            "the request did not complete within its time budget",
        )
    }

    /// 500: a bug; details are logged, not sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// An injected fault's abort status (game days).
    pub fn injected(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        Self::new(
            status,
            "injected_fault",
            "fault injected by a game-day rule",
        )
    }

    /// The answer when a required dependency failed and no fallback exists.
    /// Caller-fault errors pass through (404, 400); failures of the
    /// dependency become 503 with `Retry-After` or 504.
    pub fn from_rpc(e: &RpcError) -> Self {
        match e {
            RpcError::NotFound { message, .. } => Self::not_found(message.clone()),
            RpcError::InvalidArgument { message, .. } => Self::bad_request(message.clone()),
            RpcError::Conflict { message, .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", message.clone())
            }
            RpcError::DeadlineExceeded { .. } => Self::deadline_exceeded(),
            RpcError::Unavailable {
                dependency,
                reason,
                retry_after,
                ..
            } => {
                let (code, message) = match reason {
                    Unavailable::CircuitOpen => (
                        "circuit_open",
                        format!("{dependency} is failing; calls to it are paused"),
                    ),
                    Unavailable::BulkheadFull => (
                        "overloaded",
                        format!("too many calls to {dependency} in flight"),
                    ),
                    _ => ("unavailable", format!("{dependency} is unavailable")),
                };
                Self {
                    retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                }
            }
            RpcError::Internal { dependency, .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!("{dependency} failed"),
            ),
        }
    }
}

/// The short reason a degraded part reports.
pub fn degraded_reason(e: &RpcError) -> &'static str {
    match e {
        RpcError::DeadlineExceeded { .. } => "deadline_exceeded",
        RpcError::Unavailable {
            reason: Unavailable::CircuitOpen,
            ..
        } => "circuit_open",
        RpcError::Unavailable {
            reason: Unavailable::BulkheadFull,
            ..
        } => "bulkhead_full",
        RpcError::Unavailable { .. } => "unavailable",
        _ => "error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = RequestContext::current()
            .map(|cx| cx.request_id().to_owned())
            .unwrap_or_default();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                request_id,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_failures_become_503_or_504_and_keep_internals_inside() {
        let e = ApiError::from_rpc(&RpcError::Unavailable {
            dependency: "catalog",
            reason: Unavailable::CircuitOpen,
            message: "secret detail".into(),
            retry_after: Some(Duration::from_millis(4200)),
        });
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, "circuit_open");
        assert!(!e.message.contains("secret"));
        let resp = e.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "5");

        let e = ApiError::from_rpc(&RpcError::DeadlineExceeded {
            dependency: "ratings",
        });
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        let e = ApiError::from_rpc(&RpcError::Internal {
            dependency: "ratings",
            message: "stack trace".into(),
        });
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(!e.message.contains("stack"));
        let e = ApiError::from_rpc(&RpcError::NotFound {
            dependency: "catalog",
            message: "no title t1".into(),
        });
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
