//! The `grpc-timeout` header, as every gRPC server reads it
//! (`fleet_context::parse_grpc_timeout`, via `RequestContext::from_headers`).
//!
//! Asserts: a value is accepted exactly when it is 1-8 ASCII digits and one
//! of the units H M S m u n, and then means digits × unit; what the
//! formatter writes for that duration parses back to no less than it and
//! less than one of the formatter's units more; a request carrying it gets
//! a deadline that far from its arrival.

#![no_main]

use std::time::Duration;

use fleet_context::{RequestContext, format_grpc_timeout, headers, parse_grpc_timeout};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// What the value means by the spec, checked by hand (not by the parser).
fn by_the_spec(bytes: &[u8]) -> Option<Duration> {
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0_u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The unit of a formatted value, as a duration.
fn unit_of(v: &HeaderValue) -> Duration {
    match v.as_bytes().last() {
        Some(b'H') => Duration::from_secs(3600),
        Some(b'M') => Duration::from_secs(60),
        Some(b'S') => Duration::from_secs(1),
        Some(b'm') => Duration::from_millis(1),
        Some(b'u') => Duration::from_micros(1),
        _ => Duration::from_nanos(1),
    }
}

fn check_format(d: Duration) {
    let v = format_grpc_timeout(d);
    let back = parse_grpc_timeout(&v)
        .unwrap_or_else(|e| panic!("{d:?} formats as {v:?}, which does not parse: {e}"));
    let max = Duration::from_secs(99_999_999 * 3600);
    if d <= max {
        assert!(back >= d, "{d:?} -> {v:?} -> {back:?}: budget shortened");
        assert!(
            back - d < unit_of(&v),
            "{d:?} -> {v:?} -> {back:?}: more than one unit added"
        );
    } else {
        assert_eq!(back, max, "{d:?} -> {v:?}: not saturated");
    }
}

fuzz_target!(|data: &[u8]| {
    // An arbitrary duration through the formatter (first 12 bytes).
    if let Some((secs, rest)) = data.split_first_chunk::<8>()
        && let Some((nanos, _)) = rest.split_first_chunk::<4>()
    {
        let d = Duration::new(
            u64::from_le_bytes(*secs),
            u32::from_le_bytes(*nanos) % 1_000_000_000,
        );
        check_format(d);
    }

    // The whole input as a header value.
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let parsed = parse_grpc_timeout(&value);
    assert_eq!(
        parsed.as_ref().ok().copied(),
        by_the_spec(data),
        "{value:?}"
    );
    if let Ok(d) = parsed {
        check_format(d);
    }

    let mut h = HeaderMap::new();
    h.insert(headers::GRPC_TIMEOUT, value);
    let now = tokio::time::Instant::now();
    match (RequestContext::from_headers(&h, now), parsed) {
        (Ok(cx), Ok(d)) => assert_eq!(cx.deadline(), Some(now + d)),
        (Err(_), Err(_)) => {}
        (cx, p) => panic!("context {cx:?} disagrees with the parser {p:?}"),
    }
});
