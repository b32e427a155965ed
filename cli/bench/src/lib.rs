//! Benchmark fixtures for `scripts/bench`.
//!
//! [`EchoCatalog`] is the "raw hop" of the benchmark table: a plain tonic
//! server answering `catalog.v1.Catalog/GetTitle` from an in-memory map of
//! the seed titles. Same proto, same message sizes, same client
//! (`fleet load --target grpc://… --service catalog --mix title`) as the
//! real catalog, but no middleware, no dal hop, no validation: the ceiling
//! the real services are measured against.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use fleet_proto::catalog::v1 as pb;
use fleet_proto::catalog::v1::catalog_server::{Catalog, CatalogServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// `catalog.v1.Catalog` with only `GetTitle`, answered from memory.
#[derive(Clone, Debug)]
pub struct EchoCatalog {
    titles: Arc<HashMap<String, pb::Title>>,
}

impl EchoCatalog {
    /// The default seed's titles (`t00001…t01000`), as the catalog 1.2
    /// returns them.
    pub fn from_seed() -> Self {
        let titles = fleet_seed::titles(&fleet_seed::SeedConfig::default())
            .into_iter()
            .map(|t| {
                let title = pb::Title {
                    id: t.id.clone(),
                    name: t.name,
                    genre: t.genre.to_owned(),
                    year: t.year,
                    runtime_min: t.runtime_min,
                    synopsis: t.synopsis,
                    badges: Vec::new(),
                };
                (t.id, title)
            })
            .collect();
        Self {
            titles: Arc::new(titles),
        }
    }
}

#[tonic::async_trait]
impl Catalog for EchoCatalog {
    async fn get_title(
        &self,
        request: Request<pb::GetTitleRequest>,
    ) -> Result<Response<pb::GetTitleResponse>, Status> {
        let id = &request.get_ref().id;
        match self.titles.get(id) {
            Some(title) => Ok(Response::new(pb::GetTitleResponse {
                title: Some(title.clone()),
            })),
            None => Err(Status::not_found(format!("title {id:?} not found"))),
        }
    }

    async fn batch_get_titles(
        &self,
        _request: Request<pb::BatchGetTitlesRequest>,
    ) -> Result<Response<pb::BatchGetTitlesResponse>, Status> {
        Err(Status::unimplemented("the echo serves GetTitle only"))
    }

    async fn list_titles(
        &self,
        _request: Request<pb::ListTitlesRequest>,
    ) -> Result<Response<pb::ListTitlesResponse>, Status> {
        Err(Status::unimplemented("the echo serves GetTitle only"))
    }

    async fn list_genres(
        &self,
        _request: Request<pb::ListGenresRequest>,
    ) -> Result<Response<pb::ListGenresResponse>, Status> {
        Err(Status::unimplemented("the echo serves GetTitle only"))
    }
}

/// Serves [`EchoCatalog`] on `listener` until `shutdown` is cancelled.
/// Accepted sockets get `TCP_NODELAY`, as every fleet listener does, so
/// the hop is not measured through Nagle's delay.
pub async fn serve(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(CatalogServer::new(EchoCatalog::from_seed()))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
