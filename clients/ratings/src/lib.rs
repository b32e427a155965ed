//! Driver client for the ratings service (`ratings.v1`).
//!
//! Typed methods over domain structs, one error type ([`Error`]),
//! connection reuse, per-call deadlines bounded by the caller's remaining
//! budget. Writes carry the caller's timestamp, so a retried write is the
//! same write.

#![forbid(unsafe_code)]

use fleet_proto::ratings::v1 as pb;

pub use fleet_types::{Progress, Rating};

pub use fleet_rpc::{
    CallOptions, Dependency, DependencyConfig, Instance, InstanceSource, Page, RpcError as Error,
    Unavailable,
};

/// The gRPC service name.
pub const SERVICE_NAME: &str = "ratings.v1.Ratings";
/// The interface major this client speaks.
pub const INTERFACE_MAJOR: u64 = 1;

mod ops {
    use fleet_rpc::{Operation, operation};
    // Every method is idempotent: writes are keyed by the caller's timestamp.
    pub static RATE_TITLE: Operation = operation!("ratings.v1.Ratings", "RateTitle", idempotent);
    pub static LIST_USER_RATINGS: Operation =
        operation!("ratings.v1.Ratings", "ListUserRatings", idempotent);
    pub static GET_SUMMARIES: Operation =
        operation!("ratings.v1.Ratings", "GetSummaries", idempotent);
    pub static TOP_RATED: Operation = operation!("ratings.v1.Ratings", "TopRated", idempotent);
    pub static RECORD_PROGRESS: Operation =
        operation!("ratings.v1.Ratings", "RecordProgress", idempotent);
    pub static CONTINUE_WATCHING: Operation =
        operation!("ratings.v1.Ratings", "ContinueWatching", idempotent);
}

/// A title's rating summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Title id.
    pub title_id: String,
    /// Number of ratings.
    pub count: u64,
    /// Mean stars (0 when never rated).
    pub average: f64,
}

/// The outcome of a rating.
#[derive(Clone, Debug, PartialEq)]
pub struct RateOutcome {
    /// The rating stored after the call.
    pub rating: Rating,
    /// The title's summary after the call.
    pub summary: Summary,
    /// False when the call was a duplicate or older than the stored rating.
    pub applied: bool,
}

/// The outcome of a progress update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressOutcome {
    /// False when a newer update was already stored (`current` is that one).
    pub applied: bool,
    /// What is stored after the call.
    pub current: Progress,
}

/// Client for the ratings service (cheap to clone; clones share connections).
#[derive(Clone, Debug)]
pub struct RatingsClient {
    dep: Dependency,
}

impl RatingsClient {
    /// A client over `dep`.
    pub fn new(dep: Dependency) -> Self {
        Self { dep }
    }

    /// The underlying dependency.
    pub fn dependency(&self) -> &Dependency {
        &self.dep
    }

    /// Succeeds when a ratings instance reports SERVING.
    ///
    /// # Errors
    /// [`Error`] when none does.
    pub async fn probe(&self) -> Result<(), Error> {
        self.dep.probe().await
    }

    /// Sets `user_id`'s rating of `title_id`. `rated_at_ms` must be fixed by
    /// the first caller so a retry is the same write.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown title, [`Error::InvalidArgument`]
    /// for stars outside 1..=5 or malformed ids.
    pub async fn rate_title(
        &self,
        rating: Rating,
        opts: CallOptions,
    ) -> Result<RateOutcome, Error> {
        let resp: pb::RateTitleResponse = self
            .dep
            .unary(
                &ops::RATE_TITLE,
                pb::RateTitleRequest {
                    user_id: rating.user_id,
                    title_id: rating.title_id,
                    stars: rating.stars,
                    rated_at_ms: rating.rated_at_ms,
                },
                opts,
            )
            .await?;
        Ok(RateOutcome {
            rating: resp
                .rating
                .map(Rating::from)
                .ok_or_else(|| Error::missing_field("ratings", &ops::RATE_TITLE, "rating"))?,
            summary: resp
                .summary
                .map(Summary::from)
                .ok_or_else(|| Error::missing_field("ratings", &ops::RATE_TITLE, "summary"))?,
            applied: resp.applied,
        })
    }

    /// A user's ratings, newest first.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn list_user_ratings(
        &self,
        user_id: &str,
        limit: u32,
        page_token: Option<&[u8]>,
        opts: CallOptions,
    ) -> Result<Page<Rating>, Error> {
        let resp: pb::ListUserRatingsResponse = self
            .dep
            .unary(
                &ops::LIST_USER_RATINGS,
                pb::ListUserRatingsRequest {
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

    /// Summaries of up to 100 titles.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn get_summaries(
        &self,
        title_ids: &[String],
        opts: CallOptions,
    ) -> Result<Vec<Summary>, Error> {
        let resp: pb::GetSummariesResponse = self
            .dep
            .unary(
                &ops::GET_SUMMARIES,
                pb::GetSummariesRequest {
                    title_ids: title_ids.to_vec(),
                },
                opts,
            )
            .await?;
        Ok(resp.summaries.into_iter().map(Summary::from).collect())
    }

    /// The best-rated titles, optionally of one genre.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn top_rated(
        &self,
        limit: u32,
        genre: Option<&str>,
        opts: CallOptions,
    ) -> Result<Vec<Summary>, Error> {
        let resp: pb::TopRatedResponse = self
            .dep
            .unary(
                &ops::TOP_RATED,
                pb::TopRatedRequest {
                    limit,
                    genre: genre.unwrap_or_default().to_owned(),
                },
                opts,
            )
            .await?;
        Ok(resp.summaries.into_iter().map(Summary::from).collect())
    }

    /// Records viewing progress (last write wins on `updated_at_ms`).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown title.
    pub async fn record_progress(
        &self,
        progress: Progress,
        opts: CallOptions,
    ) -> Result<ProgressOutcome, Error> {
        let resp: pb::RecordProgressResponse = self
            .dep
            .unary(
                &ops::RECORD_PROGRESS,
                pb::RecordProgressRequest {
                    progress: Some(progress.into()),
                },
                opts,
            )
            .await?;
        Ok(ProgressOutcome {
            applied: resp.applied,
            current: resp
                .current
                .map(Progress::from)
                .ok_or_else(|| Error::missing_field("ratings", &ops::RECORD_PROGRESS, "current"))?,
        })
    }

    /// Titles the user started and has not finished, most recent first.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn continue_watching(
        &self,
        user_id: &str,
        limit: u32,
        opts: CallOptions,
    ) -> Result<Vec<Progress>, Error> {
        let resp: pb::ContinueWatchingResponse = self
            .dep
            .unary(
                &ops::CONTINUE_WATCHING,
                pb::ContinueWatchingRequest {
                    user_id: user_id.to_owned(),
                    limit,
                },
                opts,
            )
            .await?;
        Ok(resp.items.into_iter().map(Progress::from).collect())
    }
}

impl From<pb::RatingSummary> for Summary {
    fn from(s: pb::RatingSummary) -> Self {
        Self {
            title_id: s.title_id,
            count: s.count,
            average: s.average,
        }
    }
}

impl From<Summary> for pb::RatingSummary {
    fn from(s: Summary) -> Self {
        Self {
            title_id: s.title_id,
            count: s.count,
            average: s.average,
        }
    }
}
