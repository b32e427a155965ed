//! The route layer: which instances a call may go to — the client's
//! interface major, then a pin (the client's `<DEP>_PIN`, else the
//! request's `x-version-<dep>` header), else the live route table — set on
//! the call once, for all its attempts (see [`crate::routing`]). When the
//! route table chose the version, the other live versions' instances are
//! the call's fallbacks: a retry goes there once every instance of the
//! chosen version was tried (a pin has no fallback).

use std::sync::Arc;
use std::task::{Context, Poll};

use fleet_resilience::{BoxError, BoxFuture};

use crate::call::Call;
use crate::dependency::Shared;
use crate::error::RpcError;

/// A call the route layer could not place.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The request pinned a version no instance runs: the caller's
    /// mistake, counted against nothing (the caller sees
    /// `InvalidArgument`).
    #[error("{message}")]
    UnknownVersion {
        /// Which pin and dependency.
        message: String,
    },
    /// No instance is eligible (none of the interface major, or none of
    /// the configured pin): the dependency is down for this client.
    #[error(transparent)]
    NoInstances(RpcError),
}

/// The service of [`RouteLayer`].
#[derive(Clone)]
pub struct Route<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Routes each call to its candidate instances.
#[derive(Clone)]
pub struct RouteLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for RouteLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLayer").finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = Route<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Route {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl<S> tower::Service<Call> for Route<S>
where
    S: tower::Service<Call> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Call) -> Self::Future {
        self.shared.refresh();
        match self.shared.routed(req.cx.as_ref()) {
            Ok(routed) => {
                req.candidates = routed.primary.into();
                req.fallbacks = routed.fallback.into();
                let fut = self.inner.call(req);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Err(e) => Box::pin(async move { Err(e.into()) }),
        }
    }
}
