//! `fleet gameday` against the real system: `fleet up` (embedded
//! defaults) started from the built binary, experiments from `gamedays/`
//! run by the built binary, journals read back.
//!
//! * the library holds its steady states, and the deliberately breaking
//!   experiment is aborted by the monitor (`deviated: true`, `aborted`)
//!   with its faults rolled back;
//! * a runner killed with SIGKILL mid-method leaves its fault in place and
//!   its rollback file on disk, and the next run replays it;
//! * Ctrl-C (SIGINT) mid-method rolls back and says `interrupted`;
//! * stock Chaos Toolkit: `chaos validate` accepts every shipped file and
//!   `chaos run` runs `ratings-outage.json` (HTTP provider) against
//!   `fleet up`.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::{ConsulAgent, backend};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fleet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fleet")
}

fn gameday_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("gamedays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            )
        })
        .collect();
    v.sort();
    v
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `fleet up` in a temporary data dir, stopped (SIGTERM) on drop.
struct FleetUp {
    child: Child,
    dir: tempfile::TempDir,
    edge: String,
}

impl FleetUp {
    fn start() -> Self {
        Self::start_with(&[], &[])
    }

    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("fleet-up.log")).unwrap();
        let child = Command::new(fleet_bin())
            .args(["up", "--data-dir"])
            .arg(dir.path().join("data"))
            // Port 0: the edge binds a port nobody holds (a port picked
            // here and released can be taken by another test's process
            // before the edge binds it — seen in CI); its address is read
            // from the registry.
            .args(["--edge-addr", "127.0.0.1:0"])
            .args(args)
            // Roomier budgets than the defaults (500 ms titles, 1 s home):
            // this 2-core machine is shared with parallel builds, and a
            // starved CPU must not pass for a fault's effect. A hang still
            // runs them out; a 100 ms delay still shows.
            .env("EDGE_BUDGET_TITLE", "2s")
            .env("EDGE_BUDGET_HOME", "3s")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut up = Self {
            child,
            dir,
            edge: String::new(),
        };
        let registry = up.data_dir().join("run/registry.json");
        let give_up = Instant::now() + Duration::from_secs(420);
        while !registry.exists() {
            assert!(
                Instant::now() < give_up && up.child.try_wait().unwrap().is_none(),
                "fleet up did not start:\n{}",
                std::fs::read_to_string(up.dir.path().join("fleet-up.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let edge = up
            .registry()
            .into_iter()
            .find(|e| e["service"] == "edge")
            .and_then(|e| e["addr"].as_str().map(str::to_owned))
            .expect("the edge in run/registry.json");
        up.edge = format!("http://{edge}");
        up
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn registry(&self) -> Vec<Value> {
        serde_json::from_slice(&std::fs::read(self.data_dir().join("run/registry.json")).unwrap())
            .unwrap()
    }

    fn admin(&self, instance: &str) -> String {
        let reg = self.registry();
        let e = reg
            .iter()
            .find(|e| e["instance_id"] == instance)
            .unwrap_or_else(|| panic!("no {instance} in {reg:?}"));
        format!("http://{}", e["admin_addr"].as_str().unwrap())
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("run/admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The fault rules in force on an instance.
    fn faults(&self, instance: &str) -> Vec<Value> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-H",
                &format!("Authorization: Bearer {}", self.token()),
            ])
            .arg(format!("{}/admin/faults", self.admin(instance)))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until the edge serves 10 titles in a row (after an aborted
    /// experiment, its circuit breakers need their sleep window first).
    fn wait_healthy(&self) {
        let give_up = Instant::now() + Duration::from_secs(90);
        let mut streak = 0;
        while streak < 10 {
            let ok = Command::new("curl")
                .args([
                    "-sf",
                    "-o",
                    "/dev/null",
                    &format!("{}/api/v1/titles/t00003", self.edge),
                ])
                .status()
                .unwrap()
                .success();
            streak = if ok { streak + 1 } else { 0 };
            assert!(Instant::now() < give_up, "the system did not recover");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn gameday(&self, file: &str, extra: &[&str]) -> Ran {
        let out_dir = self.dir.path().join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        let stem = Path::new(file)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let journal = out_dir.join(format!("{stem}.journal.json"));
        let report = out_dir.join(format!("{stem}.html"));
        let out = Command::new(fleet_bin())
            .args(["gameday", "run"])
            .arg(repo().join("gamedays").join(file))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--journal")
            .arg(&journal)
            .arg("--report")
            .arg(&report)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("=== {file}\n{stderr}");
        let journal: Value = serde_json::from_slice(
            &std::fs::read(&journal)
                .unwrap_or_else(|e| panic!("no journal for {file} ({e}); stderr:\n{stderr}")),
        )
        .unwrap();
        Ran {
            code: out.status.code(),
            journal,
            report: std::fs::read_to_string(report).unwrap_or_default(),
            stderr,
        }
    }
}

impl Drop for FleetUp {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let give_up = Instant::now() + Duration::from_secs(30);
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ran {
    code: Option<i32>,
    journal: Value,
    report: String,
    stderr: String,
}

impl Ran {
    fn assert_held(&self, file: &str) {
        assert_eq!(
            (
                self.journal["status"].as_str(),
                self.journal["deviated"].as_bool()
            ),
            (Some("completed"), Some(false)),
            "{file} did not hold its steady state:\n{}\nsteady states: {}",
            self.stderr,
            self.journal["steady_states"]
        );
        assert_eq!(self.code, Some(0), "{file}: exit status");
        for when in ["before", "after"] {
            let probes = self.journal["steady_states"][when]["probes"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: no steady state {when}"));
            assert!(!probes.is_empty(), "{file}: empty steady state {when}");
            assert!(
                probes.iter().all(|p| p["tolerance_met"] == true),
                "{file}: {when}: {probes:?}"
            );
        }
        for r in self.journal["run"].as_array().unwrap() {
            if r["activity"]["type"] == "action" {
                assert_eq!(r["status"], "succeeded", "{file}: {r}");
            }
        }
        for r in self.journal["rollbacks"].as_array().unwrap() {
            assert_eq!(r["status"], "succeeded", "{file}: rollback {r}");
        }
    }
}

fn chaos() -> PathBuf {
    let out = Command::new(repo().join("scripts/chaostoolkit"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/chaostoolkit runs");
    assert!(out.status.success(), "scripts/chaostoolkit failed");
    let path = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(path.lines().last().unwrap().trim())
}

/// PATH with the built `fleet` first, so process providers find it.
fn path_with_fleet() -> String {
    let dir = Path::new(fleet_bin()).parent().unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn every_shipped_experiment_is_valid_for_fleet_and_for_stock_chaos_validate() {
    let files = gameday_files();
    assert!(files.len() >= 6, "{files:?}");
    let out = Command::new(fleet_bin())
        .args(["gameday", "validate"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches(": valid")
            .count(),
        files.len()
    );
    let chaos = chaos();
    for f in &files {
        let out = Command::new(&chaos)
            .args(["--no-log-file", "validate"])
            .arg(f)
            .env("PATH", path_with_fleet())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("experiment syntax and semantic look valid"),
            "chaos validate {}:\n{text}",
            f.display()
        );
    }
}

#[test]
fn an_invalid_file_is_refused_with_its_place_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"title":"t","description":"d","method":[{"type":"action","name":"x",
            "provider":{"type":"process","path":"fleet","arguments":["gameday","kill","--service","mainframe"]}}]}"#,
    )
    .unwrap();
    let out = Command::new(fleet_bin())
        .args(["gameday", "run"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--journal")
        .arg(dir.path().join("j.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("method[0].provider.arguments"), "{err}");
    assert!(!dir.path().join("j.json").exists(), "nothing ran");
    assert!(!dir.path().join("run/gameday-rollback.json").exists());
}

#[test]
fn the_library_holds_its_steady_states_and_the_breaking_one_aborts_itself() {
    // The library runs on the real backends, with every call between
    // services through Toxiproxy (the partition is a network one).
    let Some((up, toxi, _)) = fleet_up_on_real_backends_through_toxiproxy("library") else {
        return;
    };
    // Every gRPC instance has its proxy, and its callers use it.
    let record: Value =
        serde_json::from_slice(&std::fs::read(up.data_dir().join("run/toxiproxy.json")).unwrap())
            .unwrap();
    for p in ["dal-1", "ratings-1", "ratings-2", "catalog-v13-1"] {
        assert_eq!(
            record["proxies"][p]["service"],
            p.split('-').next().unwrap(),
            "{record}"
        );
    }

    let ran = up.gameday("ratings-outage.json", &[]);
    ran.assert_held("ratings-outage.json");
    // The method's probe saw the home page degrade, not fail.
    let probe = ran.journal["run"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["activity"]["type"] == "probe")
        .unwrap();
    assert_eq!(probe["output"]["status"], 200);
    assert!(
        !probe["output"]["body"]["degraded"]
            .as_array()
            .unwrap()
            .is_empty(),
        "home lists its degraded rows: {probe}"
    );
    for r in ["ratings-1", "ratings-2"] {
        assert!(up.faults(r).is_empty(), "{r} still has faults");
    }
    // The monitor ran through it, second by second.
    assert!(ran.journal["fleet"]["series"].as_array().unwrap().len() >= 4);

    let ran = up.gameday("slow-catalog-canary.json", &[]);
    ran.assert_held("slow-catalog-canary.json");
    let cohorts: Vec<&str> = ran.journal["fleet"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["cohort"].as_str())
        .collect();
    assert!(cohorts.contains(&"experiment") && cohorts.contains(&"control"));
    // The fault was felt by the experiment cohort only: every one of its
    // requests waited the injected 100 ms (its medians are all above it),
    // while the control's median was below it at least once.
    let medians = |c: &str| -> Vec<f64> {
        ran.journal["fleet"]["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["cohort"] == c && p["requests"].as_u64() > Some(0))
            .filter_map(|p| p["p50_ms"].as_f64())
            .collect()
    };
    let timeline = &ran.journal["fleet"]["timeline"];
    let fault_done = timeline[0]["t_end"].as_f64().unwrap();
    let during: Vec<f64> = ran.journal["fleet"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["cohort"] == "experiment" && p["requests"].as_u64() > Some(0))
        .filter(|p| {
            p["t"].as_f64().unwrap() >= fault_done + 1.0
                && p["t"].as_f64().unwrap() <= fault_done + 6.0
        })
        .filter_map(|p| p["p50_ms"].as_f64())
        .collect();
    assert!(!during.is_empty());
    assert!(
        during.iter().all(|m| *m >= 100.0),
        "experiment medians {during:?}"
    );
    assert!(
        medians("control").iter().any(|m| *m < 100.0),
        "control medians {:?}",
        medians("control")
    );
    assert!(up.faults("catalog-v13-1").is_empty(), "rolled back");

    let ran = up.gameday("ratings-hangs-for-edge.json", &[]);
    ran.assert_held("ratings-hangs-for-edge.json");
    assert!(up.faults("ratings-1").is_empty() && up.faults("ratings-2").is_empty());

    // The network partition: both directions of both ratings proxies
    // black-holed, then healed.
    let edge_admin = up.admin("edge-1");
    let ratings_failures = || {
        metric_sum(
            &edge_admin,
            "fleet_rpc_client_errors_total",
            "target=\"ratings\"",
        ) + metric_sum(
            &edge_admin,
            "fleet_rpc_client_refused_total",
            "target=\"ratings\"",
        )
    };
    let failures_before = ratings_failures();
    let ran = up.gameday("partition-edge-ratings.json", &[]);
    ran.assert_held("partition-edge-ratings.json");
    let first = &ran.journal["run"][0]["output"]["stdout"];
    let first: Value = serde_json::from_str(first.as_str().unwrap()).unwrap();
    let hit: Vec<&str> = first["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["proxy"].as_str().unwrap())
        .collect();
    assert_eq!(hit, ["ratings-1", "ratings-2"]);
    assert_eq!(first["proxies"][0]["toxic"]["type"], "timeout");
    // The partition was felt: the edge's calls to ratings failed (timed
    // out, then refused by the open breaker), and were answered around.
    let failed = ratings_failures() - failures_before;
    eprintln!("partition: {failed} edge → ratings calls failed or refused, steady state held");
    assert!(failed > 0.0, "nothing failed: was the partition real?");
    assert!(toxi.toxics("ratings-1").is_empty() && toxi.toxics("ratings-2").is_empty());

    let ran = up.gameday("breaking-canary-hang.yaml", &[]);
    assert_eq!(ran.code, Some(1));
    assert_eq!(ran.journal["status"], "aborted", "{}", ran.stderr);
    assert_eq!(ran.journal["deviated"], true);
    let abort = &ran.journal["fleet"]["abort"];
    let started = abort["deviation_started_t"].as_f64().unwrap();
    let done = abort["rollback_done_t"].as_f64().unwrap();
    // Aborted, not waited out: the method's 30 s pause was cut short
    // (an ordering, not a speed: the rollbacks came before the pause ended).
    let fault_at = ran.journal["fleet"]["timeline"][0]["t_end"]
        .as_f64()
        .unwrap();
    assert!(
        done < fault_at + 30.0,
        "rolled back at {done}s, fault at {fault_at}s"
    );
    assert!(
        started >= fault_at - 1.0,
        "the deviation followed the fault"
    );
    eprintln!(
        "ABORT LATENCY (deviation start → rollback done): {:.2}s",
        abort["abort_latency_s"].as_f64().unwrap()
    );
    for c in [
        "catalog-v12-1",
        "catalog-v12-2",
        "catalog-v13-1",
        "catalog-v20-1",
    ] {
        assert!(up.faults(c).is_empty(), "{c} still hangs");
    }
    assert!(ran.report.contains("Aborted automatically"));
    assert!(ran.report.contains("data-cohort=\"experiment\""));

    up.wait_healthy();
    // fleet up's supervisor restarts the killed dal (its registry counts
    // the restart).
    let ran = up.gameday("kill-only-dal.json", &[]);
    ran.assert_held("kill-only-dal.json");
    let dal = up
        .registry()
        .into_iter()
        .find(|e| e["service"] == "dal")
        .unwrap();
    assert!(dal["restarts"].as_u64().unwrap() >= 1, "{dal}");

    // Last: it leaves one catalog dead unless a supervisor restarts it.
    let ran = up.gameday("kill-one-catalog.json", &[]);
    ran.assert_held("kill-one-catalog.json");
    let killed = ran.journal["run"][0]["output"]["stdout"].as_str().unwrap();
    let killed: Value = serde_json::from_str(killed).unwrap();
    assert_eq!(killed["signal"], "SIGKILL");
    assert!(
        killed["instance"]
            .as_str()
            .unwrap()
            .starts_with("catalog-v12-")
    );
}

#[test]
fn a_crashed_runner_leaves_its_rollback_file_and_the_next_run_replays_it() {
    let up = FleetUp::start();
    let rollback_file = up.data_dir().join("run/gameday-rollback.json");
    // No hypothesis: the fault goes in at once and stays for a minute.
    let file = up.dir.path().join("long-fault.yaml");
    std::fs::write(
        &file,
        "title: a long fault\ndescription: stays until rolled back\nmethod:\n  - type: action\n    name: slow catalog 1.3\n    provider:\n      type: process\n      path: fleet\n      arguments: [gameday, fault, add, --service, catalog, --version, '1.3', --delay, 100ms]\n    pauses: {after: 60}\n",
    )
    .unwrap();
    let mut runner = Command::new(fleet_bin())
        .args(["gameday", "run"])
        .arg(&file)
        .arg("--data-dir")
        .arg(up.data_dir())
        .arg("--journal")
        .arg(up.dir.path().join("crashed.json"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the fault to be in place and recorded, then crash the runner.
    wait_for_steps(&rollback_file, 1, &mut runner);
    runner.kill().unwrap();
    runner.wait().unwrap();
    assert_eq!(
        up.faults("catalog-v13-1").len(),
        1,
        "the crash left the fault"
    );
    assert!(rollback_file.exists());

    let ran = up.gameday("ratings-outage.json", &[]);
    let replayed = ran.journal["fleet"]["replayed_rollbacks"]
        .as_array()
        .unwrap();
    // It declared no rollbacks: the one recorded rule is removed.
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0]["status"], "succeeded", "{replayed:?}");
    assert!(up.faults("catalog-v13-1").is_empty(), "replayed");
    assert!(!rollback_file.exists(), "finished runs remove their file");
    ran.assert_held("ratings-outage.json");
}

/// Waits until the rollback file records `n` steps (the runner is then
/// mid-method, its faults in place).
fn wait_for_steps(rollback_file: &Path, n: usize, runner: &mut Child) {
    let give_up = Instant::now() + Duration::from_secs(90);
    loop {
        let recorded = std::fs::read(rollback_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["steps"].as_array().is_some_and(|s| s.len() == n));
        if recorded {
            return;
        }
        assert!(Instant::now() < give_up, "the faults were never recorded");
        assert!(runner.try_wait().unwrap().is_none(), "runner ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_mid_method_rolls_back_and_says_interrupted() {
    let up = FleetUp::start();
    let journal = up.dir.path().join("interrupted.json");
    let rollback_file = up.data_dir().join("run/gameday-rollback.json");
    let mut runner = Command::new(fleet_bin())
        .args(["gameday", "run"])
        .arg(repo().join("gamedays/ratings-hangs-for-edge.json"))
        .arg("--data-dir")
        .arg(up.data_dir())
        .arg("--journal")
        .arg(&journal)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_steps(&rollback_file, 2, &mut runner);
    assert_eq!(up.faults("ratings-1").len(), 1);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(runner.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = runner.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let j: Value = serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    assert_eq!(j["status"], "interrupted");
    assert!(
        j["steady_states"]["after"].is_null(),
        "no after-check once interrupted"
    );
    // The declared rollback (clear) ran; nothing was left for the undo log.
    let rb = j["rollbacks"].as_array().unwrap();
    assert_eq!(rb[0]["status"], "succeeded", "{rb:?}");
    for r in ["ratings-1", "ratings-2"] {
        assert!(up.faults(r).is_empty(), "{r} still partitioned");
    }
    assert!(!rollback_file.exists());
}

#[test]
fn stock_chaos_run_runs_the_ratings_outage_against_fleet_up() {
    let chaos = chaos();
    let up = FleetUp::start();
    let env = Command::new(fleet_bin())
        .args(["gameday", "env", "--data-dir"])
        .arg(up.data_dir())
        .output()
        .unwrap();
    assert!(env.status.success());
    let mut cmd = Command::new(&chaos);
    let lines = String::from_utf8(env.stdout).unwrap();
    assert!(
        lines.contains(&format!("export FLEET_EDGE_URL='{}'", up.edge)),
        "{lines}"
    );
    for line in lines.lines() {
        let (k, v) = line
            .strip_prefix("export ")
            .unwrap()
            .split_once('=')
            .unwrap();
        cmd.env(k, v.trim_matches('\''));
    }
    let journal = up.dir.path().join("chaos-journal.json");
    let out = cmd
        .args(["--no-log-file", "run", "--journal-path"])
        .arg(&journal)
        .arg(repo().join("gamedays/ratings-outage.json"))
        .env("PATH", path_with_fleet())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "chaos run:\n{text}");
    let j: Value = serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    assert_eq!(j["status"], "completed", "{text}");
    assert_eq!(j["deviated"], false);
    let created = j["run"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["output"]["status"] == 201)
        .count();
    assert_eq!(created, 2, "both fault rules were created: {text}");
    assert_eq!(j["rollbacks"].as_array().unwrap().len(), 2);
    assert!(up.faults("ratings-1").is_empty() && up.faults("ratings-2").is_empty());
}

/// A Toxiproxy server of this test's own (proxies are named per system).
struct Toxiproxy {
    child: Child,
    url: String,
}

impl Toxiproxy {
    fn start(bin: &str) -> Self {
        let port = free_port();
        let child = Command::new(bin)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let give_up = Instant::now() + Duration::from_secs(30);
        while !Command::new("curl")
            .args(["-sf", &format!("{url}/version")])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(Instant::now() < give_up, "toxiproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url }
    }

    fn toxics(&self, proxy: &str) -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/proxies/{proxy}/toxics", self.url)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn enabled(&self, proxy: &str) -> bool {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/proxies/{proxy}", self.url)])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["enabled"].as_bool().unwrap()
    }
}

/// `fleet up --toxiproxy` on the real Cassandra and Redis (a keyspace and
/// key prefix of its own, named from `name`), with a Toxiproxy of its
/// own; `None` (skipped, or failed under CI) without those backends.
/// Also returns the Cassandra contact points.
fn fleet_up_on_real_backends_through_toxiproxy(name: &str) -> Option<(FleetUp, Toxiproxy, String)> {
    let (Some(nodes), Some(redis), Some(toxi_bin)) = (
        backend("FLEET_TEST_SCYLLA_NODES"),
        backend("FLEET_TEST_REDIS_URL"),
        backend("FLEET_TEST_TOXIPROXY_BIN"),
    ) else {
        return None;
    };
    let toxi = Toxiproxy::start(&toxi_bin);
    let keyspace = format!("{name}_{:x}", std::process::id());
    let redis_prefix = format!("{name}-{:x}:", std::process::id());
    let up = FleetUp::start_with(
        &["--toxiproxy", &toxi.url],
        &[
            ("SCYLLA_NODES", nodes.as_str()),
            ("REDIS_URL", redis.as_str()),
            ("SCYLLA_KEYSPACE", keyspace.as_str()),
            ("REDIS_KEY_PREFIX", redis_prefix.as_str()),
        ],
    );
    Some((up, toxi, nodes))
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn store_faults_through_toxiproxy_hold_on_cassandra_and_redis() {
    let Some((up, toxi, nodes)) = fleet_up_on_real_backends_through_toxiproxy("gameday") else {
        return;
    };
    let record: Value =
        serde_json::from_slice(&std::fs::read(up.data_dir().join("run/toxiproxy.json")).unwrap())
            .unwrap();
    assert_eq!(record["proxies"]["cassandra"]["upstream"], nodes.as_str());

    let ran = up.gameday("cassandra-latency.json", &[]);
    ran.assert_held("cassandra-latency.json");
    let added = &ran.journal["run"][0]["output"]["stdout"];
    let added: Value = serde_json::from_str(added.as_str().unwrap()).unwrap();
    assert_eq!(added["toxic"]["attributes"]["latency"], 200);
    assert!(toxi.toxics("cassandra").is_empty(), "the toxic was removed");

    let ran = up.gameday("redis-down.json", &[]);
    ran.assert_held("redis-down.json");
    assert!(toxi.enabled("redis"), "redis proxy enabled again");
    // The outage was felt: the dal counted cache errors, and served anyway.
    let metrics = Command::new("curl")
        .args(["-sf", &format!("{}/metrics", up.admin("dal-1"))])
        .output()
        .unwrap();
    let errors: f64 = String::from_utf8_lossy(&metrics.stdout)
        .lines()
        .filter(|l| l.starts_with("fleet_dal_cache_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        errors > 0.0,
        "no cache errors counted: was Redis really down?"
    );
}

/// The sum of a metric's samples on an instance's /metrics.
fn metric_sum(admin: &str, name: &str, label: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-sf", &format!("{admin}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn consul_down_through_toxiproxy_keeps_the_last_known_view() {
    let (Some(consul_bin), Some(toxi_bin)) = (
        backend("FLEET_TEST_CONSUL_BIN"),
        backend("FLEET_TEST_TOXIPROXY_BIN"),
    ) else {
        return;
    };
    let consul_dir = tempfile::tempdir().unwrap();
    let consul = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ConsulAgent::start(&consul_bin, consul_dir.path()));
    let consul_addr = consul.http_addr().to_string();
    let toxi = Toxiproxy::start(&toxi_bin);
    let up = FleetUp::start_with(&["--toxiproxy", &toxi.url, "--consul", &consul_addr], &[]);
    let record: Value =
        serde_json::from_slice(&std::fs::read(up.data_dir().join("run/toxiproxy.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["proxies"]["consul"]["upstream"],
        consul_addr.as_str(),
        "{record}"
    );
    up.wait_healthy();
    let edge_admin = up.admin("edge-1");
    let errors_before = metric_sum(&edge_admin, "fleet_discovery_errors_total", "");

    let ran = up.gameday("consul-down.json", &[]);
    ran.assert_held("consul-down.json");
    // The method's probes passed too: served with under 1 % errors and the
    // edge ready while Consul was unreachable.
    for r in ran.journal["run"].as_array().unwrap() {
        if r["activity"]["type"] == "probe" {
            assert_eq!(r["output"]["status"], 0, "{r}");
        }
    }
    assert!(toxi.enabled("consul"), "consul proxy enabled again");
    // The outage was felt: the edge's discovery queries failed meanwhile.
    let errors_after = metric_sum(&edge_admin, "fleet_discovery_errors_total", "");
    assert!(
        errors_after > errors_before,
        "no discovery errors counted ({errors_before} → {errors_after}): was Consul really cut off?"
    );
}

#[test]
fn prometheus_scrapes_the_fleet_and_sees_the_ratings_breaker_open_and_close() {
    let (Some(prometheus), Some(jaeger)) = (
        backend("FLEET_TEST_PROMETHEUS_BIN"),
        backend("FLEET_TEST_JAEGER_BIN"),
    ) else {
        return;
    };
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let otlp = format!("127.0.0.1:{}", free_port());
    let ui = format!("127.0.0.1:{}", free_port());
    let up = FleetUp::start_with(
        &[
            "--observability",
            "--prometheus-addr",
            &prom_addr,
            "--prometheus-bin",
            &prometheus,
            "--jaeger-bin",
            &jaeger,
            "--jaeger-otlp-addr",
            &otlp,
            "--jaeger-ui-addr",
            &ui,
        ],
        &[],
    );
    let record = up.data_dir().join("run/observability.json");
    let give_up = Instant::now() + Duration::from_secs(90);
    while !record.exists() {
        assert!(Instant::now() < give_up, "no run/observability.json");
        std::thread::sleep(Duration::from_millis(100));
    }
    up.wait_healthy();
    // Every rule loaded and evaluated without error.
    let rules_url = format!("http://{prom_addr}/api/v1/rules");
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("curl")
            .args(["-sf", &rules_url])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let healthy = rules.iter().filter(|r| r["health"] == "ok").count();
        if rules.len() == 7 && healthy == rules.len() {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "rules not all loaded and healthy: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let ran = up.gameday("ratings-breaker-in-prometheus.json", &[]);
    ran.assert_held("ratings-breaker-in-prometheus.json");
    let seen = ran.journal["run"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["activity"]["name"] == "Prometheus shows the circuit open")
        .cloned()
        .unwrap();
    assert_eq!(seen["output"]["status"], 0, "{seen}");
    let out: Value = serde_json::from_str(seen["output"]["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(out["value"], 1.0, "{out}");
}
