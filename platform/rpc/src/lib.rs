//! The client side of every gRPC hop.
//!
//! A driver client (one per service, under `clients/`) owns a
//! [`Dependency`]: the set of instances of one remote service (static, or
//! fed live by discovery), a lazily connected channel per instance (so
//! connections are reused), and the call path every operation goes through:
//! deadline from the ambient [`fleet_context::RequestContext`] minus a per-hop
//! margin, request id / caller / trace context / propagated headers written
//! into metadata, instance picking, and one error type, [`RpcError`], that
//! hides tonic from callers.

#![forbid(unsafe_code)]

mod call;
mod config;
mod error;
mod instance;
pub mod routing;

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Opaque token for the next page; `None` on the last page.
    pub next_page_token: Option<Vec<u8>>,
}

impl<T> Page<T> {
    /// A page from a listing's items and its raw next-page token (empty
    /// meaning the last page).
    pub fn new(items: Vec<T>, next_page_token: Vec<u8>) -> Self {
        Self {
            items,
            next_page_token: (!next_page_token.is_empty()).then_some(next_page_token),
        }
    }
}

pub use call::{CallOptions, Dependency, Operation};
pub use config::DependencyConfig;
pub use error::{RpcError, Unavailable};
pub use instance::{Instance, InstanceId, InstanceParseError, InstanceSource, parse_instances};
pub use routing::{InvalidRouteTable, MajorMinor, RouteTable};
