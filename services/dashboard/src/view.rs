//! What the page shows, computed once a second from the [`Hub`]:
//! a tile per dependency operation (aggregated across instances, with a
//! 60-second request-rate history), the bulkheads, the instances, the
//! catalog's traffic by version next to its route table, and the fault
//! rules in force.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use serde_json::Value;

use crate::aggregate::aggregate;
use crate::collector::InstanceState;

/// Seconds of history a tile's sparkline shows.
pub const SPARKLINE_POINTS: usize = 60;

/// One dependency operation across every instance that calls it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Tile {
    /// `<dependency>.<operation>`.
    pub name: String,
    /// The dependency.
    pub group: String,
    /// `open`, `closed`, or `open on N of M`.
    pub circuit: String,
    /// Instances reporting it.
    pub hosts: u64,
    /// Of which with the circuit open.
    pub open_hosts: u64,
    /// Requests per second, all instances.
    pub rate: f64,
    /// Unhealthy share of executed calls over the window.
    pub error_percent: f64,
    /// Short-circuited calls over the window.
    pub short_circuited: u64,
    /// Bulkhead rejections over the window.
    pub rejected: u64,
    /// Timeouts over the window.
    pub timeouts: u64,
    /// Median latency, ms (mean of the instances').
    pub p50_ms: u64,
    /// 99th percentile, ms (mean of the instances').
    pub p99_ms: u64,
    /// Request rate, one point a second, oldest first.
    pub sparkline: Vec<f64>,
}

/// One bulkhead across instances.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Pool {
    /// The dependency.
    pub name: String,
    /// Calls in flight now.
    pub active: u64,
    /// Capacity, summed.
    pub limit: u64,
    /// Rejections over the window.
    pub rejected: u64,
}

/// One instance's row.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InstanceRow {
    /// Service.
    pub service: String,
    /// Version.
    pub version: String,
    /// Instance id.
    pub instance_id: String,
    /// Admin address.
    pub admin_addr: String,
    /// `ready`, `not ready` or `unreachable`.
    pub health: String,
    /// Its Hystrix stream is connected.
    pub streaming: bool,
    /// Restarts (the supervisor's count when known, else seen here).
    pub restarts: u64,
    /// Requests served per second.
    pub served_per_s: Option<f64>,
}

/// Traffic to one version of a service.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VersionShare {
    /// Version.
    pub version: String,
    /// Instances of it.
    pub instances: u64,
    /// Requests served per second.
    pub rate: f64,
    /// Share of the service's traffic, 0–100.
    pub percent: f64,
}

/// Fault rules of one instance.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FaultRow {
    /// Service.
    pub service: String,
    /// Version.
    pub version: String,
    /// Instance id.
    pub instance_id: String,
    /// The rules as the instance lists them.
    pub rules: Vec<Value>,
}

/// Everything the page shows at one moment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct View {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Where instances come from.
    pub source: String,
    /// Why discovery failed last, if it did.
    pub discovery_error: Option<String>,
    /// Tiles, by name.
    pub tiles: Vec<Tile>,
    /// Bulkheads, by name.
    pub pools: Vec<Pool>,
    /// Instances, by service and version.
    pub instances: Vec<InstanceRow>,
    /// The catalog's traffic by version.
    pub catalog_versions: Vec<VersionShare>,
    /// The catalog's route table in force (`null`: none, every version).
    pub catalog_routes: Option<Value>,
    /// Instances with fault rules.
    pub faults: Vec<FaultRow>,
}

/// Request-rate history per tile.
#[derive(Debug, Default)]
pub struct History {
    rates: BTreeMap<String, VecDeque<f64>>,
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Every instance's newest objects of `kind`, grouped by name.
pub fn by_name<'a>(
    states: &'a [InstanceState],
    kind: &str,
    service: Option<&str>,
) -> BTreeMap<&'a str, Vec<&'a Value>> {
    let mut out: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for s in states {
        if service.is_some_and(|want| want != s.instance.service) {
            continue;
        }
        for ((t, n), v) in &s.objects {
            if t == kind {
                out.entry(n.as_str()).or_default().push(v);
            }
        }
    }
    out
}

fn is_open(v: &Value) -> bool {
    v.get("isCircuitBreakerOpen").and_then(Value::as_bool) == Some(true)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl History {
    /// Builds the view; call once a second (each call adds a sparkline
    /// point per tile).
    pub fn view(
        &mut self,
        states: &[InstanceState],
        time_ms: u64,
        source: String,
        discovery_error: Option<String>,
        catalog_routes: Option<Value>,
    ) -> View {
        let mut tiles = Vec::new();
        for (name, objects) in by_name(states, "HystrixCommand", None) {
            let Some(agg) = aggregate(objects.iter().copied()) else {
                continue;
            };
            let hosts = u(&agg, "reportingHosts").max(1);
            let open_hosts = objects.iter().filter(|o| is_open(o)).count() as u64;
            let requests = u(&agg, "requestCount");
            let errors = u(&agg, "errorCount");
            // Each instance's counts cover its own window (summed by
            // aggregation); the per-instance mean window gives the rate.
            #[allow(clippy::cast_precision_loss)]
            let window_s = (u(
                &agg,
                "propertyValue_metricsRollingStatisticalWindowInMilliseconds",
            ) as f64
                / hosts as f64
                / 1000.0)
                .max(1.0);
            #[allow(clippy::cast_precision_loss)]
            let rate = requests as f64 / window_s;
            #[allow(clippy::cast_precision_loss)]
            let error_percent = if requests == 0 {
                0.0
            } else {
                errors as f64 * 100.0 / requests as f64
            };
            let lat = |k: &str| agg.get("latencyExecute").map_or(0, |l| u(l, k)) / hosts;
            let history = self.rates.entry(name.to_owned()).or_default();
            history.push_back(round1(rate));
            while history.len() > SPARKLINE_POINTS {
                history.pop_front();
            }
            let circuit = if open_hosts == 0 {
                "closed".to_owned()
            } else if open_hosts == hosts {
                "open".to_owned()
            } else {
                format!("open on {open_hosts} of {hosts}")
            };
            tiles.push(Tile {
                name: name.to_owned(),
                group: agg
                    .get("group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                circuit,
                hosts,
                open_hosts,
                rate: round1(rate),
                error_percent: round1(error_percent),
                short_circuited: u(&agg, "rollingCountShortCircuited"),
                rejected: u(&agg, "rollingCountSemaphoreRejected"),
                timeouts: u(&agg, "rollingCountTimeout"),
                p50_ms: lat("50"),
                p99_ms: lat("99"),
                sparkline: history.iter().copied().collect(),
            });
        }
        let names: Vec<&String> = tiles.iter().map(|t| &t.name).collect();
        self.rates.retain(|k, _| names.contains(&k));

        let pools = by_name(states, "HystrixThreadPool", None)
            .into_iter()
            .filter_map(|(name, objects)| {
                let agg = aggregate(objects.iter().copied())?;
                Some(Pool {
                    name: name.to_owned(),
                    active: u(&agg, "currentActiveCount"),
                    limit: u(&agg, "currentMaximumPoolSize"),
                    rejected: u(&agg, "rollingCountCommandRejections"),
                })
            })
            .collect();

        let mut instances: Vec<InstanceRow> = states
            .iter()
            .map(|s| InstanceRow {
                service: s.instance.service.clone(),
                version: s.instance.version.clone(),
                instance_id: s.instance.instance_id.clone(),
                admin_addr: s.instance.admin_addr.clone(),
                health: match s.ready {
                    Some(true) => "ready",
                    Some(false) => "not ready",
                    None => "unreachable",
                }
                .to_owned(),
                streaming: s.streaming,
                restarts: s.instance.restarts.unwrap_or(s.restarts_seen),
                served_per_s: s.served_per_s.map(round1),
            })
            .collect();
        instances.sort_by(|a, b| {
            (&a.service, &a.version, &a.instance_id).cmp(&(&b.service, &b.version, &b.instance_id))
        });

        let mut by_version: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        for s in states.iter().filter(|s| s.instance.service == "catalog") {
            let e = by_version.entry(s.instance.version.clone()).or_default();
            e.0 += 1;
            e.1 += s.served_per_s.unwrap_or(0.0);
        }
        let total: f64 = by_version.values().map(|(_, r)| r).sum();
        let catalog_versions = by_version
            .into_iter()
            .map(|(version, (instances, rate))| VersionShare {
                version,
                instances,
                rate: round1(rate),
                percent: if total > 0.0 {
                    round1(rate * 100.0 / total)
                } else {
                    0.0
                },
            })
            .collect();

        let faults = states
            .iter()
            .filter(|s| !s.faults.is_empty())
            .map(|s| FaultRow {
                service: s.instance.service.clone(),
                version: s.instance.version.clone(),
                instance_id: s.instance.instance_id.clone(),
                rules: s.faults.clone(),
            })
            .collect();

        View {
            time_ms,
            source,
            discovery_error,
            tiles,
            pools,
            instances,
            catalog_versions,
            catalog_routes,
            faults,
        }
    }
}
