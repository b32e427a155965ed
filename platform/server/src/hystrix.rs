//! `/hystrix.stream`: this instance's resilience state in the Hystrix
//! metrics stream format, so the stock Hystrix dashboard, Turbine and
//! `fleet dashboard` can read every instance.
//!
//! The wire format is Hystrix's (`hystrix-metrics-event-stream`): a
//! `text/event-stream` where every `?delay=` milliseconds (default 500) the
//! instance writes one `data: {json}\n\n` per object, then a `ping: \n\n`
//! line so a reader can tell a quiet instance from a dead connection:
//!
//! * one `HystrixCommand` object per dependency operation (name
//!   `<dependency>.<operation>`, group and thread pool `<dependency>`);
//! * one `HystrixThreadPool` object per dependency, for its bulkhead.
//!
//! The objects are built from the same one-second snapshots that feed
//! `/admin/stream` ([`Metrics::snapshots`]); how our concepts map onto
//! Hystrix's is tabled in `docs/DASHBOARD.md`. Fields Hystrix has and we
//! do not (fallbacks inside the client, request caching, collapsing,
//! thread pools) are reported as zero or `false` rather than left out,
//! because the dashboard refuses an object that lacks one.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use fleet_metrics::Metrics;

use crate::admin::error_response;

/// Delay between two samples when the caller names none (Hystrix: 500 ms).
pub const DEFAULT_DELAY: Duration = Duration::from_millis(500);
/// Shortest accepted `?delay=`: faster sampling only burns the instance's CPU.
pub const MIN_DELAY_MS: u64 = 100;
/// Longest accepted `?delay=`.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Streams served at once; more are refused with 503 (Hystrix: 5).
pub const MAX_CONNECTIONS: usize = 16;
/// The span `rollingMax*` fields cover, like Hystrix's statistical window.
const ROLLING_MAX_WINDOW: Duration = Duration::from_secs(10);

/// What the handler needs.
#[derive(Clone)]
struct StreamState {
    metrics: Metrics,
    subscribers: Subscribers,
}

/// The `/hystrix.stream` route over this process's metrics.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/hystrix.stream", get(stream))
        .with_state(StreamState {
            metrics,
            subscribers: Subscribers::new(MAX_CONNECTIONS),
        })
}

/// A cap on the subscribers of one stream route.
#[derive(Clone, Debug)]
pub struct Subscribers {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl Subscribers {
    /// At most `max` at once.
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot, held for as long as the stream runs; `None` when all are
    /// taken.
    pub fn try_acquire(&self) -> Option<Slot> {
        let slot = Slot(self.open.clone());
        (self.open.fetch_add(1, Ordering::AcqRel) < self.max).then_some(slot)
    }
}

/// Parses `?delay=`: whole milliseconds within the accepted range.
///
/// # Errors
/// A message naming the parameter and the accepted range.
pub fn parse_delay(raw: Option<&str>) -> Result<Duration, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_DELAY);
    };
    match raw.trim().parse::<u64>() {
        Ok(ms) if (MIN_DELAY_MS..=MAX_DELAY_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "delay must be whole milliseconds from {MIN_DELAY_MS} to {MAX_DELAY_MS}, got {raw:?}"
        )),
    }
}

/// Releases a subscriber slot when the stream ends (client gone).
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn stream(
    State(state): State<StreamState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let delay = match parse_delay(query.get("delay").map(String::as_str)) {
        Ok(d) => d,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "invalid_delay", message),
    };
    let Some(slot) = state.subscribers.try_acquire() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("at most {MAX_CONNECTIONS} /hystrix.stream connections at once"),
        );
    };
    let mut interval = tokio::time::interval(delay);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let metrics = state.metrics;
    let body = futures::stream::unfold(
        (interval, RollingMax::default(), slot),
        move |(mut interval, mut max, slot)| {
            let metrics = metrics.clone();
            async move {
                interval.tick().await;
                let objects = objects(&metrics.snapshots(), now_ms(), &mut max, Instant::now());
                let chunk = encode(&objects);
                Some((Ok::<_, Infallible>(chunk), (interval, max, slot)))
            }
        },
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream;charset=UTF-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
            ),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One sample on the wire: a `data:` event per object, then a ping.
pub fn encode(objects: &[Value]) -> Bytes {
    let mut out = String::new();
    for o in objects {
        out.push_str("data: ");
        out.push_str(&o.to_string());
        out.push_str("\n\n");
    }
    out.push_str("ping: \n\n");
    Bytes::from(out)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The highest bulkhead occupancy each dependency showed over the last
/// 10 s, as sampled by this stream (Hystrix's `rollingMax*` fields).
#[derive(Debug, Default)]
pub struct RollingMax {
    samples: BTreeMap<String, VecDeque<(Instant, u64)>>,
}

impl RollingMax {
    fn observe(&mut self, dependency: &str, in_use: u64, now: Instant) -> u64 {
        let samples = self.samples.entry(dependency.to_owned()).or_default();
        samples.push_back((now, in_use));
        while samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > ROLLING_MAX_WINDOW)
        {
            samples.pop_front();
        }
        samples.iter().map(|(_, v)| *v).max().unwrap_or(in_use)
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Whole milliseconds, as Hystrix reports latency.
fn ms(v: &Value, key: &str) -> u64 {
    // Non-negative and far below u64::MAX: a latency in ms.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rounded = f(v, key).max(0.0).round() as u64;
    rounded
}

/// Hystrix's nine latency percentiles from our snapshot's `latency_ms`.
fn percentiles(latency: &Value) -> Value {
    json!({
        "0": ms(latency, "min"),
        "25": ms(latency, "p25"),
        "50": ms(latency, "p50"),
        "75": ms(latency, "p75"),
        "90": ms(latency, "p90"),
        "95": ms(latency, "p95"),
        "99": ms(latency, "p99"),
        "99.5": ms(latency, "p99_5"),
        "100": ms(latency, "max"),
    })
}

/// The Hystrix objects of one sample: a `HystrixCommand` per snapshot (one
/// dependency operation), then a `HystrixThreadPool` per dependency.
/// Snapshots without a `dependency` and `operation` are not ours and are
/// skipped.
pub fn objects(
    snapshots: &[Value],
    current_time_ms: u64,
    max: &mut RollingMax,
    now: Instant,
) -> Vec<Value> {
    let mut commands = Vec::new();
    // dependency → (limit, in use, executed, rejected, window ms)
    let mut pools: BTreeMap<String, (u64, u64, u64, u64, u64)> = BTreeMap::new();
    for s in snapshots {
        let (Some(dependency), Some(operation)) = (
            s.get("dependency").and_then(Value::as_str),
            s.get("operation").and_then(Value::as_str),
        ) else {
            continue;
        };
        let bulkhead = s.get("bulkhead").cloned().unwrap_or(Value::Null);
        let settings = s.get("settings").cloned().unwrap_or(Value::Null);
        let latency = s.get("latency_ms").cloned().unwrap_or(Value::Null);
        let window_ms = u(s, "window_s").max(1) * 1000;
        let (successes, errors, timeouts) = (u(s, "successes"), u(s, "errors"), u(s, "timeouts"));
        let (rejections, short_circuits) = (u(s, "rejections"), u(s, "short_circuits"));
        let slow_successes = u(s, "slow").min(successes);
        let executed = successes + errors + timeouts;
        let (limit, in_use) = (u(&bulkhead, "limit"), u(&bulkhead, "in_use"));
        let open = matches!(
            s.get("circuit").and_then(Value::as_str),
            Some("open" | "half_open")
        );
        let pool = pools
            .entry(dependency.to_owned())
            .or_insert((limit, in_use, 0, 0, window_ms));
        pool.2 += executed;
        pool.3 += rejections;
        let timeout_ms = u(&settings, "request_timeout_ms");
        let mut c = Map::new();
        let mut put = |k: &str, v: Value| {
            c.insert(k.to_owned(), v);
        };
        put("type", "HystrixCommand".into());
        put("name", format!("{dependency}.{operation}").into());
        put("group", dependency.into());
        put("currentTime", current_time_ms.into());
        put("isCircuitBreakerOpen", open.into());
        // What our breaker judges by: unhealthy share of executed calls.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let error_percent = f(s, "error_percent").clamp(0.0, 100.0).round() as u64;
        put("errorPercentage", error_percent.into());
        put("errorCount", (errors + timeouts + slow_successes).into());
        put("requestCount", executed.into());
        put("rollingCountBadRequests", 0.into());
        put("rollingCountCollapsedRequests", 0.into());
        put("rollingCountEmit", 0.into());
        put(
            "rollingCountExceptionsThrown",
            (errors + timeouts + rejections + short_circuits).into(),
        );
        put("rollingCountFailure", errors.into());
        put("rollingCountFallbackEmit", 0.into());
        put("rollingCountFallbackFailure", 0.into());
        put("rollingCountFallbackMissing", 0.into());
        put("rollingCountFallbackRejection", 0.into());
        put("rollingCountFallbackSuccess", 0.into());
        put("rollingCountResponsesFromCache", 0.into());
        put("rollingCountSemaphoreRejected", rejections.into());
        put("rollingCountShortCircuited", short_circuits.into());
        put("rollingCountSuccess", successes.into());
        put("rollingCountThreadPoolRejected", 0.into());
        put("rollingCountTimeout", timeouts.into());
        put("currentConcurrentExecutionCount", in_use.into());
        put(
            "rollingMaxConcurrentExecutionCount",
            max.observe(dependency, in_use, now).into(),
        );
        put("latencyExecute_mean", ms(&latency, "mean").into());
        put("latencyExecute", percentiles(&latency));
        // No queue or thread hop before the call: total is execution.
        put("latencyTotal_mean", ms(&latency, "mean").into());
        put("latencyTotal", percentiles(&latency));
        put(
            "propertyValue_circuitBreakerRequestVolumeThreshold",
            u(&settings, "breaker_volume").into(),
        );
        put(
            "propertyValue_circuitBreakerSleepWindowInMilliseconds",
            u(&settings, "breaker_sleep_ms").into(),
        );
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let threshold = f(&settings, "breaker_error_percent")
            .clamp(0.0, 100.0)
            .round() as u64;
        put(
            "propertyValue_circuitBreakerErrorThresholdPercentage",
            threshold.into(),
        );
        put("propertyValue_circuitBreakerForceOpen", false.into());
        put("propertyValue_circuitBreakerForceClosed", false.into());
        put(
            "propertyValue_circuitBreakerEnabled",
            settings
                .get("breaker_enabled")
                .and_then(Value::as_bool)
                .unwrap_or(true)
                .into(),
        );
        put(
            "propertyValue_executionIsolationStrategy",
            "SEMAPHORE".into(),
        );
        put(
            "propertyValue_executionIsolationThreadTimeoutInMilliseconds",
            timeout_ms.into(),
        );
        put(
            "propertyValue_executionTimeoutInMilliseconds",
            timeout_ms.into(),
        );
        // A call past its deadline is dropped (cancelled), never left running.
        put(
            "propertyValue_executionIsolationThreadInterruptOnTimeout",
            true.into(),
        );
        put(
            "propertyValue_executionIsolationSemaphoreMaxConcurrentRequests",
            limit.into(),
        );
        // Fallbacks live in the caller (per response part), not the client.
        put(
            "propertyValue_fallbackIsolationSemaphoreMaxConcurrentRequests",
            0.into(),
        );
        put("propertyValue_requestCacheEnabled", false.into());
        put("propertyValue_requestLogEnabled", false.into());
        put(
            "propertyValue_metricsRollingStatisticalWindowInMilliseconds",
            window_ms.into(),
        );
        put("reportingHosts", 1.into());
        put("threadPool", dependency.into());
        commands.push(Value::Object(c));
    }
    for (dependency, (limit, in_use, executed, rejected, window_ms)) in pools {
        commands.push(json!({
            "type": "HystrixThreadPool",
            "name": dependency,
            "currentTime": current_time_ms,
            "currentActiveCount": in_use,
            // Calls finished over the window (we keep no lifetime total).
            "currentCompletedTaskCount": executed,
            "currentCorePoolSize": limit,
            "currentLargestPoolSize": limit,
            "currentMaximumPoolSize": limit,
            "currentPoolSize": limit,
            // A full bulkhead refuses at once: nothing ever queues.
            "currentQueueSize": 0,
            "currentTaskCount": executed + in_use,
            "rollingCountThreadsExecuted": executed,
            "rollingMaxActiveThreads": max.samples.get(&dependency)
                .and_then(|s| s.iter().map(|(_, v)| *v).max())
                .unwrap_or(in_use),
            "rollingCountCommandRejections": rejected,
            "propertyValue_queueSizeRejectionThreshold": 0,
            "propertyValue_metricsRollingStatisticalWindowInMilliseconds": window_ms,
            "reportingHosts": 1,
        }));
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Value {
        json!({
            "dependency": "ratings", "operation": "GetRatings", "window_s": 10,
            "requests": 40, "successes": 20, "errors": 6, "timeouts": 4,
            "rejections": 3, "short_circuits": 7, "slow": 2, "retries": 1,
            "error_percent": 40.0, "rate_per_s": 4.0,
            "latency_ms": {"min": 0.4, "mean": 12.6, "p25": 1.0, "p50": 2.0,
                "p75": 5.5, "p90": 9.0, "p95": 20.0, "p99": 80.2, "p99_5": 90.0, "max": 99.0},
            "circuit": "half_open",
            "bulkhead": {"in_use": 5, "limit": 128},
            "instances": [],
            "settings": {"breaker_enabled": true, "breaker_volume": 20,
                "breaker_error_percent": 50.0, "breaker_sleep_ms": 5000,
                "request_timeout_ms": 1000},
        })
    }

    #[test]
    fn a_snapshot_maps_onto_hystrix_fields() {
        let mut max = RollingMax::default();
        let out = objects(&[snapshot()], 7, &mut max, Instant::now());
        assert_eq!(out.len(), 2, "one command, one thread pool");
        let c = &out[0];
        assert_eq!(c["type"], "HystrixCommand");
        assert_eq!(c["name"], "ratings.GetRatings");
        assert_eq!(c["group"], "ratings");
        assert_eq!(c["currentTime"], 7);
        assert_eq!(c["isCircuitBreakerOpen"], true, "half-open is still open");
        assert_eq!(c["errorPercentage"], 40);
        assert_eq!(c["requestCount"], 30, "executed calls only");
        assert_eq!(c["errorCount"], 12, "errors, timeouts and slow successes");
        assert_eq!(c["rollingCountSuccess"], 20);
        assert_eq!(c["rollingCountFailure"], 6);
        assert_eq!(c["rollingCountTimeout"], 4);
        assert_eq!(c["rollingCountSemaphoreRejected"], 3);
        assert_eq!(c["rollingCountShortCircuited"], 7);
        assert_eq!(c["rollingCountExceptionsThrown"], 20);
        assert_eq!(c["currentConcurrentExecutionCount"], 5);
        assert_eq!(c["latencyExecute_mean"], 13);
        assert_eq!(
            c["latencyExecute"],
            json!({"0":0,"25":1,"50":2,"75":6,"90":9,"95":20,"99":80,"99.5":90,"100":99})
        );
        assert_eq!(c["latencyTotal"], c["latencyExecute"]);
        assert_eq!(c["propertyValue_circuitBreakerRequestVolumeThreshold"], 20);
        assert_eq!(
            c["propertyValue_circuitBreakerSleepWindowInMilliseconds"],
            5000
        );
        assert_eq!(
            c["propertyValue_circuitBreakerErrorThresholdPercentage"],
            50
        );
        assert_eq!(c["propertyValue_executionTimeoutInMilliseconds"], 1000);
        assert_eq!(
            c["propertyValue_executionIsolationSemaphoreMaxConcurrentRequests"],
            128
        );
        assert_eq!(
            c["propertyValue_metricsRollingStatisticalWindowInMilliseconds"],
            10_000
        );
        assert_eq!(c["reportingHosts"], 1);
        let p = &out[1];
        assert_eq!(p["type"], "HystrixThreadPool");
        assert_eq!(p["name"], "ratings");
        assert_eq!(p["currentActiveCount"], 5);
        assert_eq!(p["currentMaximumPoolSize"], 128);
        assert_eq!(p["rollingCountThreadsExecuted"], 30);
        assert_eq!(p["rollingCountCommandRejections"], 3);
        assert_eq!(p["currentQueueSize"], 0);
    }

    #[test]
    fn closed_circuit_and_foreign_snapshots() {
        let mut s = snapshot();
        s["circuit"] = "closed".into();
        let mut max = RollingMax::default();
        let out = objects(
            &[s, json!({"something": "else"})],
            1,
            &mut max,
            Instant::now(),
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["isCircuitBreakerOpen"], false);
    }

    #[tokio::test(start_paused = true)]
    async fn rolling_max_forgets_after_ten_seconds() {
        let mut max = RollingMax::default();
        let t0 = Instant::now();
        assert_eq!(max.observe("dal", 9, t0), 9);
        assert_eq!(max.observe("dal", 2, t0 + Duration::from_secs(5)), 9);
        assert_eq!(max.observe("dal", 3, t0 + Duration::from_secs(11)), 3);
    }

    #[test]
    fn delay_is_validated() {
        assert_eq!(parse_delay(None), Ok(DEFAULT_DELAY));
        assert_eq!(parse_delay(Some("1000")), Ok(Duration::from_secs(1)));
        for bad in ["", "abc", "-5", "0", "99", "60001", "1.5"] {
            let e = parse_delay(Some(bad)).unwrap_err();
            assert!(e.contains("delay must be"), "{bad}: {e}");
        }
    }

    #[test]
    fn encoding_is_data_events_then_a_ping() {
        let bytes = encode(&[json!({"a": 1}), json!({"b": 2})]);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "data: {\"a\":1}\n\ndata: {\"b\":2}\n\nping: \n\n"
        );
        assert_eq!(&encode(&[])[..], b"ping: \n\n");
    }
}
