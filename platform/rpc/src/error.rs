//! [`RpcError`]: the one error every driver client returns.

use std::time::Duration;

/// Why a dependency could not serve a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No eligible instance is known.
    NoInstances,
    /// The connection failed (refused, reset, connect timeout).
    Transport,
    /// The instance answered UNAVAILABLE (draining, its store down).
    Server,
    /// The instance refused the call at admission (RESOURCE_EXHAUSTED: its
    /// concurrency limit, or a budget below the operation's median):
    /// pushback, not a failure of the instance. `retry_after` carries its
    /// `grpc-retry-pushback-ms`.
    Overloaded,
    /// The circuit breaker toward this operation is open.
    CircuitOpen,
    /// The bulkhead toward this dependency is full.
    BulkheadFull,
}

/// The error of a call through a driver client. Variants say what the
/// caller can do about it; transport details stay in the logs.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    /// The thing asked for does not exist.
    #[error("{dependency}: not found: {message}")]
    NotFound {
        /// The remote service.
        dependency: &'static str,
        /// The server's message.
        message: String,
    },
    /// The request was rejected as invalid by the callee.
    #[error("{dependency}: invalid argument: {message}")]
    InvalidArgument {
        /// The remote service.
        dependency: &'static str,
        /// The server's message.
        message: String,
    },
    /// The request conflicts with the stored state.
    #[error("{dependency}: conflict: {message}")]
    Conflict {
        /// The remote service.
        dependency: &'static str,
        /// The server's message.
        message: String,
    },
    /// The deadline passed (here or downstream).
    #[error("{dependency}: deadline exceeded")]
    DeadlineExceeded {
        /// The remote service.
        dependency: &'static str,
    },
    /// The dependency cannot serve now; trying later may work.
    #[error("{dependency}: unavailable ({reason:?}): {message}")]
    Unavailable {
        /// The remote service.
        dependency: &'static str,
        /// Why.
        reason: Unavailable,
        /// Details for logs.
        message: String,
        /// When a retry could succeed (e.g. the breaker's sleep window).
        retry_after: Option<Duration>,
    },
    /// Anything else: a bug or a broken invariant on either side.
    #[error("{dependency}: internal error: {message}")]
    Internal {
        /// The remote service.
        dependency: &'static str,
        /// Details for logs.
        message: String,
    },
}

impl RpcError {
    /// An answer of `op` from `dependency` that lacks a field the contract
    /// says it always carries (a broken invariant on the serving side).
    pub fn missing_field(dependency: &'static str, op: &crate::Operation, field: &str) -> Self {
        Self::Internal {
            dependency,
            message: format!("{} response without {field}", op.name),
        }
    }

    /// Maps a gRPC status from `dependency`.
    pub fn from_status(dependency: &'static str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_owned();
        match status.code() {
            Code::NotFound => Self::NotFound {
                dependency,
                message,
            },
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument {
                dependency,
                message,
            },
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => Self::Conflict {
                dependency,
                message,
            },
            Code::DeadlineExceeded => Self::DeadlineExceeded { dependency },
            // tonic makes up CANCELLED locally when hyper drops a call the
            // connection closed under (the peer was killed: calls queued for
            // the connection are cancelled, not failed). It carries that
            // error as its source; unless the source is tonic's own timeout
            // (which we never set: `Endpoint::timeout` is unused, the
            // deadline is ours), it is a broken connection, to be retried
            // elsewhere like any other.
            Code::Cancelled if is_transport(status) && !is_tonic_timeout(status) => {
                Self::Unavailable {
                    dependency,
                    reason: Unavailable::Transport,
                    message,
                    retry_after: None,
                }
            }
            // A CANCELLED answer read off the wire means the server's own
            // copy of our deadline fired (tonic answers that way); to the
            // caller it is a timeout.
            Code::Cancelled => Self::DeadlineExceeded { dependency },
            Code::ResourceExhausted => Self::Unavailable {
                dependency,
                reason: Unavailable::Overloaded,
                message,
                retry_after: None,
            },
            Code::Unavailable => Self::Unavailable {
                dependency,
                reason: if status.metadata().get("grpc-status").is_none() && is_transport(status) {
                    Unavailable::Transport
                } else {
                    Unavailable::Server
                },
                message,
                retry_after: None,
            },
            // tonic makes up UNKNOWN statuses locally when a connection
            // breaks mid-call (the peer was killed, the stream was reset);
            // those carry the transport error as their source, which a
            // status read off the wire never does.
            Code::Unknown if is_transport(status) => Self::Unavailable {
                dependency,
                reason: Unavailable::Transport,
                message,
                retry_after: None,
            },
            _ => Self::Internal {
                dependency,
                message,
            },
        }
    }

    /// The remote service this error came from.
    pub fn dependency(&self) -> &'static str {
        match self {
            Self::NotFound { dependency, .. }
            | Self::InvalidArgument { dependency, .. }
            | Self::Conflict { dependency, .. }
            | Self::DeadlineExceeded { dependency }
            | Self::Unavailable { dependency, .. }
            | Self::Internal { dependency, .. } => dependency,
        }
    }

    /// The canonical gRPC code name, for metrics and logs.
    pub fn code_name(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "NOT_FOUND",
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::Conflict { .. } => "FAILED_PRECONDITION",
            Self::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            Self::Unavailable {
                reason: Unavailable::Overloaded,
                ..
            } => "RESOURCE_EXHAUSTED",
            Self::Unavailable { .. } => "UNAVAILABLE",
            Self::Internal { .. } => "INTERNAL",
        }
    }

    /// The gRPC status a server should answer with when this error from a
    /// dependency ends its own handler (caller-fault errors pass through;
    /// dependency failures become UNAVAILABLE / DEADLINE_EXCEEDED /
    /// INTERNAL). A dependency failure is marked `x-fleet-origin:
    /// downstream`, so this server's callers know the failure is deeper
    /// than this instance: they neither retry it on another instance nor
    /// eject this one for it.
    pub fn to_status(&self) -> tonic::Status {
        let downstream = |code: tonic::Code, message: String| {
            let mut md = tonic::metadata::MetadataMap::new();
            md.insert(
                crate::classify::ORIGIN_HEADER,
                tonic::metadata::MetadataValue::from_static(crate::classify::ORIGIN_DOWNSTREAM),
            );
            tonic::Status::with_metadata(code, message, md)
        };
        match self {
            Self::NotFound { message, .. } => tonic::Status::not_found(message.clone()),
            Self::InvalidArgument { message, .. } => {
                tonic::Status::invalid_argument(message.clone())
            }
            Self::Conflict { message, .. } => tonic::Status::failed_precondition(message.clone()),
            Self::DeadlineExceeded { dependency } => downstream(
                tonic::Code::DeadlineExceeded,
                format!("{dependency} did not answer in time"),
            ),
            Self::Unavailable { dependency, .. } => downstream(
                tonic::Code::Unavailable,
                format!("{dependency} is unavailable"),
            ),
            Self::Internal { dependency, .. } => {
                downstream(tonic::Code::Internal, format!("{dependency} failed"))
            }
        }
    }

    /// When retrying could succeed, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// tonic reports connection failures as UNAVAILABLE statuses it made up
/// locally; they carry a transport error as their source.
fn is_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// Whether tonic's own per-request timeout made `status`.
fn is_tonic_timeout(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_caller_can_act_on() {
        let e = RpcError::from_status("dal", &tonic::Status::not_found("no title t1"));
        assert!(matches!(e, RpcError::NotFound { .. }));
        assert_eq!(e.code_name(), "NOT_FOUND");
        let e = RpcError::from_status("dal", &tonic::Status::cancelled("timeout"));
        assert_eq!(e, RpcError::DeadlineExceeded { dependency: "dal" });
        // tonic's own timeout, were one set, is still a timeout.
        let timed_out = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timed_out.code(), tonic::Code::Cancelled);
        let e = RpcError::from_status("dal", &timed_out);
        assert_eq!(e, RpcError::DeadlineExceeded { dependency: "dal" });
        let e = RpcError::from_status("dal", &tonic::Status::unavailable("store down"));
        assert!(matches!(
            e,
            RpcError::Unavailable {
                reason: Unavailable::Server,
                ..
            }
        ));
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert!(
            matches!(
                RpcError::from_status("dal", &broken),
                RpcError::Unavailable {
                    reason: Unavailable::Transport,
                    ..
                }
            ),
            "{broken:?}"
        );
        let e = RpcError::from_status("dal", &tonic::Status::resource_exhausted("limit 20"));
        assert!(matches!(
            e,
            RpcError::Unavailable {
                reason: Unavailable::Overloaded,
                ..
            }
        ));
        assert_eq!(e.code_name(), "RESOURCE_EXHAUSTED");
        let e = RpcError::from_status("dal", &tonic::Status::unknown("handler said so"));
        assert!(matches!(e, RpcError::Internal { .. }));
        let e = RpcError::from_status("dal", &tonic::Status::internal("boom"));
        assert_eq!(e.to_status().code(), tonic::Code::Internal);
        assert!(
            !e.to_status().message().contains("boom"),
            "details stay inside"
        );
    }

    #[test]
    fn failures_passed_up_are_marked_as_deeper_and_answers_are_not() {
        let origin = |e: RpcError| {
            e.to_status()
                .metadata()
                .get(crate::classify::ORIGIN_HEADER)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let down = RpcError::Unavailable {
            dependency: "dal",
            reason: Unavailable::Transport,
            message: "refused".into(),
            retry_after: None,
        };
        assert_eq!(origin(down).as_deref(), Some("downstream"));
        assert_eq!(
            origin(RpcError::DeadlineExceeded { dependency: "dal" }).as_deref(),
            Some("downstream")
        );
        let nf = RpcError::NotFound {
            dependency: "dal",
            message: "t9".into(),
        };
        assert_eq!(origin(nf), None);
    }
}
