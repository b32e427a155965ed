//! The ratings service's own input rule: write timestamps.
//!
//! Every other field is checked by its type's rule in `fleet-types`
//! (`fleet_types::field`); the edge checks too, but the ratings service is
//! one of its own: any caller gets the same `INVALID_ARGUMENT` naming the
//! field, and a malformed request never costs a dal call (nor writes
//! anything).

use fleet_types::InvalidArgument;

/// How far ahead of this instance's clock a write's timestamp may be (a
/// day, far beyond any clock skew).
pub const MAX_FUTURE_MS: i64 = 24 * 60 * 60 * 1000;

/// A write's timestamp (ms since the Unix epoch): 0 means "now" and is
/// replaced by `now_ms`; negative values, and values more than
/// [`MAX_FUTURE_MS`] ahead of `now_ms`, are refused, since under
/// last-write-wins a far-future write could never be replaced.
pub fn timestamp(field: &str, value: i64, now_ms: i64) -> Result<i64, InvalidArgument> {
    match value {
        0 => Ok(now_ms),
        v if v < 0 => Err(InvalidArgument::new(
            field,
            "must be milliseconds since the Unix epoch (0 for now)",
        )),
        v if v > now_ms.saturating_add(MAX_FUTURE_MS) => Err(InvalidArgument::new(
            field,
            "is more than a day in the future",
        )),
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_default_to_now_and_stay_near_it() {
        let now = 1_767_225_600_000;
        assert_eq!(timestamp("rated_at_ms", 0, now), Ok(now));
        assert_eq!(timestamp("rated_at_ms", 1, now), Ok(1));
        assert_eq!(
            timestamp("rated_at_ms", now + MAX_FUTURE_MS, now),
            Ok(now + MAX_FUTURE_MS)
        );
        for bad in [-1, i64::MIN, now + MAX_FUTURE_MS + 1, i64::MAX] {
            let e = timestamp("rated_at_ms", bad, now).unwrap_err();
            assert_eq!(e.field, "rated_at_ms", "{bad}");
        }
        assert_eq!(
            timestamp("rated_at_ms", -1, now).unwrap_err().to_string(),
            "rated_at_ms must be milliseconds since the Unix epoch (0 for now)"
        );
        assert_eq!(
            timestamp("progress.updated_at_ms", i64::MAX, now)
                .unwrap_err()
                .to_string(),
            "progress.updated_at_ms is more than a day in the future"
        );
    }
}
