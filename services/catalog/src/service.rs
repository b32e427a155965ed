//! The `catalog.v1.Catalog` gRPC service: validate, call the dal, present.

use fleet_dal_client::{CallOptions, DalClient};
use fleet_proto::catalog::v1 as pb;
use fleet_proto::catalog::v1::catalog_server::Catalog;
use fleet_rpc::HandlerError;
use fleet_types::{Genre, PageToken, TitleId, field};
use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::{Span, instrument};

use crate::badges::badges;

/// What a release of interface 1 does beyond 1.2's baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Fill `Title.badges` (1.3 and later); 1.2 leaves them empty.
    pub badges: bool,
}

impl Features {
    /// The features of the release `version` (1.2.x or 1.3.x).
    pub fn for_version(version: &semver::Version) -> Self {
        Self {
            badges: (version.major, version.minor) >= (1, 3),
        }
    }
}

/// The gRPC service (cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct CatalogService {
    dal: DalClient,
    features: Features,
}

impl CatalogService {
    /// A service over `dal` with the features of its release.
    pub(crate) fn new(dal: DalClient, features: Features) -> Self {
        Self { dal, features }
    }

    /// The `catalog.v2` service over the same dal client.
    pub(crate) fn v2(self) -> crate::v2::CatalogV2Service {
        crate::v2::CatalogV2Service::new(self.dal)
    }

    /// A stored title as this release presents it.
    fn present(&self, t: fleet_dal_client::Title) -> pb::Title {
        let badges = if self.features.badges {
            badges(t.year, t.runtime_min)
        } else {
            Vec::new()
        };
        pb::Title {
            id: t.id,
            name: t.name,
            genre: t.genre,
            year: t.year,
            runtime_min: t.runtime_min,
            synopsis: t.synopsis,
            badges,
        }
    }

    async fn title(&self, req: pb::GetTitleRequest) -> Result<pb::GetTitleResponse, HandlerError> {
        let id: TitleId = field::id("id", req.id)?;
        Span::current().record("id", id.as_str());
        let title = self
            .dal
            .get_title(id.as_str(), CallOptions::default())
            .await?;
        Ok(pb::GetTitleResponse {
            title: Some(self.present(title)),
        })
    }

    async fn batch(
        &self,
        req: pb::BatchGetTitlesRequest,
    ) -> Result<pb::BatchGetTitlesResponse, HandlerError> {
        field::ids("ids", &req.ids)?;
        if req.ids.is_empty() {
            return Ok(pb::BatchGetTitlesResponse::default());
        }
        let titles = self
            .dal
            .batch_get_titles(&req.ids, CallOptions::default())
            .await?;
        Ok(pb::BatchGetTitlesResponse {
            titles: titles.into_iter().map(|t| self.present(t)).collect(),
        })
    }

    async fn page(
        &self,
        req: pb::ListTitlesRequest,
    ) -> Result<pb::ListTitlesResponse, HandlerError> {
        let genre = field::genre(req.genre)?;
        let genre = genre.as_ref().map(Genre::as_str);
        Span::current().record("genre", genre.unwrap_or_default());
        let limit = field::limit(req.limit)?;
        let token = field::page_token(req.page_token)?;
        let page = self
            .dal
            .list_titles(
                genre,
                limit.get(),
                token.as_ref().map(PageToken::as_bytes),
                CallOptions::default(),
            )
            .await?;
        Ok(pb::ListTitlesResponse {
            titles: page.items.into_iter().map(|t| self.present(t)).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    async fn genres(&self) -> Result<pb::ListGenresResponse, HandlerError> {
        let genres = self.dal.list_genres(CallOptions::default()).await?;
        Ok(pb::ListGenresResponse {
            genres: genres
                .into_iter()
                .map(|g| pb::Genre {
                    name: g.name,
                    title_count: g.title_count,
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl Catalog for CatalogService {
    // Fields are recorded once validated: raw input never reaches the logs.
    #[instrument(skip_all, fields(id = Empty))]
    async fn get_title(
        &self,
        request: Request<pb::GetTitleRequest>,
    ) -> Result<Response<pb::GetTitleResponse>, Status> {
        Ok(Response::new(self.title(request.into_inner()).await?))
    }

    #[instrument(skip_all, fields(ids = request.get_ref().ids.len()))]
    async fn batch_get_titles(
        &self,
        request: Request<pb::BatchGetTitlesRequest>,
    ) -> Result<Response<pb::BatchGetTitlesResponse>, Status> {
        Ok(Response::new(self.batch(request.into_inner()).await?))
    }

    #[instrument(skip_all, fields(genre = Empty, limit = request.get_ref().limit))]
    async fn list_titles(
        &self,
        request: Request<pb::ListTitlesRequest>,
    ) -> Result<Response<pb::ListTitlesResponse>, Status> {
        Ok(Response::new(self.page(request.into_inner()).await?))
    }

    #[instrument(skip_all)]
    async fn list_genres(
        &self,
        _request: Request<pb::ListGenresRequest>,
    ) -> Result<Response<pb::ListGenresResponse>, Status> {
        Ok(Response::new(self.genres().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_arrive_with_release_1_3() {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert!(!Features::for_version(&v("1.2.4")).badges);
        assert!(Features::for_version(&v("1.3.0")).badges);
        assert!(Features::for_version(&v("1.4.1")).badges);
    }
}
