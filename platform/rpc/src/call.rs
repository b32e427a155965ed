//! [`Dependency`]: the instances of one remote service and the call path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::HeaderMap;
use http::uri::PathAndQuery;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use fleet_context::{RequestContext, format_grpc_timeout, headers};
use fleet_metrics::{RpcMetrics, SnapshotSource};
use fleet_resilience::balance::Balancer;
use fleet_resilience::breaker::CircuitBreaker;
use fleet_resilience::bulkhead::Bulkhead;
use fleet_resilience::retry::RetryBudget;
use fleet_resilience::stats::OperationStats;
use fleet_resilience::window::Outcome;

use crate::config::DependencyConfig;
use crate::error::{RpcError, Unavailable};
use crate::instance::{Instance, InstanceId, InstanceSource};
use crate::routing::{MajorMinor, RouteTable};

/// A gRPC method of a dependency.
#[derive(Debug)]
pub struct Operation {
    /// Full path, e.g. `/catalog.v1.Catalog/GetTitle`.
    pub path: &'static str,
    /// Method name for metrics, e.g. `GetTitle`.
    pub name: &'static str,
    /// Safe to send twice (reads, and writes keyed by a caller timestamp).
    pub idempotent: bool,
}

impl Operation {
    /// Describes a method.
    pub const fn new(path: &'static str, name: &'static str, idempotent: bool) -> Self {
        Self {
            path,
            name,
            idempotent,
        }
    }
}

/// Per-call settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallOptions {
    /// A deadline for this call, on top of (never beyond) the caller's own.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// A call bounded by `timeout`.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
        }
    }
}

/// The instances of one remote service and how to call them (cheap clone).
#[derive(Clone)]
pub struct Dependency {
    inner: Arc<Inner>,
}

struct Inner {
    config: DependencyConfig,
    instances: watch::Receiver<Vec<Instance>>,
    channels: Mutex<HashMap<InstanceId, (std::net::SocketAddr, Channel)>>,
    metrics: RpcMetrics,
    bulkhead: Bulkhead,
    budget: RetryBudget,
    balancer: Balancer<InstanceId>,
    ops: Mutex<HashMap<&'static str, Arc<OpState>>>,
    routes: Mutex<Option<watch::Receiver<Option<Arc<RouteTable>>>>>,
}

/// Breaker and stats of one operation.
struct OpState {
    breaker: CircuitBreaker,
    stats: OperationStats,
}

/// Feeds `/admin/stream`; weak, so a dropped dependency just goes quiet.
struct StreamSource(Weak<Inner>);

impl SnapshotSource for StreamSource {
    fn snapshot(&self) -> Vec<serde_json::Value> {
        let Some(inner) = self.0.upgrade() else {
            return Vec::new();
        };
        let ops: Vec<(&'static str, Arc<OpState>)> = inner
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let instances = inner.balancer.states();
        let mut out: Vec<serde_json::Value> = ops
            .into_iter()
            .map(|(name, op)| {
                let (c, retries, latency) = op.stats.snapshot();
                let state = op.breaker.state();
                inner
                    .metrics
                    .set_circuit_state(inner.config.name, name, state.as_gauge());
                #[allow(clippy::cast_precision_loss)]
                let rate = c.requests as f64 / 10.0;
                serde_json::json!({
                    "dependency": inner.config.name,
                    "operation": name,
                    "window_s": 10,
                    "requests": c.requests,
                    "successes": c.successes,
                    "errors": c.errors,
                    "timeouts": c.timeouts,
                    "rejections": c.rejections,
                    "short_circuits": c.short_circuits,
                    "slow": c.slow,
                    "retries": retries,
                    "error_percent": c.error_percent(),
                    "rate_per_s": rate,
                    "latency_ms": latency,
                    "circuit": state,
                    "bulkhead": {"in_use": inner.bulkhead.in_use(), "limit": inner.bulkhead.limit()},
                    "instances": instances,
                    // The settings in force, for `/hystrix.stream`'s
                    // `propertyValue_*` fields.
                    "settings": {
                        "breaker_enabled": inner.config.breaker.enabled,
                        "breaker_volume": inner.config.breaker.request_volume_threshold,
                        "breaker_error_percent": inner.config.breaker.error_threshold_percent,
                        "breaker_sleep_ms": u64::try_from(inner.config.breaker.sleep_window.as_millis()).unwrap_or(u64::MAX),
                        "request_timeout_ms": u64::try_from(inner.config.request_timeout.as_millis()).unwrap_or(u64::MAX),
                    },
                })
            })
            .collect();
        out.sort_by(|a, b| a["operation"].as_str().cmp(&b["operation"].as_str()));
        out
    }
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependency")
            .field("name", &self.inner.config.name)
            .field("instances", &*self.inner.instances.borrow())
            .finish_non_exhaustive()
    }
}

impl Dependency {
    /// A dependency whose instances come from `source`, recording client
    /// metrics into `metrics`. Connections are made lazily, on first use.
    ///
    /// Every call goes through this dependency's bulkhead, the operation's
    /// circuit breaker, the retry budget and the balancer (see
    /// [`Dependency::unary`]); their state feeds `/admin/stream` through
    /// `metrics`.
    pub fn new(config: DependencyConfig, source: InstanceSource, metrics: RpcMetrics) -> Self {
        let inner = Arc::new(Inner {
            bulkhead: Bulkhead::new(config.bulkhead),
            budget: RetryBudget::new(config.retry.clone()),
            balancer: Balancer::new(config.balance.clone()),
            config,
            instances: source.into_receiver(),
            channels: Mutex::new(HashMap::new()),
            metrics,
            ops: Mutex::new(HashMap::new()),
            routes: Mutex::new(None),
        });
        inner
            .metrics
            .add_snapshot_source(Arc::new(StreamSource(Arc::downgrade(&inner))));
        Self { inner }
    }

    /// Routes calls by `routes` (a live table; `None` = no table) from now on.
    pub fn with_routes(self, routes: watch::Receiver<Option<Arc<RouteTable>>>) -> Self {
        *self
            .inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(routes);
        self
    }

    /// The routing table in force, if any.
    pub fn route_table(&self) -> Option<Arc<RouteTable>> {
        self.inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|rx| rx.borrow().clone())
    }

    /// The instances this call may go to: the right interface major, then
    /// the client's pinned minor, else the request's pin header, else the
    /// routing table's choice (see [`crate::routing`]).
    ///
    /// # Errors
    /// `Unavailable(NoInstances)` when a pin names a version nothing runs.
    pub fn routed_instances(&self, cx: Option<&RequestContext>) -> Result<Vec<Instance>, RpcError> {
        let cfg = &self.inner.config;
        let eligible = self.instances();
        let header = format!("x-version-{}", cfg.name);
        let pin = cfg.pin.or_else(|| {
            cx.and_then(|cx| cx.propagated(&header))
                .and_then(|v| v.to_str().ok())
                .and_then(MajorMinor::parse)
                .filter(|mm| mm.major == cfg.interface_major)
        });
        let chosen = match pin {
            Some(pin) => Some(pin),
            None => self.route_table().and_then(|t| {
                if t.interface != cfg.interface_major {
                    return None;
                }
                let mut live: Vec<MajorMinor> = eligible
                    .iter()
                    .map(|i| MajorMinor {
                        major: i.version.major,
                        minor: i.version.minor,
                    })
                    .collect();
                live.sort();
                live.dedup();
                t.choose(
                    &live,
                    cx.and_then(RequestContext::cohort_key),
                    rand::random_range(0.0..1.0),
                )
            }),
        };
        let Some(version) = chosen else {
            return Ok(eligible);
        };
        let routed: Vec<Instance> = eligible
            .into_iter()
            .filter(|i| version.matches(&i.version))
            .collect();
        if routed.is_empty() {
            return Err(RpcError::Unavailable {
                dependency: cfg.name,
                reason: Unavailable::NoInstances,
                message: format!("no {} {version} instance is running", cfg.name),
                retry_after: None,
            });
        }
        Ok(routed)
    }

    fn op_state(&self, op: &'static Operation) -> Arc<OpState> {
        self.inner
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(op.name)
            .or_insert_with(|| {
                Arc::new(OpState {
                    breaker: CircuitBreaker::new(self.inner.config.breaker.clone()),
                    stats: OperationStats::new(),
                })
            })
            .clone()
    }

    /// The settings this dependency was built with.
    pub fn config(&self) -> &DependencyConfig {
        &self.inner.config
    }

    /// The instances currently eligible (right interface major).
    pub fn instances(&self) -> Vec<Instance> {
        let major = self.inner.config.interface_major;
        self.inner
            .instances
            .borrow()
            .iter()
            .filter(|i| i.version.major == major)
            .cloned()
            .collect()
    }

    /// Calls a unary method.
    ///
    /// The call path, in order: the deadline is the earlier of
    /// `opts.timeout` (or the configured request timeout) and the ambient
    /// request's deadline minus the hop margin — spent already means
    /// `DeadlineExceeded` without a call; the dependency's bulkhead (full:
    /// refused at once); the operation's circuit breaker (open: refused at
    /// once, with the time to the next trial as `retry_after`); then
    /// attempts: the balancer picks an instance (power of two choices,
    /// ejected instances skipped, never the instance that just failed), the
    /// remaining budget goes downstream as `grpc-timeout`. A failed attempt
    /// is retried only for idempotent operations, only on UNAVAILABLE, at
    /// most `retry.max_retries` times, while the retry budget and the
    /// deadline allow, after a jittered backoff.
    ///
    /// # Errors
    /// [`RpcError`].
    pub async fn unary<Req, Resp>(
        &self,
        op: &'static Operation,
        message: Req,
        opts: CallOptions,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let cfg = &self.inner.config;
        let started = Instant::now();
        let _in_flight = self.inner.metrics.start(cfg.name, op.name);
        let result = self.guarded(op, message, opts, started).await;
        let code = match &result {
            Ok(_) => "OK",
            Err(e) => e.code_name(),
        };
        self.inner
            .metrics
            .record(cfg.name, op.name, code, started.elapsed());
        if let Err(error) = &result {
            tracing::debug!(dependency = cfg.name, operation = op.name, %error, "call failed");
        }
        result
    }

    async fn guarded<Req, Resp>(
        &self,
        op: &'static Operation,
        message: Req,
        opts: CallOptions,
        now: Instant,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let cfg = &self.inner.config;
        let cx = RequestContext::current();
        let deadline = effective_deadline(cfg, cx.as_ref(), opts, now);
        if deadline <= now {
            return Err(RpcError::DeadlineExceeded {
                dependency: cfg.name,
            });
        }
        let state = self.op_state(op);
        let refuse = |outcome: Outcome, reason: Unavailable, label: &str, retry_after| {
            state.stats.record(outcome, false, None);
            self.inner.metrics.refused(cfg.name, op.name, label);
            RpcError::Unavailable {
                dependency: cfg.name,
                message: format!("{} refused {}", cfg.name, op.name),
                reason,
                retry_after,
            }
        };
        let Ok(_slot) = self.inner.bulkhead.try_acquire() else {
            return Err(refuse(
                Outcome::Rejected,
                Unavailable::BulkheadFull,
                "bulkhead_full",
                Some(Duration::from_millis(100)),
            ));
        };
        let permit = match state.breaker.try_acquire() {
            Ok(p) => p,
            Err(open) => {
                self.inner.metrics.set_circuit_state(
                    cfg.name,
                    op.name,
                    state.breaker.state().as_gauge(),
                );
                return Err(refuse(
                    Outcome::ShortCircuited,
                    Unavailable::CircuitOpen,
                    "circuit_open",
                    Some(open.retry_after.max(Duration::from_secs(1))),
                ));
            }
        };
        self.inner.budget.deposit();

        let mut failed: Option<InstanceId> = None;
        let mut retry = 0;
        let result = loop {
            let eligible: Vec<InstanceId> = match self.routed_instances(cx.as_ref()) {
                Ok(list) => list.into_iter().map(|i| i.id).collect(),
                Err(e) => break Err(e),
            };
            let Some(pick) = self.inner.balancer.pick(&eligible, failed.as_ref()) else {
                break Err(RpcError::Unavailable {
                    dependency: cfg.name,
                    reason: Unavailable::NoInstances,
                    message: format!("no {} instance speaks v{}", cfg.name, cfg.interface_major),
                    retry_after: None,
                });
            };
            let instance = pick.key.clone();
            let attempt = self
                .attempt(op, message.clone(), cx.as_ref(), &instance, deadline)
                .await;
            let instance_healthy = !matches!(
                attempt,
                Err(RpcError::Unavailable { .. } | RpcError::DeadlineExceeded { .. })
            );
            self.inner.balancer.record(pick, instance_healthy);
            let retryable = matches!(
                &attempt,
                Err(RpcError::Unavailable {
                    reason: Unavailable::Transport | Unavailable::Server,
                    ..
                })
            );
            if !retryable {
                break attempt;
            }
            retry += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !self.inner.budget.allow(retry, op.idempotent, remaining) {
                break attempt;
            }
            let backoff = self.inner.budget.backoff(retry);
            if Instant::now() + backoff >= deadline {
                break attempt;
            }
            tokio::time::sleep(backoff).await;
            state.stats.record_retry();
            self.inner.metrics.retried(cfg.name, op.name);
            tracing::debug!(dependency = cfg.name, operation = op.name, failed_instance = %instance, "retrying on another instance");
            failed = Some(instance);
        };

        let elapsed = now.elapsed();
        let outcome = match &result {
            Ok(_)
            | Err(
                RpcError::NotFound { .. }
                | RpcError::InvalidArgument { .. }
                | RpcError::Conflict { .. },
            ) => Outcome::Success,
            Err(RpcError::DeadlineExceeded { .. }) => Outcome::Timeout,
            Err(_) => Outcome::Failure,
        };
        state.breaker.record(permit, outcome, elapsed);
        let slow = elapsed >= cfg.breaker.slow_call_threshold;
        state.stats.record(outcome, slow, Some(elapsed));
        self.inner
            .metrics
            .set_circuit_state(cfg.name, op.name, state.breaker.state().as_gauge());
        result
    }

    async fn attempt<Req, Resp>(
        &self,
        op: &'static Operation,
        message: Req,
        cx: Option<&RequestContext>,
        instance_id: &InstanceId,
        deadline: Instant,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let cfg = &self.inner.config;
        let now = Instant::now();
        if deadline <= now {
            return Err(RpcError::DeadlineExceeded {
                dependency: cfg.name,
            });
        }
        let instance = self
            .instances()
            .into_iter()
            .find(|i| &i.id == instance_id)
            .ok_or_else(|| RpcError::Unavailable {
                dependency: cfg.name,
                reason: Unavailable::NoInstances,
                message: format!("{instance_id} left"),
                retry_after: None,
            })?;
        let channel = self.channel_for(&instance)?;

        let mut h = HeaderMap::new();
        match cx {
            Some(cx) => cx.write_headers(&mut h, Some(cfg.caller)),
            None => RequestContext::new().write_headers(&mut h, Some(cfg.caller)),
        }
        fleet_telemetry::inject(&mut h);
        h.insert(headers::GRPC_TIMEOUT, format_grpc_timeout(deadline - now));
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = MetadataMap::from_headers(h);

        let mut grpc = tonic::client::Grpc::new(channel);
        let call = async move {
            grpc.ready().await.map_err(|e| RpcError::Unavailable {
                dependency: cfg.name,
                reason: Unavailable::Transport,
                message: format!("{}: {e}", instance.id),
                retry_after: None,
            })?;
            grpc.unary(
                request,
                PathAndQuery::from_static(op.path),
                tonic_prost::ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map_err(|status| RpcError::from_status(cfg.name, &status))
        };
        match tokio::time::timeout_at(deadline, call).await {
            Err(_) => Err(RpcError::DeadlineExceeded {
                dependency: cfg.name,
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(response)) => {
                if let (Some(cx), Some(who)) = (
                    cx,
                    response
                        .metadata()
                        .get(headers::SERVED_BY)
                        .and_then(|v| v.to_str().ok()),
                ) {
                    cx.record_served_by(who);
                }
                Ok(response.into_inner())
            }
        }
    }

    /// Asks one instance's `grpc.health.v1` whether it is serving.
    ///
    /// # Errors
    /// [`RpcError`] when no instance answers SERVING within a second.
    pub async fn probe(&self) -> Result<(), RpcError> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let name = self.inner.config.name;
        let (_, channel) = self.pick()?;
        let mut client = HealthClient::new(channel);
        let check = client.check(HealthCheckRequest {
            service: String::new(),
        });
        match tokio::time::timeout(Duration::from_secs(1), check).await {
            Err(_) => Err(RpcError::DeadlineExceeded { dependency: name }),
            Ok(Err(status)) => Err(RpcError::from_status(name, &status)),
            Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
            Ok(Ok(_)) => Err(RpcError::Unavailable {
                dependency: name,
                reason: Unavailable::Server,
                message: "instance reports NOT_SERVING".into(),
                retry_after: None,
            }),
        }
    }

    /// Any eligible instance (for health probes, which bypass the breaker).
    fn pick(&self) -> Result<(Instance, Channel), RpcError> {
        let cfg = &self.inner.config;
        let eligible = self.instances();
        let ids: Vec<InstanceId> = eligible.iter().map(|i| i.id.clone()).collect();
        let instance = self
            .inner
            .balancer
            .pick(&ids, None)
            .and_then(|p| eligible.into_iter().find(|i| i.id == p.key))
            .ok_or_else(|| RpcError::Unavailable {
                dependency: cfg.name,
                reason: Unavailable::NoInstances,
                message: format!("no {} instance speaks v{}", cfg.name, cfg.interface_major),
                retry_after: None,
            })?;
        let channel = self.channel_for(&instance)?;
        Ok((instance, channel))
    }

    fn channel_for(&self, instance: &Instance) -> Result<Channel, RpcError> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((addr, ch)) = channels.get(&instance.id)
            && *addr == instance.addr
        {
            return Ok(ch.clone());
        }
        let cfg = &self.inner.config;
        let endpoint = Endpoint::from_shared(format!("http://{}", instance.addr))
            .map_err(|e| RpcError::Internal {
                dependency: cfg.name,
                message: format!("bad endpoint {}: {e}", instance.addr),
            })?
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = endpoint.connect_lazy();
        channels.insert(instance.id.clone(), (instance.addr, ch.clone()));
        Ok(ch)
    }
}

/// The earlier of this call's own timeout and the caller's remaining budget
/// minus the hop margin.
fn effective_deadline(
    cfg: &DependencyConfig,
    cx: Option<&RequestContext>,
    opts: CallOptions,
    now: Instant,
) -> Instant {
    let own = now + opts.timeout.unwrap_or(cfg.request_timeout);
    match cx.and_then(RequestContext::deadline) {
        Some(d) => own.min(d.checked_sub(cfg.hop_margin).unwrap_or(now)),
        None => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_remaining_budget_minus_the_margin_wins() {
        let cfg = DependencyConfig::new("dal", "catalog", 1);
        let now = Instant::now();
        let cx = RequestContext::new().with_deadline(now + Duration::from_millis(100));
        let d = effective_deadline(&cfg, Some(&cx), CallOptions::default(), now);
        assert_eq!(d, now + Duration::from_millis(95));
        let d = effective_deadline(
            &cfg,
            Some(&cx),
            CallOptions::timeout(Duration::from_millis(20)),
            now,
        );
        assert_eq!(d, now + Duration::from_millis(20));
        let d = effective_deadline(&cfg, None, CallOptions::default(), now);
        assert_eq!(d, now + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_fails_without_calling() {
        let metrics = fleet_metrics::Metrics::new("t", "1.0.0");
        let dep = Dependency::new(
            DependencyConfig::new("dal", "catalog", 1),
            InstanceSource::Static(vec![]),
            metrics.grpc_client(),
        );
        static OP: Operation = Operation::new("/dal.v1.DataAccess/GetTitle", "GetTitle", true);
        let cx = RequestContext::new().with_deadline(Instant::now() + Duration::from_millis(3));
        let r: Result<(), _> = cx
            .scope(async { dep.unary::<(), ()>(&OP, (), CallOptions::default()).await })
            .await;
        assert_eq!(r, Err(RpcError::DeadlineExceeded { dependency: "dal" }));
    }

    #[tokio::test]
    async fn no_eligible_instance_is_unavailable() {
        let metrics = fleet_metrics::Metrics::new("t", "1.0.0");
        let v2 =
            crate::parse_instances("127.0.0.1:9@2.0.0", &semver::Version::new(2, 0, 0)).unwrap();
        let dep = Dependency::new(
            DependencyConfig::new("catalog", "edge", 1),
            InstanceSource::Static(v2),
            metrics.grpc_client(),
        );
        assert!(
            dep.instances().is_empty(),
            "a v1 client never sees a 2.x instance"
        );
        static OP: Operation = Operation::new("/catalog.v1.Catalog/GetTitle", "GetTitle", true);
        let r: Result<(), _> = dep.unary::<(), ()>(&OP, (), CallOptions::default()).await;
        assert!(matches!(
            r,
            Err(RpcError::Unavailable {
                reason: Unavailable::NoInstances,
                ..
            })
        ));
    }
}
