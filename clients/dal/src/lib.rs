//! Driver client for the data access layer (`dal.v1`).
//!
//! The reference way to call the dal: typed methods over domain structs (no
//! protobuf types in the API), one error type ([`Error`]), a connection per
//! instance reused across calls, and a per-call deadline bounded by the
//! caller's remaining budget. Every write carries its timestamp, so retries
//! are idempotent.

#![forbid(unsafe_code)]

use fleet_proto::dal::v1 as pb;

pub use fleet_types::{Progress, Rating};

pub use fleet_rpc::{
    CallOptions, Dependency, DependencyConfig, Instance, InstanceSource, Page, RpcError as Error,
    Unavailable,
};

/// The gRPC service name, for health checks and reflection.
pub const SERVICE_NAME: &str = "dal.v1.DataAccess";
/// The interface major this client speaks.
pub const INTERFACE_MAJOR: u64 = 1;

mod ops {
    use fleet_rpc::{Operation, operation};
    // Every write is idempotent (last write wins on the caller's
    // timestamp), so writes are retried like reads.
    pub static GET_TITLE: Operation = operation!("dal.v1.DataAccess", "GetTitle", idempotent);
    pub static BATCH_GET_TITLES: Operation =
        operation!("dal.v1.DataAccess", "BatchGetTitles", idempotent);
    pub static LIST_TITLES: Operation = operation!("dal.v1.DataAccess", "ListTitles", idempotent);
    pub static LIST_GENRES: Operation = operation!("dal.v1.DataAccess", "ListGenres", idempotent);
    pub static PUT_RATING: Operation = operation!("dal.v1.DataAccess", "PutRating", idempotent);
    pub static LIST_RATINGS_BY_USER: Operation =
        operation!("dal.v1.DataAccess", "ListRatingsByUser", idempotent);
    pub static LIST_RATINGS_BY_TITLE: Operation =
        operation!("dal.v1.DataAccess", "ListRatingsByTitle", idempotent);
    pub static BATCH_GET_RATING_SUMMARIES: Operation =
        operation!("dal.v1.DataAccess", "BatchGetRatingSummaries", idempotent);
    pub static TOP_RATED: Operation = operation!("dal.v1.DataAccess", "TopRated", idempotent);
    pub static PUT_PROGRESS: Operation = operation!("dal.v1.DataAccess", "PutProgress", idempotent);
    pub static LIST_PROGRESS: Operation =
        operation!("dal.v1.DataAccess", "ListProgress", idempotent);
}

/// A title.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// A genre and how many titles it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genre {
    /// Name.
    pub name: String,
    /// Number of titles.
    pub title_count: u64,
}

/// A title's rating summary.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RatingSummary {
    /// Title id.
    pub title_id: String,
    /// Number of ratings.
    pub count: u64,
    /// Sum of their stars.
    pub stars_sum: u64,
}

impl RatingSummary {
    /// Mean stars, `None` when never rated.
    pub fn average(&self) -> Option<f64> {
        (self.count > 0).then(|| self.stars_sum as f64 / self.count as f64)
    }
}

/// The outcome of a rating write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RatingWrite {
    /// The rating stored after the call.
    pub rating: Rating,
    /// Whether this call changed anything (false for a duplicate or stale write).
    pub applied: bool,
    /// The title's summary after the call.
    pub summary: RatingSummary,
}

/// The outcome of a progress write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressWrite {
    /// Whether the write is now the stored one (newer, or an exact duplicate).
    pub applied: bool,
    /// What is stored after the call.
    pub current: Progress,
}

/// Client for the dal (cheap to clone; clones share connections).
#[derive(Clone, Debug)]
pub struct DalClient {
    dep: Dependency,
}

impl DalClient {
    /// A client over `dep` (whose config names the dal and this caller).
    pub fn new(dep: Dependency) -> Self {
        Self { dep }
    }

    /// The underlying dependency (instances, config).
    pub fn dependency(&self) -> &Dependency {
        &self.dep
    }

    /// Succeeds when a dal instance reports SERVING on gRPC health.
    ///
    /// # Errors
    /// [`Error`] when none does.
    pub async fn probe(&self) -> Result<(), Error> {
        self.dep.probe().await
    }

    /// One title.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such title; others as usual.
    pub async fn get_title(&self, id: &str, opts: CallOptions) -> Result<Title, Error> {
        let resp: pb::GetTitleResponse = self
            .dep
            .unary(
                &ops::GET_TITLE,
                pb::GetTitleRequest { id: id.to_owned() },
                opts,
            )
            .await?;
        resp.title
            .map(Title::from)
            .ok_or_else(|| Error::missing_field("dal", &ops::GET_TITLE, "title"))
    }

    /// Up to 100 titles by id; unknown ids are left out.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn batch_get_titles(
        &self,
        ids: &[String],
        opts: CallOptions,
    ) -> Result<Vec<Title>, Error> {
        let resp: pb::BatchGetTitlesResponse = self
            .dep
            .unary(
                &ops::BATCH_GET_TITLES,
                pb::BatchGetTitlesRequest { ids: ids.to_vec() },
                opts,
            )
            .await?;
        Ok(resp.titles.into_iter().map(Title::from).collect())
    }

    /// A page of titles of `genre` (all titles when `None`), by id.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad limit or page token.
    pub async fn list_titles(
        &self,
        genre: Option<&str>,
        limit: u32,
        page_token: Option<&[u8]>,
        opts: CallOptions,
    ) -> Result<Page<Title>, Error> {
        let resp: pb::ListTitlesResponse = self
            .dep
            .unary(
                &ops::LIST_TITLES,
                pb::ListTitlesRequest {
                    genre: genre.unwrap_or_default().to_owned(),
                    limit,
                    page_token: page_token.map(<[u8]>::to_vec).unwrap_or_default(),
                },
                opts,
            )
            .await?;
        Ok(Page::new(
            resp.titles.into_iter().map(Title::from).collect(),
            resp.next_page_token,
        ))
    }

    /// The genres and their title counts.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn list_genres(&self, opts: CallOptions) -> Result<Vec<Genre>, Error> {
        let resp: pb::ListGenresResponse = self
            .dep
            .unary(&ops::LIST_GENRES, pb::ListGenresRequest {}, opts)
            .await?;
        Ok(resp
            .genres
            .into_iter()
            .map(|g| Genre {
                name: g.name,
                title_count: g.title_count,
            })
            .collect())
    }

    /// Sets a rating (last write wins on `rated_at_ms`); never double-counts.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown title; [`Error::InvalidArgument`]
    /// for stars outside 1..=5.
    pub async fn put_rating(
        &self,
        rating: Rating,
        opts: CallOptions,
    ) -> Result<RatingWrite, Error> {
        let resp: pb::PutRatingResponse = self
            .dep
            .unary(
                &ops::PUT_RATING,
                pb::PutRatingRequest {
                    rating: Some(rating.into()),
                },
                opts,
            )
            .await?;
        Ok(RatingWrite {
            rating: resp
                .rating
                .map(Rating::from)
                .ok_or_else(|| Error::missing_field("dal", &ops::PUT_RATING, "rating"))?,
            applied: resp.applied,
            summary: resp.summary.map(RatingSummary::from).unwrap_or_default(),
        })
    }

    /// A user's ratings, newest first.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn list_ratings_by_user(
        &self,
        user_id: &str,
        limit: u32,
        page_token: Option<&[u8]>,
        opts: CallOptions,
    ) -> Result<Page<Rating>, Error> {
        let resp: pb::ListRatingsByUserResponse = self
            .dep
            .unary(
                &ops::LIST_RATINGS_BY_USER,
                pb::ListRatingsByUserRequest {
                    user_id: user_id.to_owned(),
                    limit,
                    page_token: page_token.map(<[u8]>::to_vec).unwrap_or_default(),
                },
                opts,
            )
            .await?;
        Ok(Page::new(
            resp.ratings.into_iter().map(Rating::from).collect(),
            resp.next_page_token,
        ))
    }

    /// A title's ratings, by user id.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn list_ratings_by_title(
        &self,
        title_id: &str,
        limit: u32,
        page_token: Option<&[u8]>,
        opts: CallOptions,
    ) -> Result<Page<Rating>, Error> {
        let resp: pb::ListRatingsByTitleResponse = self
            .dep
            .unary(
                &ops::LIST_RATINGS_BY_TITLE,
                pb::ListRatingsByTitleRequest {
                    title_id: title_id.to_owned(),
                    limit,
                    page_token: page_token.map(<[u8]>::to_vec).unwrap_or_default(),
                },
                opts,
            )
            .await?;
        Ok(Page::new(
            resp.ratings.into_iter().map(Rating::from).collect(),
            resp.next_page_token,
        ))
    }

    /// Summaries of up to 100 titles (count 0 for never-rated titles).
    ///
    /// # Errors
    /// [`Error`].
    pub async fn batch_get_rating_summaries(
        &self,
        title_ids: &[String],
        opts: CallOptions,
    ) -> Result<Vec<RatingSummary>, Error> {
        let resp: pb::BatchGetRatingSummariesResponse = self
            .dep
            .unary(
                &ops::BATCH_GET_RATING_SUMMARIES,
                pb::BatchGetRatingSummariesRequest {
                    title_ids: title_ids.to_vec(),
                },
                opts,
            )
            .await?;
        Ok(resp
            .summaries
            .into_iter()
            .map(RatingSummary::from)
            .collect())
    }

    /// The best-rated titles (optionally of one genre, with at least
    /// `min_count` ratings).
    ///
    /// # Errors
    /// [`Error`].
    pub async fn top_rated(
        &self,
        limit: u32,
        genre: Option<&str>,
        min_count: u64,
        opts: CallOptions,
    ) -> Result<Vec<RatingSummary>, Error> {
        let resp: pb::TopRatedResponse = self
            .dep
            .unary(
                &ops::TOP_RATED,
                pb::TopRatedRequest {
                    limit,
                    genre: genre.unwrap_or_default().to_owned(),
                    min_count,
                },
                opts,
            )
            .await?;
        Ok(resp
            .summaries
            .into_iter()
            .map(RatingSummary::from)
            .collect())
    }

    /// Records viewing progress (last write wins on `updated_at_ms`).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown title.
    pub async fn put_progress(
        &self,
        progress: Progress,
        opts: CallOptions,
    ) -> Result<ProgressWrite, Error> {
        let resp: pb::PutProgressResponse = self
            .dep
            .unary(
                &ops::PUT_PROGRESS,
                pb::PutProgressRequest {
                    progress: Some(progress.into()),
                },
                opts,
            )
            .await?;
        Ok(ProgressWrite {
            applied: resp.applied,
            current: resp
                .current
                .map(Progress::from)
                .ok_or_else(|| Error::missing_field("dal", &ops::PUT_PROGRESS, "current"))?,
        })
    }

    /// A user's progress, most recently updated first.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn list_progress(
        &self,
        user_id: &str,
        limit: u32,
        opts: CallOptions,
    ) -> Result<Vec<Progress>, Error> {
        let resp: pb::ListProgressResponse = self
            .dep
            .unary(
                &ops::LIST_PROGRESS,
                pb::ListProgressRequest {
                    user_id: user_id.to_owned(),
                    limit,
                },
                opts,
            )
            .await?;
        Ok(resp.items.into_iter().map(Progress::from).collect())
    }
}

impl From<pb::Title> for Title {
    fn from(t: pb::Title) -> Self {
        Self {
            id: t.id,
            name: t.name,
            genre: t.genre,
            year: t.year,
            runtime_min: t.runtime_min,
            synopsis: t.synopsis,
        }
    }
}

impl From<Title> for pb::Title {
    fn from(t: Title) -> Self {
        Self {
            id: t.id,
            name: t.name,
            genre: t.genre,
            year: t.year,
            runtime_min: t.runtime_min,
            synopsis: t.synopsis,
        }
    }
}

impl From<pb::RatingSummary> for RatingSummary {
    fn from(s: pb::RatingSummary) -> Self {
        Self {
            title_id: s.title_id,
            count: s.count,
            stars_sum: s.stars_sum,
        }
    }
}

impl From<RatingSummary> for pb::RatingSummary {
    fn from(s: RatingSummary) -> Self {
        Self {
            title_id: s.title_id,
            count: s.count,
            stars_sum: s.stars_sum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_is_none_for_unrated_titles() {
        let s = RatingSummary {
            title_id: "t1".into(),
            count: 0,
            stars_sum: 0,
        };
        assert_eq!(s.average(), None);
        let s = RatingSummary {
            title_id: "t1".into(),
            count: 4,
            stars_sum: 14,
        };
        assert_eq!(s.average(), Some(3.5));
    }

    #[test]
    fn operation_paths_match_the_proto_package() {
        assert_eq!(ops::GET_TITLE.path, "/dal.v1.DataAccess/GetTitle");
        assert!(ops::PUT_RATING.idempotent);
    }
}
