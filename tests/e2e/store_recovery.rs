//! The whole system on the real backends while a store goes away and comes
//! back, measured from outside through the edge (issue 12, item 11):
//!
//! * Cassandra restarted under a steady stream of rating writes through the
//!   edge, with two dals: the seconds from Cassandra answering CQL again to
//!   the first write the edge acknowledges, and every acknowledged write
//!   still there afterwards;
//! * Redis restarted under title reads: every read is served (from
//!   Cassandra) while it is down, and the dals' Redis cache answers hits
//!   again once it is back.
//!
//! A test binary of its own: restarting the shared Cassandra or Redis would
//! disturb any other real-mode scenario running beside it (test binaries
//! run one after another; the two tests here take turns).

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleet_edge_client::{EdgeClient, RequestOptions};
use fleet_tests::{Mode, Size, System, scrape, sum_matching};

/// One restart at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn opts() -> RequestOptions {
    RequestOptions::default()
}

/// Whether the Cassandra node answers a CQL query now (seen from outside,
/// like a client would).
async fn cql_answers(node: &str) -> bool {
    let builder = scylla::client::session_builder::SessionBuilder::new()
        .known_node(node)
        .connection_timeout(Duration::from_millis(500));
    match tokio::time::timeout(Duration::from_secs(2), builder.build()).await {
        Ok(Ok(session)) => {
            let q = session.query_unpaged("SELECT release_version FROM system.local", ());
            matches!(
                tokio::time::timeout(Duration::from_secs(2), q).await,
                Ok(Ok(_))
            )
        }
        _ => false,
    }
}

/// Runs `scripts/backends restart <name>` in the background.
fn restart(ctl: String, name: &'static str) -> tokio::task::JoinHandle<std::process::Output> {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(ctl)
            .args(["restart", name])
            .output()
            .expect("scripts/backends runs")
    })
}

/// A rating the edge acknowledged, and when.
struct Acked {
    at: Instant,
    user: String,
    title: String,
    stars: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_the_edge_resume_within_seconds_of_cassandra_answering_again() {
    let Some(ctl) = fleet_testkit::backend("FLEET_TEST_BACKENDS_CTL") else {
        return;
    };
    let Some(nodes) = fleet_testkit::backend("FLEET_TEST_SCYLLA_NODES") else {
        return;
    };
    let node = nodes.split(',').next().unwrap().trim().to_owned();
    let _turn = TURN.lock().await;
    let size = Size {
        catalog_v1_2: 1,
        catalog_v1_3: 0,
        ratings: 1,
        dal: 2,
    };
    let Some(mut sys) = System::start_in(Mode::Real, size, &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();

    // Two writers, one rating every 50 ms each, each user rating once (so
    // every acknowledged write can be checked afterwards).
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let c = c.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut acked, mut refused) = (Vec::new(), 0u32);
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let user = format!("urec{w}x{i}");
                    let title = format!("t{:05}", 1 + (i * 7 + w) % 50);
                    let stars = 1 + i % 5;
                    match c.rate_title(&user, &title, stars, &opts()).await {
                        Ok(_) => acked.push(Acked {
                            at: Instant::now(),
                            user,
                            title,
                            stars,
                        }),
                        Err(_) => refused += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (acked, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let restarting = restart(ctl, "cassandra");
    let give_up = Instant::now() + Duration::from_secs(240);
    while cql_answers(&node).await {
        assert!(Instant::now() < give_up, "Cassandra never went down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down = Instant::now();
    while !cql_answers(&node).await {
        assert!(Instant::now() < give_up, "Cassandra never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = Instant::now();
    // Writes keep flowing until one has been acknowledged after the return
    // (or a minute has gone by), then a few seconds more.
    let mut first_ack = None;
    while first_ack.is_none() && back.elapsed() < Duration::from_secs(60) {
        // The writers' own record is read at the end; here a probe write.
        if c.rate_title("urecprobe", "t00001", 3, &opts())
            .await
            .is_ok()
        {
            first_ack = Some(back.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let out = restarting.await.unwrap();
    assert!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut acked, mut refused) = (Vec::new(), 0);
    for w in writers {
        let (a, r) = w.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    let writers_first = acked
        .iter()
        .map(|a| a.at)
        .filter(|t| *t >= back)
        .min()
        .map(|t| t - back);
    let first_ack = first_ack.expect("a write acknowledged within 60 s of Cassandra's return");
    println!(
        "cassandra restart behind 2 dals: down for {:?} (seen from outside); first write \
         acknowledged through the edge {first_ack:?} after Cassandra answered CQL again \
         (writers' first: {writers_first:?}); {} writes acknowledged, {refused} refused",
        back - down,
        acked.len()
    );
    assert!(refused > 0, "the restart was felt at the edge");
    // The promise is 10 s; before the fix it was 79 s. The bound here
    // leaves room for a busy machine (a timing assertion must not flake)
    // and still fails the old behaviour.
    assert!(
        first_ack < Duration::from_secs(30),
        "writes resumed only {first_ack:?} after Cassandra was back"
    );

    // Nothing acknowledged was lost: every acknowledged rating is there,
    // read back through the edge.
    let mut by_user: BTreeMap<&str, &Acked> = BTreeMap::new();
    for a in &acked {
        by_user.insert(&a.user, a);
    }
    for a in by_user.values() {
        let page = c
            .list_ratings(&a.user, Some(10), None, &opts())
            .await
            .unwrap()
            .value;
        let found = page.items.iter().find(|r| r.title_id == a.title);
        assert_eq!(
            found.map(|r| r.stars),
            Some(a.stars),
            "acknowledged rating lost: {} {} {}",
            a.user,
            a.title,
            a.stars
        );
    }
    sys.topology.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_are_served_from_cassandra_while_redis_is_down_and_caching_resumes() {
    let Some(ctl) = fleet_testkit::backend("FLEET_TEST_BACKENDS_CTL") else {
        return;
    };
    let _turn = TURN.lock().await;
    let size = Size {
        catalog_v1_2: 1,
        catalog_v1_3: 0,
        ratings: 1,
        dal: 1,
    };
    let Some(mut sys) = System::start_in(Mode::Real, size, &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let dal = sys.admin_addrs("dal")[0];
    let redis_hits =
        |text: &str| sum_matching(text, "fleet_dal_cache_lookups_total", &["result=\"hit\""]);

    // Readers over a small set of titles, so the cache is hit.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let c = c.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = format!("t{:05}", 1 + i % 10);
                match c.get_title(&id, &opts()).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hits_before = redis_hits(&scrape(dal).await);
    assert!(hits_before > 0.0, "the cache is hit before the restart");

    let out = restart(ctl, "redis").await.unwrap();
    assert!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = Instant::now();
    let errors = sum_matching(&scrape(dal).await, "fleet_dal_cache_errors_total", &[]);
    // Hits again once Redis is back.
    let hits_at_return = redis_hits(&scrape(dal).await);
    let mut resumed = None;
    while resumed.is_none() && back.elapsed() < Duration::from_secs(60) {
        if redis_hits(&scrape(dal).await) > hits_at_return {
            resumed = Some(back.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = reader.await.unwrap();
    println!(
        "redis restart: {ok} title reads served, {} failed; {errors} cache errors counted; \
         cache hits again {resumed:?} after Redis was back",
        failed.len()
    );
    assert!(failed.is_empty(), "every read was served: {failed:?}");
    assert!(errors > 0.0, "the dal noticed Redis was gone");
    assert!(
        resumed.is_some(),
        "the cache was hit again after Redis came back"
    );
    sys.topology.stop(Duration::from_secs(10)).await;
}
