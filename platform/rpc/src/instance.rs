//! Instances of a remote service and where they come from.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

/// A cheap-to-clone instance id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// Wraps an id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One instance of a remote service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Unique id (discovery's service id; `addr` for static lists).
    pub id: InstanceId,
    /// gRPC address.
    pub addr: SocketAddr,
    /// The version it runs.
    pub version: semver::Version,
    /// Its zone.
    pub zone: String,
}

/// Where a dependency's instances come from.
#[derive(Debug)]
pub enum InstanceSource {
    /// A fixed list (the embedded default).
    Static(Vec<Instance>),
    /// A live list, replaced whenever discovery sees a change.
    Watch(watch::Receiver<Vec<Instance>>),
}

impl InstanceSource {
    pub(crate) fn into_receiver(self) -> watch::Receiver<Vec<Instance>> {
        match self {
            Self::Static(list) => {
                let (tx, rx) = watch::channel(list);
                // A static list never changes; keep the sender alive forever
                // so the receiver never reports the source as closed.
                std::mem::forget(tx);
                rx
            }
            Self::Watch(rx) => rx,
        }
    }
}

/// A static instance list that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "bad instance {item:?}: {reason} (expected host:port[@version], e.g. 127.0.0.1:7101@1.3.0)"
)]
pub struct InstanceParseError {
    item: String,
    reason: String,
}

/// Parses a static list `addr[@version],addr[@version],…`. An instance
/// without a version is taken to speak `default_version`.
///
/// # Errors
/// [`InstanceParseError`] naming the first unusable item.
pub fn parse_instances(
    list: &str,
    default_version: &semver::Version,
) -> Result<Vec<Instance>, InstanceParseError> {
    let mut out: Vec<Instance> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let err = |reason: &str| InstanceParseError {
            item: item.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, version) = match item.split_once('@') {
            Some((a, v)) => (
                a,
                semver::Version::parse(v).map_err(|e| err(&format!("version: {e}")))?,
            ),
            None => (item, default_version.clone()),
        };
        let addr: SocketAddr = addr.parse().map_err(|_| err("not an ip:port address"))?;
        if addr.port() == 0 {
            return Err(err("port 0"));
        }
        if out.iter().any(|i| i.addr == addr) {
            return Err(err("listed twice"));
        }
        out.push(Instance {
            id: InstanceId::new(addr.to_string()),
            addr,
            version,
            zone: "local".to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_lists_parse_with_and_without_versions() {
        let v1 = semver::Version::new(1, 0, 0);
        let list = parse_instances("127.0.0.1:7101@1.2.4, 127.0.0.1:7102", &v1).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].version, semver::Version::new(1, 2, 4));
        assert_eq!(list[1].version, v1);
        assert_eq!(list[1].id.as_str(), "127.0.0.1:7102");
    }

    #[test]
    fn bad_items_are_named() {
        let v1 = semver::Version::new(1, 0, 0);
        for bad in [
            "localhost:1",
            "127.0.0.1:7101@1.2",
            "127.0.0.1:0",
            "127.0.0.1:1,127.0.0.1:1",
        ] {
            let e = parse_instances(bad, &v1).unwrap_err().to_string();
            assert!(e.contains("bad instance"), "{bad}: {e}");
        }
        assert!(parse_instances("", &v1).unwrap().is_empty());
    }
}
