//! The ratings service's errors and their one mapping to gRPC status.

use fleet_dal_client::Error as DalError;
use tonic::Status;

use crate::validate::InvalidArgument;

/// Why a ratings call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RatingsError {
    /// The request is malformed; the dal was not called.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidArgument),
    /// The dal refused or failed the call.
    #[error("dal call failed")]
    Dal(#[from] DalError),
}

impl From<RatingsError> for Status {
    fn from(e: RatingsError) -> Self {
        match e {
            RatingsError::InvalidArgument(invalid) => Status::invalid_argument(invalid.to_string()),
            RatingsError::Dal(dal) => {
                match &dal {
                    // The caller's fault (or simply absent): pass through.
                    DalError::NotFound { .. }
                    | DalError::InvalidArgument { .. }
                    | DalError::Conflict { .. } => {
                        tracing::debug!(error = %dal, code = dal.code_name(), "dal refused the call");
                    }
                    // Ours or the dal's: log the cause once, here; the
                    // client sees only which dependency failed.
                    DalError::DeadlineExceeded { .. }
                    | DalError::Unavailable { .. }
                    | DalError::Internal { .. } => {
                        tracing::warn!(error = %dal, code = dal.code_name(), "dal call failed");
                    }
                }
                dal.to_status()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_dal_client::Unavailable;
    use tonic::Code;

    fn status(e: impl Into<RatingsError>) -> Status {
        Status::from(e.into())
    }

    #[test]
    fn dal_failures_map_to_what_the_caller_can_act_on() {
        let cases = [
            (
                DalError::NotFound {
                    dependency: "dal",
                    message: "no title with id \"t9\"".into(),
                },
                Code::NotFound,
            ),
            (
                DalError::InvalidArgument {
                    dependency: "dal",
                    message: "page_token is not one this service issued".into(),
                },
                Code::InvalidArgument,
            ),
            (
                DalError::DeadlineExceeded { dependency: "dal" },
                Code::DeadlineExceeded,
            ),
            (
                DalError::Unavailable {
                    dependency: "dal",
                    reason: Unavailable::Transport,
                    message: "connection refused".into(),
                    retry_after: None,
                },
                Code::Unavailable,
            ),
            (
                DalError::Internal {
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
        let s = status(DalError::Unavailable {
            dependency: "dal",
            reason: Unavailable::Transport,
            message: "tcp connect error 127.0.0.1:7300".into(),
            retry_after: None,
        });
        assert!(!s.message().contains("127.0.0.1"), "{}", s.message());
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = crate::validate::id("id", "").unwrap_err();
        let s = status(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("id is required"), "{}", s.message());
    }
}
