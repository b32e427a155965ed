//! Whether the caller of a store call still waits for its answer.
//!
//! The embedded store runs on the blocking thread pool (`spawn_blocking`),
//! where dropping the request's future cancels nothing: the closure runs to
//! its end. So the closure is handed a [`Caller`] and asks it, before each
//! blocking step (waiting for redb's write lock, scanning, committing),
//! whether the caller is still there: its deadline has not passed and its
//! future has not been dropped (tonic drops a handler when the caller
//! cancels or the server-side deadline fires). A caller that gave up gets
//! no further store work — a write it started is rolled back, not
//! committed — and the step where it stopped is counted in
//! `fleet_dal_store_abandoned_total{op,step}`.
//!
//! The Cassandra store needs none of this: its queries are futures, and
//! dropping them at the deadline cancels them (`CqlStore::within`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use fleet_context::RequestContext;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::StoreError;

/// Labels of `fleet_dal_store_abandoned_total`: the operation and the
/// step before which it stopped (both fixed strings in the code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AbandonLabels {
    /// The store operation, e.g. `put_rating`.
    pub op: &'static str,
    /// The step it did not start, e.g. `commit`.
    pub step: &'static str,
}

/// Store calls stopped because their caller gave up.
pub type AbandonedCounter = Family<AbandonLabels, Counter>;

/// The caller of one store call, as the blocking closure sees it (cheap to
/// clone).
#[derive(Clone, Debug)]
pub struct Caller {
    op: &'static str,
    deadline: Option<Instant>,
    gone: Arc<AtomicBool>,
    abandoned: AbandonedCounter,
}

/// Why a step was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GaveUp {
    Deadline,
    Dropped,
}

impl Caller {
    /// The caller of the current request (its deadline, from the request
    /// context; none outside a request: admin processes wait as long as
    /// they need).
    pub fn current(op: &'static str, abandoned: &AbandonedCounter) -> Self {
        // The context's deadline is on tokio's clock; the blocking thread
        // compares with the std clock, so convert once, here.
        let deadline = RequestContext::current()
            .and_then(|cx| cx.remaining())
            .map(|left| Instant::now() + left);
        Self {
            op,
            deadline,
            gone: Arc::new(AtomicBool::new(false)),
            abandoned: abandoned.clone(),
        }
    }

    /// A guard that marks the caller gone when it is dropped before
    /// [`Watch::finished`]: held by the async side of the call, so a
    /// dropped request future reaches the blocking closure.
    pub fn watch(&self) -> Watch {
        Watch {
            gone: Some(self.gone.clone()),
        }
    }

    fn gave_up(&self) -> Option<GaveUp> {
        if self.gone.load(Ordering::Acquire) {
            Some(GaveUp::Dropped)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(GaveUp::Deadline)
        } else {
            None
        }
    }

    /// Ok when the caller still waits, so `step` may start.
    ///
    /// # Errors
    /// [`StoreError::Timeout`] when its deadline passed,
    /// [`StoreError::Abandoned`] when it dropped the call; either way the
    /// step is counted as abandoned and must not run.
    pub fn check(&self, step: &'static str) -> Result<(), StoreError> {
        let Some(why) = self.gave_up() else {
            return Ok(());
        };
        self.abandoned
            .get_or_create(&AbandonLabels { op: self.op, step })
            .inc();
        tracing::debug!(op = self.op, step, reason = ?why, "store call abandoned by its caller");
        Err(match why {
            GaveUp::Deadline => StoreError::Timeout(format!(
                "{}: the caller's deadline passed before {step}",
                self.op
            )),
            GaveUp::Dropped => {
                StoreError::Abandoned(format!("{}: the caller left before {step}", self.op))
            }
        })
    }

    /// [`Self::check`] once every `every` rows of a scan (row `i`).
    ///
    /// # Errors
    /// As [`Self::check`].
    pub fn check_every(
        &self,
        i: usize,
        every: usize,
        step: &'static str,
    ) -> Result<(), StoreError> {
        if every != 0 && i % every == every - 1 {
            self.check(step)
        } else {
            Ok(())
        }
    }
}

/// Marks its [`Caller`] gone when dropped, unless the call finished.
#[derive(Debug)]
pub struct Watch {
    gone: Option<Arc<AtomicBool>>,
}

impl Watch {
    /// The call returned: the caller got its answer.
    pub fn finished(mut self) {
        self.gone = None;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(gone) = self.gone.take() {
            gone.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn count(c: &AbandonedCounter, op: &'static str, step: &'static str) -> u64 {
        c.get_or_create(&AbandonLabels { op, step }).get()
    }

    #[test]
    fn a_waiting_caller_lets_every_step_run() {
        let counter = AbandonedCounter::default();
        let caller = Caller::current("put_rating", &counter);
        let watch = caller.watch();
        assert!(caller.check("commit").is_ok());
        watch.finished();
        assert!(caller.check("commit").is_ok(), "finishing is not leaving");
        assert_eq!(count(&counter, "put_rating", "commit"), 0);
    }

    #[test]
    fn a_dropped_call_stops_at_the_next_step_and_is_counted() {
        let counter = AbandonedCounter::default();
        let caller = Caller::current("put_rating", &counter);
        drop(caller.watch());
        assert!(matches!(
            caller.check("commit"),
            Err(StoreError::Abandoned(_))
        ));
        assert_eq!(count(&counter, "put_rating", "commit"), 1);
    }

    #[tokio::test]
    async fn a_passed_deadline_stops_the_next_step() {
        let counter = AbandonedCounter::default();
        let cx = RequestContext::new().with_budget(Duration::from_millis(20));
        let caller = cx
            .scope(async { Caller::current("top_rated", &counter) })
            .await;
        assert!(caller.check("scan").is_ok());
        // Wait for the condition, not for a fixed time.
        while caller.check("scan").is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(caller.check("scan"), Err(StoreError::Timeout(_))));
        assert!(count(&counter, "top_rated", "scan") >= 1);
    }

    #[test]
    fn scans_check_once_per_batch_of_rows() {
        let counter = AbandonedCounter::default();
        let caller = Caller::current("list_genres", &counter);
        drop(caller.watch());
        let refused: Vec<usize> = (0..10)
            .filter(|i| caller.check_every(*i, 4, "scan").is_err())
            .collect();
        assert_eq!(refused, vec![3, 7]);
    }
}
