//! Resilience for every hop, the patterns table of the product brief, as
//! tower layers.
//!
//! One layer per file, each `Foo<S>` with a `FooLayer`, a typed `FooError`
//! where it refuses or fails a call, and `Foo::layer(…)`; metrics handles
//! ([`observe::Observer`]) and the [`classify::Classify`] implementation
//! are passed in at construction. A driver client stacks them, outermost
//! first (see `clients/*/src/stack.rs`):
//!
//! * [`metrics`] — every call counted once, in flight while it runs;
//! * [`deadline`] — a spent deadline refused unsent; no call outlives it;
//! * [`bulkhead`] — per-dependency concurrency limit, refuse at once;
//! * [`breaker`] — Hystrix-semantics circuit per operation, with a fast
//!   window and a slow-call threshold;
//! * [`retry`] — tower's `Retry` with a budgeted [`retry::RetryPolicy`];
//! * [`balance`] — power of two choices on decaying peak-EWMA × pending;
//! * [`eject`] — Envoy-style outlier ejection with a cap;
//!
//! and on the server side [`fault`], fault injection set at runtime. The
//! rest is shared: [`classify`] (what an outcome means), [`request`] (what
//! the layers read off a call), [`window`] and [`stats`] (rolling counts
//! and percentiles), [`stream`] (`/admin/stream`).

#![forbid(unsafe_code)]

pub mod adaptive;
pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod classify;
pub mod deadline;
pub mod eject;
pub mod fault;
pub mod metrics;
pub mod observe;
pub mod request;
pub mod retry;
pub mod stats;
pub mod stream;
pub mod window;

#[cfg(test)]
mod testing;

/// The error type between layers (tower's convention); each layer's own
/// error is typed and found again by downcasting, which the classifier
/// does.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future of a layer's call.
pub type BoxFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, BoxError>> + Send>>;
