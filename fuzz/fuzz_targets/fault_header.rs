//! The edge's game-day credential and fault scope: the signed
//! `x-fleet-fault` header (`fleet_edge_client::fault_signature`:
//! `SignedFault::parse`, `GamedayKey::verify`), the edge's decision on a
//! request's headers (`fleet_edge::stack::context::verified_scope`), which
//! client headers go downstream (`propagated`), and the scope the fault
//! table then matches. The input is a list of headers
//! (`fleet_fuzz::headers_from`); when its first byte is odd, the harness
//! also appends a header it signs itself, for a scope and an expiry taken
//! from the input, so that valid, expired and far-future signatures are all
//! reached.
//!
//! Asserts: parsing and verifying never panic; a header verifies only if it
//! parses, its scope is valid and its expiry lies in (now, now + 1 h], and
//! then its scope is what was signed; without any `x-fleet-fault` the
//! request is not a game-day request and nothing is refused; with one that
//! verifies, exactly its bare scope goes downstream; with anything else
//! (two headers, unsigned, another key, expired, or no key at the edge) the
//! answer is 401 `invalid_fault_header`; internal pins pass only for a
//! game-day request, public pins always, nothing over 64 bytes, never the
//! raw fault header; a rule scoped to `drill-7` fires exactly for a request
//! whose verified scope is `drill-7`.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use fleet_context::{RequestContext, headers};
use fleet_edge::stack::context::{PUBLIC_PINS, propagated, verified_scope};
use fleet_edge_client::fault_signature::{GamedayKey, MAX_TTL, SignedFault};
use fleet_resilience::fault::{FaultAction, FaultRequest, FaultSpec, FaultTable};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

const KEY: &str = "fuzz-game-day-key-0123456789";
const OTHER_KEY: &str = "another-game-day-key-98765";

fuzz_target!(|data: &[u8]| {
    let key = GamedayKey::new(KEY).unwrap_or_else(|e| panic!("{e}"));
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut h = fleet_fuzz::headers_from(data.get(1..).unwrap_or_default());
    if data.first().is_some_and(|b| b & 1 == 1) {
        // A header signed here: scope and expiry from the input's tail.
        let tail = data.get(2..).unwrap_or_default();
        let scope: String =
            String::from_utf8_lossy(tail.get(..tail.len().min(12)).unwrap_or_default())
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect();
        let scope = if scope.is_empty() {
            "drill-7".to_owned()
        } else {
            scope
        };
        let skew = i64::from(data.get(1).copied().unwrap_or(0)) * 30 - 3000;
        let signed_at = if skew < 0 {
            now - Duration::from_secs(skew.unsigned_abs())
        } else {
            now + Duration::from_secs(skew.unsigned_abs())
        };
        let signer = if data.first().is_some_and(|b| b & 2 == 2) {
            GamedayKey::new(OTHER_KEY).unwrap_or_else(|e| panic!("{e}"))
        } else {
            key.clone()
        };
        let value = signer
            .sign(&scope, Duration::from_secs(600), signed_at)
            .unwrap_or_else(|e| panic!("signing a valid scope failed: {e}"));
        let verdict = key.verify(&value, now);
        let fresh = skew > -600 && skew + 600 <= i64::try_from(MAX_TTL.as_secs()).unwrap_or(0);
        let ours = data.first().is_some_and(|b| b & 2 == 0);
        assert_eq!(
            verdict.is_ok(),
            fresh && ours,
            "{value}: skew {skew}, ours {ours}: {verdict:?}"
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(headers::FAULT_PREFIX, v);
        }
    }

    // Every value of the header on its own: parse and verify agree.
    for v in h.get_all(headers::FAULT_PREFIX) {
        let Ok(text) = v.to_str() else { continue };
        let parsed = SignedFault::parse(text);
        match key.verify(text, now) {
            Ok(scope) => {
                let p = parsed.unwrap_or_else(|e| panic!("verified but unparsable: {e}"));
                assert_eq!(p.scope, scope);
                let t = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                assert!(p.exp > t && p.exp - t <= MAX_TTL.as_secs(), "exp {}", p.exp);
                assert!(
                    scope.len() <= 64
                        && scope
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                    "{scope:?}"
                );
            }
            Err(_) => {}
        }
    }

    // The edge's decision, with and without a key configured.
    let values: Vec<&HeaderValue> = h.get_all(headers::FAULT_PREFIX).iter().collect();
    let decided = verified_scope(&h, Some(&key), now);
    match values.as_slice() {
        [] => {
            assert!(matches!(decided, Ok(None)), "{decided:?}");
            assert!(matches!(verified_scope(&h, None, now), Ok(None)));
        }
        [one] => {
            let expected = one.to_str().ok().and_then(|t| key.verify(t, now).ok());
            match (&decided, expected) {
                (Ok(Some(v)), Some(scope)) => assert_eq!(v.to_str().ok(), Some(scope)),
                (Err(e), None) => {
                    assert_eq!((e.status.as_u16(), e.code), (401, "invalid_fault_header"));
                }
                (got, want) => panic!("decided {got:?}, verify says {want:?}"),
            }
            let no_key = verified_scope(&h, None, now);
            assert!(no_key.is_err(), "no key at the edge, yet {no_key:?}");
        }
        _ => assert!(decided.is_err(), "two fault headers, yet {decided:?}"),
    }
    let (gameday, scope) = match &decided {
        Ok(Some(v)) => (true, Some(v.clone())),
        _ => (false, None),
    };

    // What goes downstream.
    for gd in [false, true] {
        let passed = propagated(&h, gd);
        for (n, v) in &passed {
            assert!(v.len() <= 64, "{n}: {} bytes passed", v.len());
            assert!(
                h.get_all(n).iter().any(|s| s == v),
                "{n}: {v:?} was never sent"
            );
            assert_ne!(
                n.as_str(),
                headers::FAULT_PREFIX,
                "the raw fault header passed"
            );
            let public = PUBLIC_PINS.contains(&n.as_str());
            let internal = n.as_str().starts_with(headers::VERSION_PIN_PREFIX);
            assert!(public || (gd && internal), "{n} passed (game-day: {gd})");
        }
        for (n, v) in &h {
            let allowed = PUBLIC_PINS.contains(&n.as_str())
                || (gd && n.as_str().starts_with(headers::VERSION_PIN_PREFIX));
            if allowed && v.len() <= 64 {
                assert!(
                    passed.iter().any(|(pn, pv)| pn == n && pv == v),
                    "{n}: {v:?} dropped"
                );
            }
        }
    }

    // The context the edge builds, and a fault table's decision on it.
    let mut cx = RequestContext::new();
    if let Some(s) = &scope {
        cx = cx.with_propagated(
            http::HeaderName::from_static(headers::FAULT_PREFIX),
            s.clone(),
        );
    }
    for (n, v) in propagated(&h, gameday) {
        cx = cx.with_propagated(n, v);
    }
    let table = FaultTable::new("1.0.0");
    let spec: FaultSpec =
        serde_json::from_str(r#"{"header":"drill-7","action":{"type":"abort","code":"503"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
    table.add(spec).unwrap_or_else(|e| panic!("{e}"));
    let fired = table.decide(&FaultRequest {
        operation: "GET /api/v1/titles/{id}",
        caller: None,
        header: cx.fault_scope(),
    });
    let expected = scope.as_ref().is_some_and(|v| v == "drill-7");
    assert_eq!(
        fired,
        expected.then(|| FaultAction::Abort { code: "503".into() }),
        "scope {scope:?}"
    );
});
