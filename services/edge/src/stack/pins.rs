//! Layer: public version pins name versions that exist.
//!
//! A client may pin the catalog or ratings version it wants
//! (`x-version-catalog: 1.3`). A pin is honoured only for a `major.minor`
//! that discovery currently lists (an instance runs it) or the live route
//! table names; any other — `1.99`, `banana` — is refused here with 400
//! `unknown_version` before any backend is called, so a flood of made-up
//! pins costs no dependency call, no breaker state and no other client
//! anything. (Internal services' pins never get this far from a public
//! client: the context layer drops them.)

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleet_context::RequestContext;
use fleet_rpc::{Dependency, MajorMinor};

use crate::error::ApiError;

/// One pinnable service: its pin header and the clients that know its
/// instances and route tables.
#[derive(Clone, Debug)]
pub struct Pinnable {
    /// `x-version-<service>`.
    pub header: &'static str,
    /// Every driver client of the service (e.g. catalog v1 and v2).
    pub dependencies: Vec<Dependency>,
}

impl Pinnable {
    /// The versions a pin may name right now: those of listed instances
    /// (of the majors its clients speak) and those the route tables weigh.
    pub fn known_versions(&self) -> BTreeSet<MajorMinor> {
        let mut known = BTreeSet::new();
        for dep in &self.dependencies {
            known.extend(dep.instances().iter().map(|i| MajorMinor {
                major: i.version.major,
                minor: i.version.minor,
            }));
            if let Some(t) = dep.route_table() {
                known.extend(t.weights.keys().filter_map(|v| MajorMinor::parse(v)));
            }
        }
        known
    }
}

/// The pinnable services.
#[derive(Clone, Debug)]
pub struct PinState {
    /// One entry per public pin header.
    pub services: Vec<Pinnable>,
}

/// The middleware (see the module docs).
pub async fn layer(State(state): State<Arc<PinState>>, req: Request, next: Next) -> Response {
    if let Some(cx) = RequestContext::current() {
        for s in &state.services {
            let Some(value) = cx.propagated(s.header) else {
                continue;
            };
            let text = value.to_str().unwrap_or("");
            let known = MajorMinor::parse(text).is_some_and(|v| s.known_versions().contains(&v));
            if !known {
                let service = s
                    .header
                    .trim_start_matches(fleet_context::headers::VERSION_PIN_PREFIX);
                tracing::info!(pin = s.header, value = %text.escape_debug(), "unknown version pin refused");
                return ApiError::unknown_version(service).into_response();
            }
        }
    }
    next.run(req).await
}
