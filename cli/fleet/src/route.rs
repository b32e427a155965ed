//! `fleet route show|set|rollback`: read and change a service's routing
//! table — in Consul KV when `CONSUL_HTTP_ADDR` is set, else in the
//! embedded default's files (`ROUTES_DIR`, default `./data/run/routes`,
//! which `fleet up` writes and every instance watches). Setting a table
//! keeps the replaced one alongside; `rollback` puts it back.

use std::path::PathBuf;

use anyhow::Context as _;
use fleet_discovery::{ConsulClient, DEFAULT_KV_PREFIX, RouteStore};
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
    /// The Consul agent holding the tables (`fleet/routes/<service>`).
    #[arg(long, global = true, env = "CONSUL_HTTP_ADDR")]
    pub consul: Option<String>,
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
            prefix: DEFAULT_KV_PREFIX.to_owned(),
        },
        None => RouteStore::Dir(args.routes_dir.clone()),
    };
    let service = args.service.as_str();
    match args.action {
        RouteAction::Show => {
            let current = store.show(service).await?;
            let previous = store.previous(service).await.ok().flatten();
            println!("in force: {}", describe(current.as_ref()));
            println!("previous: {}", describe(previous.as_ref()));
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
            println!("rolled back; in force: {}", describe(Some(&table)));
        }
    }
    Ok(())
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
