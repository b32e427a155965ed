//! The `ratings.v1.Ratings` gRPC service: validate, call the dal, present.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use fleet_dal_client::{CallOptions, DalClient};
use fleet_proto::ratings::v1 as pb;
use fleet_proto::ratings::v1::ratings_server::Ratings;
use fleet_rpc::HandlerError;
use fleet_types::{Genre, MAX_LIMIT, PageToken, TitleId, UserId, field};
use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::{Span, instrument};

use crate::progress::is_finished;
use crate::validate;

/// The gRPC service (cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct RatingsService {
    dal: DalClient,
    top_rated_min_count: u64,
}

/// Milliseconds since the Unix epoch by this instance's clock.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The dal's summary (a sum of stars) as clients see it (a mean).
fn summary(s: fleet_dal_client::RatingSummary) -> pb::RatingSummary {
    pb::RatingSummary {
        average: s.average().unwrap_or(0.0),
        title_id: s.title_id,
        count: s.count,
    }
}

/// Records validated ids on the current span (raw input never reaches the
/// logs).
fn record_ids(user_id: &str, title_id: Option<&str>) {
    let span = Span::current();
    span.record("user_id", user_id);
    if let Some(t) = title_id {
        span.record("title_id", t);
    }
}

impl RatingsService {
    /// A service over `dal`; "top rated" leaves out titles with fewer than
    /// `top_rated_min_count` ratings.
    pub(crate) fn new(dal: DalClient, top_rated_min_count: u64) -> Self {
        Self {
            dal,
            top_rated_min_count,
        }
    }

    async fn rate(&self, req: pb::RateTitleRequest) -> Result<pb::RateTitleResponse, HandlerError> {
        let user_id: UserId = field::id("user_id", req.user_id)?;
        let title_id: TitleId = field::id("title_id", req.title_id)?;
        let stars = field::stars(req.stars)?.get();
        let rated_at_ms = validate::timestamp("rated_at_ms", req.rated_at_ms, now_ms())?;
        record_ids(user_id.as_str(), Some(title_id.as_str()));
        let title_id = title_id.into_string();
        let write = self
            .dal
            .put_rating(
                fleet_dal_client::Rating {
                    user_id: user_id.into_string(),
                    title_id: title_id.clone(),
                    stars,
                    rated_at_ms,
                },
                CallOptions::default(),
            )
            .await?;
        let mut summary = summary(write.summary);
        if summary.title_id.is_empty() {
            summary.title_id = title_id;
        }
        tracing::debug!(
            applied = write.applied,
            stars,
            count = summary.count,
            "rating written"
        );
        Ok(pb::RateTitleResponse {
            rating: Some(write.rating.into()),
            summary: Some(summary),
            applied: write.applied,
        })
    }

    async fn user_ratings(
        &self,
        req: pb::ListUserRatingsRequest,
    ) -> Result<pb::ListUserRatingsResponse, HandlerError> {
        let user_id: UserId = field::id("user_id", req.user_id)?;
        let limit = field::limit(req.limit)?;
        let token = field::page_token(req.page_token)?;
        record_ids(user_id.as_str(), None);
        let page = self
            .dal
            .list_ratings_by_user(
                user_id.as_str(),
                limit.get(),
                token.as_ref().map(PageToken::as_bytes),
                CallOptions::default(),
            )
            .await?;
        Ok(pb::ListUserRatingsResponse {
            ratings: page.items.into_iter().map(pb::Rating::from).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    async fn summaries(
        &self,
        req: pb::GetSummariesRequest,
    ) -> Result<pb::GetSummariesResponse, HandlerError> {
        field::ids("title_ids", &req.title_ids)?;
        if req.title_ids.is_empty() {
            return Ok(pb::GetSummariesResponse::default());
        }
        let summaries = self
            .dal
            .batch_get_rating_summaries(&req.title_ids, CallOptions::default())
            .await?;
        Ok(pb::GetSummariesResponse {
            summaries: summaries.into_iter().map(summary).collect(),
        })
    }

    async fn top(&self, req: pb::TopRatedRequest) -> Result<pb::TopRatedResponse, HandlerError> {
        let limit = field::limit(req.limit)?;
        let genre = field::genre(req.genre)?;
        let genre = genre.as_ref().map(Genre::as_str);
        Span::current().record("genre", genre.unwrap_or_default());
        let top = self
            .dal
            .top_rated(
                limit.get(),
                genre,
                self.top_rated_min_count,
                CallOptions::default(),
            )
            .await?;
        Ok(pb::TopRatedResponse {
            summaries: top.into_iter().map(summary).collect(),
        })
    }

    async fn record(
        &self,
        req: pb::RecordProgressRequest,
    ) -> Result<pb::RecordProgressResponse, HandlerError> {
        let p = field::required("progress", req.progress)?;
        let user_id: UserId = field::id("progress.user_id", p.user_id)?;
        let title_id: TitleId = field::id("progress.title_id", p.title_id)?;
        let position_s = field::position_s("progress.position_s", p.position_s)?.get();
        let updated_at_ms =
            validate::timestamp("progress.updated_at_ms", p.updated_at_ms, now_ms())?;
        record_ids(user_id.as_str(), Some(title_id.as_str()));
        let write = self
            .dal
            .put_progress(
                fleet_dal_client::Progress {
                    user_id: user_id.into_string(),
                    title_id: title_id.into_string(),
                    position_s,
                    updated_at_ms,
                },
                CallOptions::default(),
            )
            .await?;
        tracing::debug!(applied = write.applied, position_s, "progress written");
        Ok(pb::RecordProgressResponse {
            applied: write.applied,
            current: Some(write.current.into()),
        })
    }

    /// The user's progress (most recent first, as the dal keeps it) less
    /// the titles they have finished or that no longer exist. Only the
    /// [`MAX_LIMIT`] most recent entries (one page of them, then one batch
    /// of their titles) are considered, so a user who finished very many
    /// titles lately may see fewer than `limit`.
    async fn continue_watching(
        &self,
        req: pb::ContinueWatchingRequest,
    ) -> Result<pb::ContinueWatchingResponse, HandlerError> {
        let user_id: UserId = field::id("user_id", req.user_id)?;
        let limit = field::limit(req.limit)?.as_usize();
        record_ids(user_id.as_str(), None);
        let recent = self
            .dal
            .list_progress(user_id.as_str(), MAX_LIMIT, CallOptions::default())
            .await?;
        if recent.is_empty() {
            return Ok(pb::ContinueWatchingResponse::default());
        }
        let ids: Vec<String> = recent.iter().map(|p| p.title_id.clone()).collect();
        let runtimes: HashMap<String, u32> = self
            .dal
            .batch_get_titles(&ids, CallOptions::default())
            .await?
            .into_iter()
            .map(|t| (t.id, t.runtime_min))
            .collect();
        let items = recent
            .into_iter()
            .filter(|p| {
                runtimes
                    .get(&p.title_id)
                    .is_some_and(|&runtime_min| !is_finished(p.position_s, runtime_min))
            })
            .take(limit)
            .map(pb::Progress::from)
            .collect();
        Ok(pb::ContinueWatchingResponse { items })
    }
}

#[tonic::async_trait]
impl Ratings for RatingsService {
    #[instrument(skip_all, fields(user_id = Empty, title_id = Empty))]
    async fn rate_title(
        &self,
        request: Request<pb::RateTitleRequest>,
    ) -> Result<Response<pb::RateTitleResponse>, Status> {
        Ok(Response::new(self.rate(request.into_inner()).await?))
    }

    #[instrument(skip_all, fields(user_id = Empty, limit = request.get_ref().limit))]
    async fn list_user_ratings(
        &self,
        request: Request<pb::ListUserRatingsRequest>,
    ) -> Result<Response<pb::ListUserRatingsResponse>, Status> {
        Ok(Response::new(
            self.user_ratings(request.into_inner()).await?,
        ))
    }

    #[instrument(skip_all, fields(title_ids = request.get_ref().title_ids.len()))]
    async fn get_summaries(
        &self,
        request: Request<pb::GetSummariesRequest>,
    ) -> Result<Response<pb::GetSummariesResponse>, Status> {
        Ok(Response::new(self.summaries(request.into_inner()).await?))
    }

    #[instrument(skip_all, fields(genre = Empty, limit = request.get_ref().limit))]
    async fn top_rated(
        &self,
        request: Request<pb::TopRatedRequest>,
    ) -> Result<Response<pb::TopRatedResponse>, Status> {
        Ok(Response::new(self.top(request.into_inner()).await?))
    }

    #[instrument(skip_all, fields(user_id = Empty, title_id = Empty))]
    async fn record_progress(
        &self,
        request: Request<pb::RecordProgressRequest>,
    ) -> Result<Response<pb::RecordProgressResponse>, Status> {
        Ok(Response::new(self.record(request.into_inner()).await?))
    }

    #[instrument(skip_all, fields(user_id = Empty, limit = request.get_ref().limit))]
    async fn continue_watching(
        &self,
        request: Request<pb::ContinueWatchingRequest>,
    ) -> Result<Response<pb::ContinueWatchingResponse>, Status> {
        Ok(Response::new(
            self.continue_watching(request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_come_from_the_stored_sum() {
        let s = summary(fleet_dal_client::RatingSummary {
            title_id: "t00001".into(),
            count: 4,
            stars_sum: 14,
        });
        assert_eq!(s.average, 3.5);
        assert_eq!(s.count, 4);
        let never = summary(fleet_dal_client::RatingSummary {
            title_id: "t00002".into(),
            count: 0,
            stars_sum: 0,
        });
        assert_eq!(never.average, 0.0);
    }

    #[test]
    fn the_clock_reads_after_the_seed_epoch() {
        assert!(now_ms() > 1_700_000_000_000);
    }
}
