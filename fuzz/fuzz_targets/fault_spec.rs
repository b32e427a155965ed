//! Fault specs on the admin API: the body of `POST /admin/faults`, sent
//! through the real router (`fleet_resilience::fault::admin_router`) of a
//! fresh table, as every instance's admin port serves it.
//!
//! Asserts: the answer is 201, 400 (not a spec), 413 (over 4 KiB) or 422
//! (a spec that breaks a rule), and the table holds a rule exactly after
//! 201; an accepted spec keeps every documented rule (percent in (0, 100],
//! scopes 1-128 bytes without control characters, ttl 1-86400 s, delay
//! 1-60000 ms, abort code a gRPC name or an HTTP status 400-599); what
//! `GET /admin/faults` lists is the spec that was posted, and posting it
//! again is accepted again; a rule at 100 % fires for a request inside all
//! its scopes, with its action.

#![no_main]

use axum::body::Body;
use fleet_resilience::fault::{
    FaultAction, FaultRequest, FaultSpec, FaultTable, abort_status, admin_router,
};
use http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const VERSION: &str = "1.3.0";

fn call(table: &FaultTable, method: Method, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    fleet_fuzz::block_on(async {
        let req = Request::builder()
            .method(method)
            .uri("/admin/faults")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = admin_router(table.clone())
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (status, body.to_vec())
    })
}

fn scope_ok(v: Option<&String>) -> bool {
    v.is_none_or(|s| !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control))
}

fuzz_target!(|data: &[u8]| {
    let table = FaultTable::new(VERSION);
    let (status, body) = call(&table, Method::POST, data.to_vec());
    let parsed = serde_json::from_slice::<FaultSpec>(data);
    match status.as_u16() {
        413 => assert!(data.len() > 4096),
        400 => assert!(data.len() <= 4096 && parsed.is_err()),
        422 => assert!(parsed.as_ref().is_ok_and(|s| s.validate().is_err())),
        201 => {}
        s => panic!("answered {s}: {}", String::from_utf8_lossy(&body)),
    }
    let rules = table.list();
    if status != StatusCode::CREATED {
        assert!(rules.is_empty(), "a refused spec was stored");
        return;
    }
    let spec = parsed.unwrap_or_else(|e| panic!("201 for a body that is no spec: {e}"));
    assert!(
        spec.percent > 0.0 && spec.percent <= 100.0,
        "percent {}",
        spec.percent
    );
    for s in [&spec.operation, &spec.version, &spec.caller, &spec.header] {
        assert!(scope_ok(s.as_ref()), "scope {s:?}");
    }
    assert!(spec.ttl_s.is_none_or(|t| (1..=86_400).contains(&t)));
    match &spec.action {
        FaultAction::Delay { ms } => assert!((1..=60_000).contains(ms), "delay {ms}"),
        FaultAction::Abort { code } => {
            let st = abort_status(code).unwrap_or_else(|e| panic!("{e}"));
            assert!((400..=599).contains(&st.http), "{code} -> {st:?}");
        }
        FaultAction::Hang => {}
    }
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].spec, spec);

    // What the admin API lists is what was posted, and posts again.
    let (status, listed) = call(&table, Method::GET, Vec::new());
    assert_eq!(status, StatusCode::OK);
    let mut listed: Vec<serde_json::Value> =
        serde_json::from_slice(&listed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 1);
    let mut rule = listed.remove(0);
    assert!(rule.as_object_mut().and_then(|o| o.remove("id")).is_some());
    let again: FaultSpec = serde_json::from_value(rule.clone())
        .unwrap_or_else(|e| panic!("listed rule {rule} is no spec: {e}"));
    assert_eq!(again, spec);
    let fresh = FaultTable::new(VERSION);
    let body = serde_json::to_vec(&rule).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        call(&fresh, Method::POST, body).0,
        StatusCode::CREATED,
        "{rule}"
    );

    // A rule at 100 % fires inside its scopes.
    let version_in = spec.version.as_deref().is_none_or(|v| {
        let mut have = VERSION.split('.');
        v.split('.').all(|want| have.next() == Some(want))
    });
    if spec.percent >= 100.0 && version_in {
        let req = FaultRequest {
            operation: spec.operation.as_deref().unwrap_or("GetTitle"),
            caller: spec.caller.as_deref(),
            header: spec.header.as_deref(),
        };
        assert_eq!(table.decide(&req), Some(spec.action.clone()));
    }
});
