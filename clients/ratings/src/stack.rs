//! The ratings client's tower stack, assembled once per client, outermost
//! layer first; each layer's state lives in the [`Dependency`], shared by
//! every clone of the client.

use fleet_rpc::{Dependency, RpcService};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

/// The stack every ratings call goes through.
pub(crate) fn build(dep: &Dependency) -> RpcService {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            // Every call counted once — outcome, latency, in flight — so the
            // refusals of the layers below show in metrics and the stream.
            .layer(dep.metrics_layer())
            // The caller's remaining budget (minus the hop margin) bounds
            // everything below; a budget already spent is refused unsent and
            // counts against nothing (it is the caller's, not ratings's).
            .layer(dep.deadline_layer())
            // At most `RATINGS_BULKHEAD` calls in flight; beyond that refused
            // at once, so a slow ratings cannot hold every task of this service.
            .layer(dep.bulkhead_layer())
            // One circuit per operation: a hard-down ratings is cut off within a
            // second at 100 req/s and tried again once per sleep window.
            // Caller mistakes and refusals never count against it.
            .layer(dep.breaker_layer())
            // Version routing, once per call: this client's interface major,
            // then a pin (`RATINGS_PIN`, else `x-version-ratings`), else the
            // live route table; an unknown pinned version is the caller's
            // mistake.
            .layer(dep.route_layer())
            // At most one retry (`RATINGS_RETRIES`) of an idempotent call's
            // gateway failure, on another instance, after the server's
            // pushback or a jittered backoff, within the retry budget
            // (10 % of requests) and the deadline.
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
