//! `fleet up`: the whole system as local processes — on embedded defaults,
//! or on real Cassandra/Scylla, Redis and Consul when `SCYLLA_NODES` /
//! `REDIS_URL` / `CONSUL_HTTP_ADDR` are given (flags or environment). On
//! Consul the default route tables are seeded into KV where absent, as
//! compose's `routes-seed` does; on files, into `<data>/run/routes`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use fleet_discovery::{ConsulClient, RouteStore};

use fleet_supervisor::heal::{self, Event};
use fleet_supervisor::proxies;
use fleet_supervisor::{
    Backends, Launcher, RestartPolicy, RunningChild, Topology, TopologyOptions,
};

/// Flags of `fleet up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the edge listens (the only public door).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub edge_addr: SocketAddr,
    /// Where data, logs and run files live.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// dal instances (more than one needs SCYLLA_NODES: a shared store).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub dal: u32,
    /// catalog 1.2.x instances.
    #[arg(long = "catalog-v1-2", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub catalog_v1_2: u32,
    /// catalog 1.3.x instances (1.3 adds badges to titles).
    #[arg(long = "catalog-v1-3", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub catalog_v1_3: u32,
    /// catalog 2.0.x instances (the breaking `catalog.v2` interface, served
    /// at the edge's `/api/v2/titles/{id}`).
    #[arg(long = "catalog-v2", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub catalog_v2: u32,
    /// ratings instances.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub ratings: u32,
    /// Cassandra/Scylla contact points for the dal (`host:port,…`); unset:
    /// the embedded store. The dal migrates and seeds the keyspace on
    /// start (`SCYLLA_KEYSPACE` and the other `SCYLLA_*` settings are
    /// passed through from the environment).
    #[arg(long, env = "SCYLLA_NODES")]
    pub scylla_nodes: Option<String>,
    /// Redis for the dal's cache (`redis://host:port`); unset: the
    /// in-process cache.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Consul agent (`host:port`): every instance registers there and
    /// finds its dependencies and route tables there; the default tables
    /// are seeded into KV where absent. Unset: static address lists and
    /// route files.
    #[arg(long, env = "CONSUL_HTTP_ADDR")]
    pub consul: Option<String>,
    /// With Consul: where the route tables are in KV.
    #[arg(long, env = "ROUTES_KV_PREFIX", default_value = fleet_discovery::DEFAULT_KV_PREFIX)]
    pub routes_kv_prefix: String,
    /// How long each instance may take to become ready (default 60s, or
    /// 300s with `SCYLLA_NODES`: a first start migrates and seeds it).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ready_timeout: Option<Duration>,
    /// Where the live dashboard listens (`fleet dashboard`); `off`: none.
    #[arg(long, default_value = "127.0.0.1:7979", value_parser = crate::dashboard::parse_addr_or_off)]
    pub dashboard: crate::dashboard::DashboardAddr,
    /// How long each instance may take to drain at shutdown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Leave a crashed instance down instead of starting it again.
    #[arg(long)]
    pub no_restart: bool,
    /// First delay before a crashed instance is started again (doubles
    /// with each crash in a row).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub restart_delay: Duration,
    /// Longest delay between restarts of an instance that keeps crashing.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub restart_delay_max: Duration,
    /// Route the dal's connections to Cassandra and Redis, every
    /// instance's to Consul, and (with static discovery) the services'
    /// calls to each other through this Toxiproxy (its API,
    /// `127.0.0.1:8474`; `scripts/backends up toxiproxy` runs one): proxies
    /// `cassandra` (`cassandra-<n>` for further nodes), `redis`, `consul`
    /// and one per gRPC instance, named after it (`dal-1`, `ratings-2`, …),
    /// are (re)created on free loopback ports, for `fleet gameday network
    /// --proxy …`. The API and proxies are written to `run/toxiproxy.json`.
    #[arg(long, env = "TOXIPROXY_URL")]
    pub toxiproxy: Option<String>,
    /// Also run Jaeger and Prometheus: every instance exports its spans to
    /// Jaeger (OTLP); Prometheus scrapes every instance (file-based service
    /// discovery written from the registry) and evaluates the fleet's
    /// recording and alerting rules; their URLs go to
    /// `run/observability.json`.
    #[arg(long)]
    pub observability: bool,
    /// Where Prometheus listens with `--observability` (a fixed port).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub prometheus_addr: SocketAddr,
    /// The Prometheus server program (`scripts/prometheus` installs
    /// Debian's).
    #[arg(long, env = "PROMETHEUS_BIN", default_value = "prometheus")]
    pub prometheus_bin: PathBuf,
    /// With `--observability`: the Jaeger v1.76 program (`scripts/jaeger`
    /// builds it into the cache and prints its path).
    #[arg(long, env = "JAEGER_BIN", default_value = "jaeger")]
    pub jaeger_bin: PathBuf,
    /// Where Jaeger receives OTLP/gRPC (every instance exports its spans
    /// there).
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub jaeger_otlp_addr: SocketAddr,
    /// Where Jaeger's UI and query API listen.
    #[arg(long, default_value = "127.0.0.1:16686")]
    pub jaeger_ui_addr: SocketAddr,
}

/// Runs `fleet up` until Ctrl-C or SIGTERM.
///
/// # Errors
/// When the data directory cannot be prepared or an instance fails to start.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("failed to resolve --data-dir {}", args.data_dir.display()))?;
    let run_dir = data_dir.join("run");
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("failed to create {}", run_dir.display()))?;
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    write_private(&run_dir.join("admin-token"), &admin_token)?;
    // The game-day key signs `x-fleet-fault` headers (`fleet gameday`
    // reads it here); the admin token never goes through the edge.
    let gameday_key = uuid::Uuid::new_v4().simple().to_string();
    write_private(&run_dir.join("gameday-key"), &gameday_key)?;
    let exe = std::env::current_exe().context("failed to find the fleet executable")?;

    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    // With --toxiproxy the dal reaches its stores, and every instance
    // Consul, through proxies that game days can degrade; the rest of the
    // system is unchanged (`fleet up` itself seeds route tables through
    // the proxy too, before any fault).
    let proxied = match &args.toxiproxy {
        Some(api) => {
            let (proxied, proxies) = proxies::proxy_stores(
                api,
                nonempty(&args.scylla_nodes).as_deref(),
                nonempty(&args.redis_url).as_deref(),
                nonempty(&args.consul).as_deref(),
                &run_dir.join("toxiproxy.json"),
            )
            .await?;
            if proxies.is_empty() {
                println!(
                    "fleet: --toxiproxy: no Cassandra, Redis or Consul configured, no store proxied"
                );
            }
            for p in &proxies {
                println!("fleet: toxiproxy {}: {} → {}", p.name, p.listen, p.upstream);
            }
            proxied
        }
        None => proxies::Proxied {
            scylla_nodes: args.scylla_nodes.clone(),
            redis_url: args.redis_url.clone(),
            consul: args.consul.clone(),
        },
    };
    let backends = Backends {
        scylla_nodes: nonempty(&proxied.scylla_nodes),
        redis_url: nonempty(&proxied.redis_url),
        consul: nonempty(&proxied.consul),
        routes_kv_prefix: nonempty(&proxied.consul).map(|_| args.routes_kv_prefix.clone()),
        service_proxies: args.toxiproxy.clone(),
        ..Backends::default()
    };
    if args.toxiproxy.is_some() && backends.consul.is_some() {
        println!(
            "fleet: --toxiproxy with Consul: instances register their own addresses, so calls \
             between services do not pass the proxies (only the stores and Consul do)"
        );
    }
    let mut extra_env = Vec::new();
    // The default route tables, where every instance watches them (`fleet
    // route set` changes them live); a table already there is kept.
    let routes = match &backends.consul {
        Some(addr) => RouteStore::Consul {
            client: ConsulClient::new(addr).context("unusable --consul / CONSUL_HTTP_ADDR")?,
            prefix: args.routes_kv_prefix.clone(),
        },
        None => {
            let routes_dir = run_dir.join("routes");
            extra_env.push(("ROUTES_DIR".to_owned(), routes_dir.display().to_string()));
            RouteStore::Dir(routes_dir)
        }
    };
    // Jaeger first: every instance is started pointing at it.
    let jaeger = if args.observability {
        let j = crate::observability::Jaeger::start(
            &args.jaeger_bin,
            args.jaeger_otlp_addr,
            args.jaeger_ui_addr,
            &data_dir,
        )
        .await
        .context("--observability: Jaeger did not start")?;
        extra_env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), j.otlp_endpoint()));
        Some(j)
    } else {
        None
    };
    let seeded = crate::route::seed_defaults(&routes).await?;
    println!("fleet: {}", backends.describe());
    if !seeded.is_empty() {
        println!(
            "fleet: default route tables seeded for {}",
            seeded.join(", ")
        );
    }
    let ready_timeout = args
        .ready_timeout
        .unwrap_or(if backends.scylla_nodes.is_some() {
            Duration::from_secs(300)
        } else {
            Duration::from_secs(60)
        });
    println!(
        "fleet: starting dal, catalog {}+{}+{} (1.2/1.3/2.0), ratings {}, edge on {} …",
        args.catalog_v1_2, args.catalog_v1_3, args.catalog_v2, args.ratings, args.edge_addr
    );
    let mut topo = Topology::start(TopologyOptions {
        edge_addr: args.edge_addr,
        data_dir: data_dir.clone(),
        dal: args.dal,
        catalog_v1_2: args.catalog_v1_2,
        catalog_v1_3: args.catalog_v1_3,
        catalog_v2: args.catalog_v2,
        ratings: args.ratings,
        launcher: Launcher::MultiCall(exe),
        admin_token: admin_token.into(),
        gameday_key: Some(gameday_key.into()),
        backends,
        extra_env,
        ready_timeout,
    })
    .await
    .context("the system did not start")?;
    let elapsed = started.elapsed();
    if args.toxiproxy.is_some() && !topo.service_proxies().is_empty() {
        for p in topo.service_proxies() {
            println!("fleet: toxiproxy {}: {} → {}", p.name, p.listen, p.upstream);
        }
        proxies::record_service_proxies(&run_dir.join("toxiproxy.json"), topo.service_proxies())?;
    }

    let registry = topo.registry();
    let registry_path = run_dir.join("registry.json");
    fleet_supervisor::registry::write(&registry_path, &topo)?;

    println!();
    println!(
        "{:<16} {:<9} {:<8} {:<22} {:<22} {:>7}",
        "INSTANCE", "SERVICE", "VERSION", "ADDRESS", "ADMIN", "PID"
    );
    for e in &registry {
        println!(
            "{:<16} {:<9} {:<8} {:<22} {:<22} {:>7}",
            e.instance_id, e.service, e.version, e.addr, e.admin_addr, e.pid
        );
    }
    println!();
    println!(
        "all {} instances ready in {:.2}s",
        registry.len(),
        elapsed.as_secs_f64()
    );
    if let Some(edge) = topo.edge_addr() {
        println!(
            "edge: http://{edge}/api/v1/titles/t00001   (OpenAPI: http://{edge}/api/v1/openapi.json)"
        );
    }
    println!(
        "logs: {}   registry: {}",
        data_dir.join("logs").display(),
        registry_path.display()
    );
    let prometheus = if args.observability {
        let p = crate::observability::Prometheus::start(
            &args.prometheus_bin,
            args.prometheus_addr,
            &data_dir,
            &registry,
        )
        .await
        .context("--observability: Prometheus did not start")?;
        println!(
            "prometheus: {}/   (targets: {}/targets, alerts: {}/alerts)",
            p.url(),
            p.url(),
            p.url()
        );
        if let Some(j) = &jaeger {
            println!(
                "jaeger: {}/   (every instance exports its spans to {})",
                j.ui_url(),
                j.otlp_endpoint()
            );
        }
        crate::observability::record(&data_dir, &p, jaeger.as_ref())?;
        Some(p)
    } else {
        None
    };
    let stop_dashboard = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = args.dashboard.0
        && let Some(at) =
            crate::dashboard::start_beside_up(addr, &data_dir, stop_dashboard.clone()).await
    {
        println!("dashboard: http://{at}/");
    }
    println!("press Ctrl-C to stop");

    let policy = (!args.no_restart).then(|| RestartPolicy {
        initial: args.restart_delay,
        max: args.restart_delay_max.max(args.restart_delay),
        stable: RestartPolicy::default().stable,
    });
    heal::watch(&mut topo, policy, ready_timeout, stop_signal(), |event| {
        report(event, &registry_path, prometheus.as_ref());
    })
    .await;
    stop_dashboard.cancel();
    if let Some(p) = prometheus {
        p.stop(args.grace).await;
    }

    println!("fleet: stopping (edge first, dal last) …");
    let mut clean = true;
    for (id, status, killed) in topo.stop(args.grace).await {
        if killed {
            clean = false;
            println!("  {id}: killed after the grace period ({status})");
        } else {
            println!("  {id}: {status}");
        }
    }
    // Jaeger last: the instances flushed their spans to it on the way out.
    if let Some(j) = jaeger {
        j.stop(args.grace).await;
    }
    let _ = std::fs::remove_file(&registry_path);
    if clean {
        println!("fleet: stopped cleanly");
    }
    Ok(())
}

/// One JSON line on stdout about the supervisor's own doing (beside the
/// human text, so tools can follow restarts).
fn log_event(message: &str, child: &RunningChild, fields: serde_json::Value) {
    let mut line = serde_json::json!({
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "level": if message == "instance exited" { "WARN" } else { "INFO" },
        "message": message,
        "target": "fleet::up",
        "instance": child.spec.instance_id,
        "service": child.spec.service,
        "pid": child.pid,
        "restarts": child.restarts,
    });
    if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
        line.extend(extra);
    }
    println!("{line}");
}

/// Completes on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
    }
}

/// Tells what the supervisor did: a JSON line for each exit and restart
/// (with the last output when an instance stays down), and after a
/// restart the registry and Prometheus' targets rewritten.
fn report(
    event: Event<'_>,
    registry_path: &std::path::Path,
    prometheus: Option<&crate::observability::Prometheus>,
) {
    match event {
        Event::Exited {
            child,
            status,
            ran,
            restart_in: None,
        } => {
            eprintln!(
                "fleet: {} exited unexpectedly ({status}); the others keep running. Last output:\n{}",
                child.spec.instance_id,
                child.tail()
            );
            log_event(
                "instance exited",
                child,
                serde_json::json!({
                    "status": status.to_string(),
                    "ran_ms": ran.as_millis(),
                }),
            );
        }
        Event::Exited {
            child,
            status,
            ran,
            restart_in: Some(delay),
        } => log_event(
            "instance exited",
            child,
            serde_json::json!({
                "status": status.to_string(),
                "ran_ms": ran.as_millis(),
                "restart_in_ms": delay.as_millis(),
            }),
        ),
        Event::Restarted {
            topology,
            instance_id,
            took,
        } => {
            if let Some(child) = topology.instance(instance_id) {
                log_event(
                    "instance restarted",
                    child,
                    serde_json::json!({
                        "addr": child.bound.addr.to_string(),
                        "admin_addr": child.bound.admin_addr.to_string(),
                        "start_ms": took.as_millis(),
                    }),
                );
            }
            if let Err(e) = fleet_supervisor::registry::write(registry_path, topology) {
                eprintln!("fleet: {:#}", anyhow::Error::new(e));
            }
            // Same addresses after a restart, but the targets file
            // follows the registry, whatever changes in it.
            if let Some(p) = prometheus
                && let Err(e) = p.update_targets(&topology.registry())
            {
                eprintln!("fleet: {e:#}");
            }
        }
        Event::RestartFailed { instance_id, error } => {
            eprintln!("fleet: restarting {instance_id} failed: {error}");
        }
    }
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(())
}
