//! The journal, in Chaos Toolkit's shape, so its tooling (`chaos report`,
//! dashboards) reads ours: `chaoslib-version`, `platform`, `node`,
//! `experiment`, `start`, `end`, `duration`, `status`
//! (`completed|failed|aborted|interrupted`), `deviated`, `steady_states`
//! (`before`, `after`, `during`), `run[]`, `rollbacks[]`. Our additions
//! live under `fleet` (target, cohort, per-second monitor series, the
//! abort and its latency, replayed rollbacks).

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

/// The chaoslib version whose journal shape this follows.
pub const CHAOSLIB_VERSION: &str = "1.44.0";

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything ran (the steady state may still have deviated).
    Completed,
    /// The steady state did not hold before or after the method.
    Failed,
    /// The monitor saw a deviation and stopped the method.
    Aborted,
    /// Ctrl-C / SIGTERM.
    Interrupted,
}

/// One activity's record (`run[]`, `rollbacks[]`, hypothesis probes).
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// The activity as written.
    pub activity: Value,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339).
    pub end: String,
    /// Seconds.
    pub duration: f64,
    /// The provider's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<Vec<String>>,
    /// Hypothesis probes: within tolerance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance_met: Option<bool>,
    /// Seconds since the run started (for the report's timeline).
    #[serde(skip)]
    pub t_start: f64,
    /// Seconds since the run started.
    #[serde(skip)]
    pub t_end: f64,
}

/// A steady-state check.
#[derive(Clone, Debug, Serialize)]
pub struct SteadyState {
    /// All probes within tolerance.
    pub steady_state_met: bool,
    /// The probes.
    pub probes: Vec<Record>,
}

/// RFC 3339 with microseconds, UTC.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// The machine's name, for `node`.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The platform line, for `platform`.
pub fn platform() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::env::consts::OS,
        release,
        std::env::consts::ARCH
    )
}
