//! [`RouteStore`]: where route tables are kept, for `fleet route
//! show|set|rollback`. Setting a table keeps the one it replaces alongside
//! (`<key>.previous`), so a rollback is one write of a known-good table.

use std::path::PathBuf;
use std::time::Duration;

use fleet_rpc::RouteTable;

use crate::consul::{ConsulClient, ConsulError};

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

    /// The table kept for rollback, if any.
    ///
    /// # Errors
    /// [`RouteStoreError`].
    pub async fn previous(&self, service: &str) -> Result<Option<RouteTable>, RouteStoreError> {
        self.read(service, true)
            .await?
            .map(|t| crate::parse_table(service, &t).map_err(Into::into))
            .transpose()
    }

    /// Validates `table` and puts it in force, keeping the current one as
    /// the previous. An invalid table changes nothing.
    ///
    /// # Errors
    /// [`RouteStoreError`].
    pub async fn set(&self, table: &RouteTable) -> Result<(), RouteStoreError> {
        table.validate()?;
        let text = serde_json::to_vec_pretty(table)
            .map_err(|e| fleet_rpc::InvalidRouteTable(e.to_string()))?;
        if let Some(current) = self.read(&table.service, false).await?
            && crate::parse_table(&table.service, &current).is_ok()
        {
            self.write(&table.service, true, &current).await?;
        }
        self.write(&table.service, false, &text).await
    }

    /// Puts the previous table back in force (the replaced one becomes the
    /// previous, so a second rollback rolls forward again).
    ///
    /// # Errors
    /// [`RouteStoreError::NoPrevious`] when there is none.
    pub async fn rollback(&self, service: &str) -> Result<RouteTable, RouteStoreError> {
        let Some(previous) = self.read(service, true).await? else {
            return Err(RouteStoreError::NoPrevious(service.to_owned()));
        };
        let table = crate::parse_table(service, &previous)?;
        if let Some(current) = self.read(service, false).await? {
            self.write(service, true, &current).await?;
        }
        self.write(service, false, &previous).await?;
        Ok(table)
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
        store.set(&t(90, 10)).await.unwrap();
        store.set(&t(0, 100)).await.unwrap();
        assert_eq!(store.show("catalog").await.unwrap(), Some(t(0, 100)));
        assert!(store.set(&t(0, 0)).await.is_err(), "invalid: rejected");
        assert_eq!(store.show("catalog").await.unwrap(), Some(t(0, 100)));
        assert_eq!(store.rollback("catalog").await.unwrap(), t(90, 10));
        assert_eq!(store.show("catalog").await.unwrap(), Some(t(90, 10)));
        assert_eq!(store.previous("catalog").await.unwrap(), Some(t(0, 100)));
        assert!(matches!(
            store.rollback("ratings").await,
            Err(RouteStoreError::NoPrevious(_))
        ));
    }
}
