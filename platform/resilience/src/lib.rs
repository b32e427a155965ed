//! Resilience for every hop, the patterns table of the product brief.
//!
//! One concern per module, each with a typed error and tests on paused time:
//!
//! * [`window`] — rolling counters in time buckets;
//! * [`breaker`] — Hystrix-semantics circuit breaker with a fast window and
//!   a slow-call threshold;
//! * [`bulkhead`] — per-dependency concurrency limit, reject at once;
//! * [`retry`] — retry rules over tower's `TpsBudget`;
//! * [`balance`] — power of two choices on peak-EWMA × pending, outlier
//!   ejection;
//! * [`stats`] — per-operation stats and latency percentiles for the stream;
//! * [`stream`] — `/admin/stream`, one-second snapshots as server-sent events;
//! * [`fault`] — fault injection (delay, abort, hang) as a tower layer, set
//!   at runtime through the admin port.

#![forbid(unsafe_code)]

pub mod adaptive;
pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod fault;
pub mod retry;
pub mod stats;
pub mod stream;
pub mod window;
