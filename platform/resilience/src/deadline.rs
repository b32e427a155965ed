//! The deadline layer: a call whose deadline has already passed is refused
//! without being sent, and no call outlives its deadline.
//!
//! tower's `Timeout` applies one fixed duration to every request; here each
//! request carries its own deadline (the caller's remaining budget minus
//! the hop margin), so this small layer reads it from the request. The
//! endpoint bounds each attempt by the same deadline, so a timed-out
//! attempt is seen (and classified) by the layers above it; this layer is
//! the outer guarantee, covering retry backoffs too.

use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::request::ResilientRequest;
use crate::{BoxError, BoxFuture};

/// Why the deadline layer ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    /// The deadline had passed before the call was made: the caller's own
    /// budget was spent, nothing was sent.
    #[error("deadline already passed; nothing sent")]
    Spent,
    /// The deadline passed while the call was under way.
    #[error("deadline passed")]
    Elapsed,
}

/// The service of [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

/// Enforces each request's deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl Deadline<()> {
    /// The layer (deadlines come from the requests).
    pub fn layer() -> DeadlineLayer {
        DeadlineLayer
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

impl<S, Req> tower::Service<Req> for Deadline<S>
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
        let deadline = req.deadline();
        if deadline <= Instant::now() {
            return Box::pin(async { Err(DeadlineError::Spent.into()) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(DeadlineError::Elapsed.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestRequest, gate};
    use std::time::Duration;
    use tower::{Layer, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn a_spent_deadline_is_refused_unsent_and_a_late_call_is_cut_off() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let svc = Deadline::layer().layer(tower::service_fn(move |_r: TestRequest| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<(), BoxError>(()) }
        }));
        let mut spent = TestRequest::new("Get");
        spent.deadline = Instant::now();
        let e = svc.clone().oneshot(spent).await.unwrap_err();
        assert_eq!(e.downcast_ref(), Some(&DeadlineError::Spent));
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing sent"
        );

        let (never, _gate) = gate();
        let mut req = TestRequest::new("Get");
        req.deadline = Instant::now() + Duration::from_millis(150);
        let started = Instant::now();
        let e = Deadline::layer()
            .layer(never)
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(e.downcast_ref(), Some(&DeadlineError::Elapsed));
        assert_eq!(started.elapsed(), Duration::from_millis(150));
    }

    #[tokio::test]
    async fn the_layer_is_ready_only_when_its_service_is() {
        let mut svc = Deadline::layer().layer(crate::testing::Unready("busy"));
        let e = ServiceExt::<TestRequest>::ready(&mut svc)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.to_string(), "busy");
    }
}
