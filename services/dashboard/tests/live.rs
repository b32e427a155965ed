//! The live view against real services: a real dal and real catalogs on
//! loopback port 0, real traffic through the catalog's driver client.
//!
//! * every instance's `/hystrix.stream` is checked by a reader written from
//!   the published format (Hystrix's `hystrix-metrics-event-stream` wire
//!   format and the fields the stock dashboard's `hystrixCommand.js` /
//!   `hystrixThreadPool.js` validate), not from our serializer;
//! * the dashboard aggregates two catalogs' streams into `/turbine.stream`
//!   and its page feed.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_catalog_client::{
    CallOptions, CatalogClient, Dependency, DependencyConfig, InstanceSource,
};
use fleet_metrics::Metrics;
use fleet_testkit::{TestService, loopback_env};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The admin token of every instance here; it opens their streams.
const TOKEN: &str = "live-test-admin-token-0123456789";

async fn start_dal() -> TestService {
    fleet_dal::testing::start_seeded(50, 10, &[("ADMIN_TOKEN", TOKEN)]).await
}

async fn start_catalog(dal: SocketAddr) -> TestService {
    let env = loopback_env([
        ("ADMIN_TOKEN", TOKEN),
        ("SERVICE_VERSION", "1.3.0"),
        ("DAL_ADDRS", &dal.to_string()),
    ]);
    TestService::start::<fleet_catalog::App>(&env).await
}

fn client(catalog: &TestService) -> CatalogClient {
    let instances =
        fleet_rpc::parse_instances(&catalog.addr.to_string(), &semver::Version::new(1, 3, 0))
            .unwrap();
    CatalogClient::new(Dependency::new(
        DependencyConfig::new("catalog", "test", fleet_catalog_client::INTERFACE_MAJOR),
        InstanceSource::Static(instances),
        Metrics::new("test", "0.0.0").grpc_client(),
    ))
}

fn opts() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(5))
}

/// Sends `n` title reads (each one a catalog → dal `GetTitle`).
async fn traffic(c: &CatalogClient, n: u32) {
    for i in 0..n {
        let id = format!("t{:05}", i % 50 + 1);
        c.get_title(&id, opts()).await.unwrap();
    }
}

// ---------------------------------------------------------------------
// A reader of the Hystrix metrics stream, from the published format.
// ---------------------------------------------------------------------

/// Fields the stock dashboard refuses a `HystrixCommand` without
/// (`hystrixCommand.js` `validateData`) plus those the serializer always
/// writes (`SerialHystrixDashboardData.writeCommandMetrics`).
const COMMAND_NUMBERS: &[&str] = &[
    "currentTime",
    "errorPercentage",
    "errorCount",
    "requestCount",
    "rollingCountBadRequests",
    "rollingCountCollapsedRequests",
    "rollingCountEmit",
    "rollingCountExceptionsThrown",
    "rollingCountFailure",
    "rollingCountFallbackEmit",
    "rollingCountFallbackFailure",
    "rollingCountFallbackMissing",
    "rollingCountFallbackRejection",
    "rollingCountFallbackSuccess",
    "rollingCountResponsesFromCache",
    "rollingCountSemaphoreRejected",
    "rollingCountShortCircuited",
    "rollingCountSuccess",
    "rollingCountThreadPoolRejected",
    "rollingCountTimeout",
    "currentConcurrentExecutionCount",
    "rollingMaxConcurrentExecutionCount",
    "latencyExecute_mean",
    "latencyTotal_mean",
    "propertyValue_circuitBreakerRequestVolumeThreshold",
    "propertyValue_circuitBreakerSleepWindowInMilliseconds",
    "propertyValue_circuitBreakerErrorThresholdPercentage",
    "propertyValue_executionIsolationThreadTimeoutInMilliseconds",
    "propertyValue_executionTimeoutInMilliseconds",
    "propertyValue_executionIsolationSemaphoreMaxConcurrentRequests",
    "propertyValue_fallbackIsolationSemaphoreMaxConcurrentRequests",
    "propertyValue_metricsRollingStatisticalWindowInMilliseconds",
    "reportingHosts",
];
const COMMAND_BOOLEANS: &[&str] = &[
    "isCircuitBreakerOpen",
    "propertyValue_circuitBreakerForceOpen",
    "propertyValue_circuitBreakerForceClosed",
    "propertyValue_circuitBreakerEnabled",
    "propertyValue_executionIsolationThreadInterruptOnTimeout",
    "propertyValue_requestCacheEnabled",
    "propertyValue_requestLogEnabled",
];
const COMMAND_STRINGS: &[&str] = &[
    "type",
    "name",
    "group",
    "propertyValue_executionIsolationStrategy",
];
const PERCENTILES: &[&str] = &["0", "25", "50", "75", "90", "95", "99", "99.5", "100"];
/// `hystrixThreadPool.js` `validateData`, plus the serializer's fields.
const POOL_NUMBERS: &[&str] = &[
    "currentTime",
    "currentActiveCount",
    "currentCompletedTaskCount",
    "currentCorePoolSize",
    "currentLargestPoolSize",
    "currentMaximumPoolSize",
    "currentPoolSize",
    "currentQueueSize",
    "currentTaskCount",
    "rollingCountThreadsExecuted",
    "rollingMaxActiveThreads",
    "rollingCountCommandRejections",
    "propertyValue_queueSizeRejectionThreshold",
    "propertyValue_metricsRollingStatisticalWindowInMilliseconds",
    "reportingHosts",
];

#[derive(Debug, Default)]
struct Seen {
    commands: Vec<Value>,
    pools: Vec<Value>,
    pings: usize,
}

/// Checks one object; `Err` says what the dashboard would refuse.
fn check_object(v: &Value) -> Result<&'static str, String> {
    let o = v.as_object().ok_or("not an object")?;
    let is_number = |k: &str| {
        o.get(k)
            .is_some_and(|x| x.is_u64() || x.is_i64() || x.is_f64())
    };
    match o.get("type").and_then(Value::as_str) {
        Some("HystrixCommand") => {
            for k in COMMAND_NUMBERS {
                if !is_number(k) {
                    return Err(format!("{k} is missing or not a number"));
                }
            }
            for k in COMMAND_BOOLEANS {
                if !o.get(*k).is_some_and(Value::is_boolean) {
                    return Err(format!("{k} is missing or not a boolean"));
                }
            }
            for k in COMMAND_STRINGS {
                let text = o.get(*k).and_then(Value::as_str).unwrap_or_default();
                if text.is_empty() {
                    return Err(format!("{k} is missing or not a string"));
                }
            }
            for k in ["latencyExecute", "latencyTotal"] {
                let m = o
                    .get(k)
                    .and_then(Value::as_object)
                    .ok_or(format!("{k} not an object"))?;
                for p in PERCENTILES {
                    if !m.get(*p).is_some_and(Value::is_number) {
                        return Err(format!("{k}[{p}] missing"));
                    }
                }
                let values: Vec<f64> = PERCENTILES.iter().filter_map(|p| m[*p].as_f64()).collect();
                if values.windows(2).any(|w| w[0] > w[1]) {
                    return Err(format!("{k} percentiles not ascending: {values:?}"));
                }
            }
            let pct = o["errorPercentage"].as_f64().unwrap_or(-1.0);
            if !(0.0..=100.0).contains(&pct) {
                return Err(format!("errorPercentage {pct} out of range"));
            }
            if o["errorCount"].as_u64() > o["requestCount"].as_u64() {
                return Err("more errors than requests".into());
            }
            Ok("HystrixCommand")
        }
        Some("HystrixThreadPool") => {
            for k in ["type", "name"] {
                if !o.get(k).is_some_and(Value::is_string) {
                    return Err(format!("{k} missing"));
                }
            }
            for k in POOL_NUMBERS {
                if !is_number(k) {
                    return Err(format!("{k} is missing or not a number"));
                }
            }
            Ok("HystrixThreadPool")
        }
        other => Err(format!("unknown type {other:?}")),
    }
}

/// Reads `url` until `enough` holds, checking every line as it comes:
/// `data: <json object>`, `ping: …`, or the blank line ending an event.
async fn read_stream(url: &str, enough: impl Fn(&Seen) -> bool) -> Seen {
    let mut resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut seen = Seen::default();
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !enough(&seen) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("the stream kept sending")
            .unwrap()
            .expect("the stream stayed open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                continue;
            } else if let Some(json) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("data line is not JSON ({e}): {json}"));
                match check_object(&v) {
                    Ok("HystrixCommand") => seen.commands.push(v),
                    Ok(_) => seen.pools.push(v),
                    Err(why) => panic!("the dashboard would refuse this object: {why}: {v}"),
                }
            } else if line.starts_with("ping:") {
                seen.pings += 1;
            } else {
                panic!("not a Hystrix stream line: {line:?}");
            }
        }
    }
    seen
}

#[tokio::test]
async fn every_hystrix_stream_event_is_what_the_hystrix_dashboard_accepts() {
    let dal = start_dal().await;
    let catalog = start_catalog(dal.addr).await;
    let c = client(&catalog);
    traffic(&c, 30).await;

    let url = format!("http://{}/hystrix.stream?delay=100", catalog.admin);
    let seen = read_stream(&url, |s| s.pings >= 3 && !s.commands.is_empty()).await;
    let get = seen
        .commands
        .iter()
        .rev()
        .find(|v| v["name"] == "dal.GetTitle")
        .expect("catalog → dal GetTitle is reported");
    assert_eq!(get["group"], "dal");
    assert_eq!(get["isCircuitBreakerOpen"], false);
    assert_eq!(
        get["rollingCountSuccess"], 30,
        "every read reached the dal once"
    );
    assert_eq!(get["requestCount"], 30);
    assert_eq!(get["errorPercentage"], 0);
    assert_eq!(
        get["propertyValue_circuitBreakerRequestVolumeThreshold"],
        20
    );
    assert_eq!(
        get["propertyValue_circuitBreakerSleepWindowInMilliseconds"],
        5000
    );
    assert_eq!(
        get["propertyValue_circuitBreakerErrorThresholdPercentage"],
        50
    );
    assert_eq!(get["reportingHosts"], 1);
    let pool = seen
        .pools
        .iter()
        .rev()
        .find(|v| v["name"] == "dal")
        .expect("the dal bulkhead");
    assert_eq!(pool["currentMaximumPoolSize"], 128);
    assert_eq!(pool["rollingCountThreadsExecuted"], 30);

    // The dal calls nothing: its stream is pings only, still a valid stream.
    let url = format!("http://{}/hystrix.stream?delay=100", dal.admin);
    let quiet = read_stream(&url, |s| s.pings >= 2).await;
    assert!(quiet.commands.is_empty() && quiet.pools.is_empty());

    // A bad delay is a clear JSON error, not a stream.
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/hystrix.stream?delay=fast",
            catalog.admin
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_delay");

    catalog.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn the_dashboard_aggregates_instances_like_turbine() {
    let dal = start_dal().await;
    let a = start_catalog(dal.addr).await;
    let b = start_catalog(dal.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.json");
    let entries: Vec<Value> = [("dal", &dal), ("catalog", &a), ("catalog", &b)]
        .iter()
        .enumerate()
        .map(|(i, (service, r))| {
            serde_json::json!({"service": service, "version": "1.3.0", "instance_id": format!("i{i}"),
                "addr": r.addr.to_string(), "admin_addr": r.admin.to_string(), "pid": 1, "zone": "local"})
        })
        .collect();
    std::fs::write(&registry, serde_json::to_vec(&entries).unwrap()).unwrap();
    let mut config = fleet_dashboard::Config::new(
        "127.0.0.1:0".parse().unwrap(),
        fleet_dashboard::Source::Registry(registry),
    );
    config.stream_delay = Duration::from_millis(100);
    config.admin_token = Some(TOKEN.into());
    let dashboard = fleet_dashboard::Dashboard::bind(config).await.unwrap();
    let addr = dashboard.local_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(dashboard.run(stop.clone()));

    traffic(&client(&a), 12).await;
    traffic(&client(&b), 7).await;

    // Turbine: one object per command, counts summed, hosts counted.
    let url = format!("http://{addr}/turbine.stream?delay=100");
    let seen = read_stream(&url, |s| {
        s.commands.iter().any(|v| {
            v["name"] == "dal.GetTitle" && v["reportingHosts"] == 2 && v["requestCount"] == 19
        })
    })
    .await;
    let agg = seen
        .commands
        .iter()
        .rev()
        .find(|v| v["name"] == "dal.GetTitle")
        .unwrap();
    assert_eq!(agg["rollingCountSuccess"], 19);
    assert_eq!(
        agg["propertyValue_circuitBreakerRequestVolumeThreshold"], 40,
        "summed, as Turbine does"
    );
    assert_eq!(agg["isCircuitBreakerOpen"], false);
    // Only the dal's own callers: the dal cluster calls nothing.
    let resp = reqwest::get(format!(
        "http://{addr}/turbine.stream?cluster=nothing&delay=100"
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    // The page's feed: a tile for the operation, every instance listed.
    let mut view = Value::Null;
    for _ in 0..100 {
        view = reqwest::get(format!("http://{addr}/api/view"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ok = view["tiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "dal.GetTitle" && t["hosts"] == 2)
            && view["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["health"] == "ready" && i["streaming"] == true);
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tile = view["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "dal.GetTitle")
        .expect("a tile");
    assert_eq!(tile["circuit"], "closed");
    assert_eq!(tile["hosts"], 2);
    assert_eq!(view["instances"].as_array().unwrap().len(), 3);
    // The page itself is served from the binary.
    let page = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/app.js") && page.contains("Dependencies"));

    stop.cancel();
    let _ = task.await;
    a.stop().await;
    b.stop().await;
    dal.stop().await;
}
