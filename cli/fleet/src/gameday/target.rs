//! The system under test, and how each action name maps onto it.
//!
//! | action | embedded (`fleet up`) | compose | k8s |
//! |---|---|---|---|
//! | kill | SIGKILL to the pid in `run/registry.json` | `docker compose kill -s SIGKILL <svc>` | `kubectl delete pod <pod> --grace-period=0 --force` |
//! | stop | SIGTERM (drain) | `docker compose stop <svc>` | `kubectl delete pod <pod>` |
//! | restart | SIGTERM, then wait for the supervisor's new pid to be ready | `docker compose restart <svc>` | `kubectl delete pod <pod> --wait`, then `kubectl wait` for the replacement |
//! | fault | admin API of each chosen instance | same, on published admin ports | same |
//!
//! Embedded instances are found in `fleet up`'s `run/registry.json` (read
//! afresh for every action: restarts change pids), and the admin token in
//! `run/admin-token`. Before a signal is sent, the pid's command line is
//! checked to still be a `fleet service <name>` process, so a pid reused
//! by something else is never signalled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_edge_client::fault_signature::GamedayKey;
use fleet_supervisor::ready::{Readiness, ReadyProbe};
use fleet_supervisor::signal::Signal;
use fleet_supervisor::toxiproxy::normalize_url;
use serde::Deserialize;

use crate::gameday::command::{Pick, ServiceArg, TargetArgs, TargetKind};

/// Why an action could not be carried out on the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `fleet up`'s run files are missing or unreadable.
    #[error("cannot read {path}: {message} (is `fleet up --data-dir …` running?)")]
    RunFiles {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// No instance matched.
    #[error("no {what} instance matches")]
    NoInstance {
        /// What was asked for.
        what: String,
    },
    /// A signal could not be sent.
    #[error("cannot signal {instance} (pid {pid}): {message}")]
    Signal {
        /// Instance id.
        instance: String,
        /// Its pid.
        pid: u32,
        /// Why.
        message: String,
    },
    /// The instance did not come back.
    #[error("{instance} was not ready again within {waited:?}: {message}")]
    NotBack {
        /// Instance id.
        instance: String,
        /// How long was waited.
        waited: Duration,
        /// What was seen last.
        message: String,
    },
    /// An external command failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        message: String,
    },
    /// Not possible on this target.
    #[error("{0}")]
    Unsupported(String),
}

/// One instance in `fleet up`'s registry (extra keys are ignored).
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Instance {
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
}

/// The system under test.
#[derive(Clone, Debug)]
pub struct Target {
    /// Which kind.
    pub kind: TargetKind,
    args: TargetArgs,
}

/// A command to run (program and arguments), kept apart so the exact
/// commands for compose and k8s can be tested without Docker or a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd(pub Vec<String>);

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// The signal-level action names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chaos {
    /// SIGKILL / force delete.
    Kill,
    /// Graceful stop.
    Stop,
    /// Stop and wait for it to be back.
    Restart,
}

impl Chaos {
    /// The action's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

impl Target {
    /// The target described by `args`.
    pub fn new(args: TargetArgs) -> Self {
        Self {
            kind: args.target,
            args,
        }
    }

    /// How the target was described.
    pub fn args(&self) -> &TargetArgs {
        &self.args
    }

    /// `fleet up`'s run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.args.data_dir.join("run")
    }

    /// The registry (embedded only).
    ///
    /// # Errors
    /// [`TargetError::RunFiles`].
    pub fn registry(&self) -> Result<Vec<Instance>, TargetError> {
        let path = self.run_dir().join("registry.json");
        let text = std::fs::read(&path).map_err(|e| TargetError::RunFiles {
            path: path.clone(),
            message: e.to_string(),
        })?;
        serde_json::from_slice(&text).map_err(|e| TargetError::RunFiles {
            path,
            message: e.to_string(),
        })
    }

    /// The admin token: `--admin-token`, else `run/admin-token`.
    ///
    /// # Errors
    /// [`TargetError::RunFiles`].
    pub fn admin_token(&self) -> Result<String, TargetError> {
        if let Some(t) = &self.args.admin_token {
            return Ok(t.expose().to_owned());
        }
        let path = self.run_dir().join("admin-token");
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| TargetError::RunFiles {
                path,
                message: e.to_string(),
            })
    }

    /// The game-day key: `--gameday-key`, else `run/gameday-key`.
    ///
    /// # Errors
    /// [`TargetError::RunFiles`] when it cannot be read or is too short.
    pub fn gameday_key(&self) -> Result<GamedayKey, TargetError> {
        let (secret, path) = match &self.args.gameday_key {
            Some(k) => (k.expose().to_owned(), PathBuf::from("--gameday-key")),
            None => {
                let path = self.run_dir().join("gameday-key");
                let text = std::fs::read_to_string(&path).map_err(|e| TargetError::RunFiles {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                (text.trim().to_owned(), path)
            }
        };
        GamedayKey::new(&secret).map_err(|e| TargetError::RunFiles {
            path,
            message: e.to_string(),
        })
    }

    /// Toxiproxy's API base URL: `--toxiproxy`, else the one
    /// `fleet up --toxiproxy` wrote to `run/toxiproxy.json`.
    ///
    /// # Errors
    /// [`TargetError::RunFiles`] when neither says.
    pub fn toxiproxy_api(&self) -> Result<String, TargetError> {
        if let Some(u) = &self.args.toxiproxy {
            return Ok(normalize_url(u));
        }
        let path = self.run_dir().join("toxiproxy.json");
        let text = std::fs::read(&path).map_err(|e| TargetError::RunFiles {
            path: path.clone(),
            message: format!("{e} (start fleet up with --toxiproxy, or give --toxiproxy)"),
        })?;
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| TargetError::RunFiles {
                path: path.clone(),
                message: e.to_string(),
            })?;
        v.get("api")
            .and_then(serde_json::Value::as_str)
            .map(normalize_url)
            .ok_or_else(|| TargetError::RunFiles {
                path,
                message: "no `api` key".into(),
            })
    }

    /// Prometheus's base URL: `--prometheus`, else the one `fleet up
    /// --observability` wrote to `run/observability.json` (embedded),
    /// else `http://127.0.0.1:9090` (compose publishes it there).
    pub fn prometheus_url(&self) -> String {
        if let Some(u) = &self.args.prometheus {
            return normalize_url(u);
        }
        if self.kind == TargetKind::Embedded
            && let Some(u) = crate::observability::recorded_url(&self.args.data_dir)
        {
            return normalize_url(&u);
        }
        "http://127.0.0.1:9090".into()
    }

    /// The edge's base URL.
    ///
    /// # Errors
    /// [`TargetError`] when the registry cannot be read (embedded).
    pub fn edge_url(&self) -> Result<String, TargetError> {
        if let Some(u) = &self.args.edge_url {
            return Ok(u.trim_end_matches('/').to_owned());
        }
        if self.kind != TargetKind::Embedded {
            return Ok("http://127.0.0.1:8080".into());
        }
        self.registry()?
            .into_iter()
            .find(|i| i.service == "edge")
            .map(|i| format!("http://{}", i.addr))
            .ok_or_else(|| TargetError::NoInstance {
                what: "edge".into(),
            })
    }

    /// The admin base URLs of the chosen instances (embedded; on compose
    /// and k8s the admin ports are not published to the runner).
    ///
    /// # Errors
    /// [`TargetError`].
    pub fn admin_urls(
        &self,
        service: ServiceArg,
        version: Option<&str>,
        pick: &Pick,
    ) -> Result<Vec<(String, String)>, TargetError> {
        if self.kind != TargetKind::Embedded {
            return Err(TargetError::Unsupported(format!(
                "fault rules on the {:?} target go through the HTTP provider against each instance's admin port (see docs/GAMEDAY.md)",
                self.kind
            )));
        }
        let chosen = choose(&self.registry()?, service, version, pick)?;
        Ok(chosen
            .into_iter()
            .map(|i| (i.instance_id, format!("http://{}", i.admin_addr)))
            .collect())
    }

    /// Carries out kill/stop/restart on one instance; returns what was
    /// done (instance and detail) for the journal.
    ///
    /// # Errors
    /// [`TargetError`].
    pub async fn chaos(
        &self,
        what: Chaos,
        service: ServiceArg,
        version: Option<&str>,
        pick: &Pick,
        wait: Duration,
    ) -> Result<serde_json::Value, TargetError> {
        match self.kind {
            TargetKind::Embedded => {
                self.chaos_embedded(what, service, version, pick, wait)
                    .await
            }
            TargetKind::Compose => {
                let names = run_capture(&compose_services_cmd(&self.args)).await?;
                let svc = compose_pick(&names, service, version, pick)?;
                let cmd = compose_cmd(&self.args, what, &svc);
                run_capture(&cmd).await?;
                Ok(serde_json::json!({"instance": svc, "command": cmd.to_string()}))
            }
            TargetKind::K8s => {
                let listing = run_capture(&k8s_pods_cmd(&self.args, service)).await?;
                let pod = k8s_pick(&listing, version, pick, service)?;
                let mut done = Vec::new();
                for cmd in k8s_cmds(&self.args, what, service, &pod, wait) {
                    run_capture(&cmd).await?;
                    done.push(cmd.to_string());
                }
                Ok(serde_json::json!({"instance": pod, "commands": done}))
            }
        }
    }

    async fn chaos_embedded(
        &self,
        what: Chaos,
        service: ServiceArg,
        version: Option<&str>,
        pick: &Pick,
        wait: Duration,
    ) -> Result<serde_json::Value, TargetError> {
        if matches!(pick, Pick::All | Pick::Count(_)) {
            return Err(TargetError::Unsupported(format!(
                "{} acts on one instance: give --instance <id> or random",
                what.name()
            )));
        }
        let registry = self.registry()?;
        let chosen = choose(&registry, service, version, pick)?;
        let Some(inst) = chosen.into_iter().next() else {
            return Err(TargetError::NoInstance {
                what: service.name().into(),
            });
        };
        check_pid(&inst)?;
        let sig = match what {
            Chaos::Kill => Signal::SIGKILL,
            Chaos::Stop | Chaos::Restart => Signal::SIGTERM,
        };
        fleet_supervisor::signal::send(inst.pid, sig).map_err(|e| TargetError::Signal {
            instance: inst.instance_id.clone(),
            pid: inst.pid,
            message: e.to_string(),
        })?;
        let mut out = serde_json::json!({
            "instance": inst.instance_id,
            "pid": inst.pid,
            "signal": sig.as_str(),
        });
        if what == Chaos::Restart {
            let new_pid = self.wait_back(&inst, wait).await?;
            out["new_pid"] = new_pid.into();
        }
        Ok(out)
    }

    /// Waits until the registry shows a new pid for `inst` and its
    /// `/readyz` answers 200.
    async fn wait_back(&self, inst: &Instance, wait: Duration) -> Result<u32, TargetError> {
        let probe = ReadyProbe::new().map_err(|e| TargetError::Unsupported(e.to_string()))?;
        let give_up = tokio::time::Instant::now() + wait;
        let mut last = String::from("still the old pid in the registry");
        loop {
            if let Ok(reg) = self.registry()
                && let Some(now) = reg.iter().find(|i| i.instance_id == inst.instance_id)
                && now.pid != inst.pid
            {
                match probe.check(&now.admin_addr).await {
                    Readiness::Ready => return Ok(now.pid),
                    Readiness::NotReady(status) => {
                        last = format!("new pid {} answers /readyz {status}", now.pid);
                    }
                    Readiness::Unreachable(e) => last = format!("new pid {}: {e}", now.pid),
                }
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(TargetError::NotBack {
                    instance: inst.instance_id.clone(),
                    waited: wait,
                    message: format!("{last} (fleet up's supervisor restarts instances that exit)"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The instances of `service` (version prefix) chosen by `pick`.
///
/// # Errors
/// [`TargetError::NoInstance`] when none match (or a named id is absent).
pub fn choose(
    registry: &[Instance],
    service: ServiceArg,
    version: Option<&str>,
    pick: &Pick,
) -> Result<Vec<Instance>, TargetError> {
    let what = || match version {
        Some(v) => format!("{} {v}", service.name()),
        None => service.name().to_owned(),
    };
    let candidates: Vec<&Instance> = registry
        .iter()
        .filter(|i| i.service == service.name())
        .filter(|i| version.is_none_or(|v| version_matches(&i.version, v)))
        .collect();
    if candidates.is_empty() {
        return Err(TargetError::NoInstance { what: what() });
    }
    let chosen: Vec<Instance> = match pick {
        Pick::All => candidates.into_iter().cloned().collect(),
        Pick::Random => {
            let i = rand::random_range(0..candidates.len());
            candidates
                .get(i)
                .map(|c| (*c).clone())
                .into_iter()
                .collect()
        }
        Pick::Count(n) => {
            let mut all: Vec<Instance> = candidates.into_iter().cloned().collect();
            // Partial Fisher–Yates: the first n are a random sample.
            let n = (*n).min(all.len());
            for k in 0..n {
                let j = rand::random_range(k..all.len());
                all.swap(k, j);
            }
            all.truncate(n);
            all
        }
        Pick::Ids(ids) => {
            let mut out = Vec::new();
            for id in ids {
                match candidates.iter().find(|c| &c.instance_id == id) {
                    Some(c) => out.push((*c).clone()),
                    None => {
                        return Err(TargetError::NoInstance {
                            what: format!("{} with id {id}", what()),
                        });
                    }
                }
            }
            out
        }
    };
    Ok(chosen)
}

/// `1.3` matches `1.3.0` but not `1.30.0`.
pub fn version_matches(version: &str, prefix: &str) -> bool {
    version == prefix
        || version
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Refuses to signal a pid that is no longer a `fleet service <name>`.
fn check_pid(inst: &Instance) -> Result<(), TargetError> {
    let path = format!("/proc/{}/cmdline", inst.pid);
    let Ok(raw) = std::fs::read(&path) else {
        // Already gone: the signal will find nothing (ESRCH).
        return Ok(());
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_it = args
        .windows(2)
        .any(|w| matches!(w, [a, b] if a == "service" && b == &inst.service))
        || args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|f| f.to_string_lossy() == inst.service);
    if is_it {
        Ok(())
    } else {
        Err(TargetError::Signal {
            instance: inst.instance_id.clone(),
            pid: inst.pid,
            message: format!(
                "pid {} is no longer {} ({:?}); registry out of date",
                inst.pid, inst.instance_id, args
            ),
        })
    }
}

fn compose_base(a: &TargetArgs) -> Vec<String> {
    let mut v = vec![
        "docker".to_owned(),
        "compose".to_owned(),
        "-f".to_owned(),
        a.compose_file.display().to_string(),
    ];
    if let Some(p) = &a.compose_project {
        v.push("-p".into());
        v.push(p.clone());
    }
    v
}

/// `docker compose … config --services`: every compose service.
pub fn compose_services_cmd(a: &TargetArgs) -> Cmd {
    let mut v = compose_base(a);
    v.extend(["config".into(), "--services".into()]);
    Cmd(v)
}

/// The compose service for an action: instances are services named
/// `<service>-<n>` or `<service>-v<major>-<minor>-<n>` (catalog).
///
/// # Errors
/// [`TargetError::NoInstance`].
pub fn compose_pick(
    services: &str,
    service: ServiceArg,
    version: Option<&str>,
    pick: &Pick,
) -> Result<String, TargetError> {
    let prefix = format!("{}-", service.name());
    let instances: Vec<Instance> = services
        .lines()
        .map(str::trim)
        .filter(|s| {
            s.strip_prefix(&prefix).is_some_and(|rest| {
                rest.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit() || c == 'v')
            })
        })
        .map(|s| Instance {
            service: service.name().into(),
            version: compose_version(s),
            instance_id: s.to_owned(),
            addr: String::new(),
            admin_addr: String::new(),
            pid: 0,
        })
        .collect();
    let pick = match pick {
        Pick::All | Pick::Count(_) => &Pick::Random,
        p => p,
    };
    choose(&instances, service, version, pick)?
        .into_iter()
        .next()
        .map(|i| i.instance_id)
        .ok_or_else(|| TargetError::NoInstance {
            what: service.name().into(),
        })
}

/// `catalog-v1-3-1` → `1.3`; others have no version in their name.
fn compose_version(name: &str) -> String {
    let parts: Vec<&str> = name.split('-').collect();
    match parts.as_slice() {
        [_, v, minor, _n] if v.starts_with('v') => {
            format!("{}.{minor}", v.trim_start_matches('v'))
        }
        _ => "1.0".into(),
    }
}

/// The compose command for an action on one compose service.
pub fn compose_cmd(a: &TargetArgs, what: Chaos, svc: &str) -> Cmd {
    let mut v = compose_base(a);
    match what {
        Chaos::Kill => v.extend(["kill".into(), "-s".into(), "SIGKILL".into()]),
        Chaos::Stop => v.push("stop".into()),
        Chaos::Restart => v.push("restart".into()),
    }
    v.push(svc.to_owned());
    Cmd(v)
}

/// The command that undoes a compose stop (`start`).
pub fn compose_start_cmd(a: &TargetArgs, svc: &str) -> Cmd {
    let mut v = compose_base(a);
    v.extend(["start".into(), svc.to_owned()]);
    Cmd(v)
}

/// `kubectl get pods` of a service: name and version label per line.
pub fn k8s_pods_cmd(a: &TargetArgs, service: ServiceArg) -> Cmd {
    Cmd(vec![
        "kubectl".into(),
        "-n".into(),
        a.namespace.clone(),
        "get".into(),
        "pods".into(),
        "-l".into(),
        format!("app.kubernetes.io/name={}", service.name()),
        "--field-selector=status.phase=Running".into(),
        "-o".into(),
        r"custom-columns=NAME:.metadata.name,VERSION:.metadata.labels.app\.kubernetes\.io/version"
            .into(),
        "--no-headers".into(),
    ])
}

/// The pod to act on, from [`k8s_pods_cmd`]'s output.
///
/// # Errors
/// [`TargetError::NoInstance`].
pub fn k8s_pick(
    listing: &str,
    version: Option<&str>,
    pick: &Pick,
    service: ServiceArg,
) -> Result<String, TargetError> {
    let instances: Vec<Instance> = listing
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?;
            let version = it.next().unwrap_or("");
            Some(Instance {
                service: service.name().into(),
                version: version.into(),
                instance_id: name.into(),
                addr: String::new(),
                admin_addr: String::new(),
                pid: 0,
            })
        })
        .collect();
    let pick = match pick {
        Pick::All | Pick::Count(_) => &Pick::Random,
        p => p,
    };
    choose(&instances, service, version, pick)?
        .into_iter()
        .next()
        .map(|i| i.instance_id)
        .ok_or_else(|| TargetError::NoInstance {
            what: service.name().into(),
        })
}

/// The kubectl commands for an action on one pod. A Deployment replaces
/// any deleted pod, so `stop` is a graceful delete and `restart` a
/// graceful delete followed by waiting for the service's pods to be ready.
pub fn k8s_cmds(
    a: &TargetArgs,
    what: Chaos,
    service: ServiceArg,
    pod: &str,
    wait: Duration,
) -> Vec<Cmd> {
    let ns = |mut v: Vec<String>| {
        v.splice(1..1, ["-n".to_owned(), a.namespace.clone()]);
        Cmd(v)
    };
    let delete = |extra: &[&str]| {
        let mut v = vec![
            "kubectl".to_owned(),
            "delete".into(),
            "pod".into(),
            pod.to_owned(),
        ];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        ns(v)
    };
    match what {
        Chaos::Kill => vec![delete(&["--grace-period=0", "--force"])],
        Chaos::Stop => vec![delete(&["--wait=false"])],
        Chaos::Restart => vec![
            delete(&["--wait=true"]),
            ns(vec![
                "kubectl".into(),
                "wait".into(),
                "pod".into(),
                "-l".into(),
                format!("app.kubernetes.io/name={}", service.name()),
                "--for=condition=Ready".into(),
                format!("--timeout={}s", wait.as_secs().max(1)),
            ]),
        ],
    }
}

/// Runs `cmd` and returns its stdout.
///
/// # Errors
/// [`TargetError::Command`] when it cannot start or exits non-zero.
pub async fn run_capture(cmd: &Cmd) -> Result<String, TargetError> {
    let Some((program, args)) = cmd.0.split_first() else {
        return Err(TargetError::Command {
            command: String::new(),
            message: "empty command".into(),
        });
    };
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| TargetError::Command {
            command: cmd.to_string(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(TargetError::Command {
            command: cmd.to_string(),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(extra: &[&str]) -> TargetArgs {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            t: TargetArgs,
        }
        T::try_parse_from(std::iter::once("t").chain(extra.iter().copied()))
            .unwrap()
            .t
    }

    fn inst(service: &str, version: &str, id: &str) -> Instance {
        Instance {
            service: service.into(),
            version: version.into(),
            instance_id: id.into(),
            addr: "127.0.0.1:1".into(),
            admin_addr: "127.0.0.1:2".into(),
            pid: 1,
        }
    }

    #[test]
    fn instances_are_chosen_by_service_version_and_pick() {
        let reg = vec![
            inst("catalog", "1.2.4", "catalog-v12-1"),
            inst("catalog", "1.2.4", "catalog-v12-2"),
            inst("catalog", "1.3.0", "catalog-v13-1"),
            inst("catalog", "1.30.0", "catalog-v130-1"),
            inst("dal", "1.0.0", "dal-1"),
        ];
        let ids = |v: Vec<Instance>| v.into_iter().map(|i| i.instance_id).collect::<Vec<_>>();
        assert_eq!(
            ids(choose(&reg, ServiceArg::Catalog, Some("1.3"), &Pick::All).unwrap()),
            ["catalog-v13-1"]
        );
        assert_eq!(
            ids(choose(&reg, ServiceArg::Catalog, Some("1.2"), &Pick::All).unwrap()).len(),
            2
        );
        let one = ids(choose(&reg, ServiceArg::Catalog, None, &Pick::Random).unwrap());
        assert_eq!(one.len(), 1);
        assert!(one[0].starts_with("catalog-"));
        let two = ids(choose(&reg, ServiceArg::Catalog, Some("1.2"), &Pick::Count(2)).unwrap());
        assert_eq!(two.len(), 2);
        assert_ne!(two[0], two[1]);
        assert!(choose(&reg, ServiceArg::Ratings, None, &Pick::All).is_err());
        assert!(
            choose(
                &reg,
                ServiceArg::Dal,
                None,
                &Pick::Ids(vec!["dal-9".into()])
            )
            .is_err()
        );
    }

    #[test]
    fn compose_commands_name_the_instance_service() {
        let a = args(&[
            "--target",
            "compose",
            "--compose-file",
            "dc.yml",
            "--compose-project",
            "fl",
        ]);
        let services = "scylla\nredis\ndal-1\ndal-2\ncatalog-v1-2-1\ncatalog-v1-3-1\nratings-1\nedge-1\ndal-migrate\n";
        let svc = compose_pick(services, ServiceArg::Catalog, Some("1.3"), &Pick::Random).unwrap();
        assert_eq!(svc, "catalog-v1-3-1");
        let dal = compose_pick(services, ServiceArg::Dal, None, &Pick::Random).unwrap();
        assert!(dal == "dal-1" || dal == "dal-2", "never dal-migrate: {dal}");
        assert_eq!(
            compose_cmd(&a, Chaos::Kill, &svc).to_string(),
            "docker compose -f dc.yml -p fl kill -s SIGKILL catalog-v1-3-1"
        );
        assert_eq!(
            compose_cmd(&a, Chaos::Stop, "dal-1").to_string(),
            "docker compose -f dc.yml -p fl stop dal-1"
        );
        assert_eq!(
            compose_cmd(&a, Chaos::Restart, "edge-1").to_string(),
            "docker compose -f dc.yml -p fl restart edge-1"
        );
        assert_eq!(
            compose_start_cmd(&a, "dal-1").to_string(),
            "docker compose -f dc.yml -p fl start dal-1"
        );
        assert_eq!(
            compose_services_cmd(&a).to_string(),
            "docker compose -f dc.yml -p fl config --services"
        );
    }

    #[test]
    fn kubernetes_commands_delete_the_chosen_pod() {
        let a = args(&["--target", "k8s", "--namespace", "prod"]);
        let listing = "catalog-v1-2-5d9c-abcde   1.2.4\ncatalog-v1-3-77f-xyz12   1.3.0\n";
        let pod = k8s_pick(listing, Some("1.3"), &Pick::Random, ServiceArg::Catalog).unwrap();
        assert_eq!(pod, "catalog-v1-3-77f-xyz12");
        let kill = k8s_cmds(
            &a,
            Chaos::Kill,
            ServiceArg::Catalog,
            &pod,
            Duration::from_secs(60),
        );
        assert_eq!(
            kill.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["kubectl -n prod delete pod catalog-v1-3-77f-xyz12 --grace-period=0 --force"]
        );
        let restart = k8s_cmds(
            &a,
            Chaos::Restart,
            ServiceArg::Catalog,
            &pod,
            Duration::from_secs(90),
        );
        assert_eq!(
            restart.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "kubectl -n prod delete pod catalog-v1-3-77f-xyz12 --wait=true",
                "kubectl -n prod wait pod -l app.kubernetes.io/name=catalog --for=condition=Ready --timeout=90s",
            ]
        );
        assert_eq!(
            k8s_pods_cmd(&a, ServiceArg::Dal).to_string(),
            r"kubectl -n prod get pods -l app.kubernetes.io/name=dal --field-selector=status.phase=Running -o custom-columns=NAME:.metadata.name,VERSION:.metadata.labels.app\.kubernetes\.io/version --no-headers"
        );
        assert!(k8s_pick("", None, &Pick::Random, ServiceArg::Dal).is_err());
    }

    #[test]
    fn version_prefixes_match_whole_components() {
        assert!(version_matches("1.3.0", "1.3"));
        assert!(version_matches("1.3.0", "1.3.0"));
        assert!(!version_matches("1.30.0", "1.3"));
        assert!(!version_matches("2.0.0", "1"));
    }
}
