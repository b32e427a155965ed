//! Reading every instance: its `/hystrix.stream` (kept open, reconnected
//! when it drops), and once a second its readiness, identity (to count
//! restarts), active fault rules and served request count.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fleet_config::Secret;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::discover::Instance;
use crate::sse::{Item, Parser};

/// What is known about one instance.
#[derive(Debug, Clone)]
pub struct InstanceState {
    /// Who it is.
    pub instance: Instance,
    /// The newest Hystrix object per `(type, name)`.
    pub objects: BTreeMap<(String, String), Value>,
    /// Its stream is open and has sent something.
    pub streaming: bool,
    /// When its stream last sent an event or ping.
    pub last_event: Option<Instant>,
    /// `/readyz` answered 200 (`None`: not reachable).
    pub ready: Option<bool>,
    /// Process id and start time from `/admin/info`.
    pub process: Option<(u64, u64)>,
    /// Times the process behind this address changed while watched.
    pub restarts_seen: u64,
    /// Active fault rules (`/admin/faults`), when the token allows.
    pub faults: Vec<Value>,
    /// Requests it served per second (from `/metrics`), when known.
    pub served_per_s: Option<f64>,
    served_total: Option<(Instant, f64)>,
    /// Malformed events its stream sent.
    pub malformed: u64,
}

impl InstanceState {
    fn new(instance: Instance) -> Self {
        Self {
            instance,
            objects: BTreeMap::new(),
            streaming: false,
            last_event: None,
            ready: None,
            process: None,
            restarts_seen: 0,
            faults: Vec::new(),
            served_per_s: None,
            served_total: None,
            malformed: 0,
        }
    }
}

/// Every watched instance, by admin address (cheap clone).
#[derive(Clone, Debug, Default)]
pub struct Hub {
    inner: Arc<Mutex<BTreeMap<String, (InstanceState, CancellationToken)>>>,
}

/// How the collector talks to instances.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// `?delay=` asked of every `/hystrix.stream`.
    pub stream_delay: Duration,
    /// Bearer token for `/hystrix.stream` and `GET /admin/faults` (`fleet
    /// up` writes one; a viewer token opens the streams only).
    pub admin_token: Option<Secret>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (InstanceState, CancellationToken)>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of every instance's state.
    pub fn states(&self) -> Vec<InstanceState> {
        self.lock().values().map(|(s, _)| s.clone()).collect()
    }

    fn update(&self, key: &str, f: impl FnOnce(&mut InstanceState)) {
        if let Some((s, _)) = self.lock().get_mut(key) {
            f(s);
        }
    }

    /// Makes the watched set `instances`: starts reading new ones, stops
    /// and forgets those that left (as Turbine drops a host's data).
    pub fn set_instances(
        &self,
        instances: Vec<Instance>,
        http: &reqwest::Client,
        config: &CollectorConfig,
        stop: &CancellationToken,
    ) {
        let mut map = self.lock();
        let keep: Vec<String> = instances.iter().map(|i| i.admin_addr.clone()).collect();
        map.retain(|key, (_, token)| {
            let stays = keep.contains(key);
            if !stays {
                token.cancel();
            }
            stays
        });
        for instance in instances {
            let key = instance.admin_addr.clone();
            if let Some((s, _)) = map.get_mut(&key) {
                s.instance = instance;
                continue;
            }
            let token = stop.child_token();
            map.insert(key.clone(), (InstanceState::new(instance), token.clone()));
            tokio::spawn(read_stream(
                self.clone(),
                key.clone(),
                http.clone(),
                config.admin_token.clone(),
                config.stream_delay,
                token.clone(),
            ));
            tokio::spawn(poll(
                self.clone(),
                key,
                http.clone(),
                config.admin_token.clone(),
                token,
            ));
        }
    }
}

async fn read_stream(
    hub: Hub,
    key: String,
    http: reqwest::Client,
    token: Option<Secret>,
    delay: Duration,
    stop: CancellationToken,
) {
    let url = format!("http://{key}/hystrix.stream?delay={}", delay.as_millis());
    loop {
        let run = async {
            let mut req = http.get(&url);
            if let Some(t) = &token {
                req = req.bearer_auth(t.expose());
            }
            let mut resp = match req.send().await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    tracing::debug!(%url, status = %r.status(), "stream refused");
                    return;
                }
                Err(error) => {
                    tracing::debug!(%url, %error, "stream unreachable");
                    return;
                }
            };
            let mut parser = Parser::default();
            // A healthy stream sends at least a ping per delay; silence for
            // several delays means the instance is gone.
            let idle = delay * 5;
            loop {
                let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
                    Ok(Ok(Some(c))) => c,
                    _ => return,
                };
                let items = parser.feed(&chunk);
                hub.update(&key, |s| {
                    s.streaming = true;
                    s.last_event = Some(Instant::now());
                    for item in items {
                        match item {
                            Item::Object(v) => {
                                let t = v.get("type").and_then(Value::as_str).unwrap_or("");
                                let n = v.get("name").and_then(Value::as_str).unwrap_or("");
                                s.objects.insert((t.to_owned(), n.to_owned()), v);
                            }
                            Item::Ping => {}
                            Item::Malformed(_) => s.malformed += 1,
                        }
                    }
                });
            }
        };
        tokio::select! {
            () = run => {}
            () = stop.cancelled() => return,
        }
        hub.update(&key, |s| {
            s.streaming = false;
            s.objects.clear();
        });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The sum of every `fleet_rpc_server_requests_total` sample.
pub fn served_total(metrics_text: &str) -> f64 {
    metrics_text
        .lines()
        .filter(|l| l.starts_with("fleet_rpc_server_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn poll(
    hub: Hub,
    key: String,
    http: reqwest::Client,
    token: Option<Secret>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let base = format!("http://{key}");
        let ready = match http.get(format!("{base}/readyz")).send().await {
            Ok(r) => Some(r.status().is_success()),
            Err(_) => None,
        };
        let info: Option<Value> = match http.get(format!("{base}/admin/info")).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let process = info
            .as_ref()
            .and_then(|i| Some((i.get("pid")?.as_u64()?, i.get("started_at_s")?.as_u64()?)));
        let faults = match &token {
            Some(t) => match http
                .get(format!("{base}/admin/faults"))
                .bearer_auth(t.expose())
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            },
            None => None,
        };
        let served = match http.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.ok().map(|t| served_total(&t)),
            Err(_) => None,
        };
        let now = Instant::now();
        hub.update(&key, |s| {
            s.ready = ready;
            if let Some(p) = process {
                if s.process.is_some_and(|old| old != p) {
                    s.restarts_seen += 1;
                }
                s.process = Some(p);
            }
            if let Some(f) = faults {
                s.faults = match f {
                    Value::Array(rules) => rules,
                    Value::Object(mut o) => match o.remove("rules") {
                        Some(Value::Array(rules)) => rules,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
            }
            if let Some(total) = served {
                if let Some((then, before)) = s.served_total {
                    let dt = now.saturating_duration_since(then).as_secs_f64();
                    if dt > 0.0 && total >= before {
                        s.served_per_s = Some((total - before) / dt);
                    }
                }
                s.served_total = Some((now, total));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_requests_are_summed_from_the_exposition() {
        let text = "# HELP fleet_rpc_server_requests_total x\n\
            fleet_rpc_server_requests_total{service=\"catalog\",code=\"OK\"} 10\n\
            fleet_rpc_server_requests_total{service=\"catalog\",code=\"NOT_FOUND\"} 2.5\n\
            fleet_rpc_server_errors_total{code=\"NOT_FOUND\"} 2\n";
        assert!((served_total(text) - 12.5).abs() < 1e-9);
    }
}
