//! The request context every gRPC server builds from incoming metadata
//! (`RequestContext::from_headers`: request id, `grpc-timeout`, caller,
//! cohort key, propagated version pins, fault scope and `tracestate`) and
//! writes onto each downstream call (`write_headers`). The input is a list
//! of headers (`fleet_fuzz::headers_from`).
//!
//! Asserts: only a malformed `grpc-timeout` refuses the call; the request
//! id is the caller's when it is 1-128 printable ASCII bytes, a fresh UUID
//! otherwise; every propagated header this hop reads is the one it passes
//! on, and nothing else is passed on: a context written by one hop and read
//! by the next is the same context.

#![no_main]

use fleet_context::{MAX_REQUEST_ID_LEN, RequestContext, headers, parse_grpc_timeout};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let h = fleet_fuzz::headers_from(data);
    let now = tokio::time::Instant::now();
    let cx = match RequestContext::from_headers(&h, now) {
        Ok(cx) => cx,
        Err(e) => {
            let v = h.get(headers::GRPC_TIMEOUT);
            assert!(
                v.is_some_and(|v| parse_grpc_timeout(v).is_err()),
                "refused without cause: {e}"
            );
            return;
        }
    };
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());

    match text(headers::REQUEST_ID) {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            assert_eq!(cx.request_id(), id);
        }
        given => assert!(
            cx.request_id().len() == 36 && Some(cx.request_id()) != given,
            "request id {:?} kept from {given:?}",
            cx.request_id()
        ),
    }
    assert_eq!(cx.caller(), text(headers::CALLER));
    assert_eq!(cx.cohort_key(), text(headers::COHORT_KEY));
    for name in h.keys() {
        let read = cx.propagated(name.as_str());
        if headers::is_propagated(name) {
            assert_eq!(read, h.get(name), "{name}: this hop reads another value");
        } else {
            assert_eq!(read, None, "{name} is not propagated");
        }
    }

    // One hop writes, the next reads: the same context.
    let mut wire = HeaderMap::new();
    cx.write_headers(&mut wire, Some("catalog"));
    let next = RequestContext::from_headers(&wire, now)
        .unwrap_or_else(|e| panic!("a written context does not read: {e}"));
    assert_eq!(next.request_id(), cx.request_id());
    assert_eq!(next.caller(), Some("catalog"));
    assert_eq!(next.cohort_key(), cx.cohort_key());
    for name in h.keys().chain(wire.keys()) {
        assert_eq!(
            next.propagated(name.as_str()),
            cx.propagated(name.as_str()),
            "{name}: the next hop reads another value than this one"
        );
    }
});
