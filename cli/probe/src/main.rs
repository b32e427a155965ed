//! `fleet-probe [--timeout D] [URL]`: exit 0 when the URL answers 2xx,
//! 1 otherwise (Docker's healthy/unhealthy). Without a URL: `/readyz` on
//! the port of `ADMIN_ADDR`.

use std::process::ExitCode;
use std::time::Duration;

use fleet_config::Env;
use fleet_probe::{DEFAULT_TIMEOUT, Target, probe};

const USAGE: &str = "usage: fleet-probe [--timeout <duration>] [http://host:port/path]\n\
                     without a URL: http://127.0.0.1:<port of ADMIN_ADDR>/readyz";

fn main() -> ExitCode {
    let env = Env::from_process();
    match run(std::env::args().skip(1).collect(), &env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fleet-probe: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>, env: &Env) -> Result<(), String> {
    let mut timeout = DEFAULT_TIMEOUT;
    let mut url = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--timeout" => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("--timeout needs a value\n{USAGE}"))?;
                timeout = humantime::parse_duration(&v)
                    .ok()
                    .filter(|d| *d > Duration::ZERO)
                    .ok_or_else(|| {
                        format!("--timeout {v:?} is not a positive duration (2s, 500ms)")
                    })?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            a if a.starts_with('-') => return Err(format!("unknown option {a}\n{USAGE}")),
            _ if url.is_some() => return Err(format!("one URL only\n{USAGE}")),
            _ => url = Some(arg),
        }
    }
    let target = match url {
        Some(u) => Target::parse(&u),
        None => {
            let admin = env
                .get("ADMIN_ADDR")
                .ok_or_else(|| format!("no URL given and ADMIN_ADDR is unset\n{USAGE}"))?;
            Target::local_readyz(admin)
        }
    }
    .map_err(|e| e.to_string())?;
    probe(&target, timeout)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
