//! Input checks: every request is validated before it reaches storage.
//!
//! The edge validates too, but the dal is a service of its own: any caller
//! (a tool, a new service, a fuzzer) gets the same clear `INVALID_ARGUMENT`
//! naming the field, never a storage error or a scan. The rules are
//! `fleet-types`'; the dal's own are that write timestamps are explicit
//! and positive, and that a page token is at most [`MAX_TOKEN_LEN`] bytes
//! (the longest it issues). Some refusals keep the dal's own wording, as
//! its callers know it (see each function).

use fleet_types::{
    BatchError, Genre, InvalidArgument, Limit, MAX_BATCH, MAX_LIMIT, MAX_POSITION_S, PageToken,
    PositionSeconds, check_batch, check_id, field,
};
use tonic::Status;

use crate::store::token::MAX_TOKEN_LEN;

fn invalid(e: InvalidArgument) -> Status {
    Status::invalid_argument(e.to_string())
}

/// An id: `[A-Za-z0-9_-]{1,64}`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming `field`.
pub fn id(field: &str, value: &str) -> Result<(), Status> {
    check_id(value).map_err(|e| invalid(InvalidArgument::new(field, e)))
}

/// A page size: 0 means the default, otherwise 1..=100.
///
/// # Errors
/// `INVALID_ARGUMENT`: `limit must be between 1 and 100` (without the
/// catalog's and ratings' `(0 for 20)`).
pub fn limit(value: u32) -> Result<usize, Status> {
    Limit::from_proto(value)
        .map(Limit::as_usize)
        .map_err(|_| Status::invalid_argument(format!("limit must be between 1 and {MAX_LIMIT}")))
}

/// A batch of ids.
///
/// # Errors
/// `INVALID_ARGUMENT`: `{field} holds more than 100 ids`, or a bad id's
/// error naming `field` (not the item's index, as the catalog and ratings
/// do).
pub fn ids(field: &str, values: &[String]) -> Result<(), Status> {
    check_batch(values).map_err(|e| match e {
        BatchError::TooMany { .. } => {
            Status::invalid_argument(format!("{field} holds more than {MAX_BATCH} ids"))
        }
        BatchError::Item { error, .. } => invalid(InvalidArgument::new(field, error)),
    })
}

/// An optional page token (empty = first page): a page token by the
/// shared rule, and at most [`MAX_TOKEN_LEN`] bytes, the longest token
/// this dal issues.
///
/// # Errors
/// `INVALID_ARGUMENT`: `page_token is not one this service issued`.
pub fn page_token(value: Vec<u8>) -> Result<Option<Vec<u8>>, Status> {
    match PageToken::from_proto(value) {
        Ok(token) if token.as_ref().is_none_or(|t| t.len() <= MAX_TOKEN_LEN) => {
            Ok(token.map(PageToken::into_bytes))
        }
        _ => Err(Status::invalid_argument(
            "page_token is not one this service issued",
        )),
    }
}

/// An optional genre (empty = all).
///
/// # Errors
/// `INVALID_ARGUMENT`.
pub fn genre(value: String) -> Result<Option<String>, Status> {
    field::genre(value)
        .map(|g| g.map(Genre::into_string))
        .map_err(invalid)
}

/// Stars: 1..=5.
///
/// # Errors
/// `INVALID_ARGUMENT`: `stars must be between 1 and 5`.
pub fn stars(value: u32) -> Result<(), Status> {
    field::stars(value).map(drop).map_err(invalid)
}

/// A client timestamp in ms since the epoch: positive (unlike the ratings
/// service, the dal has no "0 is now": the first caller fixes the time).
///
/// # Errors
/// `INVALID_ARGUMENT`.
pub fn timestamp(field: &str, value: i64) -> Result<(), Status> {
    if value > 0 {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} must be a positive number of milliseconds since the Unix epoch"
        )))
    }
}

/// A viewing position: 0..=86400.
///
/// # Errors
/// `INVALID_ARGUMENT`: `position_s must be between 0 and 86400` (named
/// `position_s`, not `progress.position_s` as the ratings service does).
pub fn position(value: u32) -> Result<(), Status> {
    PositionSeconds::try_from(value).map(drop).map_err(|_| {
        Status::invalid_argument(format!("position_s must be between 0 and {MAX_POSITION_S}"))
    })
}

/// A message field that must be present.
///
/// # Errors
/// `INVALID_ARGUMENT`: `{field} is required`.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, Status> {
    field::required(field, value).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_types::DEFAULT_LIMIT;
    use tonic::Code;

    fn message<T: std::fmt::Debug>(r: Result<T, Status>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        e.message().to_owned()
    }

    #[test]
    fn ids_and_limits() {
        assert!(id("id", "t00001").is_ok());
        for bad in ["", "a b", "ü", "t/1", &"x".repeat(65), "t\0"] {
            assert!(message(id("id", bad)).starts_with("id "), "{bad:?}");
        }
        assert_eq!(message(id("id", "")), "id is required");
        assert_eq!(limit(0).unwrap(), DEFAULT_LIMIT as usize);
        assert_eq!(limit(100).unwrap(), 100);
        assert_eq!(message(limit(101)), "limit must be between 1 and 100");
        assert_eq!(
            message(ids("ids", &vec!["t1".to_owned(); 101])),
            "ids holds more than 100 ids"
        );
        assert_eq!(
            message(ids("title_ids", &["t1".to_owned(), "t 2".to_owned()])),
            "title_ids may contain only letters, digits, '-' and '_'"
        );
        assert_eq!(genre(String::new()).unwrap(), None);
        assert_eq!(genre("drama".into()).unwrap().as_deref(), Some("drama"));
        assert_eq!(
            message(genre("a b".into())).split(' ').next(),
            Some("genre")
        );
    }

    #[test]
    fn ratings_and_progress_fields() {
        assert!(stars(0).is_err() && stars(6).is_err() && stars(5).is_ok());
        assert_eq!(message(stars(6)), "stars must be between 1 and 5");
        assert!(position(0).is_ok() && position(86_400).is_ok());
        assert_eq!(
            message(position(86_401)),
            "position_s must be between 0 and 86400"
        );
        assert!(timestamp("t", 0).is_err() && timestamp("t", -5).is_err());
        assert!(timestamp("t", 1).is_ok());
        assert_eq!(
            message(required::<u8>("rating", None)),
            "rating is required"
        );
    }

    #[test]
    fn page_tokens_are_only_as_long_as_the_dal_issues_them() {
        assert_eq!(page_token(Vec::new()).unwrap(), None);
        assert_eq!(
            page_token(vec![1; MAX_TOKEN_LEN]).unwrap().unwrap().len(),
            MAX_TOKEN_LEN
        );
        for len in [MAX_TOKEN_LEN + 1, 1000, fleet_types::MAX_PAGE_TOKEN_LEN + 1] {
            assert_eq!(
                message(page_token(vec![1; len])),
                "page_token is not one this service issued"
            );
        }
    }
}
