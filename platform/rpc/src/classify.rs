//! [`GrpcClassifier`]: what each error of a driver client's stack means,
//! for the breaker, outlier ejection, retries and metrics alike.

use std::time::Duration;

use fleet_resilience::BoxError;
use fleet_resilience::balance::BalanceError;
use fleet_resilience::breaker::BreakerError;
use fleet_resilience::bulkhead::BulkheadError;
use fleet_resilience::classify::{Class, Classify, Pushback};
use fleet_resilience::deadline::DeadlineError;

use crate::error::{RpcError, Unavailable};
use crate::route::RouteError;

/// Metadata a server adds to an error it passes up from one of its own
/// dependencies (`RpcError::to_status`): the failure is deeper than the
/// instance that answered.
pub const ORIGIN_HEADER: &str = "x-fleet-origin";
/// The value of [`ORIGIN_HEADER`] for such errors.
pub const ORIGIN_DOWNSTREAM: &str = "downstream";
/// gRPC's retry pushback (A6): milliseconds to wait before retrying; a
/// negative or unreadable value means "do not retry".
pub const PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";
/// gRPC's count of earlier attempts of this call (A6), sent on retries.
pub const PREVIOUS_ATTEMPTS_HEADER: &str = "grpc-previous-rpc-attempts";

/// One attempt's failure as the endpoint saw it: the error, and what the
/// answer's metadata said about it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub(crate) struct AttemptError {
    pub error: RpcError,
    /// The instance said the failure came from deeper down.
    pub downstream: bool,
    /// The instance's retry advice.
    pub pushback: Pushback,
}

/// Parses `grpc-retry-pushback-ms`.
pub(crate) fn parse_pushback(value: Option<&str>) -> Pushback {
    match value.map(|v| v.trim().parse::<i64>()) {
        None => Pushback::None,
        Some(Ok(ms)) if ms >= 0 => {
            Pushback::After(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        }
        Some(_) => Pushback::Stop,
    }
}

/// Classifies the errors of a driver client's stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcClassifier;

fn class_of(error: &RpcError, downstream: bool) -> Class {
    match error {
        RpcError::NotFound { .. }
        | RpcError::InvalidArgument { .. }
        | RpcError::Conflict { .. } => Class::CallerError { answered: true },
        _ if downstream => Class::Downstream,
        RpcError::DeadlineExceeded { .. } => Class::Timeout,
        RpcError::Unavailable { reason, .. } => match reason {
            Unavailable::Transport | Unavailable::Server => {
                Class::InstanceFailure { gateway: true }
            }
            // Admission control's pushback: not the instance's sickness.
            Unavailable::Overloaded => Class::Overloaded,
            Unavailable::CircuitOpen | Unavailable::BulkheadFull => Class::LocalRefusal,
            // Nothing to call: the dependency is down for us, but no
            // instance is to blame and none could be retried.
            Unavailable::NoInstances => Class::InstanceFailure { gateway: false },
        },
        RpcError::Internal { .. } => Class::InstanceFailure { gateway: false },
    }
}

impl Classify for GrpcClassifier {
    fn classify(&self, e: &BoxError) -> Class {
        if let Some(a) = e.downcast_ref::<AttemptError>() {
            return class_of(&a.error, a.downstream);
        }
        if let Some(r) = e.downcast_ref::<RpcError>() {
            return class_of(r, false);
        }
        match e.downcast_ref::<RouteError>() {
            // A pin to a version nothing runs: refused here, the caller's.
            Some(RouteError::UnknownVersion { .. }) => {
                return Class::CallerError { answered: false };
            }
            Some(RouteError::NoInstances(r)) => return class_of(r, false),
            None => {}
        }
        if e.is::<BulkheadError>() || e.is::<BreakerError>() {
            return Class::LocalRefusal;
        }
        match e.downcast_ref::<DeadlineError>() {
            // The caller's own budget was gone before anything was sent.
            Some(DeadlineError::Spent) => Class::CallerError { answered: false },
            Some(DeadlineError::Elapsed) => Class::Timeout,
            None if e.is::<BalanceError>() => Class::InstanceFailure { gateway: false },
            None => Class::InstanceFailure { gateway: false },
        }
    }

    fn label(&self, e: &BoxError) -> &'static str {
        if let Some(a) = e.downcast_ref::<AttemptError>() {
            return a.error.code_name();
        }
        if let Some(r) = e.downcast_ref::<RpcError>() {
            return r.code_name();
        }
        match e.downcast_ref::<RouteError>() {
            Some(RouteError::UnknownVersion { .. }) => return "INVALID_ARGUMENT",
            Some(RouteError::NoInstances(_)) => return "UNAVAILABLE",
            None => {}
        }
        if e.is::<DeadlineError>() {
            return "DEADLINE_EXCEEDED";
        }
        if e.is::<BulkheadError>() || e.is::<BreakerError>() || e.is::<BalanceError>() {
            return "UNAVAILABLE";
        }
        "INTERNAL"
    }

    fn pushback(&self, e: &BoxError) -> Pushback {
        e.downcast_ref::<AttemptError>()
            .map_or(Pushback::None, |a| a.pushback)
    }
}

/// The caller's view of a stack error.
pub(crate) fn into_rpc_error(dependency: &'static str, e: BoxError) -> RpcError {
    let e = match e.downcast::<AttemptError>() {
        Ok(a) => return a.error,
        Err(e) => e,
    };
    let e = match e.downcast::<RpcError>() {
        Ok(r) => return *r,
        Err(e) => e,
    };
    let e = match e.downcast::<RouteError>() {
        Ok(r) => {
            return match *r {
                RouteError::UnknownVersion { message } => RpcError::InvalidArgument {
                    dependency,
                    message,
                },
                RouteError::NoInstances(e) => e,
            };
        }
        Err(e) => e,
    };
    if let Some(BulkheadError::Full { limit }) = e.downcast_ref::<BulkheadError>() {
        return RpcError::Unavailable {
            dependency,
            reason: Unavailable::BulkheadFull,
            message: format!("{dependency}: {limit} calls in flight"),
            retry_after: Some(Duration::from_millis(100)),
        };
    }
    if let Some(BreakerError::Open { retry_after }) = e.downcast_ref::<BreakerError>() {
        return RpcError::Unavailable {
            dependency,
            reason: Unavailable::CircuitOpen,
            message: format!("{dependency}: circuit open"),
            retry_after: Some((*retry_after).max(Duration::from_secs(1))),
        };
    }
    if e.is::<DeadlineError>() {
        return RpcError::DeadlineExceeded { dependency };
    }
    if e.is::<BalanceError>() {
        return RpcError::Unavailable {
            dependency,
            reason: Unavailable::NoInstances,
            message: format!("no {dependency} instance left to try"),
            retry_after: None,
        };
    }
    RpcError::Internal {
        dependency,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
        Box::new(e)
    }

    #[test]
    fn caller_mistakes_refusals_and_deeper_failures_are_told_apart() {
        let c = GrpcClassifier;
        let nf = RpcError::NotFound {
            dependency: "dal",
            message: "t9".into(),
        };
        assert_eq!(
            c.classify(&boxed(nf.clone())),
            Class::CallerError { answered: true }
        );
        let unknown_pin = RpcError::InvalidArgument {
            dependency: "dal",
            message: "no dal 9.9 instance".into(),
        };
        assert_eq!(
            c.classify(&boxed(unknown_pin)).breaker_outcome(),
            Some(fleet_resilience::window::Outcome::Success)
        );
        assert_eq!(
            c.classify(&boxed(DeadlineError::Spent)),
            Class::CallerError { answered: false }
        );
        assert_eq!(
            c.classify(&boxed(BulkheadError::Full { limit: 1 })),
            Class::LocalRefusal
        );
        let down = RpcError::Unavailable {
            dependency: "catalog",
            reason: Unavailable::Server,
            message: "dal is unavailable".into(),
            retry_after: None,
        };
        let deeper = AttemptError {
            error: down.clone(),
            downstream: true,
            pushback: Pushback::None,
        };
        assert_eq!(c.classify(&boxed(deeper)), Class::Downstream);
        let own = AttemptError {
            error: down,
            downstream: false,
            pushback: Pushback::None,
        };
        assert_eq!(
            c.classify(&boxed(own)),
            Class::InstanceFailure { gateway: true }
        );
    }

    #[test]
    fn pushback_follows_grpc_a6() {
        assert_eq!(parse_pushback(None), Pushback::None);
        assert_eq!(
            parse_pushback(Some("250")),
            Pushback::After(Duration::from_millis(250))
        );
        assert_eq!(parse_pushback(Some("-1")), Pushback::Stop);
        assert_eq!(parse_pushback(Some("soon")), Pushback::Stop);
    }
}
