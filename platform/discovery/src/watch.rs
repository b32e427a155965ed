//! Live feeds: healthy instances from Consul health, route tables from
//! Consul KV or a file. Each runs as a task that ends when every receiver
//! is gone.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleet_rpc::{Instance, InstanceId, RouteTable};
use tokio::sync::watch;

use crate::metrics::DiscoveryMetrics;
use fleet_consul::{ConsulClient, Indexed, ServiceEntry};

/// A live route table (`None`: no table, every eligible instance).
pub type RouteReceiver = watch::Receiver<Option<Arc<RouteTable>>>;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a route file is read again.
pub const FILE_POLL: Duration = Duration::from_millis(250);

/// Turns passing entries into instances, sorted by id; entries without a
/// usable address or version are left out (and logged).
pub fn to_instances(entries: Vec<ServiceEntry>) -> Vec<Instance> {
    let mut out: Vec<Instance> = entries
        .into_iter()
        .filter_map(|e| {
            let ip: IpAddr = e.address.parse().ok().or_else(|| {
                tracing::warn!(instance = %e.id, address = %e.address, "discovered instance has no IP address; skipped");
                None
            })?;
            let version = e
                .meta
                .get("version")
                .and_then(|v| semver::Version::parse(v).ok())
                .or_else(|| {
                    tracing::warn!(instance = %e.id, "discovered instance has no version in its meta; skipped");
                    None
                })?;
            Some(Instance {
                id: InstanceId::new(e.id),
                addr: SocketAddr::new(ip, e.port),
                version,
                zone: e.meta.get("zone").cloned().unwrap_or_else(|| "unknown".into()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Watches the passing instances of `service`. The first answer is awaited
/// (at most `first_wait`); if Consul does not give one, `fallback` is used
/// until it does. On an outage the last known list stays (and
/// `fleet_discovery_stale` says so).
pub async fn watch_instances(
    client: ConsulClient,
    service: &'static str,
    fallback: Vec<Instance>,
    wait: Duration,
    first_wait: Duration,
    metrics: DiscoveryMetrics,
) -> watch::Receiver<Vec<Instance>> {
    let first = tokio::time::timeout(first_wait, client.health_service(service, true, None, wait))
        .await
        .unwrap_or_else(|_| {
            Err(crate::ConsulError::Decode {
                what: format!("health of {service}"),
                message: "no answer in time".into(),
            })
        });
    let (initial, index) = match first {
        Ok(Indexed { value, index }) => {
            let list = to_instances(value);
            metrics.synced(service, list.len());
            (list, index)
        }
        Err(error) => {
            metrics.failed(service);
            tracing::warn!(dependency = service, %error, "discovery unavailable at start; using the static list until it answers");
            (fallback, 0)
        }
    };
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(instances_loop(client, service, tx, index, wait, metrics));
    rx
}

async fn instances_loop(
    client: ConsulClient,
    service: &'static str,
    tx: watch::Sender<Vec<Instance>>,
    mut index: u64,
    wait: Duration,
    metrics: DiscoveryMetrics,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let query = client.health_service(service, true, Some(index), wait);
        let result = tokio::select! {
            r = query => r,
            () = tx.closed() => return,
        };
        match result {
            Ok(Indexed { value, index: next }) => {
                if backoff > MIN_BACKOFF {
                    tracing::info!(dependency = service, "discovery answers again");
                }
                backoff = MIN_BACKOFF;
                let list = to_instances(value);
                metrics.synced(service, list.len());
                tx.send_if_modified(|cur| {
                    if *cur == list {
                        return false;
                    }
                    tracing::info!(
                        dependency = service,
                        instances = list.len(),
                        "instances changed"
                    );
                    *cur = list;
                    true
                });
                index = next_index(index, next);
            }
            Err(error) => {
                metrics.failed(service);
                if backoff == MIN_BACKOFF {
                    tracing::warn!(dependency = service, %error, "discovery unavailable; keeping the last known instances");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                index = 0;
            }
        }
    }
}

/// Consul's rule: an index that goes backwards (or is 0) starts over.
fn next_index(prev: u64, next: u64) -> u64 {
    if next == 0 || next < prev { 0 } else { next }
}

/// What a route source said.
enum Seen {
    Absent,
    Text(Vec<u8>),
}

/// Applies a newly seen table text to `tx`: a valid table for `service`
/// replaces the current one; an invalid one is rejected whole (logged,
/// counted) and the last good table stays.
fn apply(
    service: &str,
    seen: Seen,
    tx: &watch::Sender<Option<Arc<RouteTable>>>,
    metrics: &DiscoveryMetrics,
    source: &str,
) {
    match seen {
        Seen::Absent => {
            if tx.borrow().is_some() {
                tracing::info!(
                    service,
                    source,
                    "route table removed; routing to every eligible version"
                );
            }
            tx.send_if_modified(|cur| cur.take().is_some());
        }
        Seen::Text(text) => match parse_table(service, &text) {
            Ok(table) => {
                metrics.route_update(service, true);
                tracing::info!(service, source, weights = ?table.weights, sticky = table.sticky, "route table applied");
                tx.send_replace(Some(Arc::new(table)));
            }
            Err(error) => {
                metrics.route_update(service, false);
                tracing::error!(service, source, %error, "route table rejected; the last good table stays in force");
            }
        },
    }
}

/// Parses a table and checks it is `service`'s.
///
/// # Errors
/// [`fleet_rpc::InvalidRouteTable`].
pub fn parse_table(service: &str, text: &[u8]) -> Result<RouteTable, fleet_rpc::InvalidRouteTable> {
    let table = RouteTable::from_json(text)?;
    if table.service != service {
        return Err(fleet_rpc::InvalidRouteTable(format!(
            "table is for {:?}, not {service:?}",
            table.service
        )));
    }
    Ok(table)
}

/// Watches `key` in Consul KV for `service`'s route table.
pub async fn watch_routes_kv(
    client: ConsulClient,
    service: &'static str,
    key: String,
    wait: Duration,
    first_wait: Duration,
    metrics: DiscoveryMetrics,
) -> RouteReceiver {
    let (tx, rx) = watch::channel(None);
    let mut index = 0;
    match tokio::time::timeout(first_wait, client.kv_get(&key, None, wait)).await {
        Ok(Ok(Indexed { value, index: i })) => {
            apply(
                service,
                value.map_or(Seen::Absent, Seen::Text),
                &tx,
                &metrics,
                &key,
            );
            index = i;
        }
        Ok(Err(error)) => tracing::warn!(service, %error, "route table unavailable at start"),
        Err(_) => tracing::warn!(service, "route table unavailable at start (timeout)"),
    }
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            let query = client.kv_get(&key, Some(index), wait);
            let result = tokio::select! {
                r = query => r,
                () = tx.closed() => return,
            };
            match result {
                Ok(Indexed { value, index: next }) => {
                    backoff = MIN_BACKOFF;
                    if next != index {
                        apply(
                            service,
                            value.map_or(Seen::Absent, Seen::Text),
                            &tx,
                            &metrics,
                            &key,
                        );
                    }
                    index = next_index(index, next);
                }
                Err(error) => {
                    if backoff == MIN_BACKOFF {
                        tracing::warn!(service, %error, "route table watch failed; the current table stays");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    index = 0;
                }
            }
        }
    });
    rx
}

/// Watches a route-table file (the embedded default), read every
/// [`FILE_POLL`].
pub fn watch_routes_file(
    service: &'static str,
    path: PathBuf,
    metrics: DiscoveryMetrics,
) -> RouteReceiver {
    let (tx, rx) = watch::channel(None);
    let read = move |path: &PathBuf| match std::fs::read(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            tracing::warn!(service, path = %path.display(), %error, "cannot read the route table");
            None
        }
    };
    let source = path.display().to_string();
    let mut last = read(&path);
    apply(
        service,
        last.clone().map_or(Seen::Absent, Seen::Text),
        &tx,
        &metrics,
        &source,
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FILE_POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = tx.closed() => return,
            }
            let now = read(&path);
            if now != last {
                apply(
                    service,
                    now.clone().map_or(Seen::Absent, Seen::Text),
                    &tx,
                    &metrics,
                    &source,
                );
                last = now;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(id: &str, addr: &str, version: Option<&str>) -> ServiceEntry {
        let mut meta = BTreeMap::new();
        if let Some(v) = version {
            meta.insert("version".to_owned(), v.to_owned());
        }
        meta.insert("zone".to_owned(), "z1".to_owned());
        ServiceEntry {
            id: id.into(),
            service: "catalog".into(),
            address: addr.into(),
            port: 7100,
            meta,
            tags: vec![],
            health: "passing".into(),
        }
    }

    #[test]
    fn entries_without_ip_or_version_are_left_out() {
        let list = to_instances(vec![
            entry("b", "127.0.0.2", Some("1.3.0")),
            entry("a", "127.0.0.1", Some("1.2.4")),
            entry("c", "catalog.local", Some("1.2.4")),
            entry("d", "127.0.0.4", None),
        ]);
        let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(list[0].zone, "z1");
        assert_eq!(list[1].version, semver::Version::new(1, 3, 0));
    }

    #[test]
    fn indexes_going_backwards_start_over() {
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(10, 3), 0);
        assert_eq!(next_index(10, 0), 0);
    }

    #[tokio::test]
    async fn a_bad_file_is_rejected_whole_and_the_last_good_table_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        let good = r#"{"service":"catalog","interface":1,"weights":{"1.2":90,"1.3":10}}"#;
        std::fs::write(&path, good).unwrap();
        let metrics = DiscoveryMetrics::default();
        let mut rx = watch_routes_file("catalog", path.clone(), metrics);
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().weights["1.2"], 90);

        std::fs::write(
            &path,
            r#"{"service":"catalog","interface":1,"weights":{"1.2":0}}"#,
        )
        .unwrap();
        tokio::time::sleep(FILE_POLL * 3).await;
        assert_eq!(
            rx.borrow().as_ref().unwrap().weights["1.2"],
            90,
            "bad table ignored"
        );

        std::fs::write(
            &path,
            r#"{"service":"ratings","interface":1,"weights":{"1.0":1}}"#,
        )
        .unwrap();
        tokio::time::sleep(FILE_POLL * 3).await;
        assert_eq!(
            rx.borrow().as_ref().unwrap().service,
            "catalog",
            "another service's table ignored"
        );

        std::fs::write(
            &path,
            r#"{"service":"catalog","interface":1,"weights":{"1.3":100}}"#,
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(2), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow().as_ref().unwrap().weights["1.3"], 100);
    }
}
