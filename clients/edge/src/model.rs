//! The edge's JSON model: what `/api/v1/` accepts and answers.
//!
//! Defined once, here; the edge serves exactly these types and the OpenAPI
//! document is generated from them, so the client and the server cannot
//! disagree about a field.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// A title as the edge presents it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Title {
    /// Id, e.g. `t00042`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Genre.
    pub genre: String,
    /// Release year.
    pub year: u32,
    /// Runtime in minutes.
    pub runtime_min: u32,
    /// Synopsis.
    pub synopsis: String,
    /// Labels such as `new-release` (catalog 1.3 and later; empty from 1.2).
    #[serde(default)]
    pub badges: Vec<String>,
    /// Its rating summary; absent when the ratings part degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<RatingSummary>,
}

/// `GET /api/v2/titles/{id}`: a title as catalog 2.x (`catalog.v2`)
/// presents it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TitleV2 {
    /// Id, e.g. `t00042`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Genres.
    pub genres: Vec<String>,
    /// Release year.
    pub release_year: u32,
    /// Runtime in seconds.
    pub runtime_s: u32,
    /// Synopsis.
    pub synopsis: String,
    /// Labels such as `new-release`.
    #[serde(default)]
    pub badges: Vec<String>,
}

/// A title's rating summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RatingSummary {
    /// Number of ratings.
    pub count: u64,
    /// Mean stars (0 when never rated).
    pub average: f64,
}

/// A part of a response that could not be produced and what was served
/// instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Degraded {
    /// Which part, e.g. `rating`, `continue_watching`.
    pub part: String,
    /// Why: `unavailable`, `deadline_exceeded`, `circuit_open`, `error`.
    pub reason: String,
    /// What was served instead: `omitted`, `empty`, `cached`.
    pub fallback: String,
}

/// `GET /api/v1/titles/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TitleResponse {
    /// The title.
    pub title: Title,
    /// Parts that degraded; empty when the response is whole.
    #[serde(default)]
    pub degraded: Vec<Degraded>,
}

/// `GET /api/v1/titles`: one browse page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TitlePage {
    /// The titles, ordered by id.
    pub items: Vec<Title>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Parts that degraded; empty when the response is whole.
    #[serde(default)]
    pub degraded: Vec<Degraded>,
}

/// One row of a home page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HomeRow {
    /// `continue_watching`, `top_rated` or `genre`.
    pub id: String,
    /// Heading to show, e.g. `Because you watched Drama`.
    pub label: String,
    /// The titles of the row.
    pub items: Vec<HomeItem>,
}

/// A title on a home row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HomeItem {
    /// The title.
    pub title: Title,
    /// How far the user has watched (continue-watching row only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_s: Option<u32>,
}

/// `GET /api/v1/users/{user}/home`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HomePage {
    /// The user.
    pub user_id: String,
    /// Rows in display order; a row whose part degraded may be empty.
    pub rows: Vec<HomeRow>,
    /// Parts that degraded; empty when the page is whole.
    #[serde(default)]
    pub degraded: Vec<Degraded>,
}

/// Body of `PUT /api/v1/users/{user}/ratings/{title}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateRequest {
    /// 1..=5.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 5))]
    #[serde(deserialize_with = "whole_number")]
    pub stars: u32,
}

/// A user's rating of a title.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Rating {
    /// User id.
    pub user_id: String,
    /// Title id.
    pub title_id: String,
    /// 1..=5.
    pub stars: u32,
    /// When, in milliseconds since the Unix epoch.
    pub rated_at_ms: i64,
}

/// Answer to `PUT /api/v1/users/{user}/ratings/{title}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RateResponse {
    /// The rating stored after the call.
    pub rating: Rating,
    /// The title's summary after the call.
    pub summary: RatingSummary,
    /// False when the call changed nothing (a duplicate, or older than the
    /// stored rating).
    pub applied: bool,
}

/// `GET /api/v1/users/{user}/ratings`: one page, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RatingPage {
    /// The ratings.
    pub items: Vec<Rating>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Body of `PUT /api/v1/users/{user}/progress/{title}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// Seconds watched, 0..=86400.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 86400))]
    #[serde(deserialize_with = "whole_number")]
    pub position_s: u32,
}

/// Viewing progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Progress {
    /// User id.
    pub user_id: String,
    /// Title id.
    pub title_id: String,
    /// Seconds watched.
    pub position_s: u32,
    /// When, in milliseconds since the Unix epoch (last write wins).
    pub updated_at_ms: i64,
}

/// Answer to `PUT /api/v1/users/{user}/progress/{title}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProgressResponse {
    /// False when a newer update was already stored.
    pub applied: bool,
    /// What is stored after the call.
    pub progress: Progress,
}

/// Every error: `{"error":{"code":…,"message":…,"request_id":…}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `invalid_argument`, `not_found`,
    /// `unavailable`, `deadline_exceeded`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The request id (also in the `x-request-id` response header).
    pub request_id: String,
}

/// A JSON integer as JSON Schema (and so the OpenAPI document) defines it:
/// any number with a zero fractional part, `3` or `3.0`. serde's `u32`
/// alone refuses `3.0`, which every schema-driven client may send for an
/// `integer`; fractions, negatives and values past `u32` are still refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = u32;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number from 0 to 4294967295")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u32, E> {
            if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                // Exact: a whole number within u32's range.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(v as u32)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_written_with_a_zero_fraction_but_nothing_else_passes() {
        let ok = |body: &str| serde_json::from_str::<RateRequest>(body).map(|r| r.stars);
        assert_eq!(ok(r#"{"stars":3}"#).unwrap(), 3);
        assert_eq!(ok(r#"{"stars":3.0}"#).unwrap(), 3);
        assert_eq!(ok(r#"{"stars":3e0}"#).unwrap(), 3);
        for bad in [
            r#"{"stars":3.5}"#,
            r#"{"stars":-1}"#,
            r#"{"stars":-1.0}"#,
            r#"{"stars":4294967296}"#,
            r#"{"stars":1e300}"#,
            r#"{"stars":"3"}"#,
            r#"{"stars":null}"#,
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
        let p = serde_json::from_str::<ProgressRequest>(r#"{"position_s":19177.0}"#).unwrap();
        assert_eq!(p.position_s, 19177);
    }
}
