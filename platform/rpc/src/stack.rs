//! The stack type of a driver client, and the reference stack.
//!
//! Each driver client assembles its own stack in its `stack.rs`, outermost
//! layer first, one comment per layer; [`reference`] is the same stack for
//! callers without a driver client of their own (tests, benches, the
//! generic [`crate::Dependency::unary`]).

use bytes::Bytes;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use fleet_resilience::BoxError;

use crate::call::Call;
use crate::dependency::Dependency;

/// A driver client's assembled stack: encoded request in, encoded answer
/// out, built once per client and cloned per call.
pub type RpcService = BoxCloneSyncService<Call, Bytes, BoxError>;

/// The reference stack over `dep`, outermost first.
pub fn reference(dep: &Dependency) -> RpcService {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            // Every call counted once (outcome, latency, in flight), so the
            // refusals of the layers below are counted too.
            .layer(dep.metrics_layer())
            // The caller's remaining budget bounds all below; a spent one is
            // refused unsent (the caller's mistake, not the dependency's).
            .layer(dep.deadline_layer())
            // A full bulkhead refuses at once: one slow dependency cannot
            // hold every task of this service.
            .layer(dep.bulkhead_layer())
            // One circuit per operation: a failing dependency is cut off,
            // then tried again once per sleep window.
            .layer(dep.breaker_layer())
            // Version routing, once per call: interface major, pin, table.
            .layer(dep.route_layer())
            // At most one retry of an idempotent call's gateway failure, on
            // another instance, within the retry budget and the deadline.
            .layer(dep.retry_layer())
            // Power of two choices among candidates not tried, not ejected.
            .layer(dep.balance_layer())
            // Each attempt's outcome feeds its instance's outlier record.
            .layer(dep.eject_layer())
            // The attempt: metadata, deadline, the instance's channel.
            .service(dep.endpoint()),
    )
}
