//! Star ratings.

use std::fmt;
use std::str::FromStr;

/// Fewest stars.
pub const MIN_STARS: u32 = 1;
/// Most stars.
pub const MAX_STARS: u32 = 5;

/// Why a number is not a star rating. `Display` follows the field's name
/// (`stars must be between 1 and 5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be between {MIN_STARS} and {MAX_STARS}")]
pub struct StarsError {
    /// The number refused (`None` for text that is no whole number).
    pub value: Option<u32>,
}

/// A star rating: [`MIN_STARS`]..=[`MAX_STARS`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct Stars(u32);

impl Stars {
    /// The number of stars.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Stars {
    type Error = StarsError;

    fn try_from(value: u32) -> Result<Self, StarsError> {
        if (MIN_STARS..=MAX_STARS).contains(&value) {
            Ok(Self(value))
        } else {
            Err(StarsError { value: Some(value) })
        }
    }
}

impl FromStr for Stars {
    type Err = StarsError;

    fn from_str(s: &str) -> Result<Self, StarsError> {
        let n: u32 = s.parse().map_err(|_| StarsError { value: None })?;
        Self::try_from(n)
    }
}

impl From<Stars> for u32 {
    fn from(stars: Stars) -> u32 {
        stars.0
    }
}

impl fmt::Display for Stars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_are_one_to_five() {
        for good in 1..=5 {
            assert_eq!(Stars::try_from(good).map(Stars::get), Ok(good));
        }
        for bad in [0, 6, u32::MAX] {
            let e = Stars::try_from(bad).unwrap_err();
            assert_eq!(e.value, Some(bad));
            assert_eq!(format!("stars {e}"), "stars must be between 1 and 5");
        }
        assert_eq!("4".parse::<Stars>().map(u32::from), Ok(4));
        assert_eq!("four".parse::<Stars>(), Err(StarsError { value: None }));
    }

    #[test]
    fn serde_reads_stars_through_the_same_rule() {
        assert_eq!(serde_json::from_str::<Stars>("5").unwrap().get(), 5);
        let e = serde_json::from_str::<Stars>("6").unwrap_err();
        assert!(e.to_string().contains("must be between 1 and 5"), "{e}");
        assert_eq!(
            serde_json::to_string(&Stars::try_from(3).unwrap()).unwrap(),
            "3"
        );
    }
}
