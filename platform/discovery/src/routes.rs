//! [`RouteStore`]: where route tables are kept, for `fleet route
//! show|set|rollback`. Setting a table keeps the one it replaces alongside
//! (`<key>.previous`), so a rollback is one write of a known-good table.
//! When no table was in force, the kept value is empty: "none", and a
//! rollback to it removes the table (every eligible version again).

use std::path::PathBuf;
use std::time::Duration;

use fleet_rpc::RouteTable;

use fleet_consul::{ConsulClient, ConsulError};

/// A route-store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteStoreError {
    /// Consul failed.
    #[error(transparent)]
    Consul(#[from] ConsulError),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The table is invalid (rejected whole; nothing was written).
    #[error(transparent)]
    Invalid(#[from] fleet_rpc::InvalidRouteTable),
    /// There is nothing to roll back to.
    #[error("no previous route table of {0} to roll back to")]
    NoPrevious(String),
}

/// What a set kept for rollback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Previous {
    /// Nothing: no table was ever replaced.
    Nothing,
    /// No table was in force before the last set (every eligible version).
    NoTable,
    /// This table was in force before the last set.
    Table(RouteTable),
}

/// Where route tables live.
#[derive(Clone, Debug)]
pub enum RouteStore {
    /// Consul KV: `<prefix><service>` (and `<prefix><service>.previous`).
    Consul {
        /// The agent.
        client: ConsulClient,
        /// Key prefix, e.g. `fleet/routes/`.
        prefix: String,
    },
    /// Files: `<dir>/<service>.json` (and `<service>.previous.json`).
    Dir(PathBuf),
}

impl RouteStore {
    fn name(&self, service: &str, previous: bool) -> String {
        let suffix = if previous { ".previous" } else { "" };
        match self {
            Self::Consul { prefix, .. } => format!("{prefix}{service}{suffix}"),
            Self::Dir(dir) => dir
                .join(format!("{service}{suffix}.json"))
                .display()
                .to_string(),
        }
    }

    async fn read(
        &self,
        service: &str,
        previous: bool,
    ) -> Result<Option<Vec<u8>>, RouteStoreError> {
        let name = self.name(service, previous);
        match self {
            Self::Consul { client, .. } => {
                Ok(client.kv_get(&name, None, Duration::ZERO).await?.value)
            }
            Self::Dir(_) => match std::fs::read(&name) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(RouteStoreError::Io { path: name, source }),
            },
        }
    }

    async fn write(
        &self,
        service: &str,
        previous: bool,
        text: &[u8],
    ) -> Result<(), RouteStoreError> {
        let name = self.name(service, previous);
        match self {
            Self::Consul { client, .. } => Ok(client.kv_put(&name, text).await?),
            Self::Dir(dir) => {
                let io = |source| RouteStoreError::Io {
                    path: name.clone(),
                    source,
                };
                std::fs::create_dir_all(dir).map_err(io)?;
                // Written whole then renamed, so a watcher never reads half.
                let tmp = format!("{name}.tmp");
                std::fs::write(&tmp, text).map_err(io)?;
                std::fs::rename(&tmp, &name).map_err(io)
            }
        }
    }

    async fn remove(&self, service: &str) -> Result<(), RouteStoreError> {
        let name = self.name(service, false);
        match self {
            Self::Consul { client, .. } => Ok(client.kv_delete(&name).await?),
            Self::Dir(_) => match std::fs::remove_file(&name) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(RouteStoreError::Io { path: name, source }),
            },
        }
    }

    /// Puts `table` in force only where the service has no table yet (what
    /// `fleet up` and compose's `routes-seed` do with the default tables);
    /// an existing table, even one set by hand, is left alone. Returns
    /// whether it was written.
    ///
    /// # Errors
    /// [`RouteStoreError`]; an invalid table writes nothing.
    pub async fn seed(&self, table: &RouteTable) -> Result<bool, RouteStoreError> {
        table.validate()?;
        let text = serde_json::to_vec_pretty(table)
            .map_err(|e| fleet_rpc::InvalidRouteTable(e.to_string()))?;
        let name = self.name(&table.service, false);
        match self {
            Self::Consul { client, .. } => Ok(client.kv_create(&name, &text).await?),
            Self::Dir(dir) => {
                let io = |source| RouteStoreError::Io {
                    path: name.clone(),
                    source,
                };
                std::fs::create_dir_all(dir).map_err(io)?;
                // Written whole, then linked into place: the link fails if
                // the table exists, so a racing writer is never overwritten
                // and a watcher never reads half a file.
                let tmp = format!("{name}.seed.{}", std::process::id());
                std::fs::write(&tmp, &text).map_err(io)?;
                let linked = std::fs::hard_link(&tmp, &name);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(source) => Err(io(source)),
                }
            }
        }
    }

    /// The table in force (`None` when there is none).
    ///
    /// # Errors
    /// [`RouteStoreError`]; a stored table that is invalid is
    /// [`RouteStoreError::Invalid`].
    pub async fn show(&self, service: &str) -> Result<Option<RouteTable>, RouteStoreError> {
        self.read(service, false)
            .await?
            .map(|t| crate::parse_table(service, &t).map_err(Into::into))
            .transpose()
    }

    /// What the last set kept for rollback.
    ///
    /// # Errors
    /// [`RouteStoreError`].
    pub async fn previous(&self, service: &str) -> Result<Previous, RouteStoreError> {
        Ok(match self.read(service, true).await? {
            None => Previous::Nothing,
            Some(t) if t.is_empty() => Previous::NoTable,
            Some(t) => Previous::Table(crate::parse_table(service, &t)?),
        })
    }

    /// Validates `table` and puts it in force, keeping what was in force
    /// as the previous — a table, or "none" (an empty value) when there was
    /// no table. An invalid table changes nothing.
    ///
    /// # Errors
    /// [`RouteStoreError`].
    pub async fn set(&self, table: &RouteTable) -> Result<(), RouteStoreError> {
        table.validate()?;
        let text = serde_json::to_vec_pretty(table)
            .map_err(|e| fleet_rpc::InvalidRouteTable(e.to_string()))?;
        match self.read(&table.service, false).await? {
            Some(current) if crate::parse_table(&table.service, &current).is_ok() => {
                self.write(&table.service, true, &current).await?;
            }
            // An invalid stored table was never in force (watchers kept the
            // last good one, which we cannot know here): keep what was kept.
            Some(_) => {}
            None => self.write(&table.service, true, b"").await?,
        }
        self.write(&table.service, false, &text).await
    }

    /// Puts back what was in force before the last set — a table, or no
    /// table at all (then the table is removed and every eligible version
    /// serves again). What it replaces becomes the previous, so a second
    /// rollback rolls forward again. Returns the table now in force.
    ///
    /// # Errors
    /// [`RouteStoreError::NoPrevious`] when nothing was kept.
    pub async fn rollback(&self, service: &str) -> Result<Option<RouteTable>, RouteStoreError> {
        let Some(previous) = self.read(service, true).await? else {
            return Err(RouteStoreError::NoPrevious(service.to_owned()));
        };
        let restored = if previous.is_empty() {
            None
        } else {
            Some(crate::parse_table(service, &previous)?)
        };
        let current = self.read(service, false).await?.unwrap_or_default();
        self.write(service, true, &current).await?;
        match restored {
            Some(_) => self.write(service, false, &previous).await?,
            None => self.remove(service).await?,
        }
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_keeps_the_previous_and_rollback_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RouteStore::Dir(dir.path().to_path_buf());
        let t = |w12, w13| RouteTable {
            service: "catalog".into(),
            interface: 1,
            weights: [("1.2".to_owned(), w12), ("1.3".to_owned(), w13)].into(),
            sticky: false,
        };
        assert_eq!(store.show("catalog").await.unwrap(), None);
        assert_eq!(store.previous("catalog").await.unwrap(), Previous::Nothing);
        store.set(&t(90, 10)).await.unwrap();
        store.set(&t(0, 100)).await.unwrap();
        assert_eq!(store.show("catalog").await.unwrap(), Some(t(0, 100)));
        assert!(store.set(&t(0, 0)).await.is_err(), "invalid: rejected");
        assert_eq!(store.show("catalog").await.unwrap(), Some(t(0, 100)));
        assert_eq!(store.rollback("catalog").await.unwrap(), Some(t(90, 10)));
        assert_eq!(store.show("catalog").await.unwrap(), Some(t(90, 10)));
        assert_eq!(
            store.previous("catalog").await.unwrap(),
            Previous::Table(t(0, 100))
        );
        assert!(matches!(
            store.rollback("ratings").await,
            Err(RouteStoreError::NoPrevious(_))
        ));
    }

    #[tokio::test]
    async fn rollback_after_the_first_set_restores_no_table_and_rolls_forward_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = RouteStore::Dir(dir.path().to_path_buf());
        let t = RouteTable {
            service: "catalog".into(),
            interface: 1,
            weights: [("1.3".to_owned(), 100)].into(),
            sticky: false,
        };
        store.set(&t).await.unwrap();
        assert_eq!(store.previous("catalog").await.unwrap(), Previous::NoTable);
        assert_eq!(store.rollback("catalog").await.unwrap(), None);
        assert_eq!(store.show("catalog").await.unwrap(), None, "table removed");
        assert!(!dir.path().join("catalog.json").exists());
        assert_eq!(
            store.previous("catalog").await.unwrap(),
            Previous::Table(t.clone())
        );
        assert_eq!(store.rollback("catalog").await.unwrap(), Some(t.clone()));
        assert_eq!(store.show("catalog").await.unwrap(), Some(t));
    }

    #[tokio::test]
    async fn seeding_writes_only_where_no_table_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = RouteStore::Dir(dir.path().to_path_buf());
        let t = |w12, w13| RouteTable {
            service: "catalog".into(),
            interface: 1,
            weights: [("1.2".to_owned(), w12), ("1.3".to_owned(), w13)].into(),
            sticky: true,
        };
        assert!(store.seed(&t(90, 10)).await.unwrap());
        assert_eq!(store.show("catalog").await.unwrap(), Some(t(90, 10)));
        store.set(&t(50, 50)).await.unwrap();
        assert!(!store.seed(&t(90, 10)).await.unwrap(), "a set table stays");
        assert_eq!(store.show("catalog").await.unwrap(), Some(t(50, 50)));
        assert!(
            store.seed(&t(0, 0)).await.is_err(),
            "invalid: nothing written"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file left behind"
        );
    }
}
