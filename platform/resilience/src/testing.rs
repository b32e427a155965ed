//! Test requests and services for the layers' unit tests.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::BoxError;
use crate::request::{Attempts, ResilientRequest};

#[derive(Clone, Debug)]
pub(crate) struct TestRequest {
    pub op: &'static str,
    pub idempotent: bool,
    pub deadline: Instant,
    pub candidates: Vec<String>,
    pub fallbacks: Vec<String>,
    pub attempts: Attempts<String>,
}

impl TestRequest {
    pub fn new(op: &'static str) -> Self {
        Self {
            op,
            idempotent: true,
            deadline: Instant::now() + Duration::from_secs(10),
            candidates: vec!["a".into(), "b".into()],
            fallbacks: Vec::new(),
            attempts: Attempts::default(),
        }
    }
}

impl ResilientRequest for TestRequest {
    type Key = String;
    fn operation(&self) -> &'static str {
        self.op
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
    fn candidates(&self) -> &[String] {
        &self.candidates
    }
    fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }
    fn attempts(&self) -> &Attempts<String> {
        &self.attempts
    }
}

/// Opens a [`gate`].
pub(crate) struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn open(&self) {
        let _ = self.0.send(true);
    }
}

/// A service whose calls all wait until the gate opens, then succeed.
pub(crate) fn gate() -> (
    impl tower::Service<
        TestRequest,
        Response = (),
        Error = BoxError,
        Future = impl Future<Output = Result<(), BoxError>> + Send,
    > + Clone
    + Send
    + 'static,
    Gate,
) {
    let (tx, rx) = watch::channel(false);
    let svc = tower::service_fn(move |_req: TestRequest| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|open| *open).await;
            Ok::<(), BoxError>(())
        }
    });
    (svc, Gate(tx))
}

/// Classifies test errors by their text: `caller` is a caller mistake
/// refused unsent, `notfound` one the dependency answered, `deeper` a
/// failure from deeper down, `overloaded` an admission refusal, anything
/// else a gateway failure.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TextClassifier;

impl crate::classify::Classify for TextClassifier {
    fn classify(&self, e: &BoxError) -> crate::classify::Class {
        use crate::classify::Class;
        if let Some(d) = e.downcast_ref::<crate::deadline::DeadlineError>() {
            return match d {
                crate::deadline::DeadlineError::Spent => Class::CallerError { answered: false },
                crate::deadline::DeadlineError::Elapsed => Class::Timeout,
            };
        }
        match e.to_string().as_str() {
            "caller" => Class::CallerError { answered: false },
            "notfound" => Class::CallerError { answered: true },
            "deeper" => Class::Downstream,
            "overloaded" => Class::Overloaded,
            _ => Class::InstanceFailure { gateway: true },
        }
    }

    fn label(&self, _: &BoxError) -> &'static str {
        "ERROR"
    }
}

/// A service failing every call with `text`.
pub(crate) fn failing(
    text: &'static str,
) -> impl tower::Service<
    TestRequest,
    Response = (),
    Error = BoxError,
    Future = impl Future<Output = Result<(), BoxError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_req: TestRequest| async move { Err::<(), BoxError>(text.into()) })
}

/// A service that is never ready: its `poll_ready` fails with `text` (a
/// layer must pass its inner service's readiness on, not claim its own).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unready(pub &'static str);

impl tower::Service<TestRequest> for Unready {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Err(self.0.into()))
    }

    fn call(&mut self, _req: TestRequest) -> Self::Future {
        std::future::ready(Ok(()))
    }
}
