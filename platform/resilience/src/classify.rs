//! What an outcome means, decided in one place.
//!
//! The breaker, the outlier detector, the retry policy and the metrics
//! layer all ask a [`Classify`] implementation instead of matching errors
//! inline, so "a NotFound is not a failure" or "UNAVAILABLE from deeper
//! down ejects nobody" is written once, where the error types are known
//! (`fleet-rpc`'s `GrpcClassifier` for the driver clients).

use std::time::Duration;

use crate::BoxError;
use crate::window::Outcome;

/// The meaning of one call's (or one attempt's) outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Answered successfully.
    Success,
    /// The caller's mistake, or an answer about the data rather than the
    /// dependency's health: NotFound, InvalidArgument, AlreadyExists,
    /// FailedPrecondition, a pin to a version nothing runs, the caller's own
    /// deadline spent before sending. `answered` is true when the dependency
    /// answered it (which proves it is alive), false when it was refused
    /// here without a call.
    CallerError {
        /// The dependency itself answered.
        answered: bool,
    },
    /// Refused here before sending: a full bulkhead or an open circuit.
    /// Says nothing new about the dependency.
    LocalRefusal,
    /// The deadline passed while waiting for the dependency.
    Timeout,
    /// The instance failed. `gateway` for the failures Envoy calls gateway
    /// failures (connection refused or reset, UNAVAILABLE from the instance
    /// itself): worth another instance, and evidence against this one.
    /// Otherwise (INTERNAL, …) neither.
    InstanceFailure {
        /// A gateway failure (retryable, counts towards ejection).
        gateway: bool,
    },
    /// The instance refused the call at admission (gRPC
    /// `RESOURCE_EXHAUSTED`: its concurrency limit, or a budget shorter
    /// than the operation's median) — pushback, not sickness. As Envoy's
    /// outlier detection counts gateway failures and not 429s, it counts
    /// against no circuit and ejects nobody; it is retried on another
    /// instance only when the server said after how long (gRPC A6
    /// `grpc-retry-pushback-ms` ≥ 0), never sooner.
    Overloaded,
    /// The instance answered that something *behind* it failed (it marks
    /// such errors). The operation failed, but this instance is healthy and
    /// another instance would meet the same deeper failure: not retried
    /// here, ejects nobody.
    Downstream,
}

impl Class {
    /// What the circuit breaker records: `None` for outcomes that must not
    /// count at all (caller mistakes not sent, local refusals).
    pub fn breaker_outcome(self) -> Option<Outcome> {
        match self {
            Self::Success | Self::CallerError { answered: true } => Some(Outcome::Success),
            Self::CallerError { answered: false } | Self::LocalRefusal | Self::Overloaded => None,
            Self::Timeout => Some(Outcome::Timeout),
            Self::InstanceFailure { .. } | Self::Downstream => Some(Outcome::Failure),
        }
    }

    /// What outlier detection learns about the instance that answered:
    /// `Some(false)` a gateway failure, `Some(true)` a real answer (resets
    /// the consecutive count), `None` nothing (never reached it).
    pub fn instance_health(self) -> Option<bool> {
        match self {
            Self::Timeout | Self::InstanceFailure { gateway: true } => Some(false),
            Self::Success
            | Self::CallerError { answered: true }
            | Self::Downstream
            | Self::InstanceFailure { gateway: false } => Some(true),
            // Neither evidence against the instance nor of its health: a
            // refusal says nothing about whether it would have served.
            Self::CallerError { answered: false } | Self::LocalRefusal | Self::Overloaded => None,
        }
    }

    /// Whether another instance might succeed: gateway failures only. (An
    /// [`Class::Overloaded`] refusal may be retried too, but only on the
    /// server's pushback: the retry policy decides it.)
    pub fn retryable(self) -> bool {
        matches!(self, Self::InstanceFailure { gateway: true })
    }

    /// The outcome the per-operation stats record.
    pub fn stats_outcome(self) -> Outcome {
        match self {
            Self::Success | Self::CallerError { .. } => Outcome::Success,
            Self::LocalRefusal | Self::Overloaded => Outcome::Rejected,
            Self::Timeout => Outcome::Timeout,
            Self::InstanceFailure { .. } | Self::Downstream => Outcome::Failure,
        }
    }
}

/// The server's advice on retrying (gRPC `grpc-retry-pushback-ms`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pushback {
    /// No advice: the policy's own backoff.
    #[default]
    None,
    /// Retry no sooner than this.
    After(Duration),
    /// Do not retry (a negative or unreadable pushback, per gRPC A6).
    Stop,
}

/// Decides what an error means; one implementation per protocol.
pub trait Classify: Clone + Send + Sync + 'static {
    /// The class of a failed call or attempt.
    fn classify(&self, error: &BoxError) -> Class;

    /// A short, low-cardinality label for metrics (a gRPC code name).
    fn label(&self, error: &BoxError) -> &'static str;

    /// The server's retry advice carried by the error, if any.
    fn pushback(&self, _error: &BoxError) -> Pushback {
        Pushback::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_mistakes_and_refusals_count_against_nothing() {
        for c in [Class::CallerError { answered: false }, Class::LocalRefusal] {
            assert_eq!(c.breaker_outcome(), None, "{c:?}");
            assert_eq!(c.instance_health(), None, "{c:?}");
            assert!(!c.retryable());
        }
        let answered = Class::CallerError { answered: true };
        assert_eq!(answered.breaker_outcome(), Some(Outcome::Success));
        assert_eq!(answered.instance_health(), Some(true));
    }

    #[test]
    fn admission_pushback_counts_against_no_circuit_and_no_instance() {
        let c = Class::Overloaded;
        assert_eq!(c.breaker_outcome(), None);
        assert_eq!(c.instance_health(), None);
        assert!(!c.retryable(), "only on the server's pushback");
        assert_eq!(c.stats_outcome(), Outcome::Rejected);
    }

    #[test]
    fn a_deeper_failure_fails_the_call_but_not_the_instance() {
        let c = Class::Downstream;
        assert_eq!(c.breaker_outcome(), Some(Outcome::Failure));
        assert_eq!(c.instance_health(), Some(true));
        assert!(!c.retryable());
        let g = Class::InstanceFailure { gateway: true };
        assert_eq!(g.instance_health(), Some(false));
        assert!(g.retryable());
    }
}
