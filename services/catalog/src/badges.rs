//! Title badges, the feature catalog 1.3 adds.
//!
//! A badge is a short label derived only from a title's stored fields, so
//! every 1.3 instance gives the same title the same badges, whatever its
//! clock or cache. The rules, in the order badges are listed:
//!
//! | badge         | when                          |
//! |---------------|-------------------------------|
//! | `new-release` | year ≥ [`NEW_RELEASE_FROM`]   |
//! | `classic`     | year < [`CLASSIC_BEFORE`]     |
//! | `short`       | runtime < [`SHORT_UNDER_MIN`] |
//! | `epic`        | runtime ≥ [`EPIC_FROM_MIN`]   |
//!
//! A year or runtime of 0 means "unknown" and earns no badge.

/// Titles released in this year or later are `new-release`.
pub const NEW_RELEASE_FROM: u32 = 2020;
/// Titles released before this year are `classic`.
pub const CLASSIC_BEFORE: u32 = 1980;
/// Titles shorter than this many minutes are `short`.
pub const SHORT_UNDER_MIN: u32 = 90;
/// Titles this many minutes or longer are `epic`.
pub const EPIC_FROM_MIN: u32 = 150;

/// The badges of a title released in `year` that runs `runtime_min`
/// minutes, in the documented order.
pub fn badges(year: u32, runtime_min: u32) -> Vec<String> {
    let rules: [(&str, bool); 4] = [
        ("new-release", year >= NEW_RELEASE_FROM),
        ("classic", year != 0 && year < CLASSIC_BEFORE),
        ("short", runtime_min != 0 && runtime_min < SHORT_UNDER_MIN),
        ("epic", runtime_min >= EPIC_FROM_MIN),
    ];
    rules
        .into_iter()
        .filter(|(_, applies)| *applies)
        .map(|(badge, _)| badge.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_short_film_is_new_and_short() {
        assert_eq!(badges(2023, 85), ["new-release", "short"]);
    }

    #[test]
    fn an_old_long_film_is_a_classic_epic() {
        assert_eq!(badges(1962, 216), ["classic", "epic"]);
    }

    #[test]
    fn an_ordinary_film_has_no_badges() {
        assert!(badges(1999, 120).is_empty());
    }

    #[test]
    fn boundaries_are_inclusive_where_documented() {
        assert_eq!(badges(2020, 150), ["new-release", "epic"]);
        assert!(badges(2019, 149).is_empty());
        assert!(badges(1980, 90).is_empty());
        assert_eq!(badges(1979, 89), ["classic", "short"]);
    }

    #[test]
    fn unknown_year_or_runtime_earns_nothing() {
        assert!(badges(0, 0).is_empty());
    }
}
