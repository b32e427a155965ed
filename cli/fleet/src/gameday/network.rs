//! Network faults through Toxiproxy's HTTP API.
//!
//! A proxy (`cassandra`, `redis`, `consul`, as `fleet up --toxiproxy`
//! creates them, or any other name) gets a *toxic*: `latency` (with
//! jitter), `bandwidth`, `timeout` (data stops; the connection closes after
//! the timeout, or never with 0), `reset_peer` (TCP RST), `slicer` (small
//! packets with delays) — or the proxy is disabled altogether (`down`:
//! connections refused). Each change is recorded in the undo log (the
//! toxic's deletion, the proxy's re-enabling).
//!
//! The API calls themselves are `fleet_supervisor::toxiproxy`'s; the
//! proxies are `fleet up --toxiproxy`'s (`fleet_supervisor::proxies`).

use std::time::Duration;

use serde_json::{Value, json};

/// A toxic (or `down`), validated.
#[derive(Clone, Debug, PartialEq)]
pub enum NetFault {
    /// Added latency with jitter.
    Latency {
        /// Mean delay.
        latency: Duration,
        /// ± this much.
        jitter: Duration,
    },
    /// Throughput limit, KB/s.
    Bandwidth {
        /// KB/s.
        rate_kbps: u64,
    },
    /// Data stops; close after this long (0 = never).
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// TCP RST after this long.
    ResetPeer {
        /// The delay.
        after: Duration,
    },
    /// Slice data into small packets with a delay between them.
    Slicer {
        /// Mean packet size, bytes.
        average_size: u64,
        /// ± bytes.
        size_variation: u64,
        /// Delay between packets.
        delay: Duration,
    },
    /// The proxy is disabled: connections are refused.
    Down,
}

impl NetFault {
    /// The toxic's type name (`down` for a disabled proxy).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Latency { .. } => "latency",
            Self::Bandwidth { .. } => "bandwidth",
            Self::Timeout { .. } => "timeout",
            Self::ResetPeer { .. } => "reset_peer",
            Self::Slicer { .. } => "slicer",
            Self::Down => "down",
        }
    }

    /// The toxic's attributes (`None` for `down`).
    pub fn attributes(&self) -> Option<Value> {
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Some(match self {
            Self::Latency { latency, jitter } => {
                json!({"latency": ms(latency), "jitter": ms(jitter)})
            }
            Self::Bandwidth { rate_kbps } => json!({"rate": rate_kbps}),
            Self::Timeout { after } => json!({"timeout": ms(after)}),
            Self::ResetPeer { after } => json!({"timeout": ms(after)}),
            Self::Slicer {
                average_size,
                size_variation,
                delay,
            } => json!({
                "average_size": average_size,
                "size_variation": size_variation,
                "delay": u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
            }),
            Self::Down => return None,
        })
    }
}

/// The JSON body that creates `fault` as toxic `name`.
pub fn toxic_body(name: &str, fault: &NetFault, stream: &str, toxicity: f64) -> Option<Value> {
    Some(json!({
        "name": name,
        "type": fault.kind(),
        "stream": stream,
        "toxicity": toxicity,
        "attributes": fault.attributes()?,
    }))
}

/// The proxies `--proxy NAME` means, out of those Toxiproxy has: `NAME`
/// itself, and every `NAME-…` (`ratings` → `ratings-1`, `ratings-2`;
/// `cassandra` → `cassandra`, `cassandra-2`; `catalog-v13` → its
/// instances). Sorted; empty when none matches.
pub fn matching_proxies<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let prefix = format!("{name}-");
    let mut out: Vec<String> = known
        .into_iter()
        .filter(|k| *k == name || k.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_means_itself_and_its_numbered_instances_only() {
        let known = [
            "cassandra",
            "cassandra-2",
            "ratings-1",
            "ratings-2",
            "ratingsx-1",
            "catalog-v12-1",
            "catalog-v13-1",
            "redis",
        ];
        assert_eq!(
            matching_proxies("ratings", known),
            ["ratings-1", "ratings-2"]
        );
        assert_eq!(
            matching_proxies("cassandra", known),
            ["cassandra", "cassandra-2"]
        );
        assert_eq!(matching_proxies("catalog-v13", known), ["catalog-v13-1"]);
        assert_eq!(matching_proxies("ratings-2", known), ["ratings-2"]);
        assert!(matching_proxies("consul", known).is_empty());
        assert!(matching_proxies("rat", known).is_empty());
    }

    #[test]
    fn toxic_bodies_use_toxiproxys_attribute_names() {
        let b = toxic_body(
            "gd-1",
            &NetFault::Latency {
                latency: Duration::from_millis(200),
                jitter: Duration::from_millis(20),
            },
            "downstream",
            1.0,
        )
        .unwrap();
        assert_eq!(
            b,
            json!({"name": "gd-1", "type": "latency", "stream": "downstream", "toxicity": 1.0,
                   "attributes": {"latency": 200, "jitter": 20}})
        );
        let s = NetFault::Slicer {
            average_size: 64,
            size_variation: 16,
            delay: Duration::from_millis(2),
        };
        assert_eq!(
            s.attributes().unwrap(),
            json!({"average_size": 64, "size_variation": 16, "delay": 2000})
        );
        assert_eq!(
            NetFault::ResetPeer {
                after: Duration::ZERO
            }
            .attributes()
            .unwrap(),
            json!({"timeout": 0})
        );
        assert_eq!(NetFault::Bandwidth { rate_kbps: 10 }.kind(), "bandwidth");
        assert!(toxic_body("x", &NetFault::Down, "upstream", 1.0).is_none());
    }
}
