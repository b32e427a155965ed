//! [`ServiceHost`]: binds the listeners and runs a service until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use fleet_consul::{InstanceInfo, Registrar};
use fleet_metrics::Metrics;
use fleet_resilience::adaptive::AdaptiveLimiter;
use fleet_resilience::fault::{self, FaultTable, GrpcFaultLayer};
use fleet_resilience::stream::{self, StreamIdentity};

use crate::admin::{self, AdminState};
use crate::admission::GrpcAdmission;
use crate::config::{Identity, ServerConfig};
use crate::conn_limit::LimitedIncoming;
use crate::exempt::ExemptInfrastructureLayer;
use crate::grpc_context::GrpcContextLayer;
use crate::http;
use crate::listen;
use crate::message_limit::MessageLimitLayer;
use crate::methods::KnownMethods;
use crate::readiness::Readiness;

/// Failure to start or run a service.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("failed to bind {what} listener on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed")]
    Http(#[source] std::io::Error),
    /// TLS was asked for (`TLS_CERT_FILE`) and cannot be set up.
    #[error("TLS setup failed")]
    Tls(#[source] crate::tls::TlsError),
    /// The grace period ended with requests still in flight; they were
    /// aborted (their callers saw the connection close), so the exit is
    /// not clean.
    #[error("grace period of {grace:?} over with requests in flight; they were aborted")]
    DrainAborted {
        /// Drain delay plus shutdown grace.
        grace: Duration,
    },
    /// The reflection service could not be built.
    #[error("failed to build gRPC reflection")]
    Reflection(#[source] tonic_reflection::server::Error),
}

/// One running instance: its listeners, admin port, readiness and shutdown.
pub struct ServiceHost {
    config: ServerConfig,
    metrics: Metrics,
    readiness: Readiness,
    main: TcpListener,
    admin: TcpListener,
    main_addr: SocketAddr,
    admin_addr: SocketAddr,
    admin_routes: Router,
    shutdown: CancellationToken,
    faults: FaultTable,
}

impl std::fmt::Debug for ServiceHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHost")
            .field("identity", &self.config.identity)
            .field("main_addr", &self.main_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl ServiceHost {
    /// Binds the main and admin listeners (port 0 picks a free port).
    ///
    /// # Errors
    /// [`ServerError::Bind`] when an address is taken or not local.
    pub async fn bind(config: ServerConfig, metrics: Metrics) -> Result<Self, ServerError> {
        let main = TcpListener::bind(config.addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "main",
                addr: config.addr,
                source,
            })?;
        let admin = TcpListener::bind(config.admin_addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "admin",
                addr: config.admin_addr,
                source,
            })?;
        let main_addr = main.local_addr().map_err(|source| ServerError::Bind {
            what: "main",
            addr: config.addr,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| ServerError::Bind {
            what: "admin",
            addr: config.admin_addr,
            source,
        })?;
        let faults = FaultTable::new(&config.identity.version.to_string());
        Ok(Self {
            faults,
            config,
            metrics,
            readiness: Readiness::new(),
            main,
            admin,
            main_addr,
            admin_addr,
            admin_routes: Router::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// The bound main address.
    pub fn main_addr(&self) -> SocketAddr {
        self.main_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// This instance's identity.
    pub fn identity(&self) -> &Identity {
        &self.config.identity
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The readiness checks; add the service's dependencies here.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Adds routes to the admin port (e.g. `/admin/routes`). Wrap routes
    /// that change state with [`admin::require_token`].
    pub fn merge_admin(&mut self, router: Router) {
        let routes = std::mem::take(&mut self.admin_routes);
        self.admin_routes = routes.merge(router);
    }

    /// This instance's fault-injection rules (`/admin/faults`). The gRPC
    /// server applies them itself; the edge applies them in its own stack.
    pub fn faults(&self) -> &FaultTable {
        &self.faults
    }

    /// Cancelling this token starts the shutdown sequence.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// This instance's Consul registration, when `CONSUL_HTTP_ADDR` is set.
    async fn registrar(&self, grpc: bool) -> Option<Arc<Registrar>> {
        let id = &self.config.identity;
        let info = InstanceInfo {
            service: id.service,
            instance_id: &id.instance_id,
            version: &id.version,
            zone: &id.zone,
            main_addr: self.main_addr,
            admin_addr: self.admin_addr,
            grpc,
        };
        match Registrar::new(&self.config.discovery, &info).await {
            Ok(r) => r.map(Arc::new),
            Err(error) => {
                tracing::error!(%error, "cannot register in Consul");
                None
            }
        }
    }

    /// Serves gRPC `routes` (plus health and reflection) until shutdown.
    /// `service_names` are the fully qualified gRPC services in `routes`,
    /// whose health status follows readiness.
    ///
    /// # Errors
    /// [`ServerError`] when the server fails (not on a normal shutdown).
    pub async fn run_grpc(
        self,
        routes: Routes,
        service_names: &[&'static str],
    ) -> Result<(), ServerError> {
        // TLS is the public HTTP listener's (the edge); a gRPC server asked
        // for it must not start in plaintext as if it had it.
        if let Some(files) = &self.config.tls {
            return Err(ServerError::Tls(crate::tls::TlsError::NotForGrpc {
                path: files.cert.clone(),
            }));
        }
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Reflection describes this server only: the descriptor set of each
        // service it serves (generated per service by fleet-proto), health,
        // and reflection itself — never a package it does not implement.
        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in service_names {
            match fleet_proto::descriptor_set(name) {
                Some(set) => reflection = reflection.register_encoded_file_descriptor_set(set),
                None => tracing::warn!(service = *name, "no descriptor set: not in reflection"),
            }
        }
        let reflection = reflection.build_v1().map_err(ServerError::Reflection)?;
        let routes = routes.add_service(health_service).add_service(reflection);

        // gRPC health follows readiness: "" is the whole server.
        let mut ready_rx = self.readiness.subscribe();
        let names: Vec<&'static str> = std::iter::once("")
            .chain(service_names.iter().copied())
            .collect();
        let stop_health = self.shutdown.child_token();
        tokio::spawn(async move {
            loop {
                let status = if ready_rx.borrow_and_update().ready {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in &names {
                    reporter.set_service_status(*name, status).await;
                }
                tokio::select! {
                    changed = ready_rx.changed() => if changed.is_err() { return },
                    () = stop_health.cancelled() => {
                        for name in &names {
                            reporter.set_service_status(*name, ServingStatus::NotServing).await;
                        }
                        return;
                    }
                }
            }
        });

        let methods =
            KnownMethods::from_descriptors(&[fleet_proto::FILE_DESCRIPTOR_SET], service_names);
        let context = GrpcContextLayer::new(
            self.config.identity.service,
            self.metrics.grpc_server(),
            &self.config.identity.served_by(),
            methods.clone(),
        );
        let admission = GrpcAdmission::layer(
            AdaptiveLimiter::new(self.config.concurrency.clone()),
            methods,
            self.metrics.admission(),
        );
        // Consul's gRPC health check has no client certificate: with mTLS
        // on, the agent checks the admin port's /readyz instead.
        let registrar = self.registrar(self.config.grpc_tls.is_none()).await;
        let limits = self.config.grpc;
        let incoming =
            LimitedIncoming::new(listen::grpc_incoming(self.main), limits.max_connections);
        let drain = drain_signal(
            self.shutdown.clone(),
            self.readiness.clone(),
            self.config.drain_delay,
            registrar.clone(),
        );
        // The server stack, outermost first.
        let stack = tower::ServiceBuilder::new()
            // Message sizes first: every service, health and reflection
            // included, and nothing below reads a message over the limit.
            .layer(MessageLimitLayer::new(
                limits.max_recv_message_bytes,
                limits.max_send_message_bytes,
            ))
            // Request context and deadline: every layer below runs inside
            // the caller's remaining budget, and the metrics see every
            // answer, refusals included.
            .layer(context)
            // Health checks and reflection skip what follows: no fault
            // rule, limit or admission check may make an instance look dead.
            .layer(ExemptInfrastructureLayer::new(
                tower::ServiceBuilder::new()
                    // Adaptive concurrency (Gradient2) and deadline-aware
                    // admission: refuse at once (RESOURCE_EXHAUSTED +
                    // pushback) rather than queue or start hopeless work.
                    .layer(admission)
                    // Fault injection inside the limit, so an injected
                    // delay is felt like real latency, and inside the
                    // context, so an injected hang still ends at the
                    // caller's deadline.
                    .layer(GrpcFaultLayer::new(self.faults.clone()))
                    .into_inner(),
            ))
            .into_inner();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.config.grpc_tls {
            builder = builder
                .tls_config(crate::tls::grpc_server_config(tls))
                .map_err(|e| ServerError::Tls(crate::tls::TlsError::Grpc(e.to_string())))?;
        }
        let server = builder
            // HTTP/2 limits per connection: streams in flight, pings to
            // find dead peers, the header list's size.
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .http2_max_header_list_size(
                u32::try_from(self.config.http.max_head_bytes).unwrap_or(u32::MAX),
            )
            .layer(stack)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, drain);
        let parts = Parts {
            config: self.config,
            metrics: self.metrics,
            readiness: self.readiness,
            admin: self.admin,
            main_addr: self.main_addr,
            admin_addr: self.admin_addr,
            admin_routes: self.admin_routes,
            shutdown: self.shutdown,
            faults: self.faults,
            registrar,
        };
        parts
            .run(async move { server.await.map_err(ServerError::Grpc) })
            .await
    }

    /// Serves an HTTP `router` (the edge) until shutdown.
    ///
    /// # Errors
    /// [`ServerError`] when the server fails (not on a normal shutdown).
    pub async fn run_http(self, router: Router) -> Result<(), ServerError> {
        // Before anything registers: a bad certificate stops the start.
        let tls = match &self.config.tls {
            Some(files) => Some(crate::tls::acceptor(files).map_err(ServerError::Tls)?),
            None => None,
        };
        let registrar = self.registrar(false).await;
        let drain = drain_signal(
            self.shutdown.clone(),
            self.readiness.clone(),
            self.config.drain_delay,
            registrar.clone(),
        );
        let listener = self.main;
        let limits = self.config.http;
        let server = async move {
            http::serve(listen::http_listener(listener), router, limits, tls, drain).await;
            Ok(())
        };
        let parts = Parts {
            config: self.config,
            metrics: self.metrics,
            readiness: self.readiness,
            admin: self.admin,
            main_addr: self.main_addr,
            admin_addr: self.admin_addr,
            admin_routes: self.admin_routes,
            shutdown: self.shutdown,
            faults: self.faults,
            registrar,
        };
        parts.run(server).await
    }
}

/// What is left of a host once the main server future is built.
struct Parts {
    config: ServerConfig,
    metrics: Metrics,
    readiness: Readiness,
    admin: TcpListener,
    main_addr: SocketAddr,
    admin_addr: SocketAddr,
    admin_routes: Router,
    shutdown: CancellationToken,
    faults: FaultTable,
    registrar: Option<Arc<Registrar>>,
}

impl Parts {
    async fn run(
        self,
        server: impl Future<Output = Result<(), ServerError>> + Send + 'static,
    ) -> Result<(), ServerError> {
        let id = &self.config.identity;
        // The machine-readable start line: tools and tests read the bound
        // addresses from it (`message == "listening"`).
        tracing::info!(
            service = id.service,
            version = %id.version,
            instance_id = %id.instance_id,
            zone = %id.zone,
            addr = %self.main_addr,
            admin_addr = %self.admin_addr,
            "listening"
        );
        let stop_admin = CancellationToken::new();
        let state = AdminState::new(
            id.clone(),
            self.metrics.clone(),
            self.readiness.clone(),
            self.main_addr.to_string(),
            self.admin_addr.to_string(),
        );
        let identity = StreamIdentity {
            service: id.service.to_owned(),
            version: id.version.to_string(),
            instance_id: id.instance_id.clone(),
        };
        let snapshots = self.metrics.clone();
        let subscribers = crate::hystrix::Subscribers::new(crate::hystrix::MAX_CONNECTIONS);
        let stream_route = Router::new().route(
            "/admin/stream",
            axum::routing::get(move || {
                let snapshots = snapshots.clone();
                let identity = identity.clone();
                let slot = subscribers.try_acquire();
                async move {
                    let Some(slot) = slot else {
                        return admin::error_response(
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "too_many_streams",
                            format!(
                                "at most {} /admin/stream subscribers at once",
                                crate::hystrix::MAX_CONNECTIONS
                            ),
                        );
                    };
                    stream::sse(
                        identity,
                        Duration::from_secs(1),
                        move || snapshots.snapshots(),
                        slot,
                    )
                    .into_response()
                }
            }),
        );
        // The streams show every dependency's state: the admin token or the
        // read-only viewer token opens them, nobody else.
        let streams = admin::require_viewer(
            stream_route.merge(crate::hystrix::router(self.metrics.clone())),
            self.config.admin_token.clone(),
            self.config.viewer_token.clone(),
        );
        let faults = admin::require_token(
            fault::admin_router(self.faults.clone()),
            self.config.admin_token.clone(),
        );
        let admin_router = admin::router(state)
            .merge(streams)
            .merge(faults)
            .merge(self.admin_routes);
        let admin_stop = stop_admin.clone();
        let admin_limits = self.config.http;
        let admin = tokio::spawn(async move {
            http::serve(
                listen::http_listener(self.admin),
                admin_router,
                admin_limits,
                None,
                async move { admin_stop.cancelled().await },
            )
            .await;
        });
        tokio::spawn(
            self.readiness
                .clone()
                .run(self.config.readiness_interval, self.shutdown.child_token()),
        );
        // Registered once listening: Consul's check (our /readyz) decides
        // when callers start sending. Deregistration is in `drain_signal`.
        if let Some(registrar) = self.registrar.clone() {
            let stop = self.shutdown.child_token();
            tokio::spawn(async move {
                let keep = async {
                    if let Err(error) = registrar.register(u32::MAX).await {
                        tracing::error!(%error, "Consul registration failed");
                        return;
                    }
                    let every = registrar.registration().check_interval * 5;
                    registrar.keep_registered(every).await;
                };
                tokio::select! {
                    () = keep => {}
                    () = stop.cancelled() => {}
                }
            });
        }

        let mut server = tokio::spawn(server);
        let outcome = tokio::select! {
            r = &mut server => flatten(r),
            () = self.shutdown.cancelled() => {
                let grace = self.config.drain_delay + self.config.shutdown_grace;
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(r) => {
                        tracing::info!("drained");
                        flatten(r)
                    }
                    Err(_) => {
                        tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over with requests in flight; stopping anyway");
                        server.abort();
                        Err(ServerError::DrainAborted { grace })
                    }
                }
            }
        };
        stop_admin.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), admin).await;
        tracing::info!("stopped");
        outcome
    }
}

fn flatten(r: Result<Result<(), ServerError>, tokio::task::JoinError>) -> Result<(), ServerError> {
    match r {
        Ok(inner) => inner,
        Err(e) => Err(ServerError::Http(std::io::Error::other(e))),
    }
}

/// Resolves when the listener should close: after shutdown is requested,
/// the instance is deregistered from Consul (callers' watches fire and stop
/// sending), readiness reports draining, and the drain delay has passed.
async fn drain_signal(
    shutdown: CancellationToken,
    readiness: Readiness,
    delay: Duration,
    registrar: Option<Arc<Registrar>>,
) {
    shutdown.cancelled().await;
    if let Some(registrar) = registrar {
        match tokio::time::timeout(Duration::from_secs(2), registrar.deregister()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Consul deregistration failed"),
            Err(_) => tracing::warn!("Consul deregistration timed out"),
        }
    }
    readiness.set_draining();
    tracing::info!(drain_delay_ms = delay.as_millis() as u64, "draining");
    tokio::time::sleep(delay).await;
}
