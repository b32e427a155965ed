//! Driver client for `catalog.v2` (interface major 2, served by catalog
//! 2.x). Only 2.x instances are ever called: a [`Dependency`] built with
//! [`INTERFACE_MAJOR`] filters every other major out, as the v1 client
//! filters out 2.x.

use fleet_proto::catalog::v2 as pb;
use fleet_rpc::{CallOptions, Dependency, Operation, RpcError as Error};

/// The gRPC service name.
pub const SERVICE_NAME: &str = "catalog.v2.Catalog";
/// The interface major this client speaks.
pub const INTERFACE_MAJOR: u64 = 2;

static GET_TITLE: Operation = fleet_rpc::operation!("catalog.v2.Catalog", "GetTitle", idempotent);

/// A title as catalog 2.x presents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Title {
    /// Id, e.g. `t00042`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Genres.
    pub genres: Vec<String>,
    /// Release year.
    pub release_year: u32,
    /// Runtime in seconds.
    pub runtime_s: u32,
    /// Synopsis.
    pub synopsis: String,
    /// Labels such as `new-release`.
    pub badges: Vec<String>,
}

/// Client for catalog 2.x (cheap to clone; clones share connections).
#[derive(Clone, Debug)]
pub struct CatalogV2Client {
    dep: Dependency,
}

impl CatalogV2Client {
    /// A client over `dep` (built with interface major [`INTERFACE_MAJOR`]).
    pub fn new(dep: Dependency) -> Self {
        // The same stack as v1's, over this dependency's own state: its
        // circuits, budget and metrics (`target="catalog.v2"`) are not v1's.
        Self { dep }
    }

    /// The underlying dependency.
    pub fn dependency(&self) -> &Dependency {
        &self.dep
    }

    /// One title.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such title; `Unavailable` when
    /// no 2.x instance runs.
    pub async fn get_title(&self, id: &str, opts: CallOptions) -> Result<Title, Error> {
        let t: pb::Title = self
            .dep
            .unary(
                &GET_TITLE,
                pb::GetTitleRequest {
                    title_id: id.to_owned(),
                },
                opts,
            )
            .await?;
        Ok(Title {
            id: t.id,
            name: t.name,
            genres: t.genres,
            release_year: t.release_year,
            runtime_s: t.runtime_s,
            synopsis: t.synopsis,
            badges: t.badges,
        })
    }
}
