//! Layer: what one request may be — URL length (414), header count and
//! header bytes (431), declared body size (413) — answered in the JSON
//! error shape before any other layer or handler reads the request.
//!
//! The transport (`fleet_server::http`) has hard caps of its own above
//! these (`HTTP_MAX_HEADERS`, `HTTP_MAX_HEAD_BYTES`), where hyper answers a
//! bare 431 and closes; the configuration keeps these limits below them,
//! so a client over a limit normally gets this answer, with its request id.
//! A body without a `Content-Length` (chunked) is bounded where it is read:
//! the JSON extractor stops at the same limit (`extract::ApiJson`); no
//! other route reads a body.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::RequestLimits;
use crate::error::ApiError;

/// The limits and the body size.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// URL, header and JSON depth limits.
    pub request: RequestLimits,
    /// Largest body (`EDGE_MAX_BODY`).
    pub max_body: usize,
}

/// The first limit `req` is over, if any.
fn check(limits: &Limits, req: &Request) -> Result<(), ApiError> {
    let r = &limits.request;
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > r.max_url_bytes {
        return Err(ApiError::uri_too_long(r.max_url_bytes));
    }
    let headers = req.headers();
    if headers.len() > r.max_headers {
        return Err(ApiError::header_fields_too_large(format!(
            "more than {} request headers",
            r.max_headers
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > r.max_header_bytes {
        return Err(ApiError::header_fields_too_large(format!(
            "request headers are larger than {} bytes",
            r.max_header_bytes
        )));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(ApiError::too_large(limits.max_body));
    }
    Ok(())
}

/// The middleware (see the module docs).
pub async fn layer(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    match check(&limits, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::info!(
                status = e.status.as_u16(),
                code = e.code,
                "request over a limit refused"
            );
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn limits() -> Limits {
        Limits {
            request: RequestLimits {
                max_url_bytes: 64,
                max_headers: 4,
                max_header_bytes: 100,
                max_json_depth: 8,
            },
            max_body: 10,
        }
    }

    fn status(req: axum::http::request::Builder) -> Option<StatusCode> {
        check(&limits(), &req.body(axum::body::Body::empty()).unwrap())
            .err()
            .map(|e| e.status)
    }

    #[test]
    fn each_limit_has_its_status_and_the_limit_itself_passes() {
        let at = |n: usize| format!("/{}", "a".repeat(n - 1));
        assert_eq!(status(Request::builder().uri(at(64))), None);
        assert_eq!(
            status(Request::builder().uri(at(65))),
            Some(StatusCode::URI_TOO_LONG)
        );
        let mut four = Request::builder().uri("/");
        for i in 0..4 {
            four = four.header(format!("x-{i}"), "v");
        }
        assert_eq!(status(four), None);
        let mut five = Request::builder().uri("/");
        for i in 0..5 {
            five = five.header(format!("x-{i}"), "v");
        }
        assert_eq!(
            status(five),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        // "x-a" + 97 bytes = 100: at the limit; one more is over.
        let fat = |n: usize| Request::builder().uri("/").header("x-a", "v".repeat(n));
        assert_eq!(status(fat(97)), None);
        assert_eq!(
            status(fat(98)),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let body = |n: &str| Request::builder().uri("/").header("content-length", n);
        assert_eq!(status(body("10")), None);
        assert_eq!(status(body("11")), Some(StatusCode::PAYLOAD_TOO_LARGE));
    }
}
