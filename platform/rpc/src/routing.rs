//! Version-aware routing: which version of a dependency serves a call.
//!
//! Versions are Interface.Feature.Bugfix. A client speaks one interface
//! major (instances of other majors are never eligible) and may pin a minor
//! (`<NAME>_PIN=1.3`). Per request, in order of precedence:
//!
//! 1. a pin header `x-version-<service>: 1.3` (propagated hop to hop);
//! 2. the routing table: weights per `major.minor`; when `sticky` is set
//!    and the request has a cohort key (the user id), the choice is a
//!    stable hash of the key, so a user stays on one version (A/B cohorts);
//!    otherwise a weighted random choice.
//!
//! Weights of versions with no live instance are left out, so a table never
//! sends traffic to nothing. The table is replaced live (a watch channel
//! fed from a file or Consul KV); an invalid table is rejected whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A parsed `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MajorMinor {
    /// Interface major.
    pub major: u64,
    /// Feature minor.
    pub minor: u64,
}

impl MajorMinor {
    /// Parses `1.3` (a full `1.3.2` is accepted; the patch is ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        match parts.next() {
            None => {}
            Some(p) if p.parse::<u64>().is_ok() && parts.next().is_none() => {}
            Some(_) => return None,
        }
        Some(Self { major, minor })
    }

    /// Whether `v` is of this major.minor.
    pub fn matches(&self, v: &semver::Version) -> bool {
        v.major == self.major && v.minor == self.minor
    }
}

impl std::fmt::Display for MajorMinor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The routing table of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// The service routed, e.g. `catalog`.
    pub service: String,
    /// The interface major this table routes.
    pub interface: u64,
    /// Weight per `major.minor`, e.g. `{"1.2": 90, "1.3": 10}`.
    pub weights: BTreeMap<String, u32>,
    /// Choose by a stable hash of the cohort key (user id) when present.
    #[serde(default)]
    pub sticky: bool,
}

/// A rejected routing table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid routing table: {0}")]
pub struct InvalidRouteTable(pub String);

impl RouteTable {
    /// Parses and validates a table from JSON.
    ///
    /// # Errors
    /// [`InvalidRouteTable`] naming what is wrong.
    pub fn from_json(text: &[u8]) -> Result<Self, InvalidRouteTable> {
        if text.len() > 16 * 1024 {
            return Err(InvalidRouteTable("larger than 16 KiB".into()));
        }
        let table: Self =
            serde_json::from_slice(text).map_err(|e| InvalidRouteTable(e.to_string()))?;
        table.validate()?;
        Ok(table)
    }

    /// Checks the table is usable.
    ///
    /// # Errors
    /// [`InvalidRouteTable`].
    pub fn validate(&self) -> Result<(), InvalidRouteTable> {
        let bad = |m: String| Err(InvalidRouteTable(m));
        if self.service.is_empty()
            || self.service.len() > 64
            || !self
                .service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(format!("service {:?} is not a service name", self.service));
        }
        if self.weights.is_empty() || self.weights.len() > 32 {
            return bad("weights must list 1 to 32 versions".into());
        }
        let mut total: u64 = 0;
        for (v, w) in &self.weights {
            let Some(mm) = MajorMinor::parse(v) else {
                return bad(format!("version {v:?} is not major.minor (e.g. 1.3)"));
            };
            if mm.major != self.interface {
                return bad(format!(
                    "version {v} is not of interface {} (a table routes one major)",
                    self.interface
                ));
            }
            if *w > 10_000 {
                return bad(format!("weight {w} of {v} is above 10000"));
            }
            total += u64::from(*w);
        }
        if total == 0 {
            return bad("weights add up to zero".into());
        }
        Ok(())
    }

    /// Picks a version among `live` (versions that have instances), by the
    /// cohort key's hash when sticky, else by `roll` (uniform in 0..1).
    pub fn choose(
        &self,
        live: &[MajorMinor],
        cohort_key: Option<&str>,
        roll: f64,
    ) -> Option<MajorMinor> {
        let options: Vec<(MajorMinor, u64)> = self
            .weights
            .iter()
            .filter_map(|(v, w)| Some((MajorMinor::parse(v)?, u64::from(*w))))
            .filter(|(v, w)| *w > 0 && live.contains(v))
            .collect();
        let total: u64 = options.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let point = match cohort_key {
            Some(key) if self.sticky => {
                let mut h = crc32fast::Hasher::new();
                h.update(self.service.as_bytes());
                h.update(b"/");
                h.update(key.as_bytes());
                u64::from(h.finalize()) % total
            }
            _ => {
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let p = (roll.clamp(0.0, 0.999_999_999) * total as f64) as u64;
                p
            }
        };
        let mut acc = 0;
        for (v, w) in options {
            acc += w;
            if point < acc {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(json: &str) -> Result<RouteTable, InvalidRouteTable> {
        RouteTable::from_json(json.as_bytes())
    }

    const V12: MajorMinor = MajorMinor { major: 1, minor: 2 };
    const V13: MajorMinor = MajorMinor { major: 1, minor: 3 };

    #[test]
    fn rejects_bad_tables_whole() {
        assert!(
            table(r#"{"service":"catalog","interface":1,"weights":{"1.2":90,"1.3":10}}"#).is_ok()
        );
        for bad in [
            "",
            "[]",
            r#"{"service":"catalog","interface":1,"weights":{}}"#,
            r#"{"service":"catalog","interface":1,"weights":{"1.2":0}}"#,
            r#"{"service":"catalog","interface":1,"weights":{"2.0":10}}"#,
            r#"{"service":"catalog","interface":1,"weights":{"one":10}}"#,
            r#"{"service":"catalog","interface":1,"weights":{"1.2":-1}}"#,
            r#"{"service":"catalog","interface":1,"weights":{"1.2":99999}}"#,
            r#"{"service":"cat alog","interface":1,"weights":{"1.2":1}}"#,
            r#"{"service":"catalog","interface":1,"weights":{"1.2":1},"extra":true}"#,
        ] {
            assert!(table(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weights_split_and_skip_dead_versions() {
        let t =
            table(r#"{"service":"catalog","interface":1,"weights":{"1.2":90,"1.3":10}}"#).unwrap();
        let live = [V12, V13];
        let n = 10_000;
        let to_13 = (0..n)
            .filter(|i| t.choose(&live, None, f64::from(*i) / f64::from(n)) == Some(V13))
            .count();
        assert_eq!(to_13, 1000);
        assert_eq!(
            t.choose(&[V13], None, 0.0),
            Some(V13),
            "1.2 down: all to 1.3"
        );
        assert_eq!(t.choose(&[], None, 0.0), None);
    }

    #[test]
    fn sticky_cohorts_stay_put() {
        let t = table(
            r#"{"service":"catalog","interface":1,"weights":{"1.2":50,"1.3":50},"sticky":true}"#,
        )
        .unwrap();
        let live = [V12, V13];
        for user in ["u00001", "u00002", "u00003", "u00042"] {
            let first = t.choose(&live, Some(user), 0.0);
            for roll in [0.1, 0.5, 0.9] {
                assert_eq!(t.choose(&live, Some(user), roll), first);
            }
        }
        let on_13 = (1..=1000)
            .filter(|i| t.choose(&live, Some(&format!("u{i:05}")), 0.0) == Some(V13))
            .count();
        assert!((400..600).contains(&on_13), "{on_13}");
    }

    #[test]
    fn parses_versions() {
        assert_eq!(MajorMinor::parse("1.3"), Some(V13));
        assert_eq!(MajorMinor::parse("1.3.7"), Some(V13));
        assert_eq!(MajorMinor::parse("1"), None);
        assert_eq!(MajorMinor::parse("1.3.x"), None);
    }
}
