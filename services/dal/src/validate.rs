//! Input checks: every request is validated before it reaches storage.
//!
//! The edge validates too, but the dal is a service of its own: any caller
//! (a tool, a new service, a fuzzer) gets the same clear `INVALID_ARGUMENT`
//! naming the field, never a storage error or a scan.

use tonic::Status;

use crate::store::token::MAX_TOKEN_LEN;

/// Most items a batch or a page may hold.
pub const MAX_BATCH: usize = 100;
/// Page size when the caller sends 0.
pub const DEFAULT_LIMIT: usize = 20;
/// Longest allowed id.
pub const MAX_ID_LEN: usize = 64;
/// Largest viewing position (a whole day, in seconds).
pub const MAX_POSITION_S: u32 = 86_400;

/// An id: `[A-Za-z0-9_-]{1,64}`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming `field`.
pub fn id(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than {MAX_ID_LEN} characters"
        )));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Status::invalid_argument(format!(
            "{field} may contain only letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

/// A page size: 0 means the default, otherwise 1..=100.
///
/// # Errors
/// `INVALID_ARGUMENT`.
pub fn limit(value: u32) -> Result<usize, Status> {
    match usize::try_from(value) {
        Ok(0) => Ok(DEFAULT_LIMIT),
        Ok(n) if n <= MAX_BATCH => Ok(n),
        _ => Err(Status::invalid_argument(format!(
            "limit must be between 1 and {MAX_BATCH}"
        ))),
    }
}

/// A batch of ids.
///
/// # Errors
/// `INVALID_ARGUMENT`.
pub fn ids(field: &str, values: &[String]) -> Result<(), Status> {
    if values.len() > MAX_BATCH {
        return Err(Status::invalid_argument(format!(
            "{field} holds more than {MAX_BATCH} ids"
        )));
    }
    values.iter().try_for_each(|v| id(field, v))
}

/// An optional page token (empty = first page).
///
/// # Errors
/// `INVALID_ARGUMENT`.
pub fn page_token(value: Vec<u8>) -> Result<Option<Vec<u8>>, Status> {
    if value.len() > MAX_TOKEN_LEN {
        return Err(Status::invalid_argument(
            "page_token is not one this service issued",
        ));
    }
    Ok((!value.is_empty()).then_some(value))
}

/// An optional genre (empty = all).
///
/// # Errors
/// `INVALID_ARGUMENT`.
pub fn genre(value: String) -> Result<Option<String>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    id("genre", &value)?;
    Ok(Some(value))
}

/// Stars: 1..=5.
///
/// # Errors
/// `INVALID_ARGUMENT`.
pub fn stars(value: u32) -> Result<(), Status> {
    if (1..=5).contains(&value) {
        Ok(())
    } else {
        Err(Status::invalid_argument("stars must be between 1 and 5"))
    }
}

/// A client timestamp in ms since the epoch: positive.
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

/// A viewing position.
///
/// # Errors
/// `INVALID_ARGUMENT`.
pub fn position(value: u32) -> Result<(), Status> {
    if value <= MAX_POSITION_S {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "position_s must be between 0 and {MAX_POSITION_S}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_limits() {
        assert!(id("id", "t00001").is_ok());
        for bad in ["", "a b", "ü", "t/1", &"x".repeat(65), "t\0"] {
            let e = id("id", bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains("id"));
        }
        assert_eq!(limit(0).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(100).unwrap(), 100);
        assert!(limit(101).is_err());
        assert!(ids("ids", &vec!["t1".to_owned(); 101]).is_err());
        assert!(stars(0).is_err() && stars(6).is_err() && stars(5).is_ok());
        assert!(position(86_401).is_err() && position(0).is_ok());
        assert!(timestamp("t", 0).is_err() && timestamp("t", -5).is_err());
        assert!(page_token(vec![1; 1000]).is_err());
        assert_eq!(page_token(Vec::new()).unwrap(), None);
    }
}
