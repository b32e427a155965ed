//! The user routes: ratings and viewing progress.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use fleet_edge_client::model::{
    ErrorBody, Progress, ProgressRequest, ProgressResponse, RateRequest, RateResponse, Rating,
    RatingPage, RatingSummary,
};
use fleet_ratings_client as ratings;
use fleet_rpc::CallOptions;
use fleet_types::{TitleId, UserId};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{self, ApiJson, ApiPath, ApiQuery};
use crate::state::EdgeState;

/// Query of `GET /users/{user}/ratings`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RatingsQuery {
    /// Page size, 1..=100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page: an opaque token this API handed
    /// out (any other value is 400); empty or absent is the first page.
    #[param(max_length = 1400, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// Sets the user's rating of a title. Repeating the call never counts the
/// rating twice.
#[utoipa::path(
    put,
    path = "/api/v1/users/{user}/ratings/{title}",
    params(
        ("user" = String, Path, description = "User id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "u00001"),
        ("title" = String, Path, description = "Title id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "t00042"),
    ),
    request_body(content = RateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The stored rating and the title's summary", body = RateResponse,
            links(
                ("ListRatings" = (operation_id = "list_ratings", parameters(("user" = "$request.path.user")),
                    description = "The user's ratings, this one among them")),
                ("GetRatedTitle" = (operation_id = "get_title", parameters(("id" = "$request.path.title")),
                    description = "The rated title with its new summary")),
            )),
        (status = 400, description = "Malformed id or JSON", body = ErrorBody),
        (status = 404, description = "No such title", body = ErrorBody),
        (status = 413, description = "Body over 4 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Stars outside 1..=5, or wrong fields/types", body = ErrorBody),
        (status = 503, description = "The ratings service is unavailable (Retry-After)", body = ErrorBody),
        (status = 504, description = "The time budget ran out", body = ErrorBody),
    ),
    tag = "users"
)]
pub async fn rate_title(
    State(s): State<EdgeState>,
    ApiPath((user, title)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<RateRequest>,
) -> Result<Json<RateResponse>, ApiError> {
    let user: UserId = extract::id("user id", user)?;
    let title: TitleId = extract::id("title id", title)?;
    let stars = extract::stars(body.stars)?;
    // The edge is the first caller: it fixes the write's timestamp once, so
    // every retry below it is the same write.
    let rating = ratings::Rating {
        user_id: user.into_string(),
        title_id: title.into_string(),
        stars: stars.get(),
        rated_at_ms: now_ms(),
    };
    let out = s
        .ratings
        .rate_title(rating, CallOptions::default())
        .await
        .map_err(|e| ApiError::from_rpc(&e))?;
    Ok(Json(RateResponse {
        rating: rating_json(out.rating),
        summary: RatingSummary {
            count: out.summary.count,
            average: out.summary.average,
        },
        applied: out.applied,
    }))
}

/// The user's ratings, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/users/{user}/ratings",
    params(("user" = String, Path, description = "User id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "u00001"), RatingsQuery),
    responses(
        (status = 200, description = "One page of ratings, newest first", body = RatingPage,
            links(
                ("NextPage" = (operation_id = "list_ratings",
                    parameters(("user" = "$request.path.user"), ("cursor" = "$response.body#/next_cursor")),
                    description = "The next page of the same user's ratings")),
            )),
        (status = 400, description = "Malformed id, limit or cursor", body = ErrorBody),
        (status = 503, description = "The ratings service is unavailable (Retry-After)", body = ErrorBody),
        (status = 504, description = "The time budget ran out", body = ErrorBody),
    ),
    tag = "users"
)]
pub async fn list_ratings(
    State(s): State<EdgeState>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<RatingsQuery>,
) -> Result<Json<RatingPage>, ApiError> {
    let user: UserId = extract::id("user id", user)?;
    let limit = extract::limit(q.limit.as_deref())?;
    let cursor = extract::cursor(q.cursor.as_deref())?;
    let page = s
        .ratings
        .list_user_ratings(
            user.as_str(),
            limit.get(),
            cursor.as_deref(),
            CallOptions::default(),
        )
        .await
        .map_err(|e| ApiError::from_rpc(&e))?;
    Ok(Json(RatingPage {
        items: page.items.into_iter().map(rating_json).collect(),
        next_cursor: page.next_page_token.as_deref().map(extract::encode_cursor),
    }))
}

/// Records how far the user has watched a title (the newest update wins).
#[utoipa::path(
    put,
    path = "/api/v1/users/{user}/progress/{title}",
    params(
        ("user" = String, Path, description = "User id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "u00001"),
        ("title" = String, Path, description = "Title id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "t00042"),
    ),
    request_body(content = ProgressRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What is stored after the call", body = ProgressResponse,
            links(
                ("Home" = (operation_id = "home", parameters(("user" = "$request.path.user")),
                    description = "The user's home page, whose continue-watching row reflects the progress")),
            )),
        (status = 400, description = "Malformed id or JSON", body = ErrorBody),
        (status = 404, description = "No such title", body = ErrorBody),
        (status = 413, description = "Body over 4 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "position_s outside 0..=86400, or wrong fields/types", body = ErrorBody),
        (status = 503, description = "The ratings service is unavailable (Retry-After)", body = ErrorBody),
        (status = 504, description = "The time budget ran out", body = ErrorBody),
    ),
    tag = "users"
)]
pub async fn record_progress(
    State(s): State<EdgeState>,
    ApiPath((user, title)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ProgressRequest>,
) -> Result<Json<ProgressResponse>, ApiError> {
    let user: UserId = extract::id("user id", user)?;
    let title: TitleId = extract::id("title id", title)?;
    let position_s = extract::position(body.position_s)?;
    let progress = ratings::Progress {
        user_id: user.into_string(),
        title_id: title.into_string(),
        position_s: position_s.get(),
        updated_at_ms: now_ms(),
    };
    let out = s
        .ratings
        .record_progress(progress, CallOptions::default())
        .await
        .map_err(|e| ApiError::from_rpc(&e))?;
    Ok(Json(ProgressResponse {
        applied: out.applied,
        progress: progress_json(out.current),
    }))
}

fn rating_json(r: ratings::Rating) -> Rating {
    Rating {
        user_id: r.user_id,
        title_id: r.title_id,
        stars: r.stars,
        rated_at_ms: r.rated_at_ms,
    }
}

fn progress_json(p: ratings::Progress) -> Progress {
    Progress {
        user_id: p.user_id,
        title_id: p.title_id,
        position_s: p.position_s,
        updated_at_ms: p.updated_at_ms,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
