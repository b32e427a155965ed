//! One service process: started, watched, signalled and stopped.
//!
//! A child is "started" once it prints its machine-readable `listening`
//! log line (which carries the addresses it actually bound, so port 0
//! works without races) and "ready" once its admin `/readyz` answers 200
//! ([`crate::ready`]). Its output goes to a log file; the last lines are
//! kept in memory so a failure can be reported with context.
//!
//! A child that crashes is started again by whoever watches it
//! ([`crate::heal`]) on the same addresses ([`RunningChild::respawn`]),
//! after a delay from [`crate::RestartBackoff`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::ready::ReadyProbe;
use crate::signal::Signal;

/// How many recent output lines a child keeps for error reports.
const TAIL_LINES: usize = 40;

/// What to run.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    /// Instance id, also the log file's name.
    pub instance_id: String,
    /// The service it runs, e.g. `catalog`.
    pub service: String,
    /// The version it runs.
    pub version: String,
    /// Program to execute.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment added to (and overriding) the inherited one.
    pub env: Vec<(String, String)>,
    /// Where its stdout and stderr go; `None` keeps only the in-memory tail.
    pub log_path: Option<PathBuf>,
}

/// Why a child could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The program could not be executed.
    #[error("failed to start {instance}")]
    Spawn {
        /// Instance id.
        instance: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited before it was listening.
    #[error("{instance} exited with {status} before listening; last output:\n{tail}")]
    ExitedEarly {
        /// Instance id.
        instance: String,
        /// Its exit status.
        status: String,
        /// Its last output lines.
        tail: String,
    },
    /// It did not become listening or ready in time.
    #[error("{instance} was not {what} within {timeout:?}; last output:\n{tail}")]
    Timeout {
        /// Instance id.
        instance: String,
        /// `listening` or `ready`.
        what: &'static str,
        /// The limit.
        timeout: Duration,
        /// Its last output lines.
        tail: String,
    },
    /// A signal could not be sent.
    #[error("failed to signal {instance}")]
    Signal {
        /// Instance id.
        instance: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// No HTTP client for the readiness probe could be built.
    #[error("failed to build an HTTP client to probe {instance}")]
    HttpClient {
        /// Instance id.
        instance: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// Waiting for the process failed.
    #[error("failed to wait for {instance}")]
    Wait {
        /// Instance id.
        instance: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The addresses a child bound, from its `listening` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The main listener (gRPC, or HTTP for the edge).
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin_addr: SocketAddr,
}

/// A running child process.
#[derive(Debug)]
pub struct RunningChild {
    /// What was started.
    pub spec: ChildSpec,
    /// Its process id.
    pub pid: u32,
    /// What it bound.
    pub bound: Bound,
    /// How many times it was started again after exiting on its own.
    pub restarts: u32,
    /// When this process was started.
    pub started_at: Instant,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl RunningChild {
    /// Starts `spec` and waits (up to `timeout`) for its `listening` line.
    ///
    /// # Errors
    /// [`SupervisorError`] when it cannot run, exits, or stays silent.
    pub async fn start(spec: ChildSpec, timeout: Duration) -> Result<Self, SupervisorError> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A supervisor that dies must not leave orphans listening on ports.
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| SupervisorError::Spawn {
            instance: spec.instance_id.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let log = match &spec.log_path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    let _ = tokio::fs::create_dir_all(dir).await;
                }
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .ok()
            }
            None => None,
        };
        let log = Arc::new(tokio::sync::Mutex::new(log));
        let (bound_tx, bound_rx) = oneshot::channel();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, tail.clone(), log.clone(), Some(bound_tx)));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, tail.clone(), log, None));
        }
        let tail_text = |t: &Arc<Mutex<VecDeque<String>>>| {
            t.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        };
        tokio::select! {
            bound = bound_rx => match bound {
                Ok(bound) => Ok(Self {
                    spec,
                    pid,
                    bound,
                    restarts: 0,
                    started_at: Instant::now(),
                    child,
                    tail,
                }),
                Err(_) => {
                    // Output closed without a listening line: it is exiting.
                    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    Err(SupervisorError::ExitedEarly {
                        instance: spec.instance_id.clone(),
                        status: match status {
                            Ok(Ok(s)) => s.to_string(),
                            _ => "unknown status".into(),
                        },
                        tail: tail_text(&tail),
                    })
                }
            },
            () = tokio::time::sleep(timeout) => Err(SupervisorError::Timeout {
                instance: spec.instance_id.clone(),
                what: "listening",
                timeout,
                tail: tail_text(&tail),
            }),
        }
    }

    /// Starts the same program again after it exited, on the addresses it
    /// had bound (callers keep their static address lists) and counting
    /// the restart; `self` is replaced only once the new process listens.
    ///
    /// # Errors
    /// [`SupervisorError`] when the new process cannot run, exits, or
    /// stays silent for `timeout` (`self` still describes the old one).
    pub async fn respawn(&mut self, timeout: Duration) -> Result<(), SupervisorError> {
        let mut spec = self.spec.clone();
        let (addr, admin) = (
            self.bound.addr.to_string(),
            self.bound.admin_addr.to_string(),
        );
        for (k, v) in &mut spec.env {
            match k.as_str() {
                "GRPC_ADDR" | "HTTP_ADDR" => v.clone_from(&addr),
                "ADMIN_ADDR" => v.clone_from(&admin),
                _ => {}
            }
        }
        let mut fresh = Self::start(spec, timeout).await?;
        fresh.restarts = self.restarts.saturating_add(1);
        *self = fresh;
        Ok(())
    }

    /// Polls `/readyz` on the admin port until it answers 200.
    ///
    /// # Errors
    /// [`SupervisorError::Timeout`] (or `ExitedEarly` if it died
    /// meanwhile; `HttpClient` if no HTTP client could be built).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), SupervisorError> {
        let probe = ReadyProbe::new().map_err(|source| SupervisorError::HttpClient {
            instance: self.spec.instance_id.clone(),
            source,
        })?;
        let give_up = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(SupervisorError::ExitedEarly {
                    instance: self.spec.instance_id.clone(),
                    status: status.to_string(),
                    tail: self.tail(),
                });
            }
            if probe.check(self.bound.admin_addr).await.is_ready() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(SupervisorError::Timeout {
                    instance: self.spec.instance_id.clone(),
                    what: "ready",
                    timeout,
                    tail: self.tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of its output.
    pub fn tail(&self) -> String {
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends SIGTERM (the start of a graceful drain).
    ///
    /// # Errors
    /// [`SupervisorError::Signal`] when the signal cannot be sent.
    pub fn terminate(&self) -> Result<(), SupervisorError> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGKILL (a crash, as far as everyone else can tell).
    ///
    /// # Errors
    /// [`SupervisorError::Signal`] when the signal cannot be sent.
    pub fn kill(&self) -> Result<(), SupervisorError> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&self, sig: Signal) -> Result<(), SupervisorError> {
        crate::signal::send(self.pid, sig).map_err(|source| SupervisorError::Signal {
            instance: self.spec.instance_id.clone(),
            source,
        })
    }

    /// Waits for the process to exit.
    ///
    /// # Errors
    /// [`SupervisorError::Wait`].
    pub async fn wait(&mut self) -> Result<ExitStatus, SupervisorError> {
        self.child
            .wait()
            .await
            .map_err(|source| SupervisorError::Wait {
                instance: self.spec.instance_id.clone(),
                source,
            })
    }

    /// Whether it has exited (without waiting).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then up to `grace` for it to drain and exit, then SIGKILL.
    /// Returns its exit status and whether it had to be killed.
    ///
    /// # Errors
    /// [`SupervisorError`] when signalling or waiting fails.
    pub async fn stop(&mut self, grace: Duration) -> Result<(ExitStatus, bool), SupervisorError> {
        if let Some(status) = self.try_exit_status() {
            return Ok((status, false));
        }
        self.terminate()?;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(r) => r
                .map(|s| (s, false))
                .map_err(|source| SupervisorError::Wait {
                    instance: self.spec.instance_id.clone(),
                    source,
                }),
            Err(_) => {
                self.kill()?;
                self.wait().await.map(|s| (s, true))
            }
        }
    }
}

/// Copies a child's output to its log and tail; on stdout, reports the
/// bound addresses from the first `listening` line.
async fn pump<R>(
    reader: R,
    tail: Arc<Mutex<VecDeque<String>>>,
    log: Arc<tokio::sync::Mutex<Option<tokio::fs::File>>>,
    mut bound_tx: Option<oneshot::Sender<Bound>>,
) where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if bound_tx.is_some()
            && let Some(bound) = parse_listening(&line)
            && let Some(tx) = bound_tx.take()
        {
            let _ = tx.send(bound);
        }
        if let Some(file) = log.lock().await.as_mut() {
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
        }
        let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// Reads the addresses out of a `listening` JSON log line.
pub fn parse_listening(line: &str) -> Option<Bound> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "listening" {
        return None;
    }
    Some(Bound {
        addr: v.get("addr")?.as_str()?.parse().ok()?,
        admin_addr: v.get("admin_addr")?.as_str()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_are_recognised() {
        let line = r#"{"timestamp":"x","level":"INFO","message":"listening","service":"dal","addr":"127.0.0.1:4100","admin_addr":"127.0.0.1:4101","target":"fleet_server::host"}"#;
        assert_eq!(
            parse_listening(line),
            Some(Bound {
                addr: "127.0.0.1:4100".parse().unwrap(),
                admin_addr: "127.0.0.1:4101".parse().unwrap()
            })
        );
        assert_eq!(parse_listening(r#"{"message":"ready"}"#), None);
        assert_eq!(parse_listening("not json"), None);
        assert_eq!(
            parse_listening(r#"{"message":"listening","addr":"x"}"#),
            None
        );
    }

    /// A child killed with SIGKILL is started again on the same
    /// addresses, with a new pid and its restart counted.
    #[tokio::test]
    async fn respawn_starts_a_killed_child_again_on_its_addresses() {
        let script = r#"echo "{\"message\":\"listening\",\"addr\":\"$GRPC_ADDR\",\"admin_addr\":\"$ADMIN_ADDR\"}"; while true; do sleep 0.05; done"#;
        let spec = ChildSpec {
            instance_id: "sh-3".into(),
            service: "sh".into(),
            version: "0".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![
                ("GRPC_ADDR".into(), "127.0.0.1:4711".into()),
                ("ADMIN_ADDR".into(), "127.0.0.1:4712".into()),
            ],
            log_path: None,
        };
        let mut child = RunningChild::start(spec, Duration::from_secs(10))
            .await
            .unwrap();
        let (old_pid, old_bound) = (child.pid, child.bound);
        child.kill().unwrap();
        child.wait().await.unwrap();
        // The child would have printed whatever it was given: pin other
        // addresses to prove respawn passes the bound ones.
        child.bound = Bound {
            addr: "127.0.0.1:5811".parse().unwrap(),
            admin_addr: "127.0.0.1:5812".parse().unwrap(),
        };
        child.respawn(Duration::from_secs(10)).await.unwrap();
        assert_ne!(child.pid, old_pid);
        assert_ne!(child.bound, old_bound);
        assert_eq!(child.bound.addr.port(), 5811);
        assert_eq!(child.bound.admin_addr.port(), 5812);
        assert_eq!(child.restarts, 1);
        assert!(child.try_exit_status().is_none(), "running");
        child.stop(Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn a_child_that_exits_early_is_reported_with_its_output() {
        let spec = ChildSpec {
            instance_id: "sh-1".into(),
            service: "sh".into(),
            version: "0".into(),
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo 'GRPC_ADDR is invalid' >&2; exit 64".into(),
            ],
            env: vec![],
            log_path: None,
        };
        let err = RunningChild::start(spec, Duration::from_secs(10))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exit status: 64"), "{msg}");
        assert!(msg.contains("GRPC_ADDR is invalid"), "{msg}");
    }

    #[tokio::test]
    async fn stop_sends_sigterm_then_waits() {
        let spec = ChildSpec {
            instance_id: "sh-2".into(),
            service: "sh".into(),
            version: "0".into(),
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                r#"trap 'exit 0' TERM; echo '{"message":"listening","addr":"127.0.0.1:1","admin_addr":"127.0.0.1:2"}'; while true; do sleep 0.05; done"#.into(),
            ],
            env: vec![],
            log_path: None,
        };
        let mut child = RunningChild::start(spec, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(child.bound.addr.port(), 1);
        let (status, killed) = child.stop(Duration::from_secs(5)).await.unwrap();
        assert!(status.success(), "{status}");
        assert!(!killed);
    }
}
