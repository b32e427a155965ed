//! `fleet up` (or any `fleet` command that runs until stopped) as a child
//! process: started, read until a stdout line says it is ready, stopped
//! with SIGTERM.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The variables that point a system at real backends; [`FleetUp::embedded`]
/// removes them so a CI environment's backends stay out of the run.
const REAL_BACKEND_VARS: [&str; 3] = ["CONSUL_HTTP_ADDR", "SCYLLA_NODES", "REDIS_URL"];

/// A running `fleet` process. Killed on drop; [`FleetUp::stop`] stops it
/// the way a user does (SIGTERM) and checks it exits 0.
pub struct FleetUp {
    child: Child,
    /// Its stdout lines up to and including the one that said it was
    /// ready.
    pub seen: Vec<String>,
    /// Every later stdout line (stdout keeps being read whether or not
    /// anyone receives, so the process never blocks on a full pipe).
    pub rest: mpsc::UnboundedReceiver<String>,
}

/// How to start a [`FleetUp`]: the `fleet` binary, its arguments and
/// environment, and the line that says it is ready.
pub struct FleetUpBuilder {
    command: Command,
    ready: Box<dyn Fn(&str) -> bool + Send>,
    timeout: Duration,
}

/// `fleet up`'s line once every instance passed its readiness check
/// (`all N instances ready …`).
pub fn all_instances_ready(line: &str) -> bool {
    line.starts_with("all ") && line.contains("instances ready")
}

impl FleetUp {
    /// `bin` (the `fleet` binary) to be started with `args`; by default
    /// ready at [`all_instances_ready`] within 120 s.
    pub fn command<I, S>(bin: impl AsRef<OsStr>, args: I) -> FleetUpBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(bin);
        command.args(args);
        FleetUpBuilder {
            command,
            ready: Box::new(all_instances_ready),
            timeout: Duration::from_secs(120),
        }
    }

    /// `fleet up` (at `bin`, the `fleet` binary) with the edge on `edge`
    /// and its data in `data`; more flags through the builder.
    pub fn up(bin: impl AsRef<OsStr>, edge: &str, data: impl AsRef<OsStr>) -> FleetUpBuilder {
        Self::command(bin, ["up", "--edge-addr", edge, "--data-dir"]).args([data])
    }

    /// The last line of [`FleetUp::seen`]: the one that said it was ready.
    pub fn ready_line(&self) -> &str {
        self.seen.last().map_or("", String::as_str)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<Pid> {
        self.child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
    }

    /// SIGTERM, then it must exit 0 within 60 s. [`FleetUp::rest`] still
    /// holds what it printed on the way out.
    ///
    /// # Panics
    /// When it does not.
    pub async fn stop(&mut self) {
        let pid = self.pid().unwrap_or_else(|| panic!("fleet already exited"));
        kill(pid, Signal::SIGTERM).unwrap_or_else(|e| panic!("SIGTERM to fleet: {e}"));
        let status = match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for fleet: {e}"),
            Err(_) => panic!("fleet did not stop within a minute of SIGTERM"),
        };
        assert!(status.success(), "fleet exited with {status}");
    }

    /// SIGTERM, then waits up to 60 s; how it exits is not checked.
    pub async fn terminate(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
    }
}

impl FleetUpBuilder {
    /// More arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// `fleet up`'s instance counts: catalog 1.2, catalog 1.3, catalog 2
    /// and ratings.
    #[must_use]
    pub fn instances(
        self,
        catalog_v1_2: u32,
        catalog_v1_3: u32,
        catalog_v2: u32,
        ratings: u32,
    ) -> Self {
        self.args([
            "--catalog-v1-2".to_owned(),
            catalog_v1_2.to_string(),
            "--catalog-v1-3".to_owned(),
            catalog_v1_3.to_string(),
            "--catalog-v2".to_owned(),
            catalog_v2.to_string(),
            "--ratings".to_owned(),
            ratings.to_string(),
        ])
    }

    /// No dashboard of its own (`--dashboard off`).
    #[must_use]
    pub fn no_dashboard(self) -> Self {
        self.args(["--dashboard", "off"])
    }

    /// Leaves out the variables that name real backends (Consul, Cassandra,
    /// Redis): the system runs on the embedded default whatever the
    /// environment says.
    #[must_use]
    pub fn embedded(mut self) -> Self {
        for var in REAL_BACKEND_VARS {
            self.command.env_remove(var);
        }
        self
    }

    /// Ready once a stdout line satisfies `ready` (instead of
    /// [`all_instances_ready`]).
    #[must_use]
    pub fn ready_when(mut self, ready: impl Fn(&str) -> bool + Send + 'static) -> Self {
        self.ready = Box::new(ready);
        self
    }

    /// How long it may take to get ready (instead of 120 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts it (stdout piped, stderr inherited) and returns once it is
    /// ready.
    ///
    /// # Panics
    /// When it does not start, or is not ready in time (the lines it
    /// printed are in the message).
    pub async fn start(mut self) -> FleetUp {
        let mut child = self
            .command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("fleet did not start: {e}"));
        let Some(stdout) = child.stdout.take() else {
            panic!("fleet's stdout is not piped")
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let ready = &self.ready;
        let found = tokio::time::timeout(self.timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let done = ready(&line);
                seen.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "fleet did not get ready within {:?}: {seen:#?}",
            self.timeout
        );
        let (tx, rest) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        FleetUp { child, seen, rest }
    }
}
