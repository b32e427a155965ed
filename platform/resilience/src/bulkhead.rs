//! A bulkhead: at most `limit` calls in flight to one dependency; a call
//! beyond that is refused at once instead of queueing.
//!
//! tower's `ConcurrencyLimit` behind `LoadShed` rejects at once too, but it
//! lives in `poll_ready` of a `Service` stack; the driver clients' typed call
//! path needs a permit it can hold across retries and a live "in use" count
//! for the stream, which a semaphore gives directly.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// A call refused because the bulkhead is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead full ({limit} calls in flight)")]
pub struct BulkheadFull {
    /// The limit that was reached.
    pub limit: usize,
}

/// A per-dependency concurrency limit (cheap to clone; clones share it).
#[derive(Clone, Debug)]
pub struct Bulkhead {
    semaphore: Arc<Semaphore>,
    limit: usize,
}

impl Bulkhead {
    /// A bulkhead admitting `limit` concurrent calls (at least 1).
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Takes a slot; the call holds it until the permit drops.
    ///
    /// # Errors
    /// [`BulkheadFull`] when every slot is taken.
    pub fn try_acquire(&self) -> Result<OwnedSemaphorePermit, BulkheadFull> {
        self.semaphore
            .clone()
            .try_acquire_owned()
            .map_err(|e| match e {
                TryAcquireError::NoPermits | TryAcquireError::Closed => {
                    BulkheadFull { limit: self.limit }
                }
            })
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.limit - self.semaphore.available_permits()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_at_once_when_full_and_frees_on_drop() {
        let b = Bulkhead::new(2);
        let p1 = b.try_acquire().unwrap();
        let _p2 = b.try_acquire().unwrap();
        assert_eq!(b.in_use(), 2);
        assert_eq!(b.try_acquire().unwrap_err(), BulkheadFull { limit: 2 });
        drop(p1);
        assert!(b.try_acquire().is_ok());
    }

    #[test]
    fn separate_bulkheads_do_not_share_slots() {
        let slow = Bulkhead::new(1);
        let fast = Bulkhead::new(1);
        let _held = slow.try_acquire().unwrap();
        assert!(slow.try_acquire().is_err());
        assert!(
            fast.try_acquire().is_ok(),
            "one dependency cannot starve another"
        );
    }
}
