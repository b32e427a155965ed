//! The bulkhead layer: at most `limit` calls in flight to one dependency; a
//! call beyond that is refused at once instead of queueing.
//!
//! tower's `ConcurrencyLimit` under `LoadShed` refuses at once too, but it
//! takes its permit in `poll_ready` and reports a shed call as an untyped
//! `Overloaded`, with nothing to say which operation was refused. This layer
//! takes the permit in `call` (one `try_acquire` on a shared semaphore), so
//! the refusal is a typed [`BulkheadError`] reported per operation, and the
//! layer can say how many slots are in use for `/admin/stream`. The permit
//! is held until the call (retries included) is over.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;

use crate::observe::Observer;
use crate::request::ResilientRequest;
use crate::{BoxError, BoxFuture};

/// A call refused because the bulkhead is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BulkheadError {
    /// Every slot was taken.
    #[error("bulkhead full ({limit} calls in flight)")]
    Full {
        /// The limit that was reached.
        limit: usize,
    },
}

/// The service of [`BulkheadLayer`].
#[derive(Clone)]
pub struct Bulkhead<S> {
    inner: S,
    layer: BulkheadLayer,
}

/// One dependency's concurrency limit (clones share the slots).
#[derive(Clone)]
pub struct BulkheadLayer {
    semaphore: Arc<Semaphore>,
    limit: usize,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for BulkheadLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("limit", &self.limit)
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

impl Bulkhead<()> {
    /// A bulkhead admitting `limit` concurrent calls (at least 1), reporting
    /// refusals to `observer`.
    pub fn layer(limit: usize, observer: Arc<dyn Observer>) -> BulkheadLayer {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        BulkheadLayer {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
            observer,
        }
    }
}

impl BulkheadLayer {
    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.limit - self.semaphore.available_permits()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl<S> tower::Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            layer: self.clone(),
        }
    }
}

impl<S, Req> tower::Service<Req> for Bulkhead<S>
where
    Req: ResilientRequest + Send + 'static,
    S: tower::Service<Req> + Send + 'static,
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

    fn call(&mut self, req: Req) -> Self::Future {
        let Ok(permit) = self.layer.semaphore.clone().try_acquire_owned() else {
            self.layer
                .observer
                .refused(req.operation(), "bulkhead_full");
            let limit = self.layer.limit;
            return Box::pin(async move { Err(BulkheadError::Full { limit }.into()) });
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            drop(permit);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::NoObserver;
    use crate::testing::{TestRequest, gate};
    use tower::{Layer, ServiceExt};

    /// Lets the spawned calls run until `done` holds (a bounded wait: a
    /// slot count that never gets there fails the test, it does not hang).
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..1_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the calls never took their slots");
    }

    #[tokio::test]
    async fn a_full_bulkhead_refuses_at_once_and_frees_slots_when_calls_end() {
        let (svc, release) = gate();
        let layer = Bulkhead::layer(2, Arc::new(NoObserver));
        let svc = layer.layer(svc);
        let a = tokio::spawn(svc.clone().oneshot(TestRequest::new("Get")));
        let b = tokio::spawn(svc.clone().oneshot(TestRequest::new("Get")));
        settle(|| layer.in_use() == 2).await;
        let refused = svc.clone().oneshot(TestRequest::new("Get")).await;
        let e = refused.unwrap_err();
        assert_eq!(
            e.downcast_ref::<BulkheadError>(),
            Some(&BulkheadError::Full { limit: 2 })
        );
        release.open();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        assert_eq!(layer.in_use(), 0);
        let (svc2, release2) = gate();
        let next = tokio::spawn(layer.layer(svc2).oneshot(TestRequest::new("Get")));
        settle(|| layer.in_use() == 1).await;
        release2.open();
        next.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn separate_bulkheads_do_not_share_slots() {
        let slow = Bulkhead::layer(1, Arc::new(NoObserver));
        let fast = Bulkhead::layer(1, Arc::new(NoObserver));
        let (held, _release) = gate();
        let _stuck = tokio::spawn(slow.layer(held).oneshot(TestRequest::new("Get")));
        settle(|| slow.in_use() == 1).await;
        let (ok, release) = gate();
        let call = tokio::spawn(fast.layer(ok).oneshot(TestRequest::new("Get")));
        settle(|| fast.in_use() == 1).await;
        release.open();
        assert!(
            call.await.unwrap().is_ok(),
            "one dependency cannot starve another"
        );
    }

    #[tokio::test]
    async fn the_layer_reports_its_limit_and_slots_and_passes_readiness_on() {
        let layer = Bulkhead::layer(3, Arc::new(NoObserver));
        assert_eq!(layer.limit(), 3);
        let (held, _release) = gate();
        let _call = tokio::spawn(layer.layer(held).oneshot(TestRequest::new("Get")));
        settle(|| layer.in_use() == 1).await;
        let debug = format!("{layer:?}");
        assert!(
            debug.starts_with("BulkheadLayer") && debug.contains("limit: 3, in_use: 1"),
            "{debug}"
        );
        assert_eq!(Bulkhead::layer(0, Arc::new(NoObserver)).limit(), 1);
        let mut svc = layer.layer(crate::testing::Unready("busy"));
        let e = ServiceExt::<TestRequest>::ready(&mut svc)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.to_string(), "busy");
    }
}
