//! [`Dependency`]: one remote service's instances and the shared state of
//! every layer of its driver client's stack.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use fleet_context::RequestContext;
use fleet_metrics::{RpcMetrics, SnapshotSource};
use fleet_resilience::balance::{Balance, BalanceLayer, Loads};
use fleet_resilience::breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitState, Circuits};
use fleet_resilience::bulkhead::{Bulkhead, BulkheadLayer};
use fleet_resilience::classify::Class;
use fleet_resilience::deadline::{Deadline, DeadlineLayer};
use fleet_resilience::eject::{Eject, EjectLayer, Outliers};
use fleet_resilience::metrics::{Metrics, MetricsLayer};
use fleet_resilience::observe::Observer;
use fleet_resilience::retry::RetryPolicy;
use fleet_resilience::stats::OperationStats;

use crate::call::{CallOptions, Operation, unary};
use crate::classify::GrpcClassifier;
use crate::config::DependencyConfig;
use crate::endpoint::Endpoint;
use crate::error::{RpcError, Unavailable};
use crate::instance::{Instance, InstanceId, InstanceSource};
use crate::route::{RouteError, RouteLayer};
use crate::routing::{MajorMinor, RouteTable};
use crate::stack::RpcService;

/// The instances of one remote service, and the state its driver client's
/// layers share: bulkhead slots, circuits, retry budget, load estimates,
/// ejections, connections (cheap clone; clones share all of it).
#[derive(Clone)]
pub struct Dependency {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: DependencyConfig,
    /// The `target` label of its metrics and the stream: the name, with
    /// the interface major for majors above 1 (`catalog.v2`), so two
    /// clients of one service never share series or circuits' gauges.
    target: String,
    instances: watch::Receiver<Vec<Instance>>,
    /// The same feed, to notice changes and prune what left.
    seen: Mutex<watch::Receiver<Vec<Instance>>>,
    channels: Mutex<HashMap<InstanceId, (SocketAddr, Channel)>>,
    observer: Arc<RpcObserver>,
    bulkhead: BulkheadLayer,
    circuits: Circuits,
    retry: RetryPolicy<GrpcClassifier>,
    loads: Loads<InstanceId>,
    outliers: Outliers<InstanceId>,
    routes: Mutex<Option<watch::Receiver<Option<Arc<RouteTable>>>>>,
    /// The stack every call goes through ([`crate::stack::build`], built
    /// on first use).
    stack: OnceLock<RpcService>,
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependency")
            .field("name", &self.shared.config.name)
            .field("instances", &*self.shared.instances.borrow())
            .finish_non_exhaustive()
    }
}

/// Reports the layers' events to the client metrics and the stream stats.
struct RpcObserver {
    target: String,
    metrics: RpcMetrics,
    slow_call: Duration,
    stats: Mutex<HashMap<&'static str, Arc<OperationStats>>>,
}

impl RpcObserver {
    fn stats(&self, op: &'static str) -> Arc<OperationStats> {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(op)
            .or_default()
            .clone()
    }
}

impl Observer for RpcObserver {
    fn started(&self, op: &'static str) -> Option<Box<dyn Send>> {
        Some(Box::new(self.metrics.start(&self.target, op)))
    }

    fn finished(&self, op: &'static str, class: Class, label: &'static str, elapsed: Duration) {
        self.metrics.record(&self.target, op, label, elapsed);
        let sent = !matches!(
            class,
            Class::LocalRefusal | Class::CallerError { answered: false }
        );
        self.stats(op).record(
            class.stats_outcome(),
            elapsed >= self.slow_call,
            sent.then_some(elapsed),
        );
    }

    fn refused(&self, op: &'static str, reason: &'static str) {
        self.metrics.refused(&self.target, op, reason);
    }

    fn retried(&self, op: &'static str) {
        self.metrics.retried(&self.target, op);
        self.stats(op).record_retry();
    }

    fn circuit(&self, op: &'static str, state: CircuitState) {
        self.metrics
            .set_circuit_state(&self.target, op, state.as_gauge());
    }
}

/// Feeds `/admin/stream`; weak, so a dropped dependency just goes quiet.
struct StreamSource(Weak<Shared>);

impl SnapshotSource for StreamSource {
    fn snapshot(&self) -> Vec<serde_json::Value> {
        let Some(shared) = self.0.upgrade() else {
            return Vec::new();
        };
        shared.refresh();
        let circuits: HashMap<&'static str, _> = shared.circuits.all().into_iter().collect();
        let mut ops: Vec<(&'static str, Arc<OperationStats>)> = shared
            .observer
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        ops.sort_by_key(|(k, _)| *k);
        let instances = shared.loads.states(&shared.outliers);
        ops.into_iter()
            .map(|(name, stats)| {
                let (c, retries, latency) = stats.snapshot();
                let state = circuits
                    .get(name)
                    .map_or(CircuitState::Closed, |circuit| circuit.state());
                shared
                    .observer
                    .circuit(name, state);
                #[allow(clippy::cast_precision_loss)]
                let rate = c.requests as f64 / 10.0;
                serde_json::json!({
                    "dependency": shared.target,
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
                    "bulkhead": {"in_use": shared.bulkhead.in_use(), "limit": shared.bulkhead.limit()},
                    "instances": instances,
                    // The settings in force, for `/hystrix.stream`'s
                    // `propertyValue_*` fields.
                    "settings": {
                        "breaker_enabled": shared.config.breaker.enabled,
                        "breaker_volume": shared.config.breaker.request_volume_threshold,
                        "breaker_error_percent": shared.config.breaker.error_threshold_percent,
                        "breaker_sleep_ms": u64::try_from(shared.config.breaker.sleep_window.as_millis()).unwrap_or(u64::MAX),
                        "request_timeout_ms": u64::try_from(shared.config.request_timeout.as_millis()).unwrap_or(u64::MAX),
                    },
                })
            })
            .collect()
    }
}

impl Dependency {
    /// A dependency whose instances come from `source`, recording client
    /// metrics into `metrics`. Connections are made lazily, on first use.
    pub fn new(config: DependencyConfig, source: InstanceSource, metrics: RpcMetrics) -> Self {
        let target = if config.interface_major > 1 {
            format!("{}.v{}", config.name, config.interface_major)
        } else {
            config.name.to_owned()
        };
        let observer = Arc::new(RpcObserver {
            target: target.clone(),
            metrics: metrics.clone(),
            slow_call: config.breaker.slow_call_threshold,
            stats: Mutex::new(HashMap::new()),
        });
        let dyn_observer: Arc<dyn Observer> = observer.clone();
        let instances = source.into_receiver();
        let shared = Arc::new(Shared {
            bulkhead: Bulkhead::layer(config.bulkhead, dyn_observer.clone()),
            circuits: Circuits::new(config.breaker.clone()),
            retry: RetryPolicy::new(config.retry.clone(), GrpcClassifier, dyn_observer),
            loads: Loads::new(config.balance.clone()),
            outliers: Outliers::new(config.eject.clone()),
            config,
            target,
            seen: Mutex::new(instances.clone()),
            instances,
            channels: Mutex::new(HashMap::new()),
            observer,
            routes: Mutex::new(None),
            stack: OnceLock::new(),
        });
        shared.prune();
        metrics.add_snapshot_source(Arc::new(StreamSource(Arc::downgrade(&shared))));
        Self { shared }
    }

    /// Routes calls by `routes` (a live table; `None` = no table) from now on.
    pub fn with_routes(self, routes: watch::Receiver<Option<Arc<RouteTable>>>) -> Self {
        *self
            .shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(routes);
        self
    }

    /// The routing table in force, if any.
    pub fn route_table(&self) -> Option<Arc<RouteTable>> {
        self.shared.route_table()
    }

    /// The settings this dependency was built with.
    pub fn config(&self) -> &DependencyConfig {
        &self.shared.config
    }

    /// The instances currently eligible (right interface major).
    pub fn instances(&self) -> Vec<Instance> {
        self.shared.instances()
    }

    /// The instances a call in context `cx` may go to (see [`RouteLayer`]).
    ///
    /// # Errors
    /// `InvalidArgument` when the request pins a version nothing runs;
    /// `Unavailable(NoInstances)` when nothing eligible runs.
    pub fn routed_instances(&self, cx: Option<&RequestContext>) -> Result<Vec<Instance>, RpcError> {
        let ids = self
            .shared
            .routed(cx)
            .map_err(|e| crate::classify::into_rpc_error(self.shared.config.name, Box::new(e)))?
            .primary;
        Ok(self
            .instances()
            .into_iter()
            .filter(|i| ids.contains(&i.id))
            .collect())
    }

    /// Calls a unary method through this dependency's stack
    /// ([`crate::stack::build`]): the one way every driver client calls.
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
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let stack = self.shared.stack.get_or_init(|| crate::stack::build(self));
        unary(stack, &self.shared.config, op, message, opts).await
    }

    /// Asks one instance's `grpc.health.v1` whether it is serving (health
    /// probes bypass the stack: they must see an instance, not a circuit).
    ///
    /// # Errors
    /// [`RpcError`] when no instance answers SERVING within a second.
    pub async fn probe(&self) -> Result<(), RpcError> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let name = self.shared.config.name;
        self.shared.refresh();
        let eligible = self.instances();
        let ids: Vec<InstanceId> = eligible.iter().map(|i| i.id.clone()).collect();
        let instance = self
            .shared
            .loads
            .pick(&ids, |_| false, &self.shared.outliers)
            .and_then(|p| eligible.into_iter().find(|i| i.id == p.key))
            .ok_or_else(|| RpcError::Unavailable {
                dependency: name,
                reason: Unavailable::NoInstances,
                message: format!(
                    "no {name} instance speaks v{}",
                    self.shared.config.interface_major
                ),
                retry_after: None,
            })?;
        let channel = self.shared.channel_for(&instance)?;
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

    /// How many instances are ejected now.
    pub fn ejected_count(&self) -> usize {
        self.shared.outliers.ejected_count()
    }

    /// How many instances have an open connection slot (channel) now.
    pub fn channel_count(&self) -> usize {
        self.shared
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    // The layers of the stack, over this dependency's shared state,
    // outermost first (see `crate::stack::build`).

    /// Counts every call once, by operation and outcome.
    pub fn metrics_layer(&self) -> MetricsLayer<GrpcClassifier> {
        Metrics::layer(self.shared.observer.clone(), GrpcClassifier)
    }

    /// Enforces each call's deadline.
    pub fn deadline_layer(&self) -> DeadlineLayer {
        Deadline::layer()
    }

    /// This dependency's bulkhead (`<DEP>_BULKHEAD`).
    pub fn bulkhead_layer(&self) -> BulkheadLayer {
        self.shared.bulkhead.clone()
    }

    /// One circuit per operation (`<DEP>_BREAKER_*`).
    pub fn breaker_layer(&self) -> CircuitBreakerLayer<GrpcClassifier> {
        CircuitBreaker::layer(
            self.shared.circuits.clone(),
            GrpcClassifier,
            self.shared.observer.clone(),
        )
    }

    /// Version routing.
    pub fn route_layer(&self) -> RouteLayer {
        RouteLayer {
            shared: self.shared.clone(),
        }
    }

    /// Budgeted retries (`<DEP>_RETRIES`, `<DEP>_RETRY_BUDGET_PERCENT`).
    pub fn retry_layer(&self) -> tower::retry::RetryLayer<RetryPolicy<GrpcClassifier>> {
        tower::retry::RetryLayer::new(self.shared.retry.clone())
    }

    /// Power of two choices over non-ejected, untried instances.
    pub fn balance_layer(&self) -> BalanceLayer<InstanceId, GrpcClassifier> {
        Balance::layer(
            self.shared.loads.clone(),
            self.shared.outliers.clone(),
            GrpcClassifier,
        )
    }

    /// Outlier ejection (`<DEP>_EJECT_AFTER_FAILURES`, `<DEP>_EJECTION`).
    pub fn eject_layer(&self) -> EjectLayer<InstanceId, GrpcClassifier> {
        Eject::layer(self.shared.outliers.clone(), GrpcClassifier)
    }

    /// The gRPC attempt itself.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            shared: self.shared.clone(),
        }
    }
}

/// Where a call may go: the instances of the version routing chose, and
/// (when a route table chose it) the other versions' instances, for a
/// retry once every chosen one was tried.
#[derive(Debug)]
pub(crate) struct Routed {
    pub primary: Vec<InstanceId>,
    pub fallback: Vec<InstanceId>,
}

impl Shared {
    pub(crate) fn instances(&self) -> Vec<Instance> {
        let major = self.config.interface_major;
        self.instances
            .borrow()
            .iter()
            .filter(|i| i.version.major == major)
            .cloned()
            .collect()
    }

    fn route_table(&self) -> Option<Arc<RouteTable>> {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|rx| rx.borrow().clone())
    }

    /// Prunes what belongs to instances that left, when discovery's list
    /// changed since the last look.
    pub(crate) fn refresh(&self) {
        let changed = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .has_changed()
            .unwrap_or(false);
        if changed {
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .mark_unchanged();
            self.prune();
        }
    }

    /// Channels, load estimates and ejection records of instances no
    /// longer listed are dropped; the others are kept.
    fn prune(&self) {
        let now = self.instances();
        let ids: Vec<InstanceId> = now.iter().map(|i| i.id.clone()).collect();
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, (addr, _)| now.iter().any(|i| &i.id == id && &i.addr == addr));
        self.loads.sync(&ids);
        self.outliers.sync(&ids);
    }

    /// The candidate instances for a call in context `cx`.
    pub(crate) fn routed(&self, cx: Option<&RequestContext>) -> Result<Routed, RouteError> {
        let cfg = &self.config;
        let eligible = self.instances();
        let header = format!("x-version-{}", cfg.name);
        let header_pin = cx
            .and_then(|cx| cx.propagated(&header))
            .and_then(|v| v.to_str().ok())
            .and_then(MajorMinor::parse)
            .filter(|mm| mm.major == cfg.interface_major);
        let (chosen, from_request) = match (cfg.pin, header_pin) {
            (Some(pin), _) => (Some(pin), false),
            (None, Some(pin)) => (Some(pin), true),
            (None, None) => (
                self.route_table().and_then(|t| {
                    if t.interface != cfg.interface_major {
                        return None;
                    }
                    // A version is live while one of its instances is not
                    // ejected: a canary whose only instance died stops
                    // taking its cohort once ejected (unless every
                    // version is ejected: then all count).
                    let version = |i: &Instance| MajorMinor {
                        major: i.version.major,
                        minor: i.version.minor,
                    };
                    let mut live: Vec<MajorMinor> = eligible
                        .iter()
                        .filter(|i| !self.outliers.is_ejected(&i.id))
                        .map(version)
                        .collect();
                    if live.is_empty() {
                        live = eligible.iter().map(version).collect();
                    }
                    live.sort();
                    live.dedup();
                    t.choose(
                        &live,
                        cx.and_then(RequestContext::cohort_key),
                        rand::random_range(0.0..1.0),
                    )
                }),
                false,
            ),
        };
        let (routed, others): (Vec<&Instance>, Vec<&Instance>) = eligible
            .iter()
            .partition(|i| chosen.is_none_or(|v| v.matches(&i.version)));
        if !routed.is_empty() {
            // Only a route table's choice falls back; a pin means "this
            // version or nothing".
            let by_table = cfg.pin.is_none() && header_pin.is_none();
            return Ok(Routed {
                primary: routed.iter().map(|i| i.id.clone()).collect(),
                fallback: if by_table {
                    others.iter().map(|i| i.id.clone()).collect()
                } else {
                    Vec::new()
                },
            });
        }
        match chosen {
            Some(v) if from_request => Err(RouteError::UnknownVersion {
                message: format!("no {} {v} instance is running ({header})", cfg.name),
            }),
            Some(v) => Err(RouteError::NoInstances(RpcError::Unavailable {
                dependency: cfg.name,
                reason: Unavailable::NoInstances,
                message: format!("no {} {v} instance is running", cfg.name),
                retry_after: None,
            })),
            None => Err(RouteError::NoInstances(RpcError::Unavailable {
                dependency: cfg.name,
                reason: Unavailable::NoInstances,
                message: format!("no {} instance speaks v{}", cfg.name, cfg.interface_major),
                retry_after: None,
            })),
        }
    }

    pub(crate) fn channel_for(&self, instance: &Instance) -> Result<Channel, RpcError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((addr, ch)) = channels.get(&instance.id)
            && *addr == instance.addr
        {
            return Ok(ch.clone());
        }
        let cfg = &self.config;
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let mut endpoint = TonicEndpoint::from_shared(format!("{scheme}://{}", instance.addr))
            .map_err(|e| RpcError::Internal {
                dependency: cfg.name,
                message: format!("bad endpoint {}: {e}", instance.addr),
            })?;
        if let Some(tls) = &cfg.tls {
            // Checked at start (DependencyConfig::from_env), so this only fails if
            // rustls changed its mind about the same bytes.
            endpoint = endpoint
                .tls_config(crate::tls::client_config(tls, cfg.name))
                .map_err(|e| RpcError::Internal {
                    dependency: cfg.name,
                    message: format!("TLS config: {e}"),
                })?;
        }
        let endpoint = endpoint
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = endpoint.connect_lazy();
        channels.insert(instance.id.clone(), (instance.addr, ch.clone()));
        Ok(ch)
    }
}
