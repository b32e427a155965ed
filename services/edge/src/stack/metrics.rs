//! Layer: per-route HTTP metrics (`fleet_http_server_*`).
//!
//! Outermost, so it sees every answer a client got — 429s, 400s, sheds and
//! the budget's 504s included — and measures the whole time spent. Labels
//! are bounded whatever a client sends: the route *template* axum matched
//! (or `other`), a standard method name (or `other`), the status. Each
//! latency observation carries the request's trace id as its exemplar.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use fleet_metrics::{HttpMetrics, TraceExemplar};
use tokio::time::Instant;

/// The middleware (see the module docs).
pub async fn layer(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(fleet_metrics::OTHER, MatchedPath::as_str)
        .to_owned();
    let method = fleet_metrics::http_method_label(req.method().as_str());
    let resp = next.run(req).await;
    // The request's trace (left by the context layer, inside which the
    // request's span lives) becomes the latency bucket's exemplar.
    let exemplar = resp.extensions().get::<TraceExemplar>().cloned();
    metrics.record_with_exemplar(
        &route,
        method,
        resp.status().as_u16(),
        started.elapsed(),
        exemplar,
    );
    resp
}
