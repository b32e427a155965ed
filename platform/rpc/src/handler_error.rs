//! [`HandlerError`]: why a gRPC handler of a stateless service (catalog,
//! ratings) failed, and its one mapping to a gRPC status.

use crate::RpcError;
use fleet_types::InvalidArgument;
use tonic::Status;

/// Why a handler failed: its caller's request, or the dependency it
/// called.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The request is malformed; no dependency was called.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidArgument),
    /// A dependency (the dal) refused or failed the call.
    #[error("{} call failed", .0.dependency())]
    Dependency(#[from] RpcError),
}

/// Bad input is `INVALID_ARGUMENT` with the refusal's text; a dependency's
/// refusal passes through and its failure becomes DEADLINE_EXCEEDED /
/// UNAVAILABLE / INTERNAL, marked as from downstream
/// ([`RpcError::to_status`]). The cause of a failure is logged once, here;
/// the caller sees only which dependency failed.
impl From<HandlerError> for Status {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::InvalidArgument(invalid) => Status::invalid_argument(invalid.to_string()),
            HandlerError::Dependency(dep) => {
                match &dep {
                    // The caller's fault (or simply absent): pass through.
                    RpcError::NotFound { .. }
                    | RpcError::InvalidArgument { .. }
                    | RpcError::Conflict { .. } => {
                        tracing::debug!(error = %dep, code = dep.code_name(), "{} refused the call", dep.dependency());
                    }
                    // Ours or the dependency's: log the cause once, here;
                    // the client sees only which dependency failed.
                    RpcError::DeadlineExceeded { .. }
                    | RpcError::Unavailable { .. }
                    | RpcError::Internal { .. } => {
                        tracing::warn!(error = %dep, code = dep.code_name(), "{} call failed", dep.dependency());
                    }
                }
                dep.to_status()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Unavailable;
    use fleet_types::{TitleId, field};
    use tonic::Code;

    fn status(e: impl Into<HandlerError>) -> Status {
        Status::from(e.into())
    }

    #[test]
    fn dependency_failures_map_to_what_the_caller_can_act_on() {
        let cases = [
            (
                RpcError::NotFound {
                    dependency: "dal",
                    message: "no title with id \"t9\"".into(),
                },
                Code::NotFound,
            ),
            (
                RpcError::InvalidArgument {
                    dependency: "dal",
                    message: "page_token is not one this service issued".into(),
                },
                Code::InvalidArgument,
            ),
            (
                RpcError::Conflict {
                    dependency: "dal",
                    message: "stale".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                RpcError::DeadlineExceeded { dependency: "dal" },
                Code::DeadlineExceeded,
            ),
            (
                RpcError::Unavailable {
                    dependency: "dal",
                    reason: Unavailable::Transport,
                    message: "connection refused".into(),
                    retry_after: None,
                },
                Code::Unavailable,
            ),
            (
                RpcError::Internal {
                    dependency: "dal",
                    message: "corrupt record".into(),
                },
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(status(error.clone()).code(), code, "{error}");
        }
    }

    #[test]
    fn internal_details_stay_inside() {
        let s = status(RpcError::Unavailable {
            dependency: "dal",
            reason: Unavailable::Transport,
            message: "tcp connect error 127.0.0.1:7300".into(),
            retry_after: None,
        });
        assert!(!s.message().contains("127.0.0.1"), "{}", s.message());
        assert_eq!(s.message(), "dal is unavailable");
    }

    #[test]
    fn bad_input_is_answered_with_the_refusal_naming_the_field() {
        let e = field::id::<TitleId>("id", String::new()).unwrap_err();
        let s = status(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "id is required");
    }

    #[test]
    fn the_error_says_which_dependency_failed() {
        let e = HandlerError::from(RpcError::DeadlineExceeded { dependency: "dal" });
        assert_eq!(e.to_string(), "dal call failed");
    }
}
