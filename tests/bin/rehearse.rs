//! `rehearse compose | k8s [--overlay local|production] [--static]`: runs a
//! deployment's own definitions as local processes (see
//! `fleet_tests::rehearse`). `scripts/rehearse` builds and calls it.
//!
//! Exit status: 0 when every check passed and the system came up and
//! answered through its public door; 1 when anything failed (each failure
//! printed); 2 on bad usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use fleet_tests::rehearse::{Plan, run, source};

const USAGE: &str = "usage: rehearse compose|k8s [--overlay local|production] [--static]";

fn plans(
    repo: &Path,
    target: &str,
    overlays: &[String],
    files: &Path,
) -> anyhow::Result<Vec<Plan>> {
    match target {
        "compose" => {
            let model = source::compose_model(repo).map_err(anyhow::Error::msg)?;
            Ok(vec![source::compose_plan(repo, &model)])
        }
        "k8s" => overlays
            .iter()
            .map(|o| {
                let objects = source::overlay_objects(repo, o).map_err(anyhow::Error::msg)?;
                Ok(source::k8s_plan(repo, o, &objects, files))
            })
            .collect(),
        other => bail!("unknown deployment {other:?}\n{USAGE}"),
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rehearse: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let mut args = std::env::args().skip(1);
    let target = args.next().context(USAGE)?;
    let mut overlays = vec!["local".to_owned(), "production".to_owned()];
    let mut static_only = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--overlay" => {
                overlays = vec![args.next().context("--overlay needs local or production")?]
            }
            "--static" => static_only = true,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the tests crate sits in the repository")?
        .to_path_buf();
    let work = tempfile::Builder::new()
        .prefix("fleet-rehearse-")
        .tempdir()
        .context("failed to create a work directory")?;
    let plans = plans(&repo, &target, &overlays, &work.path().join("files"))?;
    let mut ok = true;
    for plan in &plans {
        let findings = plan.check();
        for f in &findings {
            println!("FAIL {f}");
        }
        println!(
            "rehearse {}: {} units, {} static findings",
            plan.name,
            plan.units.len(),
            findings.len()
        );
        ok &= findings.is_empty();
    }
    if !ok || static_only {
        return Ok(ok);
    }
    let bin_dir = std::env::current_exe()
        .context("current exe")?
        .parent()
        .context("bin dir")?
        .to_path_buf();
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    for plan in &plans {
        let dir = work.path().join(plan.name.replace('/', "-"));
        let (opts, consul) = run::prepare(&repo, &dir, &bin_dir).map_err(anyhow::Error::msg)?;
        let outcome = runtime.block_on(run::run(plan, &opts));
        drop(consul);
        match outcome {
            Ok(_) => println!("rehearse {}: PASSED", plan.name),
            Err((_, e)) => {
                println!("FAIL {}: {e}", plan.name);
                println!("rehearse {}: logs in {}", plan.name, dir.display());
                ok = false;
            }
        }
    }
    if !ok {
        // Keep the logs of a failed run for inspection.
        let kept = work.keep();
        println!("rehearse: work directory kept at {}", kept.display());
    }
    Ok(ok)
}
