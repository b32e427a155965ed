//! The metrics layer: every call counted once, with its class, label and
//! latency, and in flight while it runs.
//!
//! Outermost in a driver client's stack so that refusals by the layers
//! below (bulkhead, circuit, deadline) are counted like any other outcome.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::classify::{Class, Classify};
use crate::observe::Observer;
use crate::request::ResilientRequest;
use crate::{BoxError, BoxFuture};

/// The service of [`MetricsLayer`].
#[derive(Clone)]
pub struct Metrics<S, C> {
    inner: S,
    observer: Arc<dyn Observer>,
    classifier: C,
}

/// Reports every call to an [`Observer`].
#[derive(Clone)]
pub struct MetricsLayer<C> {
    observer: Arc<dyn Observer>,
    classifier: C,
}

impl<C> std::fmt::Debug for MetricsLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer").finish_non_exhaustive()
    }
}

impl Metrics<(), ()> {
    /// A layer reporting to `observer`, classifying with `classifier`.
    pub fn layer<C: Classify>(observer: Arc<dyn Observer>, classifier: C) -> MetricsLayer<C> {
        MetricsLayer {
            observer,
            classifier,
        }
    }
}

impl<S, C: Clone> tower::Layer<S> for MetricsLayer<C> {
    type Service = Metrics<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            observer: self.observer.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C, Req> tower::Service<Req> for Metrics<S, C>
where
    Req: ResilientRequest + Send + 'static,
    S: tower::Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    C: Classify,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let op = req.operation();
        let started = Instant::now();
        let observer = self.observer.clone();
        let classifier = self.classifier.clone();
        let in_flight = observer.started(op);
        // Reports once even when the caller drops the call midway.
        let guard = Finished {
            _in_flight: in_flight,
            observer,
            op,
            started,
            class: Class::CallerError { answered: false },
            label: "CANCELLED",
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut guard = guard;
            let result = fut.await.map_err(Into::into);
            (guard.class, guard.label) = match &result {
                Ok(_) => (Class::Success, "OK"),
                Err(e) => (classifier.classify(e), classifier.label(e)),
            };
            drop(guard);
            result
        })
    }
}

struct Finished {
    _in_flight: Option<Box<dyn Send>>,
    observer: Arc<dyn Observer>,
    op: &'static str,
    started: Instant,
    class: Class,
    label: &'static str,
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.observer
            .finished(self.op, self.class, self.label, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestRequest, TextClassifier, failing, gate};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::{Layer, ServiceExt};

    #[derive(Default)]
    struct Recorder {
        in_flight: Arc<AtomicUsize>,
        finished: Mutex<Vec<(Class, &'static str, Duration)>>,
    }

    struct Guard(Arc<AtomicUsize>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Observer for Recorder {
        fn started(&self, _: &'static str) -> Option<Box<dyn Send>> {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            Some(Box::new(Guard(self.in_flight.clone())))
        }
        fn finished(&self, _: &'static str, class: Class, label: &'static str, elapsed: Duration) {
            self.finished.lock().unwrap().push((class, label, elapsed));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_is_reported_once_with_its_class_and_is_in_flight_meanwhile() {
        let rec = Arc::new(Recorder::default());
        let layer = Metrics::layer(rec.clone(), TextClassifier);
        let (svc, open) = gate();
        let call = tokio::spawn(layer.layer(svc).oneshot(TestRequest::new("Get")));
        while rec.in_flight.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_millis(30)).await;
        open.open();
        call.await.unwrap().unwrap();
        let _ = layer
            .layer(failing("deeper"))
            .oneshot(TestRequest::new("Get"))
            .await;
        assert_eq!(rec.in_flight.load(Ordering::SeqCst), 0);
        let done = rec.finished.lock().unwrap().clone();
        assert_eq!(
            done,
            vec![
                (Class::Success, "OK", Duration::from_millis(30)),
                (Class::Downstream, "ERROR", Duration::ZERO)
            ]
        );
    }

    #[tokio::test]
    async fn the_layer_is_ready_only_when_its_service_is() {
        let layer = Metrics::layer(Arc::new(Recorder::default()), TextClassifier);
        assert!(format!("{layer:?}").starts_with("MetricsLayer"));
        let mut svc = layer.layer(crate::testing::Unready("busy"));
        let e = ServiceExt::<TestRequest>::ready(&mut svc)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.to_string(), "busy");
    }
}
