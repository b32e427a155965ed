//! Viewing positions.

use std::fmt;
use std::str::FromStr;

/// Largest viewing position: a whole day, in seconds.
pub const MAX_POSITION_S: u32 = 86_400;

/// Why a number is not a viewing position. `Display` follows the field's
/// name (`position_s must be at most 86400 seconds (a whole day)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be at most {MAX_POSITION_S} seconds (a whole day)")]
pub struct PositionError {
    /// The number refused (`None` for text that is no whole number).
    pub value: Option<u32>,
}

/// How far into a title a user has watched, in whole seconds:
/// 0..=[`MAX_POSITION_S`].
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct PositionSeconds(u32);

impl PositionSeconds {
    /// The position in seconds.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for PositionSeconds {
    type Error = PositionError;

    fn try_from(value: u32) -> Result<Self, PositionError> {
        if value <= MAX_POSITION_S {
            Ok(Self(value))
        } else {
            Err(PositionError { value: Some(value) })
        }
    }
}

impl FromStr for PositionSeconds {
    type Err = PositionError;

    fn from_str(s: &str) -> Result<Self, PositionError> {
        let n: u32 = s.parse().map_err(|_| PositionError { value: None })?;
        Self::try_from(n)
    }
}

impl From<PositionSeconds> for u32 {
    fn from(position: PositionSeconds) -> u32 {
        position.0
    }
}

impl fmt::Display for PositionSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_stop_at_a_day() {
        assert_eq!(PositionSeconds::try_from(0).map(u32::from), Ok(0));
        assert_eq!(
            PositionSeconds::try_from(86_400).map(PositionSeconds::get),
            Ok(86_400)
        );
        for bad in [86_401, u32::MAX] {
            let e = PositionSeconds::try_from(bad).unwrap_err();
            assert_eq!(e.value, Some(bad));
            assert_eq!(
                format!("progress.position_s {e}"),
                "progress.position_s must be at most 86400 seconds (a whole day)"
            );
        }
        assert_eq!("90".parse::<PositionSeconds>().map(u32::from), Ok(90));
        assert!("-1".parse::<PositionSeconds>().is_err());
    }

    #[test]
    fn serde_reads_positions_through_the_same_rule() {
        let p: PositionSeconds = serde_json::from_str("600").unwrap();
        assert_eq!(p.get(), 600);
        assert!(serde_json::from_str::<PositionSeconds>("86401").is_err());
        assert_eq!(serde_json::to_string(&p).unwrap(), "600");
    }
}
