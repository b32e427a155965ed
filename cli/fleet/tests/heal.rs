//! `fleet up` heals: an instance killed with SIGKILL is started again on
//! its addresses without a human, the registry and `fleet status` show the
//! restart, and SIGTERM still stops everything (nothing is restarted
//! during shutdown).

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_edge_client::{EdgeClient, RequestOptions};
use fleet_testkit::FleetUp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn registry(data: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read(data.join("run/registry.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn entry(data: &Path, id: &str) -> serde_json::Value {
    registry(data)
        .into_iter()
        .find(|e| e["instance_id"] == id)
        .unwrap_or_else(|| panic!("{id} in the registry"))
}

fn pid(e: &serde_json::Value) -> Pid {
    Pid::from_raw(i32::try_from(e["pid"].as_u64().unwrap()).unwrap())
}

fn alive(pid: Pid) -> bool {
    kill(pid, None).is_ok()
}

/// Starts `fleet up` (one instance per service) and waits for its "all N
/// instances ready" line; every later stdout line arrives on
/// [`FleetUp::rest`].
async fn up(data: &Path) -> FleetUp {
    FleetUp::up(env!("CARGO_BIN_EXE_fleet"), "127.0.0.1:0", data)
        .instances(1, 0, 0, 1)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dal_is_restarted_and_writes_come_back_without_a_human() {
    let data = tempfile::tempdir().unwrap();
    let mut fleet = up(data.path()).await;
    let dal = entry(data.path(), "dal-1");
    assert_eq!(dal["restarts"], 0);
    let edge = entry(data.path(), "edge-1");
    let c = EdgeClient::new(&format!("http://{}", edge["addr"].as_str().unwrap())).unwrap();
    let o = RequestOptions::default();
    assert!(
        c.rate_title("heal-user", "t00001", 3, &o)
            .await
            .unwrap()
            .value
            .applied
    );

    // A crash, as far as anyone can tell.
    let killed = pid(&dal);
    kill(killed, Signal::SIGKILL).unwrap();
    let t = Instant::now();
    let mut failed = 0u32;
    let healed = tokio::time::timeout(Duration::from_secs(60), async {
        let mut n = 1u32;
        loop {
            n += 1;
            let title = format!("t{n:05}");
            match c.rate_title("heal-user", &title, 4, &o).await {
                Ok(r) if r.value.applied => return title,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("writes came back without a human");
    let heal_time = t.elapsed();
    eprintln!(
        "fleet up healed a kill -9 of the only dal: first acknowledged write {heal_time:?} \
         after the kill ({failed} writes refused meanwhile, first good one to {healed})"
    );
    assert!(failed > 0, "the kill was felt (else this proves nothing)");

    // Logged as JSON lines: the exit, then the restart.
    let mut events = Vec::new();
    while events.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(10), fleet.rest.recv())
            .await
            .expect("the supervisor logs the exit and the restart")
            .expect("fleet up still running");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["instance"] == "dal-1"
        {
            events.push(v);
        }
    }
    assert_eq!(events[0]["message"], "instance exited");
    assert_eq!(events[1]["message"], "instance restarted");
    assert_eq!(events[1]["restarts"], 1);

    // The registry has the new process, on the same addresses.
    let now = entry(data.path(), "dal-1");
    assert_eq!(now["restarts"], 1);
    assert_ne!(now["pid"], dal["pid"]);
    assert_eq!(now["addr"], dal["addr"]);
    assert!(alive(pid(&now)));
    assert!(!alive(killed));
    let rows = fleet::status::from_registry(&data.path().join("run/registry.json"))
        .await
        .unwrap();
    let row = rows.iter().find(|r| r.instance_id == "dal-1").unwrap();
    assert_eq!(row.restarts, Some(1));
    assert_eq!(row.health, "ready");
    assert!(
        rows.iter()
            .filter(|r| r.instance_id != "dal-1")
            .all(|r| r.restarts == Some(0)),
        "{rows:?}"
    );

    // Nothing acknowledged was lost across the crash.
    let mine = c
        .list_ratings("heal-user", None, None, &o)
        .await
        .unwrap()
        .value;
    let titles: Vec<&str> = mine.items.iter().map(|r| r.title_id.as_str()).collect();
    assert!(
        titles.contains(&"t00001") && titles.contains(&healed.as_str()),
        "{titles:?}"
    );

    // SIGTERM stops everything, and nothing is restarted on the way out.
    let pids: Vec<Pid> = registry(data.path()).iter().map(pid).collect();
    fleet.stop().await;
    let mut rest = Vec::new();
    while let Some(line) = fleet.rest.recv().await {
        rest.push(line);
    }
    assert!(
        !rest.iter().any(|l| l.contains("instance restarted")),
        "restarted during shutdown: {rest:#?}"
    );
    assert!(
        rest.iter().any(|l| l == "fleet: stopped cleanly"),
        "{rest:#?}"
    );
    for p in pids {
        assert!(!alive(p), "{p} still running after fleet up stopped");
    }
}
