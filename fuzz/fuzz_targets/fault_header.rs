//! The edge's fault scope and version pin headers: which client headers go
//! downstream (`fleet_edge::stack::context::propagated`) and who is a
//! game-day client (`is_gameday`, the admin token in
//! `x-fleet-gameday-token`); then the scope the edge's own fault layer
//! reads from the context, matched by a fault table. There is no signed
//! fault header yet: the credential is the game-day token, and this is
//! every decoder of the fault scope the edge has today. The input is a
//! list of headers (`fleet_fuzz::headers_from`).
//!
//! Asserts: a client is a game-day client exactly when it shows the token
//! byte for byte; without it no fault scope and no internal pin passes
//! (only `x-version-catalog`/`x-version-ratings`), with it those pass too;
//! everything passed was sent and is at most 64 bytes, and everything sent
//! that the rules allow is passed; a rule scoped to `x-fleet-fault:
//! drill-7` fires for a request exactly when a game-day client sent that
//! scope (the last one sent, as the context keeps it).

#![no_main]

use fleet_context::{RequestContext, headers};
use fleet_edge::stack::context::{GAMEDAY_TOKEN, PUBLIC_PINS, is_gameday, propagated};
use fleet_resilience::fault::{FaultAction, FaultRequest, FaultSpec, FaultTable};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let h = fleet_fuzz::headers_from(data);
    let shown = h
        .get(GAMEDAY_TOKEN)
        .map(|v| v.as_bytes() == TOKEN.as_bytes());
    let gameday = is_gameday(&h, Some(TOKEN));
    assert_eq!(gameday, shown == Some(true), "{:?}", h.get(GAMEDAY_TOKEN));
    assert!(
        !is_gameday(&h, None),
        "no token configured: nobody is a game-day client"
    );

    for gd in [false, true] {
        let passed = propagated(&h, gd);
        for (n, v) in &passed {
            assert!(v.len() <= 64, "{n}: {} bytes passed", v.len());
            assert!(
                h.get_all(n).iter().any(|s| s == v),
                "{n}: {v:?} was never sent"
            );
            let public = PUBLIC_PINS.contains(&n.as_str());
            let internal = n.as_str().starts_with(headers::VERSION_PIN_PREFIX)
                || n.as_str() == headers::FAULT_PREFIX;
            assert!(public || (gd && internal), "{n} passed (game-day: {gd})");
        }
        for (n, v) in &h {
            let allowed = PUBLIC_PINS.contains(&n.as_str())
                || (gd
                    && (n.as_str().starts_with(headers::VERSION_PIN_PREFIX)
                        || n.as_str() == headers::FAULT_PREFIX));
            if allowed && v.len() <= 64 {
                assert!(
                    passed.iter().any(|(pn, pv)| pn == n && pv == v),
                    "{n}: {v:?} dropped"
                );
            }
        }
    }

    // The context the edge builds, and its fault layer's decision.
    let mut cx = RequestContext::new();
    let mut last_scope = None;
    for (n, v) in propagated(&h, gameday) {
        if n == headers::FAULT_PREFIX {
            last_scope = Some(v.clone());
        }
        cx = cx.with_propagated(n, v);
    }
    let scope = cx
        .propagated(headers::FAULT_PREFIX)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(cx.propagated(headers::FAULT_PREFIX), last_scope.as_ref());
    let table = FaultTable::new("1.0.0");
    let spec: FaultSpec =
        serde_json::from_str(r#"{"header":"drill-7","action":{"type":"abort","code":"503"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
    table.add(spec).unwrap_or_else(|e| panic!("{e}"));
    let fired = table.decide(&FaultRequest {
        operation: "GET /api/v1/titles/{id}",
        caller: None,
        header: scope.as_deref(),
    });
    let expected = gameday && last_scope.as_ref().is_some_and(|v| v == "drill-7");
    assert_eq!(
        fired,
        expected.then(|| FaultAction::Abort { code: "503".into() }),
        "scope {scope:?}, game-day {gameday}"
    );
});
