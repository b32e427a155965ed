//! The client side of every gRPC hop.
//!
//! A driver client (one per service, under `clients/`) owns a
//! [`Dependency`] — the set of instances of one remote service (static, or
//! fed live by discovery) and the state its layers share — and calls
//! through [`Dependency::unary`], over the one tower stack (see
//! [`stack::build`] for the order and the why of each layer): metrics,
//! deadline, bulkhead, circuit breaker, version routing ([`route`]),
//! budgeted retry, balancing, outlier ejection, and the [`endpoint`] that
//! makes the gRPC attempt over a lazily connected channel per instance,
//! with the deadline and the request context in metadata. What an error
//! means is decided once, by [`GrpcClassifier`]; callers see one error
//! type, [`RpcError`], that hides tonic.

#![forbid(unsafe_code)]

mod call;
mod classify;
mod codec;
mod config;
mod dependency;
pub mod endpoint;
mod error;
mod handler_error;
mod instance;
pub mod route;
pub mod routing;
pub mod stack;
pub mod tls;

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

pub use call::{Call, CallOptions, Operation};
pub use classify::{
    GrpcClassifier, ORIGIN_DOWNSTREAM, ORIGIN_HEADER, PREVIOUS_ATTEMPTS_HEADER, PUSHBACK_HEADER,
};
pub use config::DependencyConfig;
pub use dependency::Dependency;
pub use error::{RpcError, Unavailable};
pub use handler_error::HandlerError;
pub use instance::{Instance, InstanceId, InstanceParseError, InstanceSource, parse_instances};
pub use routing::{InvalidRouteTable, MajorMinor, RouteTable};
pub use stack::RpcService;
