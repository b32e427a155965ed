//! Readiness: an instance is ready only when the dependencies it needs answer.
//!
//! Checks run in the background on an interval (faster until the first
//! success) rather than per probe, so `/readyz` and gRPC health answer
//! instantly and a flood of probes never becomes a flood of dependency calls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Longest a single readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Something that must answer for this instance to be ready.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// `Ok` when the dependency answers; `Err` with a short reason otherwise.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

impl<F, Fut> ReadinessCheck for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self())
    }
}

/// One check's latest result.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name, e.g. `dal`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The instance's readiness as probes see it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReadyState {
    /// Ready to take traffic: all checks pass and not draining.
    pub ready: bool,
    /// Shutting down: never ready again.
    pub draining: bool,
    /// Latest result of each check (empty until the first round).
    pub checks: Vec<CheckResult>,
}

type Checks = Vec<(String, Arc<dyn ReadinessCheck>)>;

/// The set of readiness checks and their latest results (cheap to clone).
#[derive(Clone)]
pub struct Readiness {
    checks: Arc<RwLock<Checks>>,
    state: Arc<watch::Sender<ReadyState>>,
    draining: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready until the first round of checks has run.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(ReadyState {
            ready: false,
            draining: false,
            checks: Vec::new(),
        });
        Self {
            checks: Arc::new(RwLock::new(Vec::new())),
            state: Arc::new(tx),
            draining: Arc::new(AtomicBool::new(false)),
            rounds: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Rounds of checks completed so far (`/readyz` reports it, so a
    /// watcher can tell that readiness was re-evaluated).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// Adds the check for a *required* dependency, the way readiness should
    /// treat one: ready while at least one instance of it is known
    /// (`known` counts them). Whether those instances answer right now is
    /// the breakers' and the balancer's business, per request: an instance
    /// that can serve anything (cached, degraded, or once a dependency
    /// recovers) must not take itself out of rotation because a
    /// dependency is slow. Optional dependencies get no check at all.
    pub fn add_required(
        &self,
        name: impl Into<String>,
        known: impl Fn() -> usize + Send + Sync + 'static,
    ) {
        let name = name.into();
        let what = name.clone();
        self.add(name, move || {
            let n = known();
            let what = what.clone();
            async move {
                if n > 0 {
                    Ok(())
                } else {
                    Err(format!("no {what} instance is known"))
                }
            }
        });
    }

    /// Adds a check; it runs from the next round on.
    pub fn add(&self, name: impl Into<String>, check: impl ReadinessCheck) {
        self.checks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.into(), Arc::new(check)));
    }

    /// The latest state.
    pub fn state(&self) -> ReadyState {
        self.state.borrow().clone()
    }

    /// Changes to the state, for health reporters.
    pub fn subscribe(&self) -> watch::Receiver<ReadyState> {
        self.state.subscribe()
    }

    /// Marks the instance as draining: not ready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.state.send_modify(|s| {
            s.ready = false;
            s.draining = true;
        });
    }

    /// Runs every check once (concurrently, each bounded by
    /// [`CHECK_TIMEOUT`]) and publishes the result.
    pub async fn run_once(&self) {
        let checks: Checks = self
            .checks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let results = futures::future::join_all(checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            CheckResult {
                name: name.clone(),
                ok: outcome.is_ok(),
                error: outcome.err(),
            }
        }))
        .await;
        let draining = self.draining.load(Ordering::SeqCst);
        let ready = !draining && results.iter().all(|r| r.ok);
        self.rounds.fetch_add(1, Ordering::SeqCst);
        let next = ReadyState {
            ready,
            draining,
            checks: results,
        };
        self.state.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                for c in next.checks.iter().filter(|c| !c.ok) {
                    tracing::warn!(check = %c.name, error = c.error.as_deref().unwrap_or(""), "readiness check failing");
                }
                if next.ready && !s.ready {
                    tracing::info!("ready");
                }
                *s = next;
                true
            }
        });
    }

    /// Runs the checks every `interval` (every 100 ms until first ready)
    /// until `stop` is cancelled.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        loop {
            self.run_once().await;
            let wait = if self.state.borrow().ready {
                interval
            } else {
                interval.min(Duration::from_millis(100))
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test(start_paused = true)]
    async fn ready_only_when_every_check_passes() {
        let r = Readiness::new();
        assert!(!r.state().ready, "not ready before the first round");
        let dal_up = Arc::new(AtomicBool::new(false));
        let flag = dal_up.clone();
        r.add("dal", move || {
            let up = flag.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused".into())
                }
            }
        });
        r.add("always", || async { Ok(()) });
        r.run_once().await;
        let s = r.state();
        assert!(!s.ready);
        assert_eq!(s.checks[0].error.as_deref(), Some("connection refused"));
        dal_up.store(true, Ordering::SeqCst);
        r.run_once().await;
        assert!(r.state().ready);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_times_out_as_failed() {
        let r = Readiness::new();
        r.add("hangs", futures::future::pending::<Result<(), String>>);
        r.run_once().await;
        let s = r.state();
        assert!(!s.ready);
        assert!(s.checks[0].error.as_deref().unwrap().contains("no answer"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_required_dependency_counts_only_when_no_instance_is_known() {
        let r = Readiness::new();
        let known = Arc::new(AtomicU64::new(0));
        let k = known.clone();
        r.add_required("catalog", move || k.load(Ordering::SeqCst) as usize);
        r.run_once().await;
        let s = r.state();
        assert!(!s.ready);
        assert_eq!(
            s.checks[0].error.as_deref(),
            Some("no catalog instance is known")
        );
        known.store(2, Ordering::SeqCst);
        r.run_once().await;
        assert!(r.state().ready);
        assert_eq!(r.rounds(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn draining_is_never_ready_again() {
        let r = Readiness::new();
        r.run_once().await;
        assert!(r.state().ready, "no checks: ready");
        r.set_draining();
        r.run_once().await;
        let s = r.state();
        assert!(!s.ready && s.draining);
    }
}
