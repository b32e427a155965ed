//! Layer: the edge's own game-day faults (`/admin/faults` on its admin
//! port): delay, abort with a status, or hang.
//!
//! A rule's `operation` is `METHOD /route/template`, e.g.
//! `GET /api/v1/titles/{id}` (absent: every route); `header` scopes it to
//! requests carrying `x-fleet-fault: <value>`, which the context layer
//! passes on only for game-day clients. Inside the context layer, so a
//! delay spends the request's budget and a hang ends in 504 at its
//! deadline.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleet_context::{RequestContext, headers};
use fleet_resilience::fault::{FaultAction, FaultRequest, FaultTable, abort_status};

use crate::error::ApiError;

/// The operation name a rule matches: `METHOD /route/template` (`other` for
/// requests that matched no route).
pub fn operation(method: &str, route: Option<&str>) -> String {
    format!(
        "{} {}",
        fleet_metrics::http_method_label(method),
        route.unwrap_or(fleet_metrics::OTHER)
    )
}

/// The middleware (see the module docs).
pub async fn layer(State(faults): State<FaultTable>, req: Request, next: Next) -> Response {
    let op = operation(
        req.method().as_str(),
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let scope = RequestContext::current().and_then(|cx| {
        cx.propagated(headers::FAULT_PREFIX)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let action = faults.decide(&FaultRequest {
        operation: &op,
        caller: None,
        header: scope.as_deref(),
    });
    match action {
        Some(FaultAction::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Some(FaultAction::Abort { code }) => {
            let status = abort_status(&code).map_or(503, |s| s.http);
            return ApiError::injected(status).into_response();
        }
        Some(FaultAction::Hang) => std::future::pending::<()>().await,
        None => {}
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_method_and_route_template() {
        assert_eq!(
            operation("GET", Some("/api/v1/titles/{id}")),
            "GET /api/v1/titles/{id}"
        );
        assert_eq!(operation("BREW", None), "other other");
    }
}
