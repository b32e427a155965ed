//! The whole system as local processes, started in dependency order.
//!
//! dal first, then catalog (1.2.x, 1.3.x and 2.0.x side by side) and ratings, then
//! the edge. Each tier is started, then waited on until ready, before the
//! next one is given its addresses (static discovery: the embedded default).
//! Shutdown runs in reverse: the edge drains first, the dal last.
//!
//! [`Backends`] chooses what every instance runs on: the embedded default
//! (redb, an in-process cache, static address lists, route-table files), or
//! real Cassandra/Scylla, Redis and Consul — then every instance registers
//! in Consul and finds its dependencies and route tables there, the static
//! lists serving only until Consul first answers, as in compose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::child::{ChildSpec, RunningChild, SupervisorError};
use crate::registry::RegistryEntry;
use crate::toxiproxy::{self, ToxiproxyError};

/// The catalog release that runs as "1.2.x".
pub const CATALOG_V1_2: &str = "1.2.4";
/// The catalog release that runs as "1.3.x" (adds badges).
pub const CATALOG_V1_3: &str = "1.3.0";
/// The catalog release of interface 2 (`catalog.v2`, breaking).
pub const CATALOG_V2: &str = "2.0.0";
/// The version of the single-version services.
pub const V1: &str = "1.0.0";

/// How each instance's program is found.
#[derive(Clone, Debug)]
pub enum Launcher {
    /// One binary that runs any service as `<exe> service <name>` (the
    /// `fleet` tool itself).
    MultiCall(PathBuf),
    /// One binary per service, named after it, in this directory.
    Binaries(PathBuf),
}

impl Launcher {
    fn command(&self, service: &str) -> (PathBuf, Vec<String>) {
        match self {
            Self::MultiCall(exe) => (exe.clone(), vec!["service".into(), service.into()]),
            Self::Binaries(dir) => (dir.join(service), Vec::new()),
        }
    }
}

/// The real backends every instance runs against; `Default` is the
/// embedded default (no real backend at all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backends {
    /// Cassandra/Scylla contact points for every dal (`SCYLLA_NODES`,
    /// `host:port,…`); `None`: each dal's embedded store.
    pub scylla_nodes: Option<String>,
    /// The keyspace (`SCYLLA_KEYSPACE`); `None`: the dal's default. Two
    /// systems sharing a cluster each need their own.
    pub scylla_keyspace: Option<String>,
    /// Redis for the dal's cache (`REDIS_URL`); `None`: in-process.
    pub redis_url: Option<String>,
    /// The dal's Redis key namespace (`REDIS_KEY_PREFIX`); `None`: the
    /// dal's default.
    pub redis_key_prefix: Option<String>,
    /// The Consul agent (`CONSUL_HTTP_ADDR`): every instance registers,
    /// discovers its dependencies and watches its route tables in KV.
    /// `None`: static lists and `ROUTES_DIR` files.
    pub consul: Option<String>,
    /// Where the route tables are in KV (`ROUTES_KV_PREFIX`); `None`:
    /// `fleet/routes/`.
    pub routes_kv_prefix: Option<String>,
    /// A Toxiproxy API through which the instances call each other: each
    /// gRPC instance gets a proxy named after it (`dal-1`, `ratings-2`,
    /// `catalog-v13-1`) and its callers are given the proxy's address, so
    /// game days can degrade one hop (`fleet gameday network --proxy
    /// ratings`). Static discovery only: with Consul, instances register
    /// their own addresses and callers reach them directly.
    pub service_proxies: Option<String>,
}

impl Backends {
    /// The environment that puts an instance on these backends.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("SCYLLA_NODES", &self.scylla_nodes),
            ("SCYLLA_KEYSPACE", &self.scylla_keyspace),
            ("REDIS_URL", &self.redis_url),
            ("REDIS_KEY_PREFIX", &self.redis_key_prefix),
            ("CONSUL_HTTP_ADDR", &self.consul),
            ("ROUTES_KV_PREFIX", &self.routes_kv_prefix),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
        .collect()
    }

    /// One line for people: what the system runs on.
    pub fn describe(&self) -> String {
        format!(
            "store: {}; cache: {}; discovery: {}",
            self.scylla_nodes.as_deref().map_or_else(
                || "embedded (redb)".to_owned(),
                |n| format!("Cassandra/Scylla at {n}")
            ),
            self.redis_url
                .as_deref()
                .map_or("in-process", |_| "Redis (REDIS_URL)"),
            self.consul.as_deref().map_or_else(
                || "static lists, route files".to_owned(),
                |c| format!("Consul at {c}, route tables in KV")
            ),
        )
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct TopologyOptions {
    /// Where the edge listens.
    pub edge_addr: SocketAddr,
    /// Data (the dal's store), logs and the run directory live here.
    pub data_dir: PathBuf,
    /// dal instances (more than one needs a shared store: `SCYLLA_NODES`).
    pub dal: u32,
    /// catalog 1.2.x instances.
    pub catalog_v1_2: u32,
    /// catalog 1.3.x instances.
    pub catalog_v1_3: u32,
    /// catalog 2.0.x instances (`catalog.v2`; v1 clients never reach them).
    pub catalog_v2: u32,
    /// ratings instances.
    pub ratings: u32,
    /// How programs are found.
    pub launcher: Launcher,
    /// Token every instance's admin port requires for changes.
    pub admin_token: fleet_config::Secret,
    /// The edge's game-day key (`GAMEDAY_KEY`): what `x-fleet-fault`
    /// headers must be signed with. `None`: the edge has no game days.
    pub gameday_key: Option<fleet_config::Secret>,
    /// The stores, cache and discovery every instance uses.
    pub backends: Backends,
    /// Environment given to every instance on top of the inherited one
    /// and of `backends` (applied last: it wins).
    pub extra_env: Vec<(String, String)>,
    /// Limit for each instance to start listening and to become ready.
    pub ready_timeout: Duration,
}

/// Why the topology could not start.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The options do not describe a runnable system.
    #[error("{0}")]
    Invalid(String),
    /// An instance failed to start, become ready or stop.
    #[error(transparent)]
    Instance(#[from] SupervisorError),
    /// No instance has this id.
    #[error("no instance {0}")]
    NoInstance(String),
    /// No HTTP client for Toxiproxy's API could be built.
    #[error("HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The proxy in front of an instance could not be created.
    #[error("toxiproxy for {instance}")]
    Proxy {
        /// The instance the proxy was for.
        instance: String,
        /// Why.
        #[source]
        source: ToxiproxyError,
    },
}

/// A Toxiproxy proxy in front of one instance ([`Backends::service_proxies`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceProxy {
    /// The proxy's name: the instance id.
    pub name: String,
    /// The instance's service.
    pub service: String,
    /// Where the proxy listens (what callers are given).
    pub listen: String,
    /// The instance's own address.
    pub upstream: String,
}

/// The running system.
#[derive(Debug)]
pub struct Topology {
    opts: TopologyOptions,
    tiers: Vec<Vec<RunningChild>>,
    proxies: Vec<ServiceProxy>,
}

impl Topology {
    /// Starts every instance, tier by tier, each tier ready before the next.
    /// On failure, what was started is stopped again.
    ///
    /// # Errors
    /// [`TopologyError`] naming the instance that failed, with its output.
    pub async fn start(opts: TopologyOptions) -> Result<Self, TopologyError> {
        validate(&opts)?;
        let mut topo = Self {
            opts,
            tiers: Vec::new(),
            proxies: Vec::new(),
        };
        match topo.start_tiers().await {
            Ok(()) => Ok(topo),
            Err(e) => {
                topo.stop(Duration::from_secs(5)).await;
                Err(e)
            }
        }
    }

    async fn start_tiers(&mut self) -> Result<(), TopologyError> {
        let o = self.opts.clone();
        let dal_data = o.data_dir.join("dal");
        let dal_specs: Vec<ChildSpec> = (1..=o.dal)
            .map(|n| {
                self.spec(
                    "dal",
                    V1,
                    &format!("dal-{n}"),
                    vec![
                        ("GRPC_ADDR".into(), "127.0.0.1:0".into()),
                        ("DATA_DIR".into(), path_str(&dal_data)),
                    ],
                )
            })
            .collect();
        self.start_tier(dal_specs).await?;
        let dal_addrs = self.callee_addrs("dal", false).await?;

        let mut mid = Vec::new();
        for (version, count, tag) in [
            (CATALOG_V1_2, o.catalog_v1_2, "v12"),
            (CATALOG_V1_3, o.catalog_v1_3, "v13"),
            (CATALOG_V2, o.catalog_v2, "v20"),
        ] {
            for n in 1..=count {
                mid.push(self.spec(
                    "catalog",
                    version,
                    &format!("catalog-{tag}-{n}"),
                    vec![
                        ("GRPC_ADDR".into(), "127.0.0.1:0".into()),
                        ("DAL_ADDRS".into(), dal_addrs.clone()),
                    ],
                ));
            }
        }
        for n in 1..=o.ratings {
            mid.push(self.spec(
                "ratings",
                V1,
                &format!("ratings-{n}"),
                vec![
                    ("GRPC_ADDR".into(), "127.0.0.1:0".into()),
                    ("DAL_ADDRS".into(), dal_addrs.clone()),
                ],
            ));
        }
        self.start_tier(mid).await?;
        let catalog_addrs = self.callee_addrs("catalog", true).await?;
        let ratings_addrs = self.callee_addrs("ratings", true).await?;

        let edge = self.spec(
            "edge",
            V1,
            "edge-1",
            [("HTTP_ADDR".into(), o.edge_addr.to_string())]
                .into_iter()
                .chain(
                    o.gameday_key
                        .as_ref()
                        .map(|k| ("GAMEDAY_KEY".to_owned(), k.expose().to_owned())),
                )
                .chain([
                    ("CATALOG_ADDRS".into(), catalog_addrs),
                    ("RATINGS_ADDRS".into(), ratings_addrs),
                ])
                .collect(),
        );
        self.start_tier(vec![edge]).await?;
        Ok(())
    }

    fn spec(
        &self,
        service: &str,
        version: &str,
        id: &str,
        mut env: Vec<(String, String)>,
    ) -> ChildSpec {
        let (program, args) = self.opts.launcher.command(service);
        env.extend([
            ("SERVICE_VERSION".into(), version.into()),
            ("INSTANCE_ID".into(), id.into()),
            ("ADMIN_ADDR".into(), "127.0.0.1:0".into()),
            (
                "ADMIN_TOKEN".into(),
                self.opts.admin_token.expose().to_owned(),
            ),
            ("ZONE".into(), "local".into()),
        ]);
        env.extend(self.opts.backends.env());
        env.extend(self.opts.extra_env.iter().cloned());
        ChildSpec {
            instance_id: id.into(),
            service: service.into(),
            version: version.into(),
            program,
            args,
            env,
            log_path: Some(self.opts.data_dir.join("logs").join(format!("{id}.log"))),
        }
    }

    async fn start_tier(&mut self, specs: Vec<ChildSpec>) -> Result<(), TopologyError> {
        let timeout = self.opts.ready_timeout;
        let started =
            futures::future::join_all(specs.into_iter().map(|s| RunningChild::start(s, timeout)))
                .await;
        let mut tier = Vec::new();
        let mut first_err = None;
        for r in started {
            match r {
                Ok(c) => tier.push(c),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_none() {
            for child in &mut tier {
                if let Err(e) = child.wait_ready(timeout).await {
                    first_err = Some(e);
                    break;
                }
            }
        }
        self.tiers.push(tier);
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// `addr[@version],…` of every running instance of `service`.
    fn addrs(&self, service: &str, with_version: bool) -> String {
        self.instances()
            .filter(|c| c.spec.service == service)
            .map(|c| {
                if with_version {
                    format!("{}@{}", c.bound.addr, c.spec.version)
                } else {
                    c.bound.addr.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// What `service`'s callers are given: its instances' addresses, or
    /// with [`Backends::service_proxies`] (and no Consul) the addresses of
    /// proxies created in front of them.
    async fn callee_addrs(
        &mut self,
        service: &str,
        with_version: bool,
    ) -> Result<String, TopologyError> {
        let Some(api) = self
            .opts
            .backends
            .service_proxies
            .clone()
            .filter(|_| self.opts.backends.consul.is_none())
        else {
            return Ok(self.addrs(service, with_version));
        };
        let api = toxiproxy::normalize_url(&api);
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(TopologyError::HttpClient)?;
        let targets: Vec<(String, String, String)> = self
            .instances()
            .filter(|c| c.spec.service == service)
            .map(|c| {
                (
                    c.spec.instance_id.clone(),
                    c.bound.addr.to_string(),
                    c.spec.version.clone(),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (id, upstream, version) in targets {
            let listen = toxiproxy::create_proxy(&http, &api, &id, &upstream)
                .await
                .map_err(|source| TopologyError::Proxy {
                    instance: id.clone(),
                    source,
                })?;
            out.push(if with_version {
                format!("{listen}@{version}")
            } else {
                listen.clone()
            });
            self.proxies.push(ServiceProxy {
                name: id,
                service: service.to_owned(),
                listen,
                upstream,
            });
        }
        Ok(out.join(","))
    }

    /// The proxies in front of instances ([`Backends::service_proxies`]).
    pub fn service_proxies(&self) -> &[ServiceProxy] {
        &self.proxies
    }

    /// Every instance, in start order.
    pub fn instances(&self) -> impl Iterator<Item = &RunningChild> {
        self.tiers.iter().flatten()
    }

    /// Every instance, mutably.
    pub fn instances_mut(&mut self) -> impl Iterator<Item = &mut RunningChild> {
        self.tiers.iter_mut().flatten()
    }

    /// The instance with this id.
    pub fn instance(&self, id: &str) -> Option<&RunningChild> {
        self.instances().find(|c| c.spec.instance_id == id)
    }

    /// The instance with this id, mutably.
    pub fn instance_mut(&mut self, id: &str) -> Option<&mut RunningChild> {
        self.instances_mut().find(|c| c.spec.instance_id == id)
    }

    /// The edge's HTTP address.
    pub fn edge_addr(&self) -> Option<SocketAddr> {
        self.instances()
            .find(|c| c.spec.service == "edge")
            .map(|c| c.bound.addr)
    }

    /// The embedded registry: every instance with its addresses.
    pub fn registry(&self) -> Vec<RegistryEntry> {
        self.instances()
            .map(|c| RegistryEntry {
                service: c.spec.service.clone(),
                version: c.spec.version.clone(),
                instance_id: c.spec.instance_id.clone(),
                addr: c.bound.addr.to_string(),
                admin_addr: c.bound.admin_addr.to_string(),
                pid: c.pid,
                zone: "local".into(),
            })
            .collect()
    }

    /// Stops `id` gracefully and starts it again on the same addresses and
    /// data (callers keep their static address lists).
    ///
    /// # Errors
    /// [`TopologyError`] when it cannot be stopped or restarted.
    pub async fn restart(&mut self, id: &str, grace: Duration) -> Result<(), TopologyError> {
        let timeout = self.opts.ready_timeout;
        let Some((t, i)) = self.tiers.iter().enumerate().find_map(|(t, tier)| {
            tier.iter()
                .position(|c| c.spec.instance_id == id)
                .map(|i| (t, i))
        }) else {
            return Err(TopologyError::NoInstance(id.to_owned()));
        };
        let child = self
            .tiers
            .get_mut(t)
            .and_then(|tier| tier.get_mut(i))
            .ok_or_else(|| TopologyError::NoInstance(id.to_owned()))?;
        child.stop(grace).await?;
        let mut spec = child.spec.clone();
        let key = if spec.service == "edge" {
            "HTTP_ADDR"
        } else {
            "GRPC_ADDR"
        };
        let (addr, admin) = (
            child.bound.addr.to_string(),
            child.bound.admin_addr.to_string(),
        );
        for (k, v) in &mut spec.env {
            if k == key {
                v.clone_from(&addr);
            } else if k == "ADMIN_ADDR" {
                v.clone_from(&admin);
            }
        }
        let mut fresh = RunningChild::start(spec, timeout).await?;
        fresh.wait_ready(timeout).await?;
        *child = fresh;
        Ok(())
    }

    /// Stops every instance, the edge first and the dal last, each with up
    /// to `grace` to drain. Returns (instance, exit status, killed).
    pub async fn stop(&mut self, grace: Duration) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for tier in self.tiers.iter_mut().rev() {
            let stops = futures::future::join_all(tier.iter_mut().map(|c| async move {
                let id = c.spec.instance_id.clone();
                match c.stop(grace).await {
                    Ok((status, killed)) => (id, status.to_string(), killed),
                    Err(e) => (id, e.to_string(), true),
                }
            }))
            .await;
            out.extend(stops);
        }
        self.tiers.clear();
        out
    }
}

fn validate(o: &TopologyOptions) -> Result<(), TopologyError> {
    if o.catalog_v1_2 + o.catalog_v1_3 == 0 {
        return Err(TopologyError::Invalid(
            "at least one catalog instance is needed (--catalog-v1-2 / --catalog-v1-3)".into(),
        ));
    }
    if o.ratings == 0 || o.dal == 0 {
        return Err(TopologyError::Invalid(
            "at least one ratings and one dal instance are needed".into(),
        ));
    }
    let shared_store = o
        .backends
        .scylla_nodes
        .as_deref()
        .is_some_and(|n| !n.is_empty())
        || o.extra_env
            .iter()
            .any(|(k, v)| k == "SCYLLA_NODES" && !v.is_empty());
    if o.dal > 1 && !shared_store {
        return Err(TopologyError::Invalid(
            "the embedded store belongs to one dal instance; give Cassandra/Scylla (SCYLLA_NODES) to run more than one"
                .into(),
        ));
    }
    Ok(())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
