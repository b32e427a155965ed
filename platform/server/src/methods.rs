//! The gRPC methods a server really serves: the only operation names that
//! may become metric labels or keys of per-operation state.
//!
//! A request path comes from the client, so a label taken from it would
//! let anyone add series (or admission state) with random paths. The set
//! is built once, at start, from the proto descriptors of the services the
//! host runs plus health and reflection; every other path is `other`.

use std::collections::HashMap;
use std::sync::Arc;

use fleet_metrics::OTHER;
use prost::Message as _;

/// Path prefix of the gRPC health service.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Path prefix of gRPC reflection (v1 and v1alpha).
pub const REFLECTION_PREFIX: &str = "/grpc.reflection.";

/// True for health checks and reflection: infrastructure calls that no
/// fault rule, concurrency limit or admission check may touch, so a game
/// day or an overload never makes an instance look dead.
pub fn is_infrastructure(path: &str) -> bool {
    path.starts_with(HEALTH_PREFIX) || path.starts_with(REFLECTION_PREFIX)
}

/// Path → operation label, for the methods this server serves.
#[derive(Clone, Debug, Default)]
pub struct KnownMethods {
    by_path: Arc<HashMap<String, Arc<str>>>,
    other: Option<Arc<str>>,
}

impl KnownMethods {
    /// The methods of `services` (fully qualified, e.g.
    /// `catalog.v1.Catalog`) found in the encoded `FileDescriptorSet`s,
    /// plus health (`Check`, `Watch`) and reflection.
    pub fn from_descriptors(sets: &[&[u8]], services: &[&str]) -> Self {
        let mut by_path: HashMap<String, Arc<str>> = HashMap::new();
        for set in sets {
            // A descriptor set compiled into this binary; one that does
            // not decode contributes nothing (and every call is `other`).
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                tracing::error!("a compiled-in descriptor set does not decode");
                continue;
            };
            for file in &set.file {
                let package = file.package();
                for svc in &file.service {
                    let full = if package.is_empty() {
                        svc.name().to_owned()
                    } else {
                        format!("{package}.{}", svc.name())
                    };
                    if !services.contains(&full.as_str()) {
                        continue;
                    }
                    for m in &svc.method {
                        by_path.insert(format!("/{full}/{}", m.name()), m.name().into());
                    }
                }
            }
        }
        for m in ["Check", "Watch"] {
            by_path.insert(format!("{HEALTH_PREFIX}{m}"), m.into());
        }
        for v in ["v1", "v1alpha"] {
            by_path.insert(
                format!("{REFLECTION_PREFIX}{v}.ServerReflection/ServerReflectionInfo"),
                "ServerReflectionInfo".into(),
            );
        }
        Self {
            by_path: Arc::new(by_path),
            other: Some(OTHER.into()),
        }
    }

    /// The operation label of a request path: the method name when this
    /// server serves it, else `other`.
    pub fn label(&self, path: &str) -> Arc<str> {
        match self.by_path.get(path) {
            Some(name) => name.clone(),
            None => self.other.clone().unwrap_or_else(|| OTHER.into()),
        }
    }

    /// How many methods are known.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// True when no method is known.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_keep_their_name() {
        let k = KnownMethods::from_descriptors(
            &[fleet_proto::FILE_DESCRIPTOR_SET],
            &["catalog.v1.Catalog"],
        );
        assert_eq!(&*k.label("/catalog.v1.Catalog/GetTitle"), "GetTitle");
        assert_eq!(&*k.label("/grpc.health.v1.Health/Check"), "Check");
        // Another service in the same descriptors, not served here.
        assert_eq!(&*k.label("/dal.v1.DataAccess/GetTitle"), "other");
        assert_eq!(&*k.label("/catalog.v1.Catalog/NoSuchMethod"), "other");
        assert_eq!(&*k.label("/x/y/z"), "other");
        assert!(is_infrastructure("/grpc.health.v1.Health/Check"));
        assert!(!is_infrastructure("/catalog.v1.Catalog/GetTitle"));
    }
}
