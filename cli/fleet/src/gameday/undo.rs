//! The undo log: what a run changed that must be put back, kept on disk
//! while the run lasts.
//!
//! Every fault rule the runner adds is written here (instance, admin URL,
//! rule id) before the next activity starts, together with the experiment
//! file whose rollbacks must run. The runner removes the file once its
//! rollbacks are done. If the runner dies instead (SIGKILL, a crash, a
//! power cut), the file stays, and the next `fleet gameday run` on the same
//! system replays it — the experiment's rollbacks, then every recorded
//! undo step — before it starts anything new. Each rule also carries a TTL,
//! the last guard should even that never happen.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::gameday::command::TargetArgs;
use crate::gameday::target::{Target, compose_start_cmd, run_capture};

/// One thing to put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UndoStep {
    /// Delete fault rule `id` on the instance at `admin_url`.
    RemoveFault {
        /// Instance id.
        instance: String,
        /// Its admin base URL.
        admin_url: String,
        /// The rule's id.
        id: u64,
    },
    /// `docker compose start` a stopped service.
    ComposeStart {
        /// The compose service.
        service: String,
    },
    /// Delete a Toxiproxy toxic.
    RemoveToxic {
        /// Toxiproxy's API base URL.
        api: String,
        /// The proxy.
        proxy: String,
        /// The toxic's name.
        toxic: String,
    },
    /// Enable a Toxiproxy proxy again.
    EnableProxy {
        /// Toxiproxy's API base URL.
        api: String,
        /// The proxy.
        proxy: String,
    },
}

/// The file's contents.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UndoState {
    /// The experiment whose rollbacks must run.
    pub experiment: Option<PathBuf>,
    /// The runner's pid (a live one means a run is in progress).
    pub runner_pid: u32,
    /// When the run started (RFC 3339).
    pub started: String,
    /// Steps, oldest first.
    pub steps: Vec<UndoStep>,
}

/// Why the undo log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// Reading or writing the file failed.
    #[error("rollback file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Another run is in progress.
    #[error("another game day (pid {pid}) is running against this system (rollback file {path})")]
    Busy {
        /// Its pid.
        pid: u32,
        /// The file.
        path: PathBuf,
    },
}

/// The undo log of one run.
#[derive(Debug)]
pub struct UndoLog {
    path: Option<PathBuf>,
    state: Mutex<UndoState>,
}

impl UndoLog {
    /// A log kept only in memory (single CLI actions).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            state: Mutex::new(UndoState::default()),
        }
    }

    /// A log persisted at `path`, for a run of `experiment`. Writes the
    /// file at once, so even a crash before the first action leaves a
    /// record.
    ///
    /// # Errors
    /// [`UndoError`].
    pub fn create(path: &Path, experiment: &Path) -> Result<Self, UndoError> {
        let log = Self {
            path: Some(path.to_owned()),
            state: Mutex::new(UndoState {
                experiment: Some(std::path::absolute(experiment).unwrap_or(experiment.to_owned())),
                runner_pid: std::process::id(),
                started: crate::gameday::journal::now_rfc3339(),
                steps: Vec::new(),
            }),
        };
        log.save()?;
        Ok(log)
    }

    /// Reads a leftover file, if any: `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`UndoError::Busy`] when its runner is still alive; `File` when it
    /// cannot be read.
    pub fn leftover(path: &Path) -> Result<Option<UndoState>, UndoError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(UndoError::File {
                    path: path.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        let state: UndoState = serde_json::from_slice(&bytes).map_err(|e| UndoError::File {
            path: path.to_owned(),
            message: format!("unreadable ({e}); check it and remove it by hand"),
        })?;
        if state.runner_pid != std::process::id() && pid_alive(state.runner_pid) {
            return Err(UndoError::Busy {
                pid: state.runner_pid,
                path: path.to_owned(),
            });
        }
        Ok(Some(state))
    }

    /// Records a step (and saves the file).
    pub fn push(&self, step: UndoStep) {
        self.lock().steps.push(step);
        if let Err(e) = self.save() {
            eprintln!("fleet gameday: {e}");
        }
    }

    /// Forgets the fault rules of these instances (they were cleared).
    pub fn forget_faults(&self, instances: &[String]) {
        self.lock().steps.retain(|s| match s {
            UndoStep::RemoveFault { instance, .. } => !instances.contains(instance),
            _ => true,
        });
        let _ = self.save();
    }

    /// Takes every step out (newest first), leaving the log empty.
    pub fn take(&self) -> Vec<UndoStep> {
        let mut steps = std::mem::take(&mut self.lock().steps);
        steps.reverse();
        let _ = self.save();
        steps
    }

    /// Removes the file: the run ended and everything was put back.
    pub fn finish(&self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UndoState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn save(&self) -> Result<(), UndoError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(&*self.lock()).unwrap_or_default();
        let tmp = path.with_extension("json.tmp");
        let err = |e: std::io::Error| UndoError::File {
            path: path.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Carries out one undo step; returns a line for the journal.
///
/// # Errors
/// A message when the step could not be done (a rule already gone counts
/// as done).
pub async fn apply(
    step: &UndoStep,
    target: &Target,
    args: &TargetArgs,
    http: &reqwest::Client,
) -> Result<String, String> {
    match step {
        UndoStep::RemoveFault {
            instance,
            admin_url,
            id,
        } => {
            let token = target.admin_token().map_err(|e| e.to_string())?;
            let resp = http
                .delete(format!("{admin_url}/admin/faults/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| format!("{instance}: {e}"))?;
            match resp.status().as_u16() {
                204 => Ok(format!("removed fault rule {id} on {instance}")),
                404 => Ok(format!("fault rule {id} on {instance} was already gone")),
                s => Err(format!("{instance}: removing fault rule {id} answered {s}")),
            }
        }
        UndoStep::ComposeStart { service } => {
            let cmd = compose_start_cmd(args, service);
            run_capture(&cmd).await.map_err(|e| e.to_string())?;
            Ok(format!("started {service} again"))
        }
        UndoStep::RemoveToxic { api, proxy, toxic } => {
            fleet_supervisor::toxiproxy::remove_toxic(http, api, proxy, toxic)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("removed toxic {toxic} from {proxy}"))
        }
        UndoStep::EnableProxy { api, proxy } => {
            fleet_supervisor::toxiproxy::set_enabled(http, api, proxy, true)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("enabled proxy {proxy} again"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_written_at_every_step_and_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rb.json");
        let log = UndoLog::create(&path, Path::new("gamedays/x.json")).unwrap();
        let on_disk =
            || -> UndoState { serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap() };
        assert!(on_disk().steps.is_empty());
        log.push(UndoStep::RemoveFault {
            instance: "catalog-v13-1".into(),
            admin_url: "http://127.0.0.1:1".into(),
            id: 7,
        });
        log.push(UndoStep::ComposeStart {
            service: "dal-1".into(),
        });
        assert_eq!(on_disk().steps.len(), 2);
        log.forget_faults(&["catalog-v13-1".into()]);
        assert_eq!(
            on_disk().steps,
            [UndoStep::ComposeStart {
                service: "dal-1".into()
            }]
        );
        // Our own pid is alive, but it is ours: a leftover, not a busy run.
        assert!(UndoLog::leftover(&path).unwrap().is_some());
        assert_eq!(log.take().len(), 1);
        log.finish();
        assert!(UndoLog::leftover(&path).unwrap().is_none());
    }

    #[test]
    fn a_live_runner_is_not_replayed_under_its_feet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rb.json");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let state = UndoState {
            runner_pid: child.id(),
            ..UndoState::default()
        };
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let err = UndoLog::leftover(&path).unwrap_err().to_string();
        assert!(err.contains("is running"), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            UndoLog::leftover(&path).unwrap().is_some(),
            "dead runner: replay"
        );
        std::fs::write(&path, "garbage").unwrap();
        assert!(
            UndoLog::leftover(&path)
                .unwrap_err()
                .to_string()
                .contains("unreadable")
        );
    }
}
