//! The W3C trace context every instance reads from incoming headers
//! (`traceparent`, `tracestate`: `fleet_telemetry::extract`, and
//! `set_parent_from` + `current_trace_id` as the edge and every gRPC server
//! run them per request). The input is the `traceparent` value, then a
//! newline, then the `tracestate` value. (There is no baggage: no crate of
//! ours reads or writes a `baggage` header.)
//!
//! Asserts: a parent that is accepted re-injects as the canonical
//! `00-<32 hex>-<16 hex>-<2 hex>` form, which extracts to the same span
//! context (ids, flags, trace state); a span parented on the headers logs
//! that trace id, and one whose headers carry no valid parent starts a
//! trace of its own.

#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;

/// The subscriber every instance installs (an OpenTelemetry layer over a
/// provider without an exporter, which therefore samples nothing: spans
/// keep their ids but record no data), once per process.
fn telemetry() {
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let provider = SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("fuzz")));
        tracing::subscriber::set_global_default(subscriber)
            .unwrap_or_else(|e| panic!("subscriber: {e}"));
        provider
    });
}

fuzz_target!(|data: &[u8]| {
    telemetry();
    let (tp, ts) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(tp) {
        h.insert("traceparent", v);
    }
    if let Some(Ok(v)) = ts.map(HeaderValue::from_bytes) {
        h.insert("tracestate", v);
    }

    let cx = fleet_telemetry::extract(&h);
    let sc = cx.span().span_context().clone();
    let tp_text = h.get("traceparent").and_then(|v| v.to_str().ok());

    if sc.is_valid() {
        assert!(sc.is_remote());
        // Passed on in the canonical form, and read back the same.
        let mut out: HashMap<String, String> = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        let canonical = out.get("traceparent").cloned().unwrap_or_default();
        assert_eq!(
            canonical,
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        );
        let mut again = HeaderMap::new();
        for (k, v) in &out {
            let v = HeaderValue::from_str(v)
                .unwrap_or_else(|e| panic!("injected {k}: {v:?} is no header value: {e}"));
            again.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{k}: {e}")),
                v,
            );
        }
        let back = fleet_telemetry::extract(&again);
        assert_eq!(back.span().span_context(), &sc, "{canonical}");
    }

    // As every instance runs it: the request span's parent, and the trace
    // id its log lines carry.
    let span = tracing::info_span!("request");
    fleet_telemetry::set_parent_from(&span, &h);
    let logged = span.in_scope(fleet_telemetry::current_trace_id);
    let logged =
        logged.unwrap_or_else(|| panic!("a request span without a trace id ({tp_text:?})"));
    if sc.is_valid() {
        assert_eq!(logged, sc.trace_id().to_string(), "{tp_text:?}");
    }
});
