//! Prometheus metrics for every service, in the text exposition format.
//!
//! One [`Metrics`] per process, created with the service name and version as
//! constant labels (so every series carries the version, which is what a
//! canary comparison needs). Families are created once at start-up and
//! handed to the layers that record into them; `/metrics` encodes the
//! registry. Names follow `fleet_<name>_<unit>` with `_total` for counters;
//! labels stay low-cardinality (operations and codes, never user ids).
//!
//! Latency histograms carry **exemplars**: each bucket remembers the trace
//! id of the last request that fell into it (taken from the current span's
//! trace context), so a dashboard can jump from a slow bucket to that
//! request's trace in Jaeger. Exemplars exist only in OpenMetrics: `/metrics`
//! serves [`Metrics::encode_openmetrics`] to a scraper that asks for it
//! (Prometheus does) and the 0.0.4 text format, without exemplars, to
//! everyone else ([`Metrics::encode`]).

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

pub use prometheus_client;

/// Latency buckets in seconds: 250 µs to ~16 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 17)
}

/// The exemplar a latency observation carries: the id of its trace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    /// 32 hex digits, as Jaeger and the W3C `traceparent` write it.
    pub trace_id: String,
}

impl TraceExemplar {
    /// The current span's trace, if it has a valid trace context.
    pub fn current() -> Option<Self> {
        fleet_telemetry::current_trace_id().map(|trace_id| Self { trace_id })
    }
}

/// A latency histogram whose buckets keep a [`TraceExemplar`].
pub type LatencyHistogramMetric = HistogramWithExemplars<TraceExemplar>;

/// Builds histograms with [`latency_buckets`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencyHistogram;

impl MetricConstructor<LatencyHistogramMetric> for LatencyHistogram {
    fn new_metric(&self) -> LatencyHistogramMetric {
        HistogramWithExemplars::new(latency_buckets())
    }
}

/// A family of latency histograms with the standard buckets.
pub type LatencyFamily<L> = Family<L, LatencyHistogramMetric, LatencyHistogram>;

fn latency_family<L: Clone + std::hash::Hash + Eq>() -> LatencyFamily<L> {
    Family::new_with_constructor(LatencyHistogram)
}

/// The process's metric registry (cheap to clone).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    client: Arc<OnceLock<RpcMetrics>>,
    sources: Arc<Mutex<Vec<Arc<dyn SnapshotSource>>>>,
}

/// Something that reports one-second snapshots for `/admin/stream` (a
/// dependency's per-operation resilience stats). Type-erased so this crate
/// needs to know nothing about what is measured.
pub trait SnapshotSource: Send + Sync + 'static {
    /// The current snapshot, one JSON object per operation.
    fn snapshot(&self) -> Vec<serde_json::Value>;
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry whose every series carries `service` and `version`.
    pub fn new(service: &str, version: &str) -> Self {
        let registry = Registry::with_prefix_and_labels(
            "fleet",
            [
                ("service".into(), service.to_owned().into()),
                ("version".into(), version.to_owned().into()),
            ]
            .into_iter(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            client: Arc::new(OnceLock::new()),
            sources: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Adds a source to the `/admin/stream` feed.
    pub fn add_snapshot_source(&self, source: Arc<dyn SnapshotSource>) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(source);
    }

    /// Every source's current snapshot, concatenated.
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        sources.iter().flat_map(|s| s.snapshot()).collect()
    }

    /// Registers a metric under `fleet_<name>`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// Registers a collector (metrics computed at scrape time).
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(collector);
    }

    /// The registry in the Prometheus text exposition format 0.0.4, the
    /// format `/metrics` declares in its `Content-Type` (see
    /// [`openmetrics_to_prometheus_text`]).
    pub fn encode(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode_openmetrics())
    }

    /// The registry in OpenMetrics 1.0 text, with the latency histograms'
    /// exemplars: what `/metrics` answers a scraper that accepts
    /// `application/openmetrics-text` ([`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Creates and registers the gRPC server families.
    pub fn grpc_server(&self) -> RpcMetrics {
        RpcMetrics::register(self, "rpc_server", "served by this instance")
    }

    /// Creates and registers the gRPC client families (calls to dependencies).
    /// Registered once per registry; later calls share the families.
    pub fn grpc_client(&self) -> RpcMetrics {
        self.client
            .get_or_init(|| {
                let mut m = RpcMetrics::register(
                    self,
                    "rpc_client",
                    "made by this instance to a dependency",
                );
                m.client = Some(ClientMetrics::register(self));
                m
            })
            .clone()
    }

    /// Creates and registers the HTTP server families (the edge).
    pub fn http_server(&self) -> HttpMetrics {
        HttpMetrics::register(self)
    }

    /// Creates and registers the adaptive-concurrency families of a server.
    pub fn admission(&self) -> AdmissionMetrics {
        AdmissionMetrics::register(self)
    }
}

/// Labels of a request refused at admission.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// The operation (a known gRPC method or route template, else `other`).
    pub operation: String,
    /// `limit` (concurrency limit reached) or `budget` (remaining budget
    /// below the operation's recent median).
    pub reason: String,
}

/// The adaptive concurrency limit and what it refused.
#[derive(Clone, Debug)]
pub struct AdmissionMetrics {
    limit: Gauge,
    refused: Family<AdmissionLabels, Counter>,
}

impl AdmissionMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self {
            limit: Gauge::default(),
            refused: Family::default(),
        };
        metrics.register(
            "concurrency_limit",
            "The adaptive (Gradient2) concurrency limit of this server",
            this.limit.clone(),
        );
        metrics.register(
            "admission_refused",
            "Requests refused before any work, by operation and reason (limit, budget)",
            this.refused.clone(),
        );
        this
    }

    /// Publishes the limit in force.
    pub fn set_limit(&self, limit: usize) {
        self.limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Counts one refusal.
    pub fn refused(&self, operation: &str, reason: &str) {
        self.refused
            .get_or_create(&AdmissionLabels {
                operation: operation.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Labels of one RPC series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The remote (client side) or this service (server side), e.g. `catalog`.
    pub target: String,
    /// The method, e.g. `GetTitle`.
    pub operation: String,
    /// The gRPC status code name, e.g. `OK`, `UNAVAILABLE`.
    pub code: String,
}

/// Labels of one RPC latency series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcOpLabels {
    /// As in [`RpcLabels::target`].
    pub target: String,
    /// As in [`RpcLabels::operation`].
    pub operation: String,
}

/// Requests, errors and latency per RPC operation.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    requests: Family<RpcLabels, Counter>,
    errors: Family<RpcLabels, Counter>,
    duration: LatencyFamily<RpcOpLabels>,
    in_flight: Family<RpcOpLabels, Gauge>,
    client: Option<ClientMetrics>,
}

/// Labels of a refused or retried client call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// The dependency.
    pub target: String,
    /// The method.
    pub operation: String,
    /// `circuit_open`, `bulkhead_full`, `no_instances`, or `retry`.
    pub reason: String,
}

/// Client-only families: circuit state, refusals, retries, the snapshot feed.
#[derive(Clone, Debug)]
struct ClientMetrics {
    circuit: Family<RpcOpLabels, Gauge>,
    refused: Family<RefusedLabels, Counter>,
    retries: Family<RpcOpLabels, Counter>,
    sources: Metrics,
}

impl ClientMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self {
            circuit: Family::default(),
            refused: Family::default(),
            retries: Family::default(),
            sources: metrics.clone(),
        };
        metrics.register(
            "circuit_state",
            "Circuit breaker state per dependency operation: 0 closed, 1 open, 2 half-open",
            this.circuit.clone(),
        );
        metrics.register(
            "rpc_client_refused",
            "Calls refused before they were sent, by reason (circuit_open, bulkhead_full, no_instances)",
            this.refused.clone(),
        );
        metrics.register(
            "rpc_client_retries",
            "Retries sent, by operation",
            this.retries.clone(),
        );
        this
    }
}

impl RpcMetrics {
    fn register(metrics: &Metrics, prefix: &str, what: &str) -> Self {
        let this = Self {
            requests: Family::default(),
            errors: Family::default(),
            duration: latency_family(),
            in_flight: Family::default(),
            client: None,
        };
        metrics.register(
            &format!("{prefix}_requests"),
            &format!("RPCs {what}, by operation and gRPC status code"),
            this.requests.clone(),
        );
        metrics.register(
            &format!("{prefix}_errors"),
            &format!("RPCs {what} that ended in an error status, by operation and code"),
            this.errors.clone(),
        );
        metrics.register(
            &format!("{prefix}_request_duration_seconds"),
            &format!("Latency of RPCs {what}, by operation"),
            this.duration.clone(),
        );
        metrics.register(
            &format!("{prefix}_in_flight_requests"),
            &format!("RPCs {what} currently in progress"),
            this.in_flight.clone(),
        );
        this
    }

    /// Records one finished call.
    pub fn record(&self, target: &str, operation: &str, code: &str, elapsed: Duration) {
        let labels = RpcLabels {
            target: target.to_owned(),
            operation: operation.to_owned(),
            code: code.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        if code != "OK" {
            self.errors.get_or_create(&labels).inc();
        }
        self.duration
            .get_or_create(&RpcOpLabels {
                target: labels.target,
                operation: labels.operation,
            })
            .observe(elapsed.as_secs_f64(), TraceExemplar::current(), None);
    }

    /// Sets a dependency operation's circuit state (client side only).
    pub fn set_circuit_state(&self, target: &str, operation: &str, state: i64) {
        if let Some(c) = &self.client {
            c.circuit
                .get_or_create(&RpcOpLabels {
                    target: target.to_owned(),
                    operation: operation.to_owned(),
                })
                .set(state);
        }
    }

    /// Counts a call refused before it was sent (client side only).
    pub fn refused(&self, target: &str, operation: &str, reason: &str) {
        if let Some(c) = &self.client {
            c.refused
                .get_or_create(&RefusedLabels {
                    target: target.to_owned(),
                    operation: operation.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// Counts a retry (client side only).
    pub fn retried(&self, target: &str, operation: &str) {
        if let Some(c) = &self.client {
            c.retries
                .get_or_create(&RpcOpLabels {
                    target: target.to_owned(),
                    operation: operation.to_owned(),
                })
                .inc();
        }
    }

    /// Adds a source to the process's `/admin/stream` feed (client side only).
    pub fn add_snapshot_source(&self, source: Arc<dyn SnapshotSource>) {
        if let Some(c) = &self.client {
            c.sources.add_snapshot_source(source);
        }
    }

    /// Counts a call as in flight until the returned guard drops.
    pub fn start(&self, target: &str, operation: &str) -> InFlight {
        let gauge = self
            .in_flight
            .get_or_create(&RpcOpLabels {
                target: target.to_owned(),
                operation: operation.to_owned(),
            })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }
}

/// Decrements an in-flight gauge on drop.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The label for anything outside a known set (an unknown route, method or
/// gRPC method), so junk input cannot add series.
pub const OTHER: &str = "other";

/// The standard HTTP methods keep their name as a label; anything else is
/// [`OTHER`].
pub fn http_method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or(OTHER)
}

/// Labels of one HTTP series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template, e.g. `/api/v1/titles/{id}` (never the raw path).
    pub route: String,
    /// The method.
    pub method: String,
    /// The status code.
    pub status: u16,
}

/// Labels of one HTTP latency series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRouteLabels {
    /// As in [`HttpLabels::route`].
    pub route: String,
    /// As in [`HttpLabels::method`].
    pub method: String,
}

/// Requests, errors and latency per HTTP route.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    errors: Family<HttpLabels, Counter>,
    duration: LatencyFamily<HttpRouteLabels>,
    shed: Counter,
}

impl HttpMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self {
            requests: Family::default(),
            errors: Family::default(),
            duration: latency_family(),
            shed: Counter::default(),
        };
        metrics.register(
            "http_server_requests",
            "HTTP requests served, by route, method and status",
            this.requests.clone(),
        );
        metrics.register(
            "http_server_errors",
            "HTTP requests answered with a 5xx status, by route, method and status",
            this.errors.clone(),
        );
        metrics.register(
            "http_server_request_duration_seconds",
            "Latency of HTTP requests, by route and method",
            this.duration.clone(),
        );
        metrics.register(
            "http_server_shed",
            "HTTP requests rejected with 503 by load shedding",
            this.shed.clone(),
        );
        this
    }

    /// Records one finished request. `route` must be a route template
    /// (or [`OTHER`] for a request that matched none); the method is
    /// reduced to [`http_method_label`], so no client can add a series.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.record_with_exemplar(route, method, status, elapsed, TraceExemplar::current());
    }

    /// [`HttpMetrics::record`] with the request's trace given, for a layer
    /// that runs outside the request's span (the edge's outermost metrics
    /// layer reads it from the response's extensions).
    pub fn record_with_exemplar(
        &self,
        route: &str,
        method: &str,
        status: u16,
        elapsed: Duration,
        exemplar: Option<TraceExemplar>,
    ) {
        let labels = HttpLabels {
            route: route.to_owned(),
            method: http_method_label(method).to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        if status >= 500 {
            self.errors.get_or_create(&labels).inc();
        }
        self.duration
            .get_or_create(&HttpRouteLabels {
                route: labels.route,
                method: labels.method,
            })
            .observe(elapsed.as_secs_f64(), exemplar, None);
    }

    /// Counts one shed request.
    pub fn shed(&self) {
        self.shed.inc();
    }
}

/// `Content-Type` of the OpenMetrics 1.0 text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when an `Accept` header value takes OpenMetrics text (with a
/// non-zero quality), as Prometheus' scrape requests do.
pub fn accepts_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && parts.all(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_none_or(|q| q > 0.0)
            })
    })
}

/// Rewrites `prometheus_client`'s OpenMetrics 1.0 output as the Prometheus
/// text format 0.0.4.
///
/// The two differ in how a counter's family is named: OpenMetrics names it
/// without the `_total` suffix (`# TYPE fleet_x counter`, samples
/// `fleet_x_total`), while the 0.0.4 format, which `/metrics` declares and
/// which Prometheus' text parser and `promtool check metrics` read, names
/// the family by its sample (`# TYPE fleet_x_total counter`). Left as it
/// was, every counter looked like an untyped series without help text.
/// Also: OpenMetrics' `unknown` type is 0.0.4's `untyped`; `# UNIT` and the
/// closing `# EOF` have no 0.0.4 equivalent and are dropped, as are counter
/// `_created` samples and the exemplars after a sample (` # {…} v`); sample
/// lines are otherwise never changed.
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(kind);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(if kind == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                });
            }
            None => {
                let sample = line.split(['{', ' ']).next().unwrap_or_default();
                if sample
                    .strip_suffix("_created")
                    .is_some_and(|family| counters.contains(family))
                {
                    continue;
                }
                out.push_str(without_exemplar(line));
            }
        }
        out.push('\n');
    }
    out
}

/// A sample line without the exemplar OpenMetrics may append to it
/// (`name{labels} value # {exemplar labels} value`): everything from the
/// first ` # ` after the sample's own label set, whose quoted values may
/// hold any character.
fn without_exemplar(line: &str) -> &str {
    let mut labels_end = 0;
    if let Some(open) = line.find('{') {
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in line[open..].char_indices() {
            match (quoted, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => quoted = !quoted,
                (false, _, '}') => {
                    labels_end = open + i + 1;
                    break;
                }
                _ => {}
            }
        }
    }
    match line[labels_end..].find(" # ") {
        Some(at) => &line[..labels_end + at],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemplars_are_kept_in_openmetrics_and_dropped_from_the_text_format() {
        let line = r#"fleet_x_bucket{le="0.5",route="/a } # {b}"} 3 # {trace_id="0af7651916cd43dd8448eb211c80319c"} 0.3"#;
        assert_eq!(
            without_exemplar(line),
            r#"fleet_x_bucket{le="0.5",route="/a } # {b}"} 3"#
        );
        assert_eq!(without_exemplar("fleet_up 1"), "fleet_up 1");
        assert_eq!(
            without_exemplar(r#"fleet_x_count{a="\"}"} 2"#),
            r#"fleet_x_count{a="\"}"} 2"#
        );

        let m = Metrics::new("edge", "1.0.0");
        let http = m.http_server();
        // No span with a trace context: no exemplar.
        http.record("/api/v1/titles/{id}", "GET", 200, Duration::from_millis(3));
        assert!(!m.encode_openmetrics().contains("trace_id"));
        // An exemplar written by hand in the OpenMetrics encoding survives
        // there and never reaches the 0.0.4 text.
        m.register("exemplar_probe_seconds", "test", {
            let h = LatencyHistogram.new_metric();
            h.observe(
                0.001,
                Some(TraceExemplar {
                    trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                }),
                None,
            );
            h
        });
        let om = m.encode_openmetrics();
        assert!(
            om.contains(r#"# {trace_id="0af7651916cd43dd8448eb211c80319c"} 0.001"#),
            "{om}"
        );
        let text = m.encode();
        assert!(!text.contains("trace_id"), "{text}");
        assert!(
            text.contains("fleet_exemplar_probe_seconds_bucket{le=\"0.001\",service=\"edge\",version=\"1.0.0\"} 1\n")
                || text.contains("fleet_exemplar_probe_seconds_count"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_is_served_only_to_who_accepts_it() {
        // Prometheus 2.42's scrape Accept header.
        assert!(accepts_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(accepts_openmetrics("Application/OpenMetrics-Text"));
        assert!(!accepts_openmetrics("text/plain"));
        assert!(!accepts_openmetrics("*/*"));
        assert!(!accepts_openmetrics("application/openmetrics-text;q=0"));
        assert!(!accepts_openmetrics(""));
    }

    #[test]
    fn counters_are_named_by_their_samples_as_the_declared_text_format_wants() {
        let m = Metrics::new("edge", "1.0.0");
        let http = m.http_server();
        http.shed();
        http.record("/api/v1/titles/{id}", "GET", 200, Duration::from_millis(5));
        let text = m.encode();
        assert!(
            text.contains("# HELP fleet_http_server_shed_total "),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fleet_http_server_shed_total counter\n"),
            "{text}"
        );
        assert!(
            !text.contains("# TYPE fleet_http_server_shed counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        // Histograms and gauges keep their family names.
        assert!(
            text.contains("# TYPE fleet_http_server_request_duration_seconds histogram\n"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_only_lines_are_translated_or_dropped() {
        let om = "# HELP fleet_a Things.\n# TYPE fleet_a counter\n# UNIT fleet_a things\n\
                  fleet_a_total{x=\"1\"} 3\nfleet_a_created{x=\"1\"} 1.7e9\n\
                  # HELP fleet_b B.\n# TYPE fleet_b unknown\nfleet_b 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(om),
            "# HELP fleet_a_total Things.\n# TYPE fleet_a_total counter\n\
             fleet_a_total{x=\"1\"} 3\n# HELP fleet_b B.\n# TYPE fleet_b untyped\nfleet_b 1\n"
        );
    }

    #[test]
    fn rpc_series_carry_service_version_operation_and_code() {
        let m = Metrics::new("catalog", "1.3.0");
        let rpc = m.grpc_server();
        rpc.record("catalog", "GetTitle", "OK", Duration::from_millis(3));
        rpc.record("catalog", "GetTitle", "NOT_FOUND", Duration::from_millis(1));
        let text = m.encode();
        assert!(text.contains(
            "fleet_rpc_server_requests_total{service=\"catalog\",version=\"1.3.0\",target=\"catalog\",operation=\"GetTitle\",code=\"OK\"} 1"
        ), "{text}");
        assert!(text.contains("fleet_rpc_server_errors_total{service=\"catalog\",version=\"1.3.0\",target=\"catalog\",operation=\"GetTitle\",code=\"NOT_FOUND\"} 1"), "{text}");
        assert!(!text.contains("fleet_rpc_server_errors_total{service=\"catalog\",version=\"1.3.0\",target=\"catalog\",operation=\"GetTitle\",code=\"OK\"}"));
        assert!(text.contains("fleet_rpc_server_request_duration_seconds_count{service=\"catalog\",version=\"1.3.0\",target=\"catalog\",operation=\"GetTitle\"} 2"), "{text}");
    }

    #[test]
    fn in_flight_guard_decrements() {
        let m = Metrics::new("dal", "1.0.0");
        let rpc = m.grpc_server();
        let g = rpc.start("dal", "GetTitle");
        assert!(m.encode().contains("operation=\"GetTitle\"} 1"));
        drop(g);
        assert!(m.encode().contains("operation=\"GetTitle\"} 0"));
    }

    #[test]
    fn http_5xx_counts_as_error() {
        let m = Metrics::new("edge", "1.0.0");
        let http = m.http_server();
        http.record("/api/v1/titles/{id}", "GET", 503, Duration::from_millis(2));
        http.record("/api/v1/titles/{id}", "GET", 404, Duration::from_millis(2));
        let text = m.encode();
        assert!(text.contains("fleet_http_server_errors_total{service=\"edge\",version=\"1.0.0\",route=\"/api/v1/titles/{id}\",method=\"GET\",status=\"503\"} 1"), "{text}");
        assert!(!text.contains("status=\"404\"} 1\nfleet_http_server_errors"));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::new("edge", "1.0.0");
        let http = m.http_server();
        for method in ["FOO", "get", "BREW", "PUT"] {
            http.record("other", method, 405, Duration::from_millis(1));
        }
        let text = m.encode();
        assert!(text.contains("fleet_http_server_requests_total{service=\"edge\",version=\"1.0.0\",route=\"other\",method=\"other\",status=\"405\"} 3"), "{text}");
        assert!(text.contains("method=\"PUT\",status=\"405\"} 1"), "{text}");
        assert!(!text.contains("BREW") && !text.contains("FOO"), "{text}");
    }

    #[test]
    fn admission_metrics_show_the_limit_and_refusals() {
        let m = Metrics::new("catalog", "1.3.0");
        let a = m.admission();
        a.set_limit(37);
        a.refused("GetTitle", "budget");
        let text = m.encode();
        assert!(
            text.contains("fleet_concurrency_limit{service=\"catalog\",version=\"1.3.0\"} 37"),
            "{text}"
        );
        assert!(text.contains("fleet_admission_refused_total{service=\"catalog\",version=\"1.3.0\",operation=\"GetTitle\",reason=\"budget\"} 1"), "{text}");
    }
}
