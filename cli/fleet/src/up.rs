//! `fleet up`: the whole system as local processes — on embedded defaults,
//! or on real Cassandra/Scylla and Redis when `SCYLLA_NODES` / `REDIS_URL`
//! are given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::topology::{Launcher, Topology, TopologyOptions};

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
    let exe = std::env::current_exe().context("failed to find the fleet executable")?;

    let mut extra_env = Vec::new();
    // The embedded default's route tables: files every instance watches
    // (`fleet route set` changes them live). Kept across restarts.
    let routes_dir = run_dir.join("routes");
    write_default_routes(&routes_dir)?;
    extra_env.push(("ROUTES_DIR".to_owned(), routes_dir.display().to_string()));
    if let Some(nodes) = &args.scylla_nodes {
        extra_env.push(("SCYLLA_NODES".to_owned(), nodes.clone()));
    }
    if let Some(url) = &args.redis_url {
        extra_env.push(("REDIS_URL".to_owned(), url.clone()));
    }
    println!(
        "fleet: dal store: {}; cache: {}",
        args.scylla_nodes.as_deref().map_or_else(
            || "embedded (redb)".to_owned(),
            |n| format!("Cassandra/Scylla at {n}")
        ),
        if args.redis_url.is_some() {
            "Redis (REDIS_URL)"
        } else {
            "in-process"
        },
    );
    let ready_timeout = args
        .ready_timeout
        .unwrap_or(if args.scylla_nodes.is_some() {
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
        admin_token,
        extra_env,
        ready_timeout,
    })
    .await
    .context("the system did not start")?;
    let elapsed = started.elapsed();

    let registry = topo.registry();
    let registry_path = run_dir.join("registry.json");
    std::fs::write(&registry_path, serde_json::to_vec_pretty(&registry)?)
        .with_context(|| format!("failed to write {}", registry_path.display()))?;

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
    let stop_dashboard = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = args.dashboard.0
        && let Some(at) =
            crate::dashboard::start_beside_up(addr, &data_dir, stop_dashboard.clone()).await
    {
        println!("dashboard: http://{at}/");
    }
    println!("press Ctrl-C to stop");

    wait_for_stop(&mut topo).await;
    stop_dashboard.cancel();
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
    let _ = std::fs::remove_file(&registry_path);
    if clean {
        println!("fleet: stopped cleanly");
    }
    Ok(())
}

/// Waits for Ctrl-C / SIGTERM, reporting instances that exit meanwhile.
async fn wait_for_stop(topo: &mut Topology) {
    let mut reported = std::collections::HashSet::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                for child in topo.instances_mut() {
                    if let Some(status) = child.try_exit_status()
                        && reported.insert(child.spec.instance_id.clone())
                    {
                        eprintln!(
                            "fleet: {} exited unexpectedly ({status}); the others keep running. Last output:\n{}",
                            child.spec.instance_id,
                            child.tail()
                        );
                    }
                }
            }
        }
    }
}

/// The tables the deploy files seed into Consul KV, written where the
/// embedded default reads them unless they exist already.
fn write_default_routes(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for (service, table) in [
        (
            "catalog",
            include_str!("../../../deploy/routes/catalog.json"),
        ),
        (
            "ratings",
            include_str!("../../../deploy/routes/ratings.json"),
        ),
    ] {
        let path = dir.join(format!("{service}.json"));
        if !path.exists() {
            std::fs::write(&path, table)
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
    }
    Ok(())
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
