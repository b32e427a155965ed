//! Cassandra faults: unreachable at start, restarted under load.
//!
//! Its own test binary, because the restart takes the shared test node
//! away for ~10 s; cargo runs test binaries one after another, so no other
//! suite sees the outage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleet_dal_client::{Error, Progress, Rating};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use support::{Backend, Running, StoreEnv, backend_var, client, opts};

async fn health(addr: std::net::SocketAddr) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "dal.v1.DataAccess".into(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

/// Needs no server: nothing listens on the port it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cassandra_at_start_is_not_ready_and_keeps_retrying() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Nothing listens there once the listener is dropped.
    let mut env = StoreEnv::new(Backend::Embedded, "unreachable").unwrap();
    env.set("SCYLLA_NODES", closed.to_string())
        .set("SCYLLA_CONNECT_TIMEOUT", "100ms");
    let dal = Running::start(env.config()).await;
    let c = client(&[dal.grpc]);
    let start = Instant::now();
    let mut attempts_seen = Vec::new();
    while start.elapsed() < Duration::from_secs(4) {
        let (code, body) = dal.readyz().await;
        assert_eq!(code, 503, "{body}");
        if let Some(n) = body
            .split("attempt ")
            .nth(1)
            .and_then(|rest| rest.split([',', ')']).next())
            .and_then(|n| n.trim().parse::<u32>().ok())
        {
            attempts_seen.push(n);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        health(dal.grpc).await,
        Some(ServingStatus::NotServing as i32),
        "gRPC health says NOT_SERVING"
    );
    // Calls fail fast with UNAVAILABLE, never a panic or a hang.
    let t = Instant::now();
    assert!(matches!(
        c.get_title("t00001", opts()).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        attempts_seen.last() > attempts_seen.first(),
        "keeps retrying: {attempts_seen:?}"
    );
    assert!(!dal.task.is_finished(), "still running");
    dal.stop().await;
}

/// A Cassandra restart in the middle of a stream of writes loses none of
/// the writes the dal acknowledged; writers retry what failed during the
/// outage (the same write, same timestamp), and afterwards the stores
/// agree with each other (`repair` finds nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cassandra_restart_mid_load_loses_no_acknowledged_write() {
    let test = "cassandra_restart_mid_load";
    let Some(ctl) = backend_var("FLEET_TEST_BACKENDS_CTL", test) else {
        return;
    };
    let Some(mut env) = StoreEnv::new(Backend::Cassandra, test) else {
        return;
    };
    env.set("SEED_TITLES", "50").set("SEED_USERS", "5");
    let run = async {
        let dal = env.start().await;
        let c = client(&[dal.grpc]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..6u32 {
            let c = c.clone();
            let stop = stop.clone();
            writers.push(tokio::spawn(async move {
                let (mut acked, mut failures) = (Vec::new(), 0u32);
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let title = format!("t{:05}", 1 + (i * 13 + w) % 50);
                    let r = Rating {
                        user_id: format!("u_r{w}_{i}"),
                        title_id: title.clone(),
                        stars: 1 + i % 5,
                        rated_at_ms: 1_000 + i64::from(i),
                    };
                    let p = Progress {
                        user_id: format!("u_r{w}"),
                        title_id: title,
                        position_s: i,
                        updated_at_ms: i64::from(i),
                    };
                    // Retry the same write until it is acknowledged.
                    loop {
                        match c.put_rating(r.clone(), opts()).await {
                            Ok(_) => break,
                            Err(_) => failures += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    acked.push(r);
                    loop {
                        match c.put_progress(p.clone(), opts()).await {
                            Ok(_) => break,
                            Err(_) => failures += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                (acked, failures, i)
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let restart = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(ctl)
                .args(["restart", "cassandra"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let restart_took = restart.elapsed();
        // Writes must flow again after the restart.
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.store(true, Ordering::Relaxed);
        let (mut acked, mut failures, mut progress) = (Vec::new(), 0, 0);
        for w in writers {
            let (a, f, i) = w.await.unwrap();
            acked.extend(a);
            failures += f;
            progress += i;
        }
        dal.wait_ready(Duration::from_secs(30)).await;

        // Every acknowledged rating is there, on both sides.
        let mut present = 0;
        for r in &acked {
            let mine = c
                .list_ratings_by_user(&r.user_id, 5, None, opts())
                .await
                .unwrap();
            if mine.items.len() == 1 && mine.items[0].stars == r.stars {
                present += 1;
            }
        }
        let mut by_title = 0;
        for t in 1..=50 {
            let title = format!("t{t:05}");
            let mut token: Option<Vec<u8>> = None;
            loop {
                let page = c
                    .list_ratings_by_title(&title, 100, token.as_deref(), opts())
                    .await
                    .unwrap();
                by_title += page
                    .items
                    .iter()
                    .filter(|r| r.user_id.starts_with("u_r"))
                    .count();
                match page.next_page_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        }
        eprintln!(
            "cassandra restart under load: restart took {restart_took:?}; {} ratings acked \
             ({progress} write rounds), {present} present by user, {by_title} by title, \
             {failures} attempts failed during the outage and were retried",
            acked.len()
        );
        assert_eq!(present, acked.len(), "acknowledged ratings lost");
        assert_eq!(by_title, acked.len(), "by-title rows lost or doubled");
        assert!(
            failures > 0,
            "the restart was felt (else the test proves nothing)"
        );
        dal.stop().await;
        let report = env.open_store().await.repair().await.unwrap();
        eprintln!("repair after the restart: {report:?}");
        assert_eq!(report.found(), report.fixed(), "{report:?}");
        let again = env.open_store().await.repair().await.unwrap();
        assert_eq!(again.found(), 0, "zero drift remains: {again:?}");
    };
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("bounded: restart scenario within 300 s");
}
