//! `fleet status`: every instance by service, version, zone and health —
//! from Consul when `CONSUL_HTTP_ADDR` is set, else from the embedded
//! registry `fleet up` writes (`<data-dir>/run/registry.json`), each
//! instance's health asked from its admin `/readyz`, and how many times
//! `fleet up` restarted it after a crash.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use fleet_discovery::ConsulClient;

/// Flags of `fleet status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The Consul agent to ask.
    #[arg(long, env = "CONSUL_HTTP_ADDR")]
    pub consul: Option<String>,
    /// Without Consul: where `fleet up` keeps its data and run files.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
}

/// One instance as printed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// Service name.
    pub service: String,
    /// Version.
    pub version: String,
    /// Instance id.
    pub instance_id: String,
    /// Zone.
    pub zone: String,
    /// Main address.
    pub addr: String,
    /// `passing`, `warning`, `critical` (Consul) or `ready` / `not ready`
    /// / `unreachable` (embedded).
    pub health: String,
    /// Restarts after a crash (`fleet up`'s registry); `None` from Consul,
    /// which does not know.
    pub restarts: Option<u32>,
}

#[derive(serde::Deserialize)]
struct RegistryEntry {
    service: String,
    version: String,
    instance_id: String,
    addr: String,
    admin_addr: String,
    zone: String,
    /// Written by `fleet up`; absent in registries of older versions.
    #[serde(default)]
    restarts: u32,
}

/// Runs `fleet status`.
///
/// # Errors
/// When neither Consul nor the registry can be read.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let (source, mut rows) = match &args.consul {
        Some(addr) => (format!("Consul at {addr}"), from_consul(addr).await?),
        None => {
            let path = args.data_dir.join("run/registry.json");
            (path.display().to_string(), from_registry(&path).await?)
        }
    };
    rows.sort();
    println!("source: {source}");
    println!(
        "{:<10} {:<8} {:<28} {:<9} {:<22} {:<11} RESTARTS",
        "SERVICE", "VERSION", "INSTANCE", "ZONE", "ADDRESS", "HEALTH"
    );
    for r in &rows {
        println!(
            "{:<10} {:<8} {:<28} {:<9} {:<22} {:<11} {}",
            r.service,
            r.version,
            r.instance_id,
            r.zone,
            r.addr,
            r.health,
            r.restarts.map_or_else(|| "-".to_owned(), |n| n.to_string())
        );
    }
    Ok(())
}

/// Every registered instance of every service, with its check status.
///
/// # Errors
/// When Consul cannot be asked.
pub async fn from_consul(addr: &str) -> anyhow::Result<Vec<Row>> {
    let client = ConsulClient::new(addr)?;
    let mut rows = Vec::new();
    for service in client.services().await? {
        if service == "consul" {
            continue;
        }
        let entries = client
            .health_service(&service, false, None, Duration::ZERO)
            .await?
            .value;
        rows.extend(entries.into_iter().map(|e| Row {
            service: e.service,
            version: e.meta.get("version").cloned().unwrap_or_default(),
            instance_id: e.id,
            zone: e.meta.get("zone").cloned().unwrap_or_default(),
            addr: format!("{}:{}", e.address, e.port),
            health: e.health,
            restarts: None,
        }));
    }
    Ok(rows)
}

/// The embedded registry, each instance's `/readyz` asked.
///
/// # Errors
/// When the registry cannot be read (is `fleet up` running?).
pub async fn from_registry(path: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let text = std::fs::read(path)
        .with_context(|| format!("failed to read {} (is `fleet up` running?)", path.display()))?;
    let entries: Vec<RegistryEntry> = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a registry", path.display()))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let mut rows = Vec::new();
    for e in entries {
        let health = match http
            .get(format!("http://{}/readyz", e.admin_addr))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => "ready",
            Ok(_) => "not ready",
            Err(_) => "unreachable",
        };
        rows.push(Row {
            service: e.service,
            version: e.version,
            instance_id: e.instance_id,
            zone: e.zone,
            addr: e.addr,
            health: health.to_owned(),
            restarts: Some(e.restarts),
        });
    }
    Ok(rows)
}
