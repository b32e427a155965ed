//! `fleet route show|set|rollback`: read and change a service's routing
//! table — in Consul KV when `CONSUL_HTTP_ADDR` is set, else in the
//! embedded default's files (`ROUTES_DIR`, default `./data/run/routes`,
//! which `fleet up` writes and every instance watches). Setting a table
//! keeps what it replaced alongside — a table, or "none" when there was no
//! table — and `rollback` puts that back.

use std::path::PathBuf;

use anyhow::Context as _;
use fleet_discovery::{ConsulClient, DEFAULT_KV_PREFIX, Previous, RouteStore};
use fleet_rpc::{MajorMinor, RouteTable};

/// Flags of `fleet route`.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: RouteAction,
    /// The service whose table is read or changed.
    #[arg(long, global = true, default_value = "catalog")]
    pub service: String,
    /// The Consul agent holding the tables (`<prefix><service>`).
    #[arg(long, global = true, env = "CONSUL_HTTP_ADDR")]
    pub consul: Option<String>,
    /// With Consul: the KV prefix of the tables, as the instances'
    /// `ROUTES_KV_PREFIX`.
    #[arg(long, global = true, env = "ROUTES_KV_PREFIX", default_value = DEFAULT_KV_PREFIX)]
    pub kv_prefix: String,
    /// Without Consul: the directory of `<service>.json` tables.
    #[arg(
        long,
        global = true,
        env = "ROUTES_DIR",
        default_value = "./data/run/routes"
    )]
    pub routes_dir: PathBuf,
}

/// `fleet route` actions.
#[derive(Debug, clap::Subcommand)]
pub enum RouteAction {
    /// Print the table in force and the one kept for rollback.
    Show,
    /// Put a new table in force (validated first: an invalid table changes
    /// nothing).
    Set {
        /// Weights per major.minor, e.g. `1.2=90,1.3=10`.
        #[arg(long, conflicts_with = "file")]
        weights: Option<String>,
        /// Route by a stable hash of the user id (A/B cohorts).
        #[arg(long)]
        sticky: bool,
        /// A whole table as JSON (the deploy/routes format).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Put the previous table back in force.
    Rollback,
}

/// Runs `fleet route`.
///
/// # Errors
/// When the store cannot be reached or the table is invalid.
pub async fn run(args: RouteArgs) -> anyhow::Result<()> {
    let store = match &args.consul {
        Some(addr) => RouteStore::Consul {
            client: ConsulClient::new(addr)?,
            prefix: args.kv_prefix.clone(),
        },
        None => RouteStore::Dir(args.routes_dir.clone()),
    };
    let service = args.service.as_str();
    match args.action {
        RouteAction::Show => {
            let current = store.show(service).await?;
            let previous = match store.previous(service).await? {
                Previous::Nothing => "nothing to roll back to".to_owned(),
                Previous::NoTable => describe(None),
                Previous::Table(t) => describe(Some(&t)),
            };
            println!("in force: {}", describe(current.as_ref()));
            println!("previous: {previous}");
        }
        RouteAction::Set {
            weights,
            sticky,
            file,
        } => {
            let table = match (weights, file) {
                (_, Some(path)) => {
                    let text = std::fs::read(&path)
                        .with_context(|| format!("failed to read {}", path.display()))?;
                    fleet_discovery::parse_table(service, &text)?
                }
                (Some(w), None) => parse_weights(service, &w, sticky)?,
                (None, None) => anyhow::bail!("give --weights 1.2=90,1.3=10 or --file table.json"),
            };
            store.set(&table).await?;
            println!("in force: {}", describe(Some(&table)));
        }
        RouteAction::Rollback => {
            let table = store.rollback(service).await?;
            println!("rolled back; in force: {}", describe(table.as_ref()));
        }
    }
    Ok(())
}

/// The default route tables, one per routed service: the files compose's
/// `routes-seed` and Kubernetes' `routes-seed` Job put into Consul KV.
pub const DEFAULT_TABLES: [(&str, &str); 2] = [
    (
        "catalog",
        include_str!("../../../deploy/routes/catalog.json"),
    ),
    (
        "ratings",
        include_str!("../../../deploy/routes/ratings.json"),
    ),
];

/// Puts each default table in force where its service has none yet (a
/// table already there — set by hand, or kept from an earlier run — is
/// left alone). Returns the services whose table was written.
///
/// # Errors
/// When the store fails, or a default table is invalid.
pub async fn seed_defaults(store: &RouteStore) -> anyhow::Result<Vec<&'static str>> {
    let mut written = Vec::new();
    for (service, text) in DEFAULT_TABLES {
        let table = fleet_discovery::parse_table(service, text.as_bytes())
            .with_context(|| format!("the default route table of {service} is invalid"))?;
        if store
            .seed(&table)
            .await
            .with_context(|| format!("failed to seed the route table of {service}"))?
        {
            written.push(service);
        }
    }
    Ok(written)
}

fn describe(t: Option<&RouteTable>) -> String {
    match t {
        None => "none (every eligible version)".to_owned(),
        Some(t) => format!(
            "{} v{} {}{}",
            t.service,
            t.interface,
            t.weights
                .iter()
                .map(|(v, w)| format!("{v}={w}"))
                .collect::<Vec<_>>()
                .join(","),
            if t.sticky { " sticky" } else { "" }
        ),
    }
}

/// `1.2=90,1.3=10` → a validated table.
///
/// # Errors
/// When an item is not `major.minor=weight` or the table is invalid.
pub fn parse_weights(service: &str, text: &str, sticky: bool) -> anyhow::Result<RouteTable> {
    let mut weights = std::collections::BTreeMap::new();
    let mut interface = None;
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (v, w) = item
            .split_once('=')
            .with_context(|| format!("{item:?} is not major.minor=weight"))?;
        let mm = MajorMinor::parse(v).with_context(|| format!("{v:?} is not major.minor"))?;
        let w: u32 = w
            .trim()
            .parse()
            .with_context(|| format!("weight {w:?} is not a whole number"))?;
        interface.get_or_insert(mm.major);
        weights.insert(mm.to_string(), w);
    }
    let table = RouteTable {
        service: service.to_owned(),
        interface: interface.unwrap_or(1),
        weights,
        sticky,
    };
    table.validate()?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_default_tables_are_valid_and_seeded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = RouteStore::Dir(dir.path().to_path_buf());
        assert_eq!(
            seed_defaults(&store).await.unwrap(),
            vec!["catalog", "ratings"]
        );
        let catalog = store.show("catalog").await.unwrap().unwrap();
        assert_eq!(catalog.weights["1.2"], 90);
        assert_eq!(catalog.weights["1.3"], 10);
        assert!(catalog.sticky);
        assert!(seed_defaults(&store).await.unwrap().is_empty());
    }

    #[test]
    fn weights_parse_into_a_valid_table() {
        let t = parse_weights("catalog", "1.2=90, 1.3=10", true).unwrap();
        assert_eq!(t.weights["1.2"], 90);
        assert!(t.sticky);
        assert!(parse_weights("catalog", "1.2=0", false).is_err());
        assert!(parse_weights("catalog", "1.2=90,2.0=10", false).is_err());
        assert!(parse_weights("catalog", "1.2", false).is_err());
    }
}
