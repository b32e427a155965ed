//! `fleet gameday`: fault-injection game days on Chaos Toolkit's open
//! format (Chaos Monkey, Latency Monkey, FIT and ChAP in one runner).
//!
//! One file per concern:
//! * `command` — the command line, which is also the argument syntax of
//!   our own providers inside experiment files;
//! * `experiment` — the file model (JSON/YAML) and its validation;
//! * `target` — embedded (`fleet up`), compose and k8s: how each action
//!   name is carried out;
//! * `activity` — running HTTP, process and our own providers; tolerances;
//! * `undo` — the on-disk undo log that makes rollbacks survive a crash;
//! * `monitor` — live cohorts (experiment vs control) and the abort;
//! * `network` — network faults (toxics) and `fleet up --toxiproxy`'s store
//!   proxies, over `fleet_supervisor::toxiproxy`;
//! * `runner` — the run itself; `journal` — its record; `report` — HTML.
//!
//! See `docs/GAMEDAY.md` for the file format and the providers.

pub mod activity;
pub mod command;
pub mod experiment;
pub mod journal;
pub mod monitor;
pub mod network;
pub mod report;
pub mod runner;
pub mod target;
pub mod undo;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

pub use command::{GamedayCommand, RunArgs};

use crate::gameday::activity::Context;
use crate::gameday::command::{FleetCommand, TargetArgs};
use crate::gameday::target::Target;
use crate::gameday::undo::UndoLog;

/// Exit status: the steady state held (or an action/probe succeeded).
pub const EXIT_OK: u8 = 0;
/// Exit status: the steady state deviated, the run was aborted or
/// interrupted, or an action failed.
pub const EXIT_DEVIATED: u8 = 1;
/// Exit status: bad input (nothing was run).
pub const EXIT_USAGE: u8 = 2;

/// Runs `fleet gameday …`; `env` is the process environment, read once by
/// the binary.
pub fn main(cmd: GamedayCommand, env: BTreeMap<String, String>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet gameday: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_DEVIATED);
        }
    };
    runtime.block_on(dispatch(cmd, env))
}

async fn dispatch(cmd: GamedayCommand, env: BTreeMap<String, String>) -> ExitCode {
    match cmd {
        GamedayCommand::Run(args) => match runner::run(&args, &env).await {
            Ok(o) if o.status == journal::Status::Completed && !o.deviated => {
                ExitCode::from(EXIT_OK)
            }
            Ok(_) => ExitCode::from(EXIT_DEVIATED),
            Err(runner::RunError::Experiment(e)) => {
                eprintln!("fleet gameday: {e}");
                ExitCode::from(EXIT_USAGE)
            }
            Err(e) => {
                eprintln!("fleet gameday: {e}");
                ExitCode::from(EXIT_DEVIATED)
            }
        },
        GamedayCommand::Validate { files } => {
            let mut bad = 0;
            for f in &files {
                match experiment::load(f, &env) {
                    Ok(e) => println!(
                        "{}: valid — {:?}: {} hypothesis probe(s), {} method activit(ies), {} rollback(s)",
                        f.display(),
                        e.title,
                        e.hypothesis.as_ref().map_or(0, |h| h.probes.len()),
                        e.method.len(),
                        e.rollbacks.len()
                    ),
                    Err(e) => {
                        bad += 1;
                        eprintln!("{e}");
                    }
                }
            }
            if bad == 0 {
                ExitCode::from(EXIT_OK)
            } else {
                ExitCode::from(EXIT_USAGE)
            }
        }
        GamedayCommand::Env(t) => print_env(&t),
        other => {
            let fc = match FleetCommand::from_cli(other) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("fleet gameday: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let target_args = match &fc {
                FleetCommand::FaultAdd(a) => a.scope.target.clone(),
                FleetCommand::FaultClear(a) => a.target.clone(),
                FleetCommand::Kill(a) | FleetCommand::Stop(a) | FleetCommand::Restart(a) => {
                    a.target.clone()
                }
                FleetCommand::ProbeLoad(a) => a.target.clone(),
                FleetCommand::ProbeStatus(a) => a.target.clone(),
                FleetCommand::ProbePrometheus(a) => a.target.clone(),
                FleetCommand::Network(a) => a.target.clone(),
            };
            let http = match reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
            {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("fleet gameday: {e}");
                    return ExitCode::from(EXIT_DEVIATED);
                }
            };
            let cx = Context {
                target: Target::new(target_args),
                undo: Arc::new(UndoLog::in_memory()),
                fault_scope: None,
                http,
            };
            match activity::fleet(&fc, &cx).await {
                Ok((status, out)) => {
                    println!("{out}");
                    ExitCode::from(u8::try_from(status).unwrap_or(EXIT_DEVIATED))
                }
                Err(e) => {
                    eprintln!("fleet gameday: {e}");
                    ExitCode::from(EXIT_DEVIATED)
                }
            }
        }
    }
}

/// `export` lines for stock `chaos run`: the edge, the token and every
/// instance's admin URL as `FLEET_ADMIN_<INSTANCE_ID>` (upper case, `-` →
/// `_`).
fn print_env(t: &TargetArgs) -> ExitCode {
    let target = Target::new(t.clone());
    let (registry, token, edge) = match (target.registry(), target.admin_token(), target.edge_url())
    {
        (Ok(r), Ok(t), Ok(e)) => (r, t, e),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("fleet gameday env: {e}");
            return ExitCode::from(EXIT_DEVIATED);
        }
    };
    let data_dir = std::path::absolute(&t.data_dir).unwrap_or_else(|_| t.data_dir.clone());
    for (k, v) in env_pairs(&registry, &token, &edge, &data_dir) {
        println!("export {k}={}", shell_quote(&v));
    }
    ExitCode::from(EXIT_OK)
}

/// The variables [`print_env`] prints (and the runner offers to `env`
/// configuration on the embedded target).
pub fn env_pairs(
    registry: &[target::Instance],
    token: &str,
    edge: &str,
    data_dir: &std::path::Path,
) -> Vec<(String, String)> {
    let mut out = vec![
        ("FLEET_EDGE_URL".to_owned(), edge.to_owned()),
        ("FLEET_ADMIN_TOKEN".to_owned(), token.to_owned()),
        ("FLEET_DATA_DIR".to_owned(), data_dir.display().to_string()),
    ];
    for i in registry {
        out.push((
            admin_var(&i.instance_id),
            format!("http://{}", i.admin_addr),
        ));
    }
    out
}

/// `catalog-v13-1` → `FLEET_ADMIN_CATALOG_V13_1`.
pub fn admin_var(instance_id: &str) -> String {
    let mut s = String::from("FLEET_ADMIN_");
    s.extend(instance_id.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_every_admin_port_and_quotes_values() {
        let reg = vec![target::Instance {
            service: "ratings".into(),
            version: "1.0.0".into(),
            instance_id: "ratings-2".into(),
            addr: "127.0.0.1:1".into(),
            admin_addr: "127.0.0.1:9".into(),
            pid: 1,
        }];
        let pairs = env_pairs(
            &reg,
            "tk",
            "http://127.0.0.1:8080",
            std::path::Path::new("/d"),
        );
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "FLEET_EDGE_URL",
                "FLEET_ADMIN_TOKEN",
                "FLEET_DATA_DIR",
                "FLEET_ADMIN_RATINGS_2"
            ]
        );
        assert_eq!(pairs[3].1, "http://127.0.0.1:9");
        assert_eq!(shell_quote("t'k"), r"'t'\''k'");
    }
}
