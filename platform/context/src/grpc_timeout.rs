//! The `grpc-timeout` header: at most 8 ASCII digits and a unit
//! (`H`ours, `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos).

use std::time::Duration;

use http::HeaderValue;

/// A `grpc-timeout` value that is not of the spec's form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "malformed grpc-timeout header {value:?}: expected 1-8 digits and a unit of H, M, S, m, u, n"
)]
pub struct GrpcTimeoutError {
    value: String,
}

/// Parses a `grpc-timeout` header.
///
/// # Errors
/// [`GrpcTimeoutError`] when the value is not 1-8 digits followed by a unit.
pub fn parse_grpc_timeout(value: &HeaderValue) -> Result<Duration, GrpcTimeoutError> {
    let err = || GrpcTimeoutError {
        value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
    };
    let bytes = value.as_bytes();
    let (unit, digits) = bytes.split_last().ok_or_else(err)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(err());
    }
    let n: u64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(err)?;
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(err()),
    })
}

/// Formats a duration as a `grpc-timeout` value, choosing the finest unit
/// that fits in 8 digits (rounding up so the budget is never shortened by
/// more than one unit).
pub fn format_grpc_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let candidates: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    for (per, unit) in candidates {
        let v = nanos.div_ceil(per);
        if v <= MAX {
            return HeaderValue::from_str(&format!("{v}{unit}"))
                .unwrap_or_else(|_| HeaderValue::from_static("99999999H"));
        }
    }
    HeaderValue::from_static("99999999H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let p = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s)).unwrap();
        assert_eq!(p("1H"), Duration::from_secs(3600));
        assert_eq!(p("2M"), Duration::from_secs(120));
        assert_eq!(p("3S"), Duration::from_secs(3));
        assert_eq!(p("450m"), Duration::from_millis(450));
        assert_eq!(p("7u"), Duration::from_micros(7));
        assert_eq!(p("99999999n"), Duration::from_nanos(99_999_999));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "m", "123456789m", "12", "-1m", "1.5S", "10x", "1 m"] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(parse_grpc_timeout(&v).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formats_round_trip_within_one_unit() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            Duration::from_millis(250),
            Duration::from_secs(7),
            Duration::from_secs(400_000),
        ] {
            let back = parse_grpc_timeout(&format_grpc_timeout(d)).unwrap();
            assert!(back >= d, "{d:?} -> {back:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(25)), "25000000n");
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(1)), "1000000u");
    }
}
