//! The `catalog.v2.Catalog` gRPC service, served by catalog 2.x in place of
//! `catalog.v1` (interface major 2: a breaking change; see
//! `proto/catalog/v2/catalog.proto`).

use fleet_dal_client::{CallOptions, DalClient};
use fleet_proto::catalog::v2 as pb;
use fleet_proto::catalog::v2::catalog_server::Catalog;
use fleet_rpc::HandlerError;
use fleet_types::{TitleId, field};
use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::{Span, instrument};

use crate::badges::badges;

/// The fully qualified gRPC service 2.x serves.
pub const GRPC_SERVICE: &str = "catalog.v2.Catalog";

/// The v2 service (cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct CatalogV2Service {
    dal: DalClient,
}

impl CatalogV2Service {
    /// A service over `dal`.
    pub(crate) fn new(dal: DalClient) -> Self {
        Self { dal }
    }

    async fn title(&self, req: pb::GetTitleRequest) -> Result<pb::Title, HandlerError> {
        let id: TitleId = field::id("title_id", req.title_id)?;
        Span::current().record("id", id.as_str());
        let t = self
            .dal
            .get_title(id.as_str(), CallOptions::default())
            .await?;
        Ok(pb::Title {
            badges: badges(t.year, t.runtime_min),
            id: t.id,
            name: t.name,
            genres: vec![t.genre],
            release_year: t.year,
            runtime_s: t.runtime_min.saturating_mul(60),
            synopsis: t.synopsis,
        })
    }
}

#[tonic::async_trait]
impl Catalog for CatalogV2Service {
    #[instrument(skip_all, fields(id = Empty))]
    async fn get_title(
        &self,
        request: Request<pb::GetTitleRequest>,
    ) -> Result<Response<pb::Title>, Status> {
        Ok(Response::new(self.title(request.into_inner()).await?))
    }
}
