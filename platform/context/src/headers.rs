//! Header names the system uses across hops (HTTP and gRPC metadata alike).

use http::HeaderName;

/// Request id, generated at the edge when the client sends none.
pub const REQUEST_ID: &str = "x-request-id";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";
/// gRPC deadline: the remaining budget of the caller, minus its margin.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The name of the calling service (used by fault scopes and metrics).
pub const CALLER: &str = "x-fleet-caller";
/// The key that sticky cohort routing hashes (the user id at the edge).
pub const COHORT_KEY: &str = "x-fleet-cohort";
/// Prefix of version pin headers, e.g. `x-version-catalog: 1.3`.
pub const VERSION_PIN_PREFIX: &str = "x-version-";
/// Prefix of game-day fault scope headers, e.g. `x-fleet-fault: drill-7`.
/// The edge strips them from clients that are not game-day clients.
pub const FAULT_PREFIX: &str = "x-fleet-fault";
/// Response header naming the instance that served (service/version/id).
pub const SERVED_BY: &str = "x-fleet-served-by";

/// True for headers copied unchanged onto every downstream call.
pub fn is_propagated(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with(VERSION_PIN_PREFIX) || n.starts_with(FAULT_PREFIX) || n == TRACESTATE
}
