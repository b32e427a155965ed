//! Layer: per-route HTTP metrics (`fleet_http_server_*`).
//!
//! Outermost, so it sees every answer a client got — 429s, 400s, sheds and
//! the budget's 504s included — and measures the whole time spent. Labels
//! are bounded whatever a client sends: the route *template* axum matched
//! (or `other`), a standard method name (or `other`), the status.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use fleet_metrics::HttpMetrics;
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
    metrics.record(&route, method, resp.status().as_u16(), started.elapsed());
    resp
}
