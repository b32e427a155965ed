//! One suite, two backends: every test here runs against the embedded
//! store (redb + in-process cache) and against real Cassandra (+ Redis
//! where the test is about the cache), through the dal's gRPC API and its
//! driver client, on loopback sockets.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleet_dal_client::{CallOptions, Error, Progress, Rating};
use fleet_metrics::Metrics;

use fleet_testkit::probe::metric_sum;
use fleet_testkit::unique_name;
use support::{Backend, OwnRedis, StoreEnv, client, exit_ok, opts, percentile};

/// Generates `embedded::<name>` and `cassandra::<name>` for each scenario.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Embedded).await;
                }
            )*
        }
        mod cassandra {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Cassandra).await;
                }
            )*
        }
    };
}

both_backends!(
    reads_writes_paging_validation_and_restart,
    retried_duplicated_and_concurrent_ratings_never_double_count,
    repair_finds_and_fixes_drift_then_reports_none,
    admin_commands_are_idempotent,
    cache_outage_and_garbage_never_fail_a_request,
    deadlines_bound_every_query,
    latency_and_cache_hit_ratio_under_a_skewed_read_mix,
);

/// Bounds a whole scenario, so a hung backend fails the test instead of
/// hanging the suite.
async fn bounded<F: Future<Output = ()>>(limit: Duration, f: F) {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("scenario did not finish within {limit:?}"));
}

fn rating(user: &str, title: &str, stars: u32, at: i64) -> Rating {
    Rating {
        user_id: user.into(),
        title_id: title.into(),
        stars,
        rated_at_ms: at,
    }
}

async fn reads_writes_paging_validation_and_restart(backend: Backend) {
    let Some(env) = StoreEnv::new(backend, "reads_writes_paging") else {
        return;
    };
    bounded(Duration::from_secs(240), async {
        let dal = env.start().await;
        let c = client(&[dal.addr]);

        // Reads of the seed data.
        let t = c.get_title("t00001", opts()).await.unwrap();
        assert_eq!(t.id, "t00001");
        assert!(matches!(
            c.get_title("t99999", opts()).await,
            Err(Error::NotFound { .. })
        ));
        let batch = c
            .batch_get_titles(&["t00002".into(), "nope".into(), "t00001".into()], opts())
            .await
            .unwrap();
        let ids: Vec<_> = batch.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t00002", "t00001"], "request order, unknown left out");
        let genres = c.list_genres(opts()).await.unwrap();
        assert_eq!(genres.iter().map(|g| g.title_count).sum::<u64>(), 120);

        // Paging: every title of a genre exactly once, in id order; every
        // title overall exactly once.
        for genre in [Some(genres[0].name.as_str()), None] {
            let mut seen = Vec::new();
            let mut token: Option<Vec<u8>> = None;
            loop {
                let page = c
                    .list_titles(genre, 7, token.as_deref(), opts())
                    .await
                    .unwrap();
                assert!(page.items.len() <= 7);
                assert!(genre.is_none_or(|g| page.items.iter().all(|t| t.genre == g)));
                seen.extend(page.items.into_iter().map(|t| t.id));
                match page.next_page_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(seen, sorted, "id order, no duplicates");
            let expected = genre.map_or(120, |_| genres[0].title_count);
            assert_eq!(seen.len() as u64, expected);
        }
        // A token is opaque and bound to its listing. Cassandra's (a
        // checksummed driver paging state) is refused for another genre or
        // when edited; the embedded store's is a key position, which in
        // another listing still yields only that listing's rows.
        let first = c
            .list_titles(Some(&genres[0].name), 2, None, opts())
            .await
            .unwrap();
        let token = first.next_page_token.unwrap();
        let mut edited = token.clone();
        let last = edited.len() - 1;
        edited[last] ^= 0x55;
        for (genre, t) in [(&genres[1].name, &token), (&genres[0].name, &edited)] {
            match c.list_titles(Some(genre), 2, Some(t), opts()).await {
                Err(Error::InvalidArgument { .. }) => {}
                Ok(page) if backend == Backend::Embedded => {
                    assert!(page.items.iter().all(|t| t.genre == *genre));
                }
                other => panic!("foreign or edited token: {other:?}"),
            }
        }

        // Hostile input never reaches storage.
        for bad in ["", "a b", &"x".repeat(65), "t/../1"] {
            assert!(
                matches!(
                    c.get_title(bad, opts()).await,
                    Err(Error::InvalidArgument { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            c.list_titles(None, 101, None, opts()).await,
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            c.list_titles(None, 5, Some(b"\x09garbage"), opts()).await,
            Err(Error::InvalidArgument { .. })
        ));
        let too_many: Vec<String> = (0..101).map(|i| format!("t{i:05}")).collect();
        assert!(matches!(
            c.batch_get_titles(&too_many, opts()).await,
            Err(Error::InvalidArgument { .. })
        ));
        for bad in [
            rating("u_test", "t00005", 0, 1),
            rating("u_test", "t00005", 6, 1),
            rating("u_test", "t00005", 3, 0),
            rating("u_test", "t00005", 3, -1),
        ] {
            assert!(matches!(
                c.put_rating(bad, opts()).await,
                Err(Error::InvalidArgument { .. })
            ));
        }
        assert!(matches!(
            c.put_rating(rating("u_test", "t99999", 3, 1), opts()).await,
            Err(Error::NotFound { .. })
        ));

        // A rating, replaced by a newer one; an older one changes nothing.
        let before = c
            .batch_get_rating_summaries(&["t00005".into()], opts())
            .await
            .unwrap()[0]
            .clone();
        let at = 1_900_000_000_000;
        let first = c
            .put_rating(rating("u_test", "t00005", 4, at), opts())
            .await
            .unwrap();
        assert!(first.applied);
        assert_eq!(first.summary.count, before.count + 1);
        assert_eq!(first.summary.stars_sum, before.stars_sum + 4);
        let changed = c
            .put_rating(rating("u_test", "t00005", 2, at + 1), opts())
            .await
            .unwrap();
        assert!(changed.applied);
        assert_eq!(changed.summary.count, before.count + 1);
        assert_eq!(changed.summary.stars_sum, before.stars_sum + 2);
        let stale = c
            .put_rating(rating("u_test", "t00005", 5, at - 1), opts())
            .await
            .unwrap();
        assert!(!stale.applied);
        assert_eq!(stale.rating.stars, 2, "the stored rating is returned");
        assert_eq!(stale.summary, changed.summary);
        let cached = c
            .batch_get_rating_summaries(&["t00005".into()], opts())
            .await
            .unwrap();
        assert_eq!(cached[0], changed.summary, "the cache follows the write");
        let mine = c
            .list_ratings_by_user("u_test", 10, None, opts())
            .await
            .unwrap();
        assert_eq!(mine.items.len(), 1, "{:?}", mine.items);
        assert_eq!(mine.items[0].stars, 2);
        let of_title = c
            .list_ratings_by_title("t00005", 100, None, opts())
            .await
            .unwrap();
        assert_eq!(of_title.items.len() as u64, changed.summary.count);
        assert!(
            of_title
                .items
                .iter()
                .any(|r| r.user_id == "u_test" && r.stars == 2)
        );
        let top = c.top_rated(5, None, 1, opts()).await.unwrap();
        assert_eq!(top.len(), 5);
        assert!(top.windows(2).all(|w| w[0].average() >= w[1].average()));
        let top_genre = c
            .top_rated(5, Some(&genres[0].name), 1, opts())
            .await
            .unwrap();
        assert!(
            top_genre
                .windows(2)
                .all(|w| w[0].average() >= w[1].average())
        );

        // A user's ratings page newest first, each exactly once.
        for i in 0..12u32 {
            let t = format!("t{:05}", 20 + i);
            c.put_rating(
                rating("u_pager", &t, i % 5 + 1, 1_000 + i64::from(i)),
                opts(),
            )
            .await
            .unwrap();
        }
        let mut all = Vec::new();
        let mut token: Option<Vec<u8>> = None;
        loop {
            let page = c
                .list_ratings_by_user("u_pager", 5, token.as_deref(), opts())
                .await
                .unwrap();
            all.extend(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(all.len(), 12);
        assert!(all.windows(2).all(|w| w[0].rated_at_ms > w[1].rated_at_ms));

        // Progress: last write wins by the client's timestamp, newest first.
        let p = |title: &str, pos, at| Progress {
            user_id: "u_test".into(),
            title_id: title.into(),
            position_s: pos,
            updated_at_ms: at,
        };
        assert!(
            c.put_progress(p("t00001", 60, 10), opts())
                .await
                .unwrap()
                .applied
        );
        assert!(
            c.put_progress(p("t00002", 90, 20), opts())
                .await
                .unwrap()
                .applied
        );
        assert!(
            !c.put_progress(p("t00001", 5, 5), opts())
                .await
                .unwrap()
                .applied
        );
        assert!(
            c.put_progress(p("t00001", 70, 30), opts())
                .await
                .unwrap()
                .applied
        );
        assert!(matches!(
            c.put_progress(p("t00001", 86_401, 40), opts()).await,
            Err(Error::InvalidArgument { .. })
        ));
        let list = c.list_progress("u_test", 10, opts()).await.unwrap();
        assert_eq!(
            list.iter()
                .map(|p| (p.title_id.as_str(), p.position_s))
                .collect::<Vec<_>>(),
            [("t00001", 70), ("t00002", 90)]
        );

        // Admin port: ready, metrics per operation.
        let metrics = dal.metrics().await;
        assert!(metrics.contains("operation=\"PutRating\""), "{metrics}");
        assert!(metrics.contains("fleet_dal_cache_lookups_total"));

        // Everything survives a restart on the same store, not re-seeded.
        dal.stop().await;
        let dal = env.start().await;
        let c = client(&[dal.addr]);
        let mine = c
            .list_ratings_by_user("u_test", 10, None, opts())
            .await
            .unwrap();
        assert_eq!(mine.items[0].stars, 2);
        let again = c
            .batch_get_rating_summaries(&["t00005".into()], opts())
            .await
            .unwrap()[0]
            .clone();
        assert_eq!(again, changed.summary, "not re-seeded, nothing lost");
        dal.stop().await;
    })
    .await;
}

async fn retried_duplicated_and_concurrent_ratings_never_double_count(backend: Backend) {
    let Some(env) = StoreEnv::new(backend, "never_double_count") else {
        return;
    };
    bounded(Duration::from_secs(240), async {
        // Two instances on one Cassandra keyspace race each other; the
        // embedded store is one process's file.
        let first = env.start().await;
        let second = match backend {
            Backend::Cassandra => Some(env.start().await),
            Backend::Embedded => None,
        };
        let mut addrs = vec![first.addr];
        addrs.extend(second.as_ref().map(|s| s.addr));
        let clients: Vec<_> = addrs.iter().map(|a| client(&[*a])).collect();
        let title = "t00003";
        let before = clients[0]
            .batch_get_rating_summaries(&[title.into()], opts())
            .await
            .unwrap()[0]
            .clone();

        // 24 users; each sends three successive ratings, each of them three
        // times (a client retry and a duplicate), all at once, in an order
        // where older versions often arrive after newer ones.
        const USERS: u32 = 24;
        let mut writes = Vec::new();
        for u in 0..USERS {
            for copy in 0..3u32 {
                for version in [2u32, 0, 1] {
                    let stars = (u + version) % 5 + 1;
                    let at = 2_000_000_000_000 + i64::from(version);
                    let c = clients[((u + copy + version) as usize) % clients.len()].clone();
                    let r = rating(&format!("u_cc{u:02}"), title, stars, at);
                    writes.push(tokio::spawn(async move { c.put_rating(r, opts()).await }));
                }
            }
        }
        let started = Instant::now();
        let mut applied = 0;
        for w in writes {
            let outcome = w.await.unwrap().unwrap();
            applied += u32::from(outcome.applied);
        }
        let took = started.elapsed();
        let mut cas_retries = 0.0;
        for d in std::iter::once(&first).chain(second.as_ref()) {
            cas_retries += metric_sum(&d.metrics().await, "fleet_dal_store_cas_retries_total", &[]);
        }
        let expected_final: BTreeMap<String, u32> = (0..USERS)
            .map(|u| (format!("u_cc{u:02}"), (u + 2) % 5 + 1))
            .collect();
        let added_sum: u64 = expected_final.values().map(|s| u64::from(*s)).sum();
        eprintln!(
            "concurrency[{backend:?}]: {} writes ({USERS} users x 3 versions x 3 copies) over {} \
             instance(s) in {took:?}, {applied} applied, {cas_retries} compare-and-set retries",
            USERS * 9,
            clients.len()
        );
        assert!((USERS..=USERS * 3).contains(&applied), "{applied}");

        for c in &clients {
            let after = c
                .batch_get_rating_summaries(&[title.into()], opts())
                .await
                .unwrap()[0]
                .clone();
            assert_eq!(after.count, before.count + u64::from(USERS), "{after:?}");
            assert_eq!(after.stars_sum, before.stars_sum + added_sum, "{after:?}");
        }
        let mut by_title = BTreeMap::new();
        let mut token: Option<Vec<u8>> = None;
        loop {
            let page = clients[0]
                .list_ratings_by_title(title, 100, token.as_deref(), opts())
                .await
                .unwrap();
            for r in page.items {
                assert!(
                    by_title.insert(r.user_id.clone(), r).is_none(),
                    "one row per user"
                );
            }
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        for (user, stars) in &expected_final {
            assert_eq!(by_title[user].stars, *stars, "{user}");
            let mine = clients[0]
                .list_ratings_by_user(user, 10, None, opts())
                .await
                .unwrap();
            assert_eq!(mine.items.len(), 1, "{user}: {:?}", mine.items);
            assert_eq!(mine.items[0].stars, *stars);
            assert_eq!(mine.items[0].rated_at_ms, 2_000_000_000_002);
        }

        first.stop().await;
        if let Some(s) = second {
            s.stop().await;
        }
        let report = env.open_store().await.repair().await.unwrap();
        assert_eq!(report.found(), 0, "no drift after the races: {report:?}");
    })
    .await;
}

/// What the injected drift touches, read through the dal's gRPC API: the
/// summary of t00001, the genre row `inject_drift` plants (`nope`), the
/// ghost user's progress, and every title id of the full listing (the
/// CQL drift drops t00002 from it).
#[derive(Debug, PartialEq)]
struct Visible {
    summary: Vec<fleet_dal_client::RatingSummary>,
    nope_genre: Vec<String>,
    ghost_progress: Vec<Progress>,
    all_titles: Vec<String>,
}

async fn visible(c: &fleet_dal_client::DalClient) -> Visible {
    let summary = c
        .batch_get_rating_summaries(&["t00001".into()], opts())
        .await
        .unwrap();
    let nope_genre = c
        .list_titles(Some("nope"), 50, None, opts())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.id)
        .collect();
    let ghost_progress = c.list_progress("u_ghost", 50, opts()).await.unwrap();
    let mut all_titles = Vec::new();
    let mut token: Option<Vec<u8>> = None;
    loop {
        let page = c
            .list_titles(None, 100, token.as_deref(), opts())
            .await
            .unwrap();
        all_titles.extend(page.items.into_iter().map(|t| t.id));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Visible {
        summary,
        nope_genre,
        ghost_progress,
        all_titles,
    }
}

/// Drift injected into the store is found and fixed, judged through the
/// API a client uses (not only by the repair's own checker): after the
/// repair a fresh dal (empty cache) answers exactly what it answered before
/// the drift — the summary's true value, no ghost genre row, no ghost
/// progress, every title listed.
async fn repair_finds_and_fixes_drift_then_reports_none(backend: Backend) {
    let Some(env) = StoreEnv::new(backend, "repair_drift") else {
        return;
    };
    bounded(Duration::from_secs(240), async {
        let dal = env.start().await;
        let before = visible(&client(&[dal.addr])).await;
        assert!(before.nope_genre.is_empty(), "{before:?}");
        assert!(before.ghost_progress.is_empty(), "{before:?}");
        dal.stop().await;

        let store = env.open_store().await;
        store.inject_drift().await.unwrap();
        drop(store);
        // The drift is there for a client to see.
        let dal = env.start().await;
        let drifted = visible(&client(&[dal.addr])).await;
        dal.stop().await;
        assert_ne!(drifted.summary, before.summary, "the summary drifted");

        let store = env.open_store().await;
        let report = store.repair().await.unwrap();
        let kinds = report.checks.iter().filter(|c| c.1 > 0).count();
        eprintln!("repair[{backend:?}] after injected drift: {report:?}");
        assert!(kinds >= 5, "every kind of drift found: {report:?}");
        assert_eq!(report.found(), report.fixed(), "{report:?}");
        let again = store.repair().await.unwrap();
        assert_eq!(again.found(), 0, "{again:?}");
        drop(store);

        let dal = env.start().await;
        let after = visible(&client(&[dal.addr])).await;
        dal.stop().await;
        assert_eq!(after, before, "the API answers as before the drift");

        // The one-off process agrees.
        let code = tokio::task::block_in_place(|| env.admin("repair"));
        assert_eq!(code, exit_ok());
    })
    .await;
}

async fn admin_commands_are_idempotent(backend: Backend) {
    let Some(mut env) = StoreEnv::new(backend, "admin_commands") else {
        return;
    };
    env.set("SEED_TITLES", "30").set("SEED_USERS", "10");
    bounded(Duration::from_secs(240), async {
        let env = std::sync::Arc::new(env);
        // Migrations: concurrently where the store allows it (Cassandra;
        // the embedded file admits one process at a time), then again.
        let parallel = if backend == Backend::Cassandra { 3 } else { 1 };
        let runs: Vec<_> = (0..parallel)
            .map(|_| {
                let e = env.clone();
                tokio::task::spawn_blocking(move || e.admin("migrate"))
            })
            .collect();
        for r in runs {
            assert_eq!(r.await.unwrap(), exit_ok(), "concurrent dal migrate");
        }
        for cmd in ["migrate", "seed", "seed", "repair"] {
            let e = env.clone();
            let code = tokio::task::spawn_blocking(move || e.admin(cmd))
                .await
                .unwrap();
            assert_eq!(code, exit_ok(), "dal {cmd}");
        }
        let store = env.open_store().await;
        let schema = match backend {
            Backend::Embedded => fleet_dal::store::embedded::SCHEMA_VERSION,
            Backend::Cassandra => fleet_dal::store::cql::SCHEMA_VERSION,
        };
        assert_eq!(store.migrate().await.unwrap(), schema);
        assert!(!store.seed(env.config().seed_config).await.unwrap().seeded);
        assert_eq!(
            store
                .list_genres()
                .await
                .unwrap()
                .iter()
                .map(|g| g.title_count)
                .sum::<u64>(),
            30
        );
        drop(store);
        let usage = format!("{:?}", std::process::ExitCode::from(64));
        assert_eq!(
            format!(
                "{:?}",
                fleet_dal::main_with_args(env.env(), ["dal", "drop-everything"])
            ),
            usage
        );
    })
    .await;
}

async fn cache_outage_and_garbage_never_fail_a_request(backend: Backend) {
    let test = "cache_outage";
    let Some(mut env) = StoreEnv::new(backend, test) else {
        return;
    };
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let prefix = format!("{}:", unique_name("t_c"));
    env.set("REDIS_URL", redis.url())
        .set("REDIS_KEY_PREFIX", prefix.clone())
        .set("CACHE_TITLE_TTL", "100s")
        .set("CACHE_NEGATIVE_TTL", "3s")
        .set("REDIS_TIMEOUT", "100ms");
    bounded(Duration::from_secs(240), async {
        let dal = env.start().await;
        let c = client(&[dal.addr]);
        let mut r = redis.conn().await;

        // Read-through: the second read of a title is a hit.
        let t = c.get_title("t00001", opts()).await.unwrap();
        assert_eq!(c.get_title("t00001", opts()).await.unwrap(), t);
        let m = dal.metrics().await;
        let lookups = "fleet_dal_cache_lookups_total";
        assert!(metric_sum(&m, lookups, &["cache=\"titles\"", "result=\"hit\""]) >= 1.0);

        // TTLs are spread: 40 titles filled together expire apart, each
        // within ±10 % of CACHE_TITLE_TTL.
        let ids: Vec<String> = (1..=40).map(|i| format!("t{i:05}")).collect();
        c.batch_get_titles(&ids, opts()).await.unwrap();
        let mut ttls = Vec::new();
        for id in &ids {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(format!("{prefix}t:{id}"))
                .query_async(&mut r)
                .await
                .unwrap();
            ttls.push(ttl);
        }
        assert!(
            ttls.iter().all(|t| (85_000..=110_000).contains(t)),
            "{ttls:?}"
        );
        let distinct: std::collections::BTreeSet<_> = ttls.iter().map(|t| t / 1000).collect();
        assert!(distinct.len() >= 10, "jittered: {ttls:?}");

        // Negative caching: an unknown id is remembered briefly.
        for _ in 0..2 {
            assert!(matches!(
                c.get_title("t99999", opts()).await,
                Err(Error::NotFound { .. })
            ));
        }
        let m = dal.metrics().await;
        assert!(
            metric_sum(
                &m,
                lookups,
                &["cache=\"titles\"", "result=\"negative_hit\""]
            ) >= 1.0
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}t:t99999"))
            .query_async(&mut r)
            .await
            .unwrap();
        assert!((1..=3_300).contains(&ttl), "short negative TTL: {ttl}");

        // A write replaces the cached summary.
        let s0 = c
            .batch_get_rating_summaries(&["t00007".into()], opts())
            .await
            .unwrap()[0]
            .clone();
        let w = c
            .put_rating(rating("u_cache", "t00007", 5, 1_000), opts())
            .await
            .unwrap();
        assert_eq!(w.summary.count, s0.count + 1);
        let s1 = c
            .batch_get_rating_summaries(&["t00007".into()], opts())
            .await
            .unwrap()[0]
            .clone();
        assert_eq!(s1, w.summary, "no stale summary after a write");

        // Garbage in Redis is a miss, dropped, counted; the answer is right.
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}t:t00002"))
            .arg(b"\xff\x00garbage".as_slice())
            .query_async(&mut r)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}s:t00007"))
            .arg("S-not-protobuf")
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(c.get_title("t00002", opts()).await.unwrap().id, "t00002");
        let s2 = c
            .batch_get_rating_summaries(&["t00007".into()], opts())
            .await
            .unwrap()[0]
            .clone();
        assert_eq!(s2, w.summary);
        let errors = "fleet_dal_cache_errors_total";
        let m = dal.metrics().await;
        assert!(metric_sum(&m, errors, &["kind=\"garbage\""]) >= 2.0, "{m}");

        // Redis killed mid-run, then back: not one request fails and no
        // write is lost.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        for worker in 0..4u32 {
            let c = c.clone();
            let stop = stop.clone();
            load.push(tokio::spawn(async move {
                let (mut ok, mut failed, mut acked) = (0u32, Vec::new(), Vec::new());
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let title = format!("t{:05}", 1 + (i * 7 + worker) % 40);
                    let res = match i % 3 {
                        0 => c.get_title(&title, opts()).await.map(|_| ()),
                        1 => c
                            .batch_get_rating_summaries(std::slice::from_ref(&title), opts())
                            .await
                            .map(|_| ()),
                        _ => {
                            let r = rating(&format!("u_k{worker}_{i}"), &title, 1 + i % 5, 5_000);
                            let out = c.put_rating(r.clone(), opts()).await.map(|_| ());
                            if out.is_ok() {
                                acked.push(r);
                            }
                            out
                        }
                    };
                    match res {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed, acked)
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.restart();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failed, mut acked) = (0, Vec::new(), Vec::new());
        for l in load {
            let (o, f, a) = l.await.unwrap();
            ok += o;
            failed.extend(f);
            acked.extend(a);
        }
        let m = dal.metrics().await;
        let cache_errors = metric_sum(&m, errors, &[]);
        eprintln!(
            "redis outage[{backend:?}]: {ok} requests ok, {} failed, {} writes acked, \
             {cache_errors} cache errors counted",
            failed.len(),
            acked.len()
        );
        assert!(
            failed.is_empty(),
            "requests failed during the outage: {failed:?}"
        );
        assert!(ok > 50, "load ran: {ok}");
        assert!(cache_errors > 2.0, "the outage is visible in metrics");
        for r in &acked {
            let mine = c
                .list_ratings_by_user(&r.user_id, 5, None, opts())
                .await
                .unwrap();
            assert_eq!(mine.items.len(), 1, "acked write lost: {r:?}");
        }
        // The cache is back in use.
        let hits_before = metric_sum(&m, lookups, &["cache=\"titles\"", "result=\"hit\""]);
        let back = Instant::now();
        loop {
            c.get_title("t00011", opts()).await.unwrap();
            let m = dal.metrics().await;
            if metric_sum(&m, lookups, &["cache=\"titles\"", "result=\"hit\""]) > hits_before {
                eprintln!(
                    "redis back[{backend:?}]: cache hit again {:?} after the check began",
                    back.elapsed()
                );
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "cache never came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        dal.stop().await;

        // Repair leaves no drift between store and cache.
        let metrics = Metrics::new("dal", "1.0.0");
        let config = env.config();
        let store = env.open_store().await;
        let cache =
            fleet_dal::cache::from_config(&config.cache, config.redis.as_ref(), &metrics).unwrap();
        let mut report = store.repair().await.unwrap();
        report
            .checks
            .extend(cache.repair(store.as_ref()).await.unwrap());
        assert_eq!(report.found(), report.fixed(), "{report:?}");
        let mut again = store.repair().await.unwrap();
        again
            .checks
            .extend(cache.repair(store.as_ref()).await.unwrap());
        eprintln!("repair after the redis outage[{backend:?}]: first {report:?}, then {again:?}");
        assert_eq!(again.found(), 0, "{again:?}");
    })
    .await;
}

async fn deadlines_bound_every_query(backend: Backend) {
    let Some(env) = StoreEnv::new(backend, "deadlines") else {
        return;
    };
    bounded(Duration::from_secs(240), async {
        let dal = env.start().await;
        let c = client(&[dal.addr]);
        // Whatever the budget, the answer is the result or
        // DEADLINE_EXCEEDED, within the budget plus scheduling slack —
        // never a hang, never another error.
        for budget_ms in [1u64, 2, 5, 10, 20] {
            let o = CallOptions::timeout(Duration::from_millis(budget_ms));
            let start = Instant::now();
            let outcomes = [
                c.top_rated(10, None, 1, o).await.map(|_| ()),
                c.list_genres(o).await.map(|_| ()),
                c.get_title("t00009", o).await.map(|_| ()),
                c.put_rating(rating("u_deadline", "t00009", 3, 7), o)
                    .await
                    .map(|_| ()),
            ];
            for out in outcomes {
                assert!(
                    matches!(out, Ok(()) | Err(Error::DeadlineExceeded { .. })),
                    "budget {budget_ms}ms: {out:?}"
                );
            }
            assert!(start.elapsed() < Duration::from_millis(4 * budget_ms + 400));
        }
        // And a write cut off by its deadline never half-applies: a retry
        // with time to spare finds one rating, counted once.
        let done = c
            .put_rating(rating("u_deadline", "t00009", 3, 7), opts())
            .await
            .unwrap();
        let mine = c
            .list_ratings_by_user("u_deadline", 10, None, opts())
            .await
            .unwrap();
        assert_eq!(mine.items.len(), 1);
        let of_title = c
            .list_ratings_by_title("t00009", 100, None, opts())
            .await
            .unwrap();
        assert_eq!(of_title.items.len() as u64, done.summary.count);
        dal.stop().await;
        let report = env.open_store().await.repair().await.unwrap();
        assert_eq!(report.found(), 0, "{report:?}");
    })
    .await;
}

/// A Zipf(1.1)-like title index over `n` titles, from a uniform `u`.
fn zipf(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|c| *c < u).min(cdf.len() - 1)
}

async fn latency_and_cache_hit_ratio_under_a_skewed_read_mix(backend: Backend) {
    let test = "latency_hit_ratio";
    let Some(mut env) = StoreEnv::new(backend, test) else {
        return;
    };
    // Cassandra runs with Redis in front (the production pair), the
    // embedded store with its in-process cache.
    if backend == Backend::Cassandra {
        let Some(url) = fleet_testkit::backend("FLEET_TEST_REDIS_URL") else {
            return;
        };
        env.set("REDIS_URL", url)
            .set("REDIS_KEY_PREFIX", format!("{}:", unique_name("t_lat")));
    }
    bounded(Duration::from_secs(240), async {
        let dal = env.start().await;
        let c = client(&[dal.addr]);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;

        // Writes: distinct users, so every one applies.
        let mut writes = Vec::new();
        for i in 0..300u32 {
            let r = rating(
                &format!("u_lat{i}"),
                &format!("t{:05}", 1 + i % 120),
                1 + i % 5,
                9,
            );
            let s = Instant::now();
            c.put_rating(r, opts()).await.unwrap();
            writes.push(s.elapsed());
        }
        writes.sort();

        // Cold reads: every title once, all misses.
        let mut cold = Vec::new();
        for i in 1..=120 {
            let s = Instant::now();
            c.get_title(&format!("t{i:05}"), opts()).await.unwrap();
            cold.push(s.elapsed());
        }
        cold.sort();
        // Evict what the cold pass filled: a fresh instance for the
        // in-process cache, FLUSH of our prefix for Redis (a new prefix).
        dal.stop().await;
        if backend == Backend::Cassandra {
            env.set("REDIS_KEY_PREFIX", format!("{}:", unique_name("t_lat")));
        }
        let dal = env.start().await;
        let c = client(&[dal.addr]);

        // Skewed reads: Zipf(1.1) over 120 titles, titles and summaries.
        let weights: Vec<f64> = (1..=120).map(|k| 1.0 / f64::from(k).powf(1.1)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        let mut reads = Vec::new();
        for _ in 0..2000 {
            let id = format!("t{:05}", 1 + zipf(&cdf, rand::random::<f64>()));
            let s = Instant::now();
            c.get_title(&id, opts()).await.unwrap();
            reads.push(s.elapsed());
        }
        reads.sort();
        let m = dal.metrics().await;
        let lookups = "fleet_dal_cache_lookups_total";
        let hits = metric_sum(&m, lookups, &["cache=\"titles\"", "result=\"hit\""]);
        let misses = metric_sum(&m, lookups, &["cache=\"titles\"", "result=\"miss\""]);
        let ratio = hits / (hits + misses);
        eprintln!(
            "MEASURED[{backend:?}{}]: write p50 {:.2} ms p99 {:.2} ms | read, cache miss p50 \
             {:.2} ms p99 {:.2} ms | Zipf(1.1) reads over 120 titles: hit ratio {:.1} %, p50 \
             {:.2} ms p99 {:.2} ms",
            if backend == Backend::Cassandra {
                "+redis"
            } else {
                "+local cache"
            },
            ms(percentile(&writes, 0.5)),
            ms(percentile(&writes, 0.99)),
            ms(percentile(&cold, 0.5)),
            ms(percentile(&cold, 0.99)),
            ratio * 100.0,
            ms(percentile(&reads, 0.5)),
            ms(percentile(&reads, 0.99)),
        );
        assert!(ratio > 0.9, "a skewed mix is mostly hits: {ratio}");
        dal.stop().await;
    })
    .await;
}
