//! Per-dependency client settings.

use std::time::Duration;

use fleet_config::{ConfigError, Env};

/// How a service calls one dependency.
#[derive(Clone, Debug)]
pub struct DependencyConfig {
    /// The remote service's name, e.g. `catalog`.
    pub name: &'static str,
    /// This service's name, sent as `x-fleet-caller`.
    pub caller: &'static str,
    /// The interface major this client speaks; only instances of that major
    /// are eligible.
    pub interface_major: u64,
    /// One network hop: how long to wait for a TCP connection.
    /// `<NAME>_CONNECT_TIMEOUT`, default 50 ms.
    pub connect_timeout: Duration,
    /// The per-call timeout when the caller has no deadline of its own.
    /// `<NAME>_REQUEST_TIMEOUT`, default 1 s.
    pub request_timeout: Duration,
    /// Subtracted from the remaining budget at each hop, so this hop has
    /// time to answer after its callee gives up. `<NAME>_HOP_MARGIN`,
    /// default 5 ms.
    pub hop_margin: Duration,
}

impl DependencyConfig {
    /// Defaults for calling `name` from `caller`.
    pub fn new(name: &'static str, caller: &'static str, interface_major: u64) -> Self {
        Self {
            name,
            caller,
            interface_major,
            connect_timeout: Duration::from_millis(50),
            request_timeout: Duration::from_secs(1),
            hop_margin: Duration::from_millis(5),
        }
    }

    /// Overrides the defaults from `<NAME>_CONNECT_TIMEOUT`,
    /// `<NAME>_REQUEST_TIMEOUT` and `<NAME>_HOP_MARGIN` (NAME upper-cased).
    ///
    /// # Errors
    /// [`ConfigError`] for unparsable or absurd values.
    pub fn from_env(mut self, env: &Env) -> Result<Self, ConfigError> {
        let prefix = self.name.to_ascii_uppercase();
        self.connect_timeout = env.duration_in(
            &format!("{prefix}_CONNECT_TIMEOUT"),
            self.connect_timeout,
            Duration::from_millis(1),
            Duration::from_secs(10),
        )?;
        self.request_timeout = env.duration_in(
            &format!("{prefix}_REQUEST_TIMEOUT"),
            self.request_timeout,
            Duration::from_millis(1),
            Duration::from_secs(300),
        )?;
        self.hop_margin = env.duration_in(
            &format!("{prefix}_HOP_MARGIN"),
            self.hop_margin,
            Duration::ZERO,
            Duration::from_secs(1),
        )?;
        Ok(self)
    }
}
