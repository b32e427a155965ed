//! What the layers need to know about a call: [`ResilientRequest`].
//!
//! The layers are generic over the request type; `fleet-rpc`'s `Call`
//! implements this trait. [`Attempts`] is shared between a request and the
//! retry policy's copy of it (tower's `Retry` keeps a clone), so the policy
//! learns which instance the balancer chose for the attempt that failed.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

/// A call as the resilience layers see it.
pub trait ResilientRequest {
    /// Identifies an instance of the dependency.
    type Key: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static;

    /// The operation, e.g. `GetTitle`: one circuit breaker each.
    fn operation(&self) -> &'static str;

    /// Safe to send twice (only those are retried).
    fn idempotent(&self) -> bool;

    /// When the caller stops waiting.
    fn deadline(&self) -> Instant;

    /// The instances this call may go to (after version routing).
    fn candidates(&self) -> &[Self::Key];

    /// Where a retry may go once every candidate was tried: instances of
    /// another version of the dependency, when a route table (not a pin)
    /// chose this call's version, so a cohort whose version just died is
    /// served by another one. None by default.
    fn fallbacks(&self) -> &[Self::Key] {
        &[]
    }

    /// The instances earlier attempts of this call went to, shared with
    /// every clone of the request.
    fn attempts(&self) -> &Attempts<Self::Key>;
}

/// The instances a call's attempts went to, in order (shared by clones).
#[derive(Debug)]
pub struct Attempts<K>(Arc<Mutex<Vec<K>>>);

impl<K> Clone for Attempts<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K> Default for Attempts<K> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<K: Clone + Eq> Attempts<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<K>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that an attempt goes to `key`.
    pub fn push(&self, key: K) {
        self.lock().push(key);
    }

    /// Attempts made so far.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The instance of the latest attempt.
    pub fn last(&self) -> Option<K> {
        self.lock().last().cloned()
    }

    /// Whether an attempt already went to `key`.
    pub fn contains(&self, key: &K) -> bool {
        self.lock().contains(key)
    }
}
