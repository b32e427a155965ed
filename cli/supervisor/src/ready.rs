//! Readiness: an instance is ready once its admin port's `/readyz`
//! answers 200 — the same check Consul, compose and Kubernetes make.
//!
//! One probe for everyone who waits on an instance: the supervisor after a
//! start or restart ([`crate::RunningChild::wait_ready`]) and the game-day
//! runner waiting for a restarted instance to come back.

use std::fmt::Display;
use std::time::Duration;

/// How long one `/readyz` request may take: a process that does not answer
/// within it is not ready, and the caller asks again.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks instances' admin ports whether they are ready.
#[derive(Clone, Debug)]
pub struct ReadyProbe {
    http: reqwest::Client,
}

/// What one probe saw.
#[derive(Debug)]
pub enum Readiness {
    /// `/readyz` answered 200.
    Ready,
    /// `/readyz` answered something else (starting, draining, a required
    /// dependency not yet known).
    NotReady(reqwest::StatusCode),
    /// No answer (not listening yet, gone, or slower than a second).
    Unreachable(reqwest::Error),
}

impl Readiness {
    /// Whether the instance answered 200.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

impl ReadyProbe {
    /// A probe with its own HTTP client (one-second requests).
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS backend, no resolver).
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build()?;
        Ok(Self { http })
    }

    /// Asks `http://<admin_addr>/readyz` once.
    pub async fn check(&self, admin_addr: impl Display) -> Readiness {
        match self
            .http
            .get(format!("http://{admin_addr}/readyz"))
            .send()
            .await
        {
            Ok(resp) if resp.status().as_u16() == 200 => Readiness::Ready,
            Ok(resp) => Readiness::NotReady(resp.status()),
            Err(e) => Readiness::Unreachable(e),
        }
    }
}
