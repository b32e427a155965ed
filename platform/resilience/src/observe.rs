//! Where the layers report what they did: [`Observer`].
//!
//! A metrics handle passed to each layer at construction (never a global),
//! implemented by `fleet-rpc` over the Prometheus families and the
//! `/admin/stream` stats.

use std::time::Duration;

use crate::breaker::CircuitState;
use crate::classify::Class;

/// Receives the layers' events. Every method has a no-op default.
pub trait Observer: Send + Sync + 'static {
    /// A call entered the stack; it is in flight until the returned token
    /// (e.g. an in-flight gauge guard) is dropped, right after
    /// [`Observer::finished`].
    fn started(&self, _operation: &'static str) -> Option<Box<dyn Send>> {
        None
    }

    /// A call left the stack: `label` is `OK` or the error's code name.
    fn finished(
        &self,
        _operation: &'static str,
        _class: Class,
        _label: &'static str,
        _elapsed: Duration,
    ) {
    }

    /// A call was refused before it was sent (`circuit_open`,
    /// `bulkhead_full`).
    fn refused(&self, _operation: &'static str, _reason: &'static str) {}

    /// A retry is about to be sent.
    fn retried(&self, _operation: &'static str) {}

    /// An operation's circuit changed state (or was looked at).
    fn circuit(&self, _operation: &'static str, _state: CircuitState) {}
}

/// Observes nothing (tests, benches).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}
