//! The `dal.v1.DataAccess` gRPC service: validate, check the deadline, go
//! through the cache to the store, map errors to status codes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use fleet_context::RequestContext;
use fleet_proto::dal::v1 as pb;
use fleet_proto::dal::v1::data_access_server::DataAccess;

use crate::cache::SharedCache;
use crate::store::{SharedStore, StoreError};
use crate::validate;

/// The gRPC service (cheap to clone).
#[derive(Clone, Debug)]
pub struct DalService {
    store: SharedStore,
    cache: SharedCache,
}

impl DalService {
    /// A service over `store` with `cache` in front of it.
    pub fn new(store: SharedStore, cache: SharedCache) -> Self {
        Self { store, cache }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::TitleNotFound(_) => Status::not_found(e.to_string()),
            StoreError::BadToken(_) => Status::invalid_argument(e.to_string()),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "storage unavailable");
                Status::unavailable(e.to_string())
            }
            StoreError::Timeout(_) => {
                tracing::info!(error = %e, "storage query cut off by the deadline");
                Status::deadline_exceeded(e.to_string())
            }
            StoreError::Abandoned(_) => Status::cancelled(e.to_string()),
            StoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "corrupt record");
                Status::internal("corrupt record in storage")
            }
        }
    }
}

/// Nothing is computed for a caller that has already given up.
fn check_deadline() -> Result<(), Status> {
    if RequestContext::current().is_some_and(|cx| cx.is_expired()) {
        return Err(Status::deadline_exceeded(
            "deadline passed before the dal started work",
        ));
    }
    Ok(())
}

impl DalService {
    /// Titles by id through the cache, one slot per id (`None`: no such
    /// title); misses are read from the store in one call and cached,
    /// unknown ids as "missing".
    async fn titles(&self, ids: &[String]) -> Result<Vec<Option<Arc<pb::Title>>>, Status> {
        let cached = self.cache.titles(ids).await;
        let mut missing: Vec<String> = ids
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        missing.sort();
        missing.dedup();
        let mut fetched: std::collections::HashMap<String, Arc<pb::Title>> =
            std::collections::HashMap::new();
        if !missing.is_empty() {
            for t in self.store.batch_get_titles(missing.clone()).await? {
                fetched.insert(t.id.clone(), Arc::new(t));
            }
            let fill = missing
                .iter()
                .map(|id| (id.clone(), fetched.get(id).cloned()))
                .collect();
            self.cache.put_titles(fill).await;
        }
        Ok(ids
            .iter()
            .zip(cached)
            .map(|(id, c)| match c {
                Some(hit) => hit,
                None => fetched.get(id).cloned(),
            })
            .collect())
    }

    async fn summaries(&self, ids: Vec<String>) -> Result<Vec<pb::RatingSummary>, Status> {
        let cached = self.cache.summaries(&ids).await;
        let missing: Vec<String> = ids
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let mut fetched = Vec::new();
        if !missing.is_empty() {
            fetched = self.store.summaries(missing).await?;
            self.cache.fill_summaries(fetched.clone()).await;
        }
        let mut fetched = fetched.into_iter();
        Ok(cached
            .into_iter()
            .filter_map(|c| c.or_else(|| fetched.next()))
            .collect())
    }
}

#[tonic::async_trait]
impl DataAccess for DalService {
    async fn get_title(
        &self,
        request: Request<pb::GetTitleRequest>,
    ) -> Result<Response<pb::GetTitleResponse>, Status> {
        let req = request.into_inner();
        validate::id("id", &req.id)?;
        check_deadline()?;
        match self
            .titles(std::slice::from_ref(&req.id))
            .await?
            .pop()
            .flatten()
        {
            Some(t) => Ok(Response::new(pb::GetTitleResponse {
                title: Some((*t).clone()),
            })),
            None => Err(Status::not_found(format!("no title with id {:?}", req.id))),
        }
    }

    async fn batch_get_titles(
        &self,
        request: Request<pb::BatchGetTitlesRequest>,
    ) -> Result<Response<pb::BatchGetTitlesResponse>, Status> {
        let req = request.into_inner();
        validate::ids("ids", &req.ids)?;
        check_deadline()?;
        let titles = self.titles(&req.ids).await?;
        Ok(Response::new(pb::BatchGetTitlesResponse {
            titles: titles.into_iter().flatten().map(|t| (*t).clone()).collect(),
        }))
    }

    async fn list_titles(
        &self,
        request: Request<pb::ListTitlesRequest>,
    ) -> Result<Response<pb::ListTitlesResponse>, Status> {
        let req = request.into_inner();
        let genre = validate::genre(req.genre)?;
        let limit = validate::limit(req.limit)?;
        let token = validate::page_token(req.page_token)?;
        check_deadline()?;
        let page = self.store.list_titles(genre, limit, token).await?;
        Ok(Response::new(pb::ListTitlesResponse {
            titles: page.items,
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn list_genres(
        &self,
        _request: Request<pb::ListGenresRequest>,
    ) -> Result<Response<pb::ListGenresResponse>, Status> {
        check_deadline()?;
        let genres = self.store.list_genres().await?;
        Ok(Response::new(pb::ListGenresResponse { genres }))
    }

    async fn put_rating(
        &self,
        request: Request<pb::PutRatingRequest>,
    ) -> Result<Response<pb::PutRatingResponse>, Status> {
        let rating = validate::required("rating", request.into_inner().rating)?;
        validate::id("rating.user_id", &rating.user_id)?;
        validate::id("rating.title_id", &rating.title_id)?;
        validate::stars(rating.stars)?;
        validate::timestamp("rating.rated_at_ms", rating.rated_at_ms)?;
        check_deadline()?;
        let outcome = self.store.put_rating(rating).await?;
        // The store committed: drop the cached summary so the next read
        // sees the committed one.
        self.cache
            .invalidate_summary(&outcome.summary.title_id)
            .await;
        tracing::debug!(
            user_id = %outcome.rating.user_id,
            title_id = %outcome.rating.title_id,
            applied = outcome.applied,
            "rating written"
        );
        Ok(Response::new(pb::PutRatingResponse {
            rating: Some(outcome.rating),
            applied: outcome.applied,
            summary: Some(outcome.summary),
        }))
    }

    async fn list_ratings_by_user(
        &self,
        request: Request<pb::ListRatingsByUserRequest>,
    ) -> Result<Response<pb::ListRatingsByUserResponse>, Status> {
        let req = request.into_inner();
        validate::id("user_id", &req.user_id)?;
        let limit = validate::limit(req.limit)?;
        let token = validate::page_token(req.page_token)?;
        check_deadline()?;
        let page = self
            .store
            .list_ratings_by_user(req.user_id, limit, token)
            .await?;
        Ok(Response::new(pb::ListRatingsByUserResponse {
            ratings: page.items,
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn list_ratings_by_title(
        &self,
        request: Request<pb::ListRatingsByTitleRequest>,
    ) -> Result<Response<pb::ListRatingsByTitleResponse>, Status> {
        let req = request.into_inner();
        validate::id("title_id", &req.title_id)?;
        let limit = validate::limit(req.limit)?;
        let token = validate::page_token(req.page_token)?;
        check_deadline()?;
        let page = self
            .store
            .list_ratings_by_title(req.title_id, limit, token)
            .await?;
        Ok(Response::new(pb::ListRatingsByTitleResponse {
            ratings: page.items,
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn batch_get_rating_summaries(
        &self,
        request: Request<pb::BatchGetRatingSummariesRequest>,
    ) -> Result<Response<pb::BatchGetRatingSummariesResponse>, Status> {
        let req = request.into_inner();
        validate::ids("title_ids", &req.title_ids)?;
        check_deadline()?;
        let summaries = self.summaries(req.title_ids).await?;
        Ok(Response::new(pb::BatchGetRatingSummariesResponse {
            summaries,
        }))
    }

    async fn top_rated(
        &self,
        request: Request<pb::TopRatedRequest>,
    ) -> Result<Response<pb::TopRatedResponse>, Status> {
        let req = request.into_inner();
        let limit = validate::limit(req.limit)?;
        let genre = validate::genre(req.genre)?;
        check_deadline()?;
        let summaries = self.store.top_rated(limit, genre, req.min_count).await?;
        Ok(Response::new(pb::TopRatedResponse { summaries }))
    }

    async fn put_progress(
        &self,
        request: Request<pb::PutProgressRequest>,
    ) -> Result<Response<pb::PutProgressResponse>, Status> {
        let p = validate::required("progress", request.into_inner().progress)?;
        validate::id("progress.user_id", &p.user_id)?;
        validate::id("progress.title_id", &p.title_id)?;
        validate::position(p.position_s)?;
        validate::timestamp("progress.updated_at_ms", p.updated_at_ms)?;
        check_deadline()?;
        let outcome = self.store.put_progress(p).await?;
        Ok(Response::new(pb::PutProgressResponse {
            applied: outcome.applied,
            current: Some(outcome.current),
        }))
    }

    async fn list_progress(
        &self,
        request: Request<pb::ListProgressRequest>,
    ) -> Result<Response<pb::ListProgressResponse>, Status> {
        let req = request.into_inner();
        validate::id("user_id", &req.user_id)?;
        let limit = validate::limit(req.limit)?;
        check_deadline()?;
        let items = self.store.list_progress(req.user_id, limit).await?;
        Ok(Response::new(pb::ListProgressResponse { items }))
    }
}
