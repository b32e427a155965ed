//! Retry policy: which calls may be retried, when, and how many overall.
//!
//! The budget is tower's own `TpsBudget` (Finagle's design): every original
//! request deposits, every retry withdraws, so retries stay a fixed share of
//! requests whatever fails — no retry storms. The policy adds the rest of
//! the rules: only idempotent calls, at most `max_retries`, only while the
//! caller's remaining budget can still afford an attempt, after a
//! full-jitter backoff.

use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

/// Retry settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Retries per call at most; default 1.
    pub max_retries: u32,
    /// Share of requests that may be retries, over `budget_window`;
    /// default 0.1 (attempts/requests ≤ 1.1).
    pub budget_percent: f32,
    /// Window the budget is computed over; default 10 s (1..=60 s).
    pub budget_window: Duration,
    /// Retries per second always allowed on top of the percentage;
    /// default 0, so the 1.1 ceiling holds at every rate.
    pub min_per_sec: u32,
    /// Base of the exponential backoff; default 5 ms.
    pub backoff_base: Duration,
    /// Longest backoff; default 50 ms.
    pub backoff_max: Duration,
    /// Don't retry unless at least this much of the deadline remains;
    /// default 10 ms.
    pub min_remaining: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 1,
            budget_percent: 0.1,
            budget_window: Duration::from_secs(10),
            min_per_sec: 0,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            min_remaining: Duration::from_millis(10),
        }
    }
}

impl RetryConfig {
    /// Checks the settings (tower's budget asserts on bad ones).
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.budget_window) {
            return Err("budget_window must be within 1 s..=60 s".into());
        }
        if !(0.0..=1.0).contains(&self.budget_percent) {
            return Err("budget_percent must be within 0..=1".into());
        }
        if self.max_retries > 5 {
            return Err("max_retries above 5 only amplifies load".into());
        }
        if self.min_per_sec > 1_000 {
            return Err("min_per_sec must be at most 1000".into());
        }
        Ok(())
    }
}

/// The retry budget of one dependency (share it across its calls).
pub struct RetryBudget {
    budget: TpsBudget,
    config: RetryConfig,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RetryBudget {
    /// A budget per `config` (call [`RetryConfig::validate`] first; bad
    /// values are clamped here rather than panicking).
    pub fn new(config: RetryConfig) -> Self {
        let window = config
            .budget_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let percent = config.budget_percent.clamp(0.0, 1.0);
        let budget = TpsBudget::new(window, config.min_per_sec.min(1_000), percent);
        Self { budget, config }
    }

    /// The settings.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Records an original request (earns retry budget).
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Whether retry number `retry` (1-based) may go ahead with `remaining`
    /// deadline left; withdraws from the budget when it may.
    pub fn allow(&self, retry: u32, idempotent: bool, remaining: Duration) -> bool {
        idempotent
            && retry <= self.config.max_retries
            && remaining >= self.config.min_remaining
            && self.budget.withdraw()
    }

    /// Full-jitter backoff before retry number `retry`: uniform in
    /// `0..min(max, base·2^(retry-1))`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let cap = exp.min(self.config.backoff_max);
        if cap.is_zero() {
            return cap;
        }
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(0..nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_ten_percent_under_total_failure() {
        let b = RetryBudget::new(RetryConfig::default());
        let (mut requests, mut attempts) = (0u32, 0u32);
        for _ in 0..3000 {
            // 100 req/s, every attempt fails.
            requests += 1;
            attempts += 1;
            b.deposit();
            if b.allow(1, true, Duration::from_millis(100)) {
                attempts += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let ratio = f64::from(attempts) / f64::from(requests);
        assert!(ratio <= 1.1, "attempts/requests = {ratio}");
        assert!(ratio > 1.05, "the budget does allow retries: {ratio}");
    }

    #[test]
    fn rules() {
        let b = RetryBudget::new(RetryConfig {
            min_per_sec: 10,
            ..RetryConfig::default()
        });
        assert!(!b.allow(1, false, Duration::from_secs(1)), "not idempotent");
        assert!(
            !b.allow(2, true, Duration::from_secs(1)),
            "one retry at most"
        );
        assert!(
            !b.allow(1, true, Duration::from_millis(2)),
            "no budget left"
        );
        assert!(b.allow(1, true, Duration::from_secs(1)));
        for r in 1..5 {
            assert!(b.backoff(r) <= Duration::from_millis(50));
        }
        assert!(
            RetryConfig {
                budget_window: Duration::ZERO,
                ..RetryConfig::default()
            }
            .validate()
            .is_err()
        );
    }
}
