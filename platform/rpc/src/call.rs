//! [`Call`]: one call as it travels down a driver client's stack, and
//! [`unary`], the typed entry point every driver-client method uses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tower::ServiceExt;

use fleet_context::RequestContext;
use fleet_resilience::request::{Attempts, ResilientRequest};

use crate::classify::into_rpc_error;
use crate::config::DependencyConfig;
use crate::error::RpcError;
use crate::instance::InstanceId;
use crate::stack::RpcService;

/// A gRPC method of a dependency.
#[derive(Debug)]
pub struct Operation {
    /// Full path, e.g. `/catalog.v1.Catalog/GetTitle`.
    pub path: &'static str,
    /// Method name for metrics and its circuit, e.g. `GetTitle`.
    pub name: &'static str,
    /// Safe to send twice (reads, and writes keyed by a caller timestamp).
    pub idempotent: bool,
}

/// A `static` [`Operation`] of a gRPC service, its path built from the
/// service and method names:
/// `operation!("catalog.v1.Catalog", "GetTitle", idempotent)`, or without
/// `idempotent` for a method that must never be sent twice.
#[macro_export]
macro_rules! operation {
    ($service:literal, $method:literal, idempotent) => {
        $crate::Operation::new(concat!("/", $service, "/", $method), $method, true)
    };
    ($service:literal, $method:literal) => {
        $crate::Operation::new(concat!("/", $service, "/", $method), $method, false)
    };
}

impl Operation {
    /// Describes a method.
    pub const fn new(path: &'static str, name: &'static str, idempotent: bool) -> Self {
        Self {
            path,
            name,
            idempotent,
        }
    }
}

/// Per-call settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallOptions {
    /// A deadline for this call, on top of (never beyond) the caller's own.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// A call bounded by `timeout`.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
        }
    }
}

/// One call in a driver client's stack (cloned by the retry layer; clones
/// share their [`Attempts`]).
#[derive(Clone, Debug)]
pub struct Call {
    pub(crate) op: &'static Operation,
    pub(crate) body: Bytes,
    pub(crate) deadline: Instant,
    pub(crate) cx: Option<RequestContext>,
    pub(crate) candidates: Arc<[InstanceId]>,
    pub(crate) fallbacks: Arc<[InstanceId]>,
    pub(crate) attempts: Attempts<InstanceId>,
}

impl ResilientRequest for Call {
    type Key = InstanceId;

    fn operation(&self) -> &'static str {
        self.op.name
    }

    fn idempotent(&self) -> bool {
        self.op.idempotent
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn candidates(&self) -> &[InstanceId] {
        &self.candidates
    }

    fn fallbacks(&self) -> &[InstanceId] {
        &self.fallbacks
    }

    fn attempts(&self) -> &Attempts<InstanceId> {
        &self.attempts
    }
}

/// Calls `op` through `stack`: encodes `message`, sets the deadline (the
/// earlier of `opts.timeout` — else the configured request timeout — and
/// the ambient request's deadline minus the hop margin), runs the stack,
/// decodes the answer.
///
/// # Errors
/// [`RpcError`].
pub(crate) async fn unary<Req, Resp>(
    stack: &RpcService,
    config: &DependencyConfig,
    op: &'static Operation,
    message: Req,
    opts: CallOptions,
) -> Result<Resp, RpcError>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let now = Instant::now();
    let cx = RequestContext::current();
    let call = Call {
        op,
        body: Bytes::from(message.encode_to_vec()),
        deadline: effective_deadline(config, cx.as_ref(), opts, now),
        cx,
        candidates: Arc::from(Vec::new()),
        fallbacks: Arc::from(Vec::new()),
        attempts: Attempts::default(),
    };
    let result = stack.clone().oneshot(call).await;
    match result {
        Ok(bytes) => Resp::decode(bytes).map_err(|e| RpcError::Internal {
            dependency: config.name,
            message: format!("undecodable {} answer: {e}", op.name),
        }),
        Err(e) => {
            let error = into_rpc_error(config.name, e);
            tracing::debug!(dependency = config.name, operation = op.name, %error, "call failed");
            Err(error)
        }
    }
}

/// The earlier of this call's own timeout and the caller's remaining budget
/// minus the hop margin.
pub(crate) fn effective_deadline(
    cfg: &DependencyConfig,
    cx: Option<&RequestContext>,
    opts: CallOptions,
    now: Instant,
) -> Instant {
    let own = now + opts.timeout.unwrap_or(cfg.request_timeout);
    match cx.and_then(RequestContext::deadline) {
        Some(d) => own.min(d.checked_sub(cfg.hop_margin).unwrap_or(now)),
        None => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_remaining_budget_minus_the_margin_wins() {
        let cfg = DependencyConfig::new("dal", "catalog", 1);
        let now = Instant::now();
        let cx = RequestContext::new().with_deadline(now + Duration::from_millis(100));
        let d = effective_deadline(&cfg, Some(&cx), CallOptions::default(), now);
        assert_eq!(d, now + Duration::from_millis(95));
        let d = effective_deadline(
            &cfg,
            Some(&cx),
            CallOptions::timeout(Duration::from_millis(20)),
            now,
        );
        assert_eq!(d, now + Duration::from_millis(20));
        let d = effective_deadline(&cfg, None, CallOptions::default(), now);
        assert_eq!(d, now + Duration::from_secs(1));
    }

    #[test]
    fn an_operation_is_named_by_its_service_and_method() {
        static READ: Operation = crate::operation!("catalog.v1.Catalog", "GetTitle", idempotent);
        static WRITE: Operation = crate::operation!("x.v1.X", "Charge");
        assert_eq!(READ.path, "/catalog.v1.Catalog/GetTitle");
        assert_eq!(READ.name, "GetTitle");
        assert!(READ.idempotent);
        assert_eq!(WRITE.path, "/x.v1.X/Charge");
        assert!(!WRITE.idempotent);
    }
}
