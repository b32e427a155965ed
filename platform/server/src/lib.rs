//! The runtime every service shares.
//!
//! A service builds its own handlers and hands them to a [`ServiceHost`],
//! which owns everything that is the same for every service: the admin HTTP
//! port (`/healthz`, `/readyz`, `/metrics`, `/admin/info`), gRPC health
//! (`grpc.health.v1`) driven by the same readiness checks, gRPC reflection,
//! the server-side request layer (request context, deadline, metrics), and
//! the shutdown sequence: on SIGTERM the instance reports not-ready, stops
//! accepting, drains in-flight requests within a grace period, then returns.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod app;
pub mod config;
pub mod conn_limit;
pub mod entry;
pub mod exempt;
pub mod grpc_context;
pub mod host;
pub mod http;
pub mod hystrix;
pub mod listen;
pub mod message_limit;
pub mod methods;
pub mod readiness;
pub mod shutdown;
pub mod tls;

pub use app::App;
pub use config::{GrpcLimits, HttpLimits, Identity, ServerConfig};
pub use grpc_context::{GrpcContext, GrpcContextLayer};
pub use host::{ServerError, ServiceHost};
pub use readiness::{Readiness, ReadinessCheck};
