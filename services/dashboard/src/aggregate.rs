//! Turbine's aggregation: many instances' Hystrix objects of one
//! `(type, name)` folded into one.
//!
//! The rules are Turbine 1.x's (`AggDataFromCluster`), which the stock
//! dashboard's arithmetic expects:
//!
//! * numbers are **summed** — counts, latencies, `reportingHosts` (so it
//!   becomes the instance count) and numeric `propertyValue_*` too; the
//!   dashboard divides means, latencies and the window by `reportingHosts`;
//! * objects of numbers (`latencyExecute`, `latencyTotal`) are summed key
//!   by key;
//! * strings and booleans keep their value when every instance agrees, and
//!   otherwise become one string counting each value, keys sorted, quotes
//!   dropped: `{false:2,true:1}`;
//! * `currentTime` is the newest instance's; `name` and `type` pass through.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

/// Folds the latest object of each instance into one. `None` when
/// `objects` is empty.
pub fn aggregate<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Option<Value> {
    let objects: Vec<&Map<String, Value>> =
        objects.into_iter().filter_map(Value::as_object).collect();
    let first = objects.first()?;
    // Keys in first-seen order across all instances.
    let mut keys: Vec<&String> = Vec::new();
    for o in &objects {
        for k in o.keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let mut out = Map::new();
    for key in keys {
        let values: Vec<&Value> = objects.iter().filter_map(|o| o.get(key)).collect();
        let merged = match key.as_str() {
            "name" | "type" => first.get(key).cloned().unwrap_or(Value::Null),
            "currentTime" => values
                .iter()
                .filter_map(|v| v.as_u64())
                .max()
                .map_or(Value::Null, Value::from),
            _ => merge(&values),
        };
        out.insert(key.clone(), merged);
    }
    Some(Value::Object(out))
}

fn merge(values: &[&Value]) -> Value {
    if values.iter().all(|v| v.is_number()) {
        return sum(values.iter().copied());
    }
    if values.iter().all(|v| v.is_object()) {
        let mut keys: Vec<&String> = Vec::new();
        for v in values {
            for k in v.as_object().into_iter().flat_map(Map::keys) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        let mut out = Map::new();
        for k in keys {
            out.insert(k.clone(), sum(values.iter().filter_map(|v| v.get(k))));
        }
        return Value::Object(out);
    }
    // Strings, booleans, or a mixture: count the distinct values.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for v in values {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        *counts.entry(text).or_default() += 1;
    }
    if counts.len() == 1 {
        return values.first().map_or(Value::Null, |v| (*v).clone());
    }
    let inner: Vec<String> = counts.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    Value::String(format!("{{{}}}", inner.join(",")))
}

/// Integers stay integers; any fraction makes the sum a float.
fn sum<'a>(values: impl Iterator<Item = &'a Value>) -> Value {
    let mut int: u64 = 0;
    let mut float = 0.0;
    let mut fractional = false;
    for v in values {
        if let Some(n) = v.as_u64() {
            int = int.saturating_add(n);
        } else if let Some(x) = v.as_f64() {
            fractional = true;
            float += x;
        }
    }
    if fractional {
        #[allow(clippy::cast_precision_loss)]
        let total = float + int as f64;
        Number::from_f64(total).map_or(Value::Null, Value::Number)
    } else {
        Value::from(int)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sums_numbers_and_nested_maps_and_counts_hosts() {
        let a = json!({"type":"HystrixCommand","name":"dal.GetTitle","currentTime":5,
            "requestCount":10,"isCircuitBreakerOpen":false,"reportingHosts":1,
            "latencyExecute":{"50":2,"99":9},"propertyValue_executionTimeoutInMilliseconds":1000,
            "propertyValue_executionIsolationStrategy":"SEMAPHORE"});
        let b = json!({"type":"HystrixCommand","name":"dal.GetTitle","currentTime":9,
            "requestCount":32,"isCircuitBreakerOpen":false,"reportingHosts":1,
            "latencyExecute":{"50":4,"99":11},"propertyValue_executionTimeoutInMilliseconds":1000,
            "propertyValue_executionIsolationStrategy":"SEMAPHORE"});
        let agg = aggregate([&a, &b]).unwrap();
        assert_eq!(agg["name"], "dal.GetTitle");
        assert_eq!(agg["currentTime"], 9, "the newest");
        assert_eq!(agg["requestCount"], 42);
        assert_eq!(agg["reportingHosts"], 2);
        assert_eq!(agg["latencyExecute"], json!({"50":6,"99":20}));
        assert_eq!(agg["propertyValue_executionTimeoutInMilliseconds"], 2000);
        assert_eq!(
            agg["isCircuitBreakerOpen"], false,
            "agreeing values pass through"
        );
        assert_eq!(agg["propertyValue_executionIsolationStrategy"], "SEMAPHORE");
    }

    #[test]
    fn disagreeing_values_are_counted_like_turbine() {
        let v = [
            json!({"isCircuitBreakerOpen": true}),
            json!({"isCircuitBreakerOpen": false}),
            json!({"isCircuitBreakerOpen": false}),
        ];
        let agg = aggregate(v.iter()).unwrap();
        assert_eq!(agg["isCircuitBreakerOpen"], "{false:2,true:1}");
    }

    #[test]
    fn nothing_to_aggregate() {
        assert!(aggregate(std::iter::empty()).is_none());
    }
}
