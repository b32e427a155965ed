//! Twelve-factor configuration: one snapshot of the environment, read once.
//!
//! Binaries take [`Env::from_process`] at start-up and hand it to each
//! crate's `Config::from_env`; nothing else reads environment variables.
//! Tests build an [`Env`] from pairs instead of mutating the process
//! environment. Every accessor names the variable in its error, so a bad
//! deployment fails at start with a message that says what to fix.

#![forbid(unsafe_code)]

mod tls;
pub use tls::MutualTls;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A configuration value that is missing or cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{key} is required but not set")]
    Missing {
        /// The variable's name.
        key: String,
    },
    /// A variable is set to something unusable.
    #[error("{key}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        key: String,
        /// The value as given.
        value: String,
        /// What is wrong with it and what is expected.
        reason: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `key`.
    pub fn invalid(key: &str, value: &str, reason: impl Display) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A snapshot of environment variables. Empty values count as unset.
///
/// It remembers every name it was asked for ([`Env::names_read`]), set or
/// not, shared by its clones: after a `Config::from_env`, that is the exact
/// list of variables the code reads for this configuration, which the
/// deployment rehearsal compares with what a deployment sets.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    read: Arc<Mutex<BTreeSet<String>>>,
}

/// Names only: the environment holds credentials (`ADMIN_TOKEN`,
/// `GAMEDAY_KEY`, …), and a debug print must never carry them into a log.
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A credential (a token, a key) whose text is never printed: `Debug` and
/// `Display` show `<redacted>`, so a config struct that holds one can
/// derive `Debug` and be logged whole. [`Secret::expose`] is the one way to
/// the text, for the code that compares or sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The credential's text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this credential, compared in constant time (how
    /// long it takes says nothing of how much matched).
    pub fn matches(&self, given: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if given.len() != expected.len() {
            return false;
        }
        given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

/// The credential a request presents: `Authorization: Bearer <token>`,
/// else an `access_token` query parameter (percent-decoded) — how a
/// browser's `EventSource`, which cannot set headers, presents one. Give it
/// the `Authorization` header's text and the request's query string.
pub fn presented_credential(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| {
            query.and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "access_token")
                    .map(|(_, v)| v.into_owned())
            })
        })
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl Env {
    /// Snapshots the process environment (variables that are not valid
    /// UTF-8 are left out; none of ours can be).
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// An environment of `(name, value)` pairs written out, as tests do:
    /// `Env::of(&[("GRPC_ADDR", "127.0.0.1:0")])`.
    pub fn of(pairs: &[(&str, &str)]) -> Self {
        Self::from_pairs(pairs.iter().copied())
    }

    /// An environment made of the given pairs (for tests and tools).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(_, v)| !v.trim().is_empty())
                .collect(),
            read: Arc::default(),
        }
    }

    /// Every variable name looked up so far through this snapshot or its
    /// clones, whether it was set or not.
    pub fn names_read(&self) -> BTreeSet<String> {
        self.read.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Returns a copy with `key` set to `value` (tools layer flags over env).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let value = value.into();
        let key = key.into();
        if value.trim().is_empty() {
            self.vars.remove(&key);
        } else {
            self.vars.insert(key, value);
        }
        self
    }

    /// The raw value of `key`, trimmed, if set and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Ok(mut read) = self.read.lock() {
            read.insert(key.to_owned());
        }
        self.vars.get(key).map(|v| v.trim())
    }

    /// The value of `key`, or `default`.
    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_owned()
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when unset.
    pub fn required(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key).ok_or_else(|| ConfigError::Missing {
            key: key.to_owned(),
        })
    }

    /// Parses `key` with [`FromStr`], or returns `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when set but unparsable.
    pub fn parse<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse_opt(key)?.unwrap_or(default))
    }

    /// Parses `key` with [`FromStr`] when set.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when set but unparsable.
    pub fn parse_opt<T>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::invalid(key, v, e)),
        }
    }

    /// A number within `range`, or `default`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when unparsable or out of range.
    pub fn number_in<T>(
        &self,
        key: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let v: T = self.parse(key, default)?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::invalid(
                key,
                &v.to_string(),
                format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    }

    /// A human duration such as `250ms`, `2s` or `1m 30s`, or `default`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when unparsable.
    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v).map_err(|e| {
                ConfigError::invalid(key, v, format!("{e} (expected e.g. 250ms, 2s, 1m)"))
            }),
        }
    }

    /// A duration within `min..=max`, or `default`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when unparsable or out of range.
    pub fn duration_in(
        &self,
        key: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, default)?;
        if d < min || d > max {
            return Err(ConfigError::invalid(
                key,
                &humantime::format_duration(d).to_string(),
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    /// A socket address such as `127.0.0.1:8080`, or `default`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when unparsable (including a bad default).
    pub fn socket_addr(&self, key: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let v = self.get(key).unwrap_or(default);
        v.parse().map_err(|e| {
            ConfigError::invalid(
                key,
                v,
                format!("{e} (expected host:port, e.g. 127.0.0.1:8080)"),
            )
        })
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`), or `default`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for anything else.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::invalid(key, v, "expected true or false")),
        }
    }

    /// A credential: unset is `None`; set, it must be at least `min_len`
    /// bytes long (a guessable token is refused at start). The error names
    /// the variable but never repeats the value.
    pub fn secret(&self, key: &str, min_len: usize) -> Result<Option<Secret>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.len() < min_len => Err(ConfigError::invalid(
                key,
                "<redacted>",
                format!("must be at least {min_len} characters"),
            )),
            Some(v) => Ok(Some(Secret::new(v))),
        }
    }

    /// A comma-separated list with blanks removed (empty when unset).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_comes_from_the_bearer_header_else_the_query() {
        assert_eq!(
            presented_credential(Some("Bearer abc"), Some("access_token=q")),
            Some("abc".into())
        );
        assert_eq!(
            presented_credential(Some("Basic abc"), Some("x=1&access_token=a%2Bb")),
            Some("a+b".into())
        );
        assert_eq!(presented_credential(None, Some("token=abc")), None);
        assert_eq!(presented_credential(Some("bearer abc"), None), None);
        assert_eq!(presented_credential(None, None), None);
    }

    #[test]
    fn unset_and_empty_values_fall_back_to_defaults() {
        let e = Env::of(&[("EMPTY", "  ")]);
        assert_eq!(e.parse("EMPTY", 7u32).unwrap(), 7);
        assert_eq!(e.parse("NOPE", 8u32).unwrap(), 8);
        assert!(e.required("EMPTY").is_err());
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        let e = Env::of(&[("GRPC_ADDR", "localhost"), ("N", "x"), ("T", "5 parsecs")]);
        let msg = e
            .socket_addr("GRPC_ADDR", "127.0.0.1:1")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("GRPC_ADDR") && msg.contains("localhost"),
            "{msg}"
        );
        assert!(
            e.parse::<u32>("N", 1)
                .unwrap_err()
                .to_string()
                .contains("N=\"x\"")
        );
        assert!(e.duration("T", Duration::ZERO).is_err());
    }

    #[test]
    fn ranges_are_enforced() {
        let e = Env::of(&[("LIMIT", "0"), ("GRACE", "2h")]);
        assert!(e.number_in("LIMIT", 5u32, 1..=100).is_err());
        assert!(
            e.duration_in(
                "GRACE",
                Duration::from_secs(1),
                Duration::ZERO,
                Duration::from_secs(60)
            )
            .is_err()
        );
        assert_eq!(Env::of(&[]).number_in("LIMIT", 5u32, 1..=100).unwrap(), 5);
    }

    #[test]
    fn names_read_lists_every_lookup_across_clones() {
        let e = Env::of(&[("A", "1"), ("UNUSED", "x")]);
        let clone = e.clone();
        assert_eq!(e.parse("A", 0u32).unwrap(), 1);
        assert_eq!(clone.string("B", "d"), "d");
        assert_eq!(
            e.names_read(),
            BTreeSet::from(["A".to_owned(), "B".to_owned()])
        );
    }

    #[test]
    fn durations_bools_and_lists_parse() {
        let e = Env::of(&[("D", "250ms"), ("B", "Yes"), ("L", " a, ,b ,c")]);
        assert_eq!(
            e.duration("D", Duration::ZERO).unwrap(),
            Duration::from_millis(250)
        );
        assert!(e.bool("B", false).unwrap());
        assert_eq!(e.list("L"), vec!["a", "b", "c"]);
        assert!(Env::of(&[("B", "maybe")]).bool("B", true).is_err());
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let token = "s3cr3t-t0ken-0123456789";
        let e = Env::of(&[("ADMIN_TOKEN", token), ("SHORT", "abc")]);
        let secret = e.secret("ADMIN_TOKEN", 16).unwrap().unwrap();
        assert_eq!(secret.expose(), token);
        assert!(e.secret("UNSET", 16).unwrap().is_none());
        let short = e.secret("SHORT", 16).unwrap_err().to_string();
        assert!(
            short.contains("SHORT") && short.contains("at least 16"),
            "{short}"
        );
        assert!(
            !short.contains("abc"),
            "the error repeats the value: {short}"
        );
        for printed in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{:?}", Some(secret.clone())),
            format!("{e:?}"),
            format!("{e:#?}"),
        ] {
            assert!(!printed.contains(token), "printed the token: {printed}");
        }
        assert!(secret.matches(token.as_bytes()));
        assert!(!secret.matches(b"s3cr3t-t0ken-0123456788"));
        assert!(!secret.matches(b"s3cr3t-t0ken-012345678"));
        assert!(!secret.matches(b""));
        // The environment's debug print still names what is set.
        assert!(format!("{e:?}").contains("ADMIN_TOKEN"));
    }
}
