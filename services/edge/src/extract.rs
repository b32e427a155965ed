//! Request extractors and input checks: everything a client sends is
//! validated here, before any backend is called, and every rejection is the
//! JSON error shape (never axum's plain-text rejections).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fleet_types::{Genre, IdError, Limit, PositionSeconds, Stars};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub use fleet_types::{DEFAULT_LIMIT, MAX_ID_LEN, MAX_LIMIT, MAX_POSITION_S, MAX_STARS, MIN_STARS};

/// Longest cursor accepted, in characters. The edge's own bound on the
/// base64url text, not the services' [`fleet_types::MAX_PAGE_TOKEN_LEN`]
/// on the bytes: a cursor up to 1400 characters (1050 bytes) passes the
/// edge, and the service refuses a token over 1024 bytes itself.
pub const MAX_CURSOR_LEN: usize = 1400;
/// Deepest JSON nesting when none is configured (`EDGE_MAX_JSON_DEPTH`).
pub const DEFAULT_MAX_JSON_DEPTH: usize = 32;

/// Path parameters, rejected with the JSON error shape.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
    }
}

/// Query parameters, rejected with the JSON error shape.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
    }
}

/// A JSON body: `Content-Type: application/json` (415 otherwise), at most
/// the configured size (413), nested at most the configured depth (400),
/// syntactically valid (400) and of the right shape and types (422).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// The body limits, carried as a request extension by the stack.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit {
    /// Largest body in bytes (`EDGE_MAX_BODY`).
    pub bytes: usize,
    /// Deepest JSON nesting (`EDGE_MAX_JSON_DEPTH`).
    pub json_depth: usize,
}

impl Default for BodyLimit {
    fn default() -> Self {
        Self {
            bytes: 4096,
            json_depth: DEFAULT_MAX_JSON_DEPTH,
        }
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::unsupported_media_type());
        }
        let BodyLimit {
            bytes: limit,
            json_depth,
        } = req
            .extensions()
            .get::<BodyLimit>()
            .copied()
            .unwrap_or_default();
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::too_large(limit))?;
        parse_json_within(&bytes, json_depth).map(Self)
    }
}

/// [`parse_json_within`] the default depth, [`DEFAULT_MAX_JSON_DEPTH`].
///
/// # Errors
/// The 400 or 422 [`ApiError`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json_within(bytes, DEFAULT_MAX_JSON_DEPTH)
}

/// Parses a JSON body: nesting deeper than `max_depth` is 400 (checked
/// before parsing), syntax errors are 400, wrong shapes or types 422 —
/// and every body of this API is a JSON object, so any other valid
/// document is 422 too (serde would read a struct from an array, `[4]` as
/// `{"stars":4}`, a form the API does not define).
///
/// # Errors
/// The 400 or 422 [`ApiError`].
pub fn parse_json_within<T: DeserializeOwned>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<T, ApiError> {
    if !json_depth_within(bytes, max_depth) {
        return Err(ApiError::bad_request(format!(
            "JSON body nested deeper than {max_depth} levels"
        )));
    }
    // Checked before the typed parse, which would read an array as a
    // struct, or stop at its extra elements with a syntax error.
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::unprocessable("the body must be a JSON object"),
                Err(e) => json_error(&e),
            },
        );
    }
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

/// A parse error as the answer: 422 for the wrong shape or types, 400 for
/// malformed JSON.
fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => ApiError::unprocessable(format!("invalid body: {e}")),
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request(format!("malformed JSON body: {e}"))
        }
    }
}

/// Whether no array or object in `bytes` is nested deeper than `max`
/// (`{"a":[1]}` is 2). One pass over the bytes, stopping at the first
/// level too deep; brackets inside strings do not count. Malformed JSON is
/// left to the parser.
pub fn json_depth_within(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0_usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

fn is_json(v: Option<&axum::http::HeaderValue>) -> bool {
    let Some(v) = v.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// An id (`user`, `title`) by the id rule, as the id type it names.
/// Refusals are worded for the API (`title id must be 1 to 64 characters
/// long`), not as the gRPC services word them (`… is required`, `… is
/// longer than 64 characters`).
///
/// # Errors
/// 400 naming the field.
pub fn id<T>(field: &str, value: String) -> Result<T, ApiError>
where
    T: TryFrom<String, Error = IdError>,
{
    T::try_from(value).map_err(|e| id_error(field, e))
}

fn id_error(field: &str, e: IdError) -> ApiError {
    match e {
        IdError::Empty | IdError::TooLong => {
            ApiError::bad_request(format!("{field} must be 1 to {MAX_ID_LEN} characters long"))
        }
        IdError::Alphabet => ApiError::bad_request(format!("{field} {e}")),
    }
}

/// A genre filter: absent or empty is every genre; otherwise like an id.
///
/// # Errors
/// 400.
pub fn genre(value: Option<String>) -> Result<Option<Genre>, ApiError> {
    Genre::optional(value.unwrap_or_default()).map_err(|e| id_error("genre", e))
}

/// `limit`: absent is [`DEFAULT_LIMIT`]; otherwise a whole number in
/// 1..=[`MAX_LIMIT`] (`0` is refused here: only the proto field reads 0 as
/// the default).
///
/// # Errors
/// 400.
pub fn limit(value: Option<&str>) -> Result<Limit, ApiError> {
    let Some(raw) = value else {
        return Ok(Limit::DEFAULT);
    };
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}"
        ))
    })
}

/// `cursor`: absent or empty is the first page; otherwise the opaque
/// base64url token from a previous page, at most [`MAX_CURSOR_LEN`]
/// characters. The token's bytes go to the service as they are; its own
/// page-token rule applies there.
///
/// # Errors
/// 400 for anything that is not such a token.
pub fn cursor(value: Option<&str>) -> Result<Option<Vec<u8>>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(c) if c.len() > MAX_CURSOR_LEN => Err(ApiError::bad_request("cursor is too long")),
        Some(c) => URL_SAFE_NO_PAD
            .decode(c)
            .map(Some)
            .map_err(|_| ApiError::bad_request("cursor is not one this API handed out")),
    }
}

/// The cursor for a page token.
pub fn encode_cursor(token: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(token)
}

/// Stars, 1..=5.
///
/// # Errors
/// 422 (`stars must be from 1 to 5`; the services say `between 1 and 5`).
pub fn stars(value: u32) -> Result<Stars, ApiError> {
    Stars::try_from(value).map_err(|_| {
        ApiError::unprocessable(format!("stars must be from {MIN_STARS} to {MAX_STARS}"))
    })
}

/// A viewing position, 0..=86400 seconds.
///
/// # Errors
/// 422 (`position_s must be from 0 to 86400`).
pub fn position(value: u32) -> Result<PositionSeconds, ApiError> {
    PositionSeconds::try_from(value).map_err(|_| {
        ApiError::unprocessable(format!("position_s must be from 0 to {MAX_POSITION_S}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use fleet_edge_client::model::RateRequest;
    use fleet_types::{TitleId, UserId};

    #[test]
    fn ids_are_refused_in_the_apis_words() {
        let user: UserId = id("user id", "u00001".to_owned()).unwrap();
        assert_eq!(user.as_str(), "u00001");
        assert!(id::<UserId>("user", "a".repeat(64)).is_ok());
        for bad in ["", &"a".repeat(65)] {
            let e = id::<UserId>("user id", bad.to_owned()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(e.message, "user id must be 1 to 64 characters long");
        }
        for bad in ["a b", "a/b", "ü", "../x", "a\0"] {
            let e = id::<TitleId>("title id", bad.to_owned()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(
                e.message,
                "title id may contain only letters, digits, '-' and '_'"
            );
        }
        assert_eq!(genre(None).unwrap(), None);
        assert_eq!(genre(Some(String::new())).unwrap(), None);
        assert_eq!(
            genre(Some("drama".into())).unwrap().map(Genre::into_string),
            Some("drama".to_owned())
        );
        assert!(genre(Some("a b".into())).is_err());
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(limit(None).unwrap().get(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("1")).unwrap().get(), 1);
        assert_eq!(limit(Some("100")).unwrap().get(), 100);
        for bad in ["0", "101", "-1", "1e3", "abc", "", "99999999999999999999"] {
            let e = limit(Some(bad)).unwrap_err();
            assert_eq!(
                e.message, "limit must be a whole number from 1 to 100",
                "{bad}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(b"\x00\x01page");
        assert_eq!(cursor(Some(&c)).unwrap(), Some(b"\x00\x01page".to_vec()));
        assert_eq!(cursor(Some("")).unwrap(), None);
        assert!(cursor(Some("not base64!")).is_err());
        assert!(cursor(Some(&"A".repeat(MAX_CURSOR_LEN + 1))).is_err());
    }

    #[test]
    fn json_syntax_errors_are_400_and_shape_errors_422() {
        let e = parse_json::<RateRequest>(b"{\"stars\":").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        for body in [
            &b"{\"stars\":\"five\"}"[..],
            b"{\"stars\":-1}",
            b"{\"stars\":3.5}",
            b"{}",
            b"[]",
            b"{\"stars\":3,\"admin\":true}",
            b"{\"stars\":99999999999999999999}",
        ] {
            let e = parse_json::<RateRequest>(body).unwrap_err();
            assert_eq!(
                e.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse_json::<RateRequest>(b" {\"stars\":4} ").unwrap().stars,
            4
        );
    }

    /// Found by the `edge_json` fuzz target: `[1]` was read as
    /// `{"position_s":1}` (serde reads a struct from an array too), and
    /// then `[-0,999999999999999]`, valid JSON, was 400 (the typed parse
    /// stops at the extra element with a syntax error).
    #[test]
    fn only_json_objects_are_bodies() {
        for body in [
            &b"[1]"[..],
            b" [4]",
            b"[4,\"x\"]",
            b"[-0,999999999999999\t\t\n\n]",
            b"4",
            b"\"stars\"",
            b"null",
        ] {
            let e = parse_json::<RateRequest>(body).unwrap_err();
            assert_eq!(
                e.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{}",
                String::from_utf8_lossy(body)
            );
            let e = parse_json::<fleet_edge_client::model::ProgressRequest>(body).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
        assert_eq!(
            parse_json::<RateRequest>(b"\r\n\t {\"stars\":2}")
                .unwrap()
                .stars,
            2
        );
        // Not JSON at all is still 400.
        for body in [&b"[1"[..], b"x", b""] {
            let e = parse_json::<RateRequest>(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn nesting_is_counted_outside_strings_and_refused_past_the_limit() {
        assert!(json_depth_within(b"3", 0));
        assert!(json_depth_within(b"{\"a\":[1,{\"b\":[]}]}", 4));
        assert!(!json_depth_within(b"{\"a\":[1,{\"b\":[]}]}", 3));
        // Brackets in strings, escaped quotes included, are text.
        assert!(json_depth_within(br#"{"a":"[[[[\"{{{{"}"#, 1));
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(json_depth_within(deep(32).as_bytes(), 32));
        let e = parse_json::<serde_json::Value>(deep(33).as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("deeper than 32"), "{}", e.message);
        // Far past serde_json's own limit of 128: the same clear answer.
        let e = parse_json_within::<serde_json::Value>(deep(2000).as_bytes(), 32).unwrap_err();
        assert!(e.message.contains("deeper than 32"), "{}", e.message);
    }

    #[test]
    fn content_types() {
        use axum::http::HeaderValue;
        assert!(is_json(Some(&HeaderValue::from_static("application/json"))));
        assert!(is_json(Some(&HeaderValue::from_static(
            "Application/JSON; charset=utf-8"
        ))));
        assert!(!is_json(Some(&HeaderValue::from_static("text/plain"))));
        assert!(!is_json(Some(&HeaderValue::from_static(
            "application/jsonx"
        ))));
        assert!(!is_json(None));
    }

    #[test]
    fn stars_and_positions_are_bounded() {
        for bad in [0, 6] {
            let e = stars(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(e.message, "stars must be from 1 to 5");
        }
        assert_eq!(stars(5).unwrap().get(), 5);
        assert_eq!(position(0).unwrap().get(), 0);
        let e = position(86_401).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.message, "position_s must be from 0 to 86400");
    }
}
