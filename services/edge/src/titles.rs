//! `GET /api/v1/titles/{id}` and `GET /api/v1/titles`.

use axum::Json;
use axum::extract::State;
use fleet_catalog_client::Title as CatalogTitle;
use fleet_edge_client::model::{Degraded, RatingSummary, Title, TitlePage, TitleResponse, TitleV2};
use fleet_ratings_client::Summary;
use fleet_rpc::{CallOptions, RpcError};
use fleet_types::{Genre, TitleId};
use serde::Deserialize;

use crate::error::{ApiError, degraded_reason};
use crate::extract::{self, ApiPath, ApiQuery};
use crate::state::{EdgeState, optional_part};

/// Query of `GET /titles`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only titles of this genre (e.g. `drama`); all when absent or empty.
    #[param(max_length = 64, pattern = r"^[A-Za-z0-9_-]{0,64}$", example = "drama")]
    pub genre: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page: an opaque token this API handed
    /// out (any other value is 400); empty or absent is the first page.
    #[param(max_length = 1400, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// One title, with its rating summary when the ratings service answers.
#[utoipa::path(
    get,
    path = "/api/v1/titles/{id}",
    params(("id" = String, Path, description = "Title id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "t00042")),
    responses(
        (status = 200, description = "The title; `degraded` lists parts that could not be fetched", body = TitleResponse,
            links(
                ("RateTitle" = (operation_id = "rate_title", parameters(("title" = "$response.body#/title/id")),
                    description = "Rate this title")),
            )),
        (status = 400, description = "Malformed id", body = fleet_edge_client::model::ErrorBody),
        (status = 404, description = "No such title", body = fleet_edge_client::model::ErrorBody),
        (status = 503, description = "The catalog is unavailable (Retry-After)", body = fleet_edge_client::model::ErrorBody),
        (status = 504, description = "The time budget ran out", body = fleet_edge_client::model::ErrorBody),
    ),
    tag = "titles"
)]
pub async fn get_title(
    State(s): State<EdgeState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TitleResponse>, ApiError> {
    let id: TitleId = extract::id("title id", id)?;
    let ids = [id.as_str().to_owned()];
    // The summary is optional: ask for it beside the title, not after it.
    let (title, summaries) = tokio::join!(
        s.catalog.get_title(id.as_str(), CallOptions::default()),
        s.ratings.get_summaries(&ids, optional_part()),
    );
    let title = title.map_err(|e| ApiError::from_rpc(&e))?;
    let mut degraded = Vec::new();
    let summaries = summaries_or_degrade(summaries, &mut degraded);
    Ok(Json(TitleResponse {
        title: with_rating(title, &summaries),
        degraded,
    }))
}

/// One title from catalog 2.x (`catalog.v2`), beside `/api/v1/` served by
/// 1.x: both interfaces live side by side.
#[utoipa::path(
    get,
    path = "/api/v2/titles/{id}",
    params(("id" = String, Path, description = "Title id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "t00042")),
    responses(
        (status = 200, description = "The title as catalog 2.x presents it", body = TitleV2),
        (status = 400, description = "Malformed id", body = fleet_edge_client::model::ErrorBody),
        (status = 404, description = "No such title", body = fleet_edge_client::model::ErrorBody),
        (status = 503, description = "No catalog 2.x instance is available (Retry-After)", body = fleet_edge_client::model::ErrorBody),
        (status = 504, description = "The time budget ran out", body = fleet_edge_client::model::ErrorBody),
    ),
    tag = "titles"
)]
pub async fn get_title_v2(
    State(s): State<EdgeState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TitleV2>, ApiError> {
    let id: TitleId = extract::id("title id", id)?;
    let t = s
        .catalog_v2
        .get_title(id.as_str(), CallOptions::default())
        .await
        .map_err(|e| ApiError::from_rpc(&e))?;
    Ok(Json(TitleV2 {
        id: t.id,
        name: t.name,
        genres: t.genres,
        release_year: t.release_year,
        runtime_s: t.runtime_s,
        synopsis: t.synopsis,
        badges: t.badges,
    }))
}

/// A browse page of titles, with their rating summaries when available.
#[utoipa::path(
    get,
    path = "/api/v1/titles",
    params(ListQuery),
    responses(
        (status = 200, description = "One page, ordered by id", body = TitlePage,
            links(
                ("GetFirstTitle" = (operation_id = "get_title", parameters(("id" = "$response.body#/items/0/id")),
                    description = "The first title of the page")),
                ("NextPage" = (operation_id = "list_titles",
                    parameters(("genre" = "$request.query.genre"), ("cursor" = "$response.body#/next_cursor")),
                    description = "The next page of the same browse")),
            )),
        (status = 400, description = "Bad genre, limit or cursor", body = fleet_edge_client::model::ErrorBody),
        (status = 503, description = "The catalog is unavailable (Retry-After)", body = fleet_edge_client::model::ErrorBody),
        (status = 504, description = "The time budget ran out", body = fleet_edge_client::model::ErrorBody),
    ),
    tag = "titles"
)]
pub async fn list_titles(
    State(s): State<EdgeState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TitlePage>, ApiError> {
    let genre = extract::genre(q.genre)?;
    let limit = extract::limit(q.limit.as_deref())?;
    let cursor = extract::cursor(q.cursor.as_deref())?;
    let page = s
        .catalog
        .list_titles(
            genre.as_ref().map(Genre::as_str),
            limit.get(),
            cursor.as_deref(),
            CallOptions::default(),
        )
        .await
        .map_err(|e| ApiError::from_rpc(&e))?;
    let mut degraded = Vec::new();
    let summaries = if page.items.is_empty() {
        Vec::new()
    } else {
        let ids: Vec<String> = page.items.iter().map(|t| t.id.clone()).collect();
        summaries_or_degrade(
            s.ratings.get_summaries(&ids, optional_part()).await,
            &mut degraded,
        )
    };
    Ok(Json(TitlePage {
        items: page
            .items
            .into_iter()
            .map(|t| with_rating(t, &summaries))
            .collect(),
        next_cursor: page.next_page_token.as_deref().map(extract::encode_cursor),
        degraded,
    }))
}

/// The summaries, or none and a note that the `rating` part degraded.
pub(crate) fn summaries_or_degrade(
    r: Result<Vec<Summary>, RpcError>,
    degraded: &mut Vec<Degraded>,
) -> Vec<Summary> {
    r.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "rating summaries unavailable; serving titles without them");
        degraded.push(Degraded {
            part: "rating".into(),
            reason: degraded_reason(&e).into(),
            fallback: "omitted".into(),
        });
        Vec::new()
    })
}

/// The edge's view of a catalog title, with its summary if one is known.
pub(crate) fn with_rating(t: CatalogTitle, summaries: &[Summary]) -> Title {
    let rating = summaries
        .iter()
        .find(|s| s.title_id == t.id)
        .map(|s| RatingSummary {
            count: s.count,
            average: s.average,
        });
    Title {
        id: t.id,
        name: t.name,
        genre: t.genre,
        year: t.year,
        runtime_min: t.runtime_min,
        synopsis: t.synopsis,
        badges: t.badges,
        rating,
    }
}
