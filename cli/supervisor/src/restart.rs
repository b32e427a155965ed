//! When a crashed instance is started again.
//!
//! [`RestartBackoff`] is Docker's restart policy and Kubernetes'
//! CrashLoopBackOff in one: exponential, capped, and forgotten once the
//! instance has run for a stable period.

use std::time::Duration;

/// Delays before a crashed instance is started again: `initial`, doubled
/// after each crash up to `max`; an instance that ran for `stable` before
/// it crashed starts again from `initial` (a crash loop backs off, a rare
/// crash is healed at once). Docker restarts after 100 ms doubling to a
/// minute and resets after 10 s up; Kubernetes after 10 s doubling to
/// 5 min and resets after 10 min: local processes start in well under a
/// second, so these defaults are Docker's, capped lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Running this long counts as recovered: the next crash restarts
    /// after `initial` again.
    pub stable: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            stable: Duration::from_secs(10),
        }
    }
}

/// One instance's restart delays under a [`RestartPolicy`].
#[derive(Clone, Debug)]
pub struct RestartBackoff {
    policy: RestartPolicy,
    next: Duration,
}

impl RestartBackoff {
    /// A fresh backoff: the first crash restarts after `policy.initial`.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            next: policy.initial,
        }
    }

    /// The instance exited after running for `ran`: how long to wait
    /// before starting it again.
    pub fn on_exit(&mut self, ran: Duration) -> Duration {
        if ran >= self.policy.stable {
            self.next = self.policy.initial;
        }
        let delay = self.next.min(self.policy.max);
        self.next = delay.saturating_mul(2).min(self.policy.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_exponentially_up_to_the_cap_and_reset_when_stable() {
        let policy = RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            stable: Duration::from_secs(10),
        };
        let mut b = RestartBackoff::new(policy);
        let quick = Duration::from_millis(50);
        let loop_delays: Vec<u128> = (0..6).map(|_| b.on_exit(quick).as_millis()).collect();
        assert_eq!(loop_delays, vec![100, 200, 400, 800, 1000, 1000]);
        // Ran for the stable period: the next crash is healed at once.
        assert_eq!(
            b.on_exit(Duration::from_secs(10)),
            Duration::from_millis(100)
        );
        assert_eq!(b.on_exit(quick), Duration::from_millis(200));
    }
}
