//! Request extractors and input checks: everything a client sends is
//! validated here, before any backend is called, and every rejection is the
//! JSON error shape (never axum's plain-text rejections).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Longest id: `[A-Za-z0-9_-]{1,64}`.
pub const MAX_ID_LEN: usize = 64;
/// Largest page.
pub const MAX_LIMIT: u32 = 100;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 20;
/// Longest cursor accepted (the services' page tokens are far shorter).
pub const MAX_CURSOR_LEN: usize = 1400;
/// Deepest JSON nesting when none is configured (`EDGE_MAX_JSON_DEPTH`).
pub const DEFAULT_MAX_JSON_DEPTH: usize = 32;
/// Stars allowed.
pub const STARS: std::ops::RangeInclusive<u32> = 1..=5;
/// Largest viewing position: a whole day, in seconds.
pub const MAX_POSITION_S: u32 = 86_400;

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

/// An id (`user`, `title`): `[A-Za-z0-9_-]{1,64}`.
///
/// # Errors
/// 400 naming the field.
pub fn id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_ID_LEN} characters long"
        )));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request(format!(
            "{field} may contain only letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

/// A genre filter: absent or empty is every genre; otherwise like an id.
///
/// # Errors
/// 400.
pub fn genre(value: Option<&str>) -> Result<Option<&str>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(g) => id("genre", g).map(|()| Some(g)),
    }
}

/// `limit`: absent is [`DEFAULT_LIMIT`]; otherwise 1..=[`MAX_LIMIT`].
///
/// # Errors
/// 400.
pub fn limit(value: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// `cursor`: absent or empty is the first page; otherwise the opaque
/// base64url token from a previous page.
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
/// 422.
pub fn stars(value: u32) -> Result<u32, ApiError> {
    if STARS.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::unprocessable("stars must be from 1 to 5"))
    }
}

/// A viewing position, 0..=86400 seconds.
///
/// # Errors
/// 422.
pub fn position(value: u32) -> Result<u32, ApiError> {
    if value <= MAX_POSITION_S {
        Ok(value)
    } else {
        Err(ApiError::unprocessable(format!(
            "position_s must be from 0 to {MAX_POSITION_S}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use fleet_edge_client::model::RateRequest;

    #[test]
    fn ids_follow_the_house_alphabet() {
        assert!(id("user", "u00001").is_ok());
        assert!(id("user", &"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "ü", "../x", &"a".repeat(65), "a\0"] {
            assert_eq!(
                id("user", bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("1")).unwrap(), 1);
        assert_eq!(limit(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "1e3", "abc", "", "99999999999999999999"] {
            assert!(limit(Some(bad)).is_err(), "{bad}");
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
        assert!(stars(0).is_err());
        assert!(stars(6).is_err());
        assert_eq!(stars(5).unwrap(), 5);
        assert_eq!(position(0).unwrap(), 0);
        assert!(position(86_401).is_err());
    }
}
