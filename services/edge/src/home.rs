//! `GET /api/v1/users/{user}/home`: the fan-out.
//!
//! Three rows, each a part with a declared fallback:
//!
//! | row | from | fallback |
//! |---|---|---|
//! | `continue_watching` | ratings `ContinueWatching` + catalog titles | empty row |
//! | `top_rated` | ratings `TopRated` + catalog titles | the last good row (`cached`), else empty |
//! | `genre` | catalog `ListTitles` of the user's current genre | empty row |
//!
//! The first two are asked for at once, with at most half the remaining
//! budget (they have fallbacks), then one catalog batch fills in their
//! titles while the genre row is listed. A degraded row is listed in
//! `degraded`; only when every row failed and no fallback has anything is
//! the answer an error (503/504).

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use fleet_catalog_client::Title as CatalogTitle;
use fleet_edge_client::model::{Degraded, ErrorBody, HomeItem, HomePage, HomeRow};
use fleet_ratings_client::{Progress, Summary};
use fleet_rpc::{CallOptions, RpcError};
use fleet_types::UserId;

use crate::error::{ApiError, degraded_reason};
use crate::extract::{self, ApiPath};
use crate::state::{EdgeState, optional_part};
use crate::titles::with_rating;

/// Titles per row.
pub const ROW_LEN: u32 = 10;
/// The genre row's genre when the user has nothing in progress.
pub const DEFAULT_GENRE: &str = "drama";

/// The user's home page.
#[utoipa::path(
    get,
    path = "/api/v1/users/{user}/home",
    params(("user" = String, Path, description = "User id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "u00001")),
    responses(
        (status = 200, description = "The rows; `degraded` lists rows served from a fallback", body = HomePage),
        (status = 400, description = "Malformed user id", body = ErrorBody),
        (status = 503, description = "No row could be produced (Retry-After)", body = ErrorBody),
        (status = 504, description = "The time budget ran out", body = ErrorBody),
    ),
    tag = "users"
)]
pub async fn home(
    State(s): State<EdgeState>,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<HomePage>, ApiError> {
    let user: UserId = extract::id("user id", user)?;
    let opts = CallOptions::default;
    // The ratings rows are optional: they may spend only part of the
    // budget, so the catalog stage after them still has time.
    let (watching, top) = tokio::join!(
        s.ratings
            .continue_watching(user.as_str(), ROW_LEN, optional_part()),
        s.ratings.top_rated(ROW_LEN, None, optional_part()),
    );

    let mut ids: Vec<String> = Vec::new();
    if let Ok(items) = &watching {
        ids.extend(items.iter().map(|p| p.title_id.clone()));
    }
    if let Ok(items) = &top {
        ids.extend(items.iter().map(|s| s.title_id.clone()));
    }
    ids.sort();
    ids.dedup();
    let titles = async {
        if ids.is_empty() {
            Ok(Vec::new())
        } else {
            s.catalog.batch_get_titles(&ids, opts()).await
        }
    };
    // The genre row follows what the user watched last; it needs that
    // title's genre, which only the catalog knows, so it is listed once the
    // batch is in. Without progress it can start at once.
    let (titles, genre_row) = match first_title_id(&watching) {
        Some(_) => {
            let titles = titles.await;
            let genre = genre_of_latest(&watching, &titles);
            let row = s
                .catalog
                .list_titles(Some(&genre), ROW_LEN, None, opts())
                .await
                .map(|p| (genre, p.items));
            (titles, row)
        }
        None => {
            let genre = DEFAULT_GENRE.to_owned();
            let (titles, row) = tokio::join!(
                titles,
                s.catalog.list_titles(Some(&genre), ROW_LEN, None, opts())
            );
            (titles, row.map(|p| (genre, p.items)))
        }
    };

    let mut page = Page::default();
    let by_id: HashMap<String, CatalogTitle> = match &titles {
        Ok(list) => list.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        Err(_) => HashMap::new(),
    };

    // continue watching
    let row = watching
        .and_then(|items| titles.as_ref().map(|_| items).map_err(Clone::clone))
        .map(|items| {
            items
                .into_iter()
                .filter_map(|p| {
                    by_id.get(&p.title_id).map(|t| HomeItem {
                        title: with_rating(t.clone(), &[]),
                        position_s: Some(p.position_s),
                    })
                })
                .collect::<Vec<_>>()
        });
    page.row("continue_watching", "Continue watching", row, None);

    // top rated, with the last good row as its fallback
    let row = top
        .and_then(|summaries| titles.as_ref().map(|_| summaries).map_err(Clone::clone))
        .map(|summaries| top_rated_row(summaries, &by_id));
    if let Ok(items) = &row
        && !items.is_empty()
    {
        s.top_rated.put(items.clone());
    }
    page.row("top_rated", "Top rated", row, s.top_rated.get());

    // genre
    let (label, row) = match genre_row {
        Ok((genre, items)) => (
            format!("Popular in {genre}"),
            Ok(items
                .into_iter()
                .map(|t| HomeItem {
                    title: with_rating(t, &[]),
                    position_s: None,
                })
                .collect()),
        ),
        Err(e) => ("More to watch".to_owned(), Err(e)),
    };
    page.row("genre", &label, row, None);

    page.finish(user.into_string())
}

fn first_title_id(watching: &Result<Vec<Progress>, RpcError>) -> Option<&str> {
    watching
        .as_ref()
        .ok()
        .and_then(|v| v.first())
        .map(|p| p.title_id.as_str())
}

fn genre_of_latest(
    watching: &Result<Vec<Progress>, RpcError>,
    titles: &Result<Vec<CatalogTitle>, RpcError>,
) -> String {
    let latest = first_title_id(watching);
    titles
        .as_ref()
        .ok()
        .and_then(|ts| ts.iter().find(|t| Some(t.id.as_str()) == latest))
        .map_or_else(|| DEFAULT_GENRE.to_owned(), |t| t.genre.clone())
}

fn top_rated_row(summaries: Vec<Summary>, by_id: &HashMap<String, CatalogTitle>) -> Vec<HomeItem> {
    summaries
        .into_iter()
        .filter_map(|s| {
            by_id.get(&s.title_id).map(|t| HomeItem {
                title: with_rating(t.clone(), std::slice::from_ref(&s)),
                position_s: None,
            })
        })
        .collect()
}

/// The page being assembled: rows, what degraded, and the first failure.
#[derive(Default)]
struct Page {
    rows: Vec<HomeRow>,
    degraded: Vec<Degraded>,
    failed: usize,
    first_error: Option<RpcError>,
}

impl Page {
    fn row(
        &mut self,
        id: &str,
        label: &str,
        items: Result<Vec<HomeItem>, RpcError>,
        fallback: Option<Vec<HomeItem>>,
    ) {
        let items = match items {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(row = id, error = %e, "home row degraded");
                let (fallback_name, items) = match fallback {
                    Some(items) => ("cached", items),
                    None => {
                        self.failed += 1;
                        ("empty", Vec::new())
                    }
                };
                self.degraded.push(Degraded {
                    part: id.to_owned(),
                    reason: degraded_reason(&e).to_owned(),
                    fallback: fallback_name.to_owned(),
                });
                self.first_error.get_or_insert(e);
                items
            }
        };
        self.rows.push(HomeRow {
            id: id.to_owned(),
            label: label.to_owned(),
            items,
        });
    }

    fn finish(self, user_id: String) -> Result<Json<HomePage>, ApiError> {
        if self.failed == self.rows.len()
            && let Some(e) = &self.first_error
        {
            return Err(ApiError::from_rpc(e));
        }
        Ok(Json(HomePage {
            user_id,
            rows: self.rows,
            degraded: self.degraded,
        }))
    }
}
