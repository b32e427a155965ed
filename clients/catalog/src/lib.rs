//! Driver client for the catalog service (`catalog.v1`).
//!
//! Typed methods over domain structs, one error type ([`Error`]),
//! connection reuse, per-call deadlines bounded by the caller's remaining
//! budget. The client speaks interface major 1; only 1.x instances are ever
//! called, whatever else discovery knows about. [`v2`] is the client of
//! catalog 2.x (`catalog.v2`, interface major 2).

#![forbid(unsafe_code)]

pub mod v2;

use fleet_proto::catalog::v1 as pb;

pub use fleet_rpc::{
    CallOptions, Dependency, DependencyConfig, Instance, InstanceSource, Page, RpcError as Error,
    Unavailable,
};

/// The gRPC service name.
pub const SERVICE_NAME: &str = "catalog.v1.Catalog";
/// The interface major this client speaks.
pub const INTERFACE_MAJOR: u64 = 1;

mod ops {
    use fleet_rpc::{Operation, operation};
    pub static GET_TITLE: Operation = operation!("catalog.v1.Catalog", "GetTitle", idempotent);
    pub static BATCH_GET_TITLES: Operation =
        operation!("catalog.v1.Catalog", "BatchGetTitles", idempotent);
    pub static LIST_TITLES: Operation = operation!("catalog.v1.Catalog", "ListTitles", idempotent);
    pub static LIST_GENRES: Operation = operation!("catalog.v1.Catalog", "ListGenres", idempotent);
}

/// A title as the catalog presents it.
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
    /// Labels such as `new-release` (filled by catalog 1.3 and later;
    /// empty from 1.2).
    pub badges: Vec<String>,
}

/// A genre and how many titles it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genre {
    /// Name.
    pub name: String,
    /// Number of titles.
    pub title_count: u64,
}

/// Client for the catalog (cheap to clone; clones share connections).
#[derive(Clone, Debug)]
pub struct CatalogClient {
    dep: Dependency,
}

impl CatalogClient {
    /// A client over `dep`.
    pub fn new(dep: Dependency) -> Self {
        Self { dep }
    }

    /// The underlying dependency.
    pub fn dependency(&self) -> &Dependency {
        &self.dep
    }

    /// Succeeds when a catalog instance reports SERVING.
    ///
    /// # Errors
    /// [`Error`] when none does.
    pub async fn probe(&self) -> Result<(), Error> {
        self.dep.probe().await
    }

    /// One title.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such title.
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
            .ok_or_else(|| Error::missing_field("catalog", &ops::GET_TITLE, "title"))
    }

    /// Up to 100 titles by id, in request order; unknown ids are left out.
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

    /// A browse page: titles of `genre` (all when `None`), by id.
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

    /// The genres.
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
            badges: t.badges,
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
            badges: t.badges,
        }
    }
}
