//! The one tower stack every call to a dependency goes through.
//!
//! Every driver client calls through [`Dependency::unary`], which builds
//! this stack once per dependency (its layers' state — circuits, budget,
//! bulkhead, outlier records, metrics — lives in the [`Dependency`] and is
//! shared by every clone of the client). `<DEP>` below is the dependency's
//! name in upper case, as its settings are read ([`crate::DependencyConfig`]).

use bytes::Bytes;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use fleet_resilience::BoxError;

use crate::call::Call;
use crate::dependency::Dependency;

/// An assembled stack: encoded request in, encoded answer out, built once
/// per dependency and cloned per call.
pub type RpcService = BoxCloneSyncService<Call, Bytes, BoxError>;

/// The stack over `dep`, outermost layer first.
pub fn build(dep: &Dependency) -> RpcService {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            // Every call counted once — outcome, latency, in flight — so the
            // refusals of the layers below show in metrics and the stream.
            .layer(dep.metrics_layer())
            // The caller's remaining budget (minus the hop margin) bounds
            // everything below; a budget already spent is refused unsent and
            // counts against nothing (it is the caller's, not the
            // dependency's).
            .layer(dep.deadline_layer())
            // At most `<DEP>_BULKHEAD` calls in flight; beyond that refused
            // at once, so a slow dependency cannot hold every task of this
            // service.
            .layer(dep.bulkhead_layer())
            // One circuit per operation: a hard-down dependency is cut off
            // within a second at 100 req/s and tried again once per sleep
            // window. Caller mistakes and refusals never count against it.
            .layer(dep.breaker_layer())
            // Version routing, once per call: this client's interface major,
            // then a pin (`<DEP>_PIN`, else `x-version-<dep>`), else the live
            // route table; an unknown pinned version is the caller's mistake.
            .layer(dep.route_layer())
            // At most one retry (`<DEP>_RETRIES`) of an idempotent call's
            // gateway failure ([`crate::Operation::idempotent`]: reads, and
            // writes keyed by the caller's timestamp), on another instance,
            // after the server's pushback or a jittered backoff, within the
            // retry budget (10 % of requests) and the deadline.
            .layer(dep.retry_layer())
            // Power of two choices on decaying peak-EWMA × pending, among
            // the candidates this call has not tried and not ejected.
            .layer(dep.balance_layer())
            // Each attempt's outcome feeds its instance's outlier record
            // (consecutive gateway failures eject it for a while; errors it
            // passes up from deeper down do not).
            .layer(dep.eject_layer())
            // The gRPC attempt on the instance's lazily connected channel:
            // `grpc-timeout`, request id, trace context, pins in metadata.
            .service(dep.endpoint()),
    )
}
