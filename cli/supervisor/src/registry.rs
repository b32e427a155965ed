//! The embedded registry, `run/registry.json`: every running instance with
//! its addresses, pid and restart count.
//!
//! `fleet up` writes it on start and after every restart; `fleet status`,
//! `fleet dashboard`, the game-day runner (which signals the pids in it)
//! and Prometheus' file-based discovery (through `fleet up`) read it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::topology::Topology;

/// One instance, as the registry lists it.
#[derive(Clone, Debug, Serialize)]
pub struct RegistryEntry {
    /// Service name.
    pub service: String,
    /// Version.
    pub version: String,
    /// Instance id.
    pub instance_id: String,
    /// Main address.
    pub addr: String,
    /// Admin address.
    pub admin_addr: String,
    /// Process id.
    pub pid: u32,
    /// Zone.
    pub zone: String,
}

/// One line of `run/registry.json`: the topology's entry and how often
/// the instance was restarted.
#[derive(Serialize)]
struct RegistryLine {
    #[serde(flatten)]
    entry: RegistryEntry,
    restarts: u32,
}

/// Why the registry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The entries could not be encoded.
    #[error("failed to encode the registry")]
    Encode(#[source] serde_json::Error),
    /// The file could not be written (or moved into place).
    #[error("failed to write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `topo`'s registry to `path`, atomically (a temporary file moved
/// into place): `fleet status` and game days may read it while an instance
/// is being restarted.
///
/// # Errors
/// [`RegistryError`] when it cannot be encoded or written.
pub fn write(path: &Path, topo: &Topology) -> Result<(), RegistryError> {
    let lines: Vec<RegistryLine> = topo
        .registry()
        .into_iter()
        .zip(topo.instances())
        .map(|(entry, child)| RegistryLine {
            entry,
            restarts: child.restarts,
        })
        .collect();
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(&lines).map_err(RegistryError::Encode)?;
    std::fs::write(&tmp, text).map_err(|source| RegistryError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| RegistryError::Write {
        path: path.to_owned(),
        source,
    })
}
