//! Keeps infrastructure calls (gRPC health and reflection) out of a stack
//! of layers meant for the service's own methods.
//!
//! Fault rules, the concurrency limit and admission are for real work: a
//! game-day delay on "everything" must not make health checks time out
//! (which would mark every instance down at once), and an overloaded
//! instance must still say truthfully whether it is serving.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt as _};

use crate::methods::is_infrastructure;

/// Applies `guarded` to every call except health and reflection.
#[derive(Clone, Debug)]
pub struct ExemptInfrastructureLayer<L> {
    guarded: L,
}

impl<L> ExemptInfrastructureLayer<L> {
    /// Wraps the layers that infrastructure calls bypass.
    pub fn new(guarded: L) -> Self {
        Self { guarded }
    }
}

impl<S: Clone, L: Layer<S>> Layer<S> for ExemptInfrastructureLayer<L> {
    type Service = ExemptInfrastructure<L::Service, S>;
    fn layer(&self, inner: S) -> Self::Service {
        ExemptInfrastructure {
            guarded: self.guarded.layer(inner.clone()),
            plain: inner,
        }
    }
}

/// The service of [`ExemptInfrastructureLayer`].
#[derive(Clone, Debug)]
pub struct ExemptInfrastructure<G, S> {
    guarded: G,
    plain: S,
}

impl<G, S, B, R, E> Service<http::Request<B>> for ExemptInfrastructure<G, S>
where
    G: Service<http::Request<B>, Response = R, Error = E> + Clone + Send + 'static,
    G::Future: Send + 'static,
    S: Service<http::Request<B>, Response = R, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    type Response = R;
    type Error = E;
    type Future = BoxFuture<'static, Result<R, E>>;

    /// Always ready: each call drives its own clone of the chosen path to
    /// readiness (`oneshot`), so neither path is reserved and left unused.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if is_infrastructure(req.uri().path()) {
            Box::pin(self.plain.clone().oneshot(req))
        } else {
            Box::pin(self.guarded.clone().oneshot(req))
        }
    }
}
