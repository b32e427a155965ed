//! Telemetry for every binary: JSON log lines on stdout, W3C trace context
//! across hops, and OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set.
//!
//! Spans always get OpenTelemetry ids (a tracer provider is installed even
//! without an exporter) so `traceparent` propagates end to end whether or not
//! a collector listens. [`extract`] and [`inject`] move the context in and out
//! of HTTP headers and gRPC metadata (both are `http::HeaderMap`s on the wire).

#![forbid(unsafe_code)]

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use fleet_config::{ConfigError, Env};

/// Telemetry settings, from the OpenTelemetry and `RUST_LOG` conventions.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `OTEL_SERVICE_NAME`; defaults to the binary's service name.
    pub service_name: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (gRPC, e.g. `http://collector:4317`);
    /// traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `RUST_LOG` filter directives; default `info`.
    pub log_filter: String,
}

impl TelemetryConfig {
    /// Reads the settings; `default_service` names the service when
    /// `OTEL_SERVICE_NAME` is unset.
    ///
    /// # Errors
    /// [`ConfigError`] when `RUST_LOG` is not a valid filter or the OTLP
    /// endpoint is not an http(s) URL.
    pub fn from_env(env: &Env, default_service: &str) -> Result<Self, ConfigError> {
        let log_filter = env.string("RUST_LOG", "info");
        EnvFilter::try_new(&log_filter)
            .map_err(|e| ConfigError::invalid("RUST_LOG", &log_filter, e))?;
        let otlp_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_owned);
        if let Some(ep) = &otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                ep,
                "expected an http:// or https:// URL",
            ));
        }
        Ok(Self {
            service_name: env.string("OTEL_SERVICE_NAME", default_service),
            otlp_endpoint,
            log_filter,
        })
    }
}

/// Failure to install telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("failed to build the OTLP exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was already installed.
    #[error("failed to install the tracing subscriber")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
    /// The log filter is invalid.
    #[error("invalid RUST_LOG filter")]
    Filter(#[source] tracing_subscriber::filter::ParseError),
}

/// Keeps the tracer provider alive; flushes pending spans when dropped.
#[must_use = "dropping the guard shuts tracing export down"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Errors here mean the collector is gone; nothing more can be done.
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber: JSON lines on stdout filtered by
/// `RUST_LOG`, plus OpenTelemetry spans (exported over OTLP/gRPC when an
/// endpoint is configured). Must run inside the tokio runtime.
///
/// # Errors
/// [`TelemetryError`] when the exporter cannot be built or another
/// library's subscriber is being installed at the same moment.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &config.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(TelemetryError::Exporter)?;
        builder = builder.with_batch_exporter(exporter);
    }
    builder = builder.with_sampler(sampler(config));
    let provider = builder.build();
    let tracer = provider.tracer("fleet");
    let filter = EnvFilter::try_new(&config.log_filter).map_err(TelemetryError::Filter)?;
    // A process that runs a service twice (tests, the fleet tool) keeps the
    // subscriber it installed first: telemetry is process-wide.
    if tracing::dispatcher::has_been_set() {
        return Ok(TelemetryGuard { provider });
    }
    match tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_target(true)
                .with_writer(std::io::stdout),
        )
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
    {
        // Two first starts in one process can race past the check above;
        // the loser keeps the winner's subscriber, as a later start would.
        Err(_) if tracing::dispatcher::has_been_set() => {}
        Err(e) => return Err(TelemetryError::Subscriber(e)),
        Ok(()) => {}
    }
    Ok(TelemetryGuard { provider })
}

/// Which spans are recorded: with an exporter, the SDK's default (follow
/// the caller's decision, record new traces); without one nothing is
/// recorded — spans keep their ids (logs name the trace, calls carry
/// `traceparent` on), but the SDK skips building span data nobody reads
/// (5-7 % of a gRPC service's CPU in the profile, docs/PERFORMANCE.md).
fn sampler(config: &TelemetryConfig) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler;
    match config.otlp_endpoint {
        Some(_) => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        None => Sampler::AlwaysOff,
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) of incoming
/// headers: a context whose span context is invalid when the headers carry
/// none, or a malformed one (never an error: a request without a usable
/// parent starts a new trace).
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes the trace context of incoming `headers` (see [`extract`]) the
/// parent of `span`.
pub fn set_parent_from(span: &tracing::Span, headers: &HeaderMap) {
    let cx = extract(headers);
    // Fails only when no OpenTelemetry layer is installed (e.g. unit tests).
    let _ = span.set_parent(cx);
}

/// Writes the current span's trace context (`traceparent`, `tracestate`)
/// into outgoing headers.
pub fn inject(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// The trace id (32 hex digits) of the current span's trace context, if it
/// has a valid one: recorded on request spans so every log line of a
/// request names its trace.
pub fn current_trace_id() -> Option<String> {
    // Read from the span context directly: going through a `traceparent`
    // header (a HeaderMap, the propagator, a parse) cost ~3 % of a
    // service's CPU per request in the profile.
    use opentelemetry::trace::TraceContextExt as _;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_bad_filter_and_endpoint() {
        let e = Env::from_pairs([("RUST_LOG", "info,[[[")]);
        assert!(TelemetryConfig::from_env(&e, "x").is_err());
        let e = Env::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
        assert!(TelemetryConfig::from_env(&e, "x").is_err());
        let c = TelemetryConfig::from_env(&Env::default(), "catalog").unwrap();
        assert_eq!(c.service_name, "catalog");
        assert_eq!(c.log_filter, "info");
        assert!(c.otlp_endpoint.is_none());
    }

    #[test]
    fn only_a_well_formed_traceparent_is_extracted() {
        use opentelemetry::trace::TraceContextExt as _;
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let cx = extract(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            assert!(!extract(&h).span().span_context().is_valid(), "{bad}");
        }
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` under an OpenTelemetry layer with `sampler`, inside a span
    /// whose parent is [`PARENT`]; returns the `traceparent` `f` would send.
    fn in_child_of_parent(
        sampler: opentelemetry_sdk::trace::Sampler,
        f: impl FnOnce(&tracing::Span),
    ) -> String {
        let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let mut incoming = HeaderMap::new();
            incoming.insert("traceparent", HeaderValue::from_static(PARENT));
            let span = tracing::info_span!("server");
            set_parent_from(&span, &incoming);
            f(&span);
            let _g = span.enter();
            let mut out = HeaderMap::new();
            inject(&mut out);
            out.get("traceparent").unwrap().to_str().unwrap().to_owned()
        })
    }

    #[test]
    fn traceparent_round_trips_through_headers() {
        use opentelemetry_sdk::trace::Sampler;
        let tp = in_child_of_parent(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), |_| {});
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(
            !tp.contains("00f067aa0ba902b7"),
            "a child span gets its own id: {tp}"
        );
    }

    /// Without an exporter `init` samples nothing, and unsampled spans
    /// still carry trace ids (logs name the trace, calls pass
    /// `traceparent` on) though the SDK records nothing.
    #[test]
    fn without_an_exporter_nothing_is_recorded_and_trace_ids_stay() {
        use opentelemetry_sdk::trace::Sampler;
        let none = TelemetryConfig::from_env(&Env::default(), "x").unwrap();
        assert!(matches!(sampler(&none), Sampler::AlwaysOff));
        let otlp = Env::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        let with = TelemetryConfig::from_env(&otlp, "x").unwrap();
        assert!(matches!(sampler(&with), Sampler::ParentBased(_)));

        let tp = in_child_of_parent(sampler(&none), |span| {
            assert_eq!(
                span.in_scope(current_trace_id).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            let root = tracing::info_span!(parent: None, "root");
            let id = root.in_scope(current_trace_id).unwrap();
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32));
        });
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        // No span at all: no trace id.
        assert_eq!(current_trace_id(), None);
    }
}
