//! Helpers shared by the fuzz targets (`fuzz_targets/*.rs`): turning fuzz
//! input into header maps, running a request future to completion, and the
//! test oracles the targets compare our parsers with. Nothing here parses
//! what a target fuzzes: every target calls the real code in our crates.

use std::future::Future;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Header names the fuzzer can pick with one byte (see [`headers_from`]):
/// every header our decoders read, plus a few that must be ignored.
pub const NAMES: [&str; 14] = [
    "x-request-id",
    "grpc-timeout",
    "x-fleet-caller",
    "x-fleet-cohort",
    "x-version-catalog",
    "x-version-ratings",
    "x-version-dal",
    "x-fleet-fault",
    "x-fleet-gameday-token",
    "traceparent",
    "tracestate",
    "authorization",
    "x-fleet-faults",
    "x-version-",
];

/// A header map from fuzz input: one header per line; a line's first byte
/// picks a name from [`NAMES`] (or, past them, the bytes up to the first
/// `:` are the name) and the rest is the value. Lines whose name or value
/// `http` refuses are skipped, as a server never sees them. Repeated names
/// are kept (appended), as they arrive on the wire.
pub fn headers_from(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&pick, rest)) = line.split_first() else {
            continue;
        };
        let (name, value) = match NAMES.get(usize::from(pick) % (NAMES.len() + 1)) {
            Some(n) => (HeaderName::from_static(n), rest),
            None => {
                let Some(colon) = rest.iter().position(|&b| b == b':') else {
                    continue;
                };
                let Ok(n) = HeaderName::from_bytes(&rest[..colon]) else {
                    continue;
                };
                (n, &rest[colon + 1..])
            }
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.append(name, v);
        }
    }
    h
}

/// Runs a future to completion on one shared current-thread runtime (the
/// extractors and routers under test are async, but never wait on I/O).
pub fn block_on<F: Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("no runtime for the fuzz target: {e}"))
    })
    .block_on(f)
}

/// The nesting depth of a JSON document as serde_json reads it (`3` is 0,
/// `{"a":[1]}` is 2): the oracle for the edge's pre-parse depth check.
/// Every array and object counts, duplicate keys included (a
/// `serde_json::Value` would keep only the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth(pub usize);

impl<'de> serde::Deserialize<'de> for Depth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Depth;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_unit<E>(self) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Depth, A::Error> {
                let mut inner = 0;
                while let Some(Depth(d)) = a.next_element()? {
                    inner = inner.max(d);
                }
                Ok(Depth(inner + 1))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Depth, A::Error> {
                let mut inner = 0;
                while let Some((serde::de::IgnoredAny, Depth(d))) = a.next_entry()? {
                    inner = inner.max(d);
                }
                Ok(Depth(inner + 1))
            }
        }
        d.deserialize_any(V)
    }
}
