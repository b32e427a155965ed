//! The real binaries on loopback, started exactly as `fleet up` starts them,
//! driven through the edge's driver client — every scenario twice: on the
//! embedded default (`embedded::…`) and on Cassandra, Redis and Consul
//! (`real::…`).

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fleet_edge_client::{EdgeClient, RequestOptions};
use fleet_tests::{Mode, Size, System, both_modes};

fn opts() -> RequestOptions {
    RequestOptions::default()
}

both_modes!(
    the_whole_system_serves_every_route_and_stops_cleanly,
    losing_a_ratings_instance_costs_no_request,
    the_request_id_and_trace_reach_every_hop_every_log_line_names_them_and_none_has_a_token,
    cursors_walk_every_title_of_a_genre_exactly_once_in_order,
    repeated_and_concurrent_ratings_through_the_edge_never_double_count,
);

async fn the_whole_system_serves_every_route_and_stops_cleanly(mode: Mode) {
    let Some(mut sys) = System::start_in(mode, Size::default(), &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();

    let t = c.get_title("t00010", &opts()).await.unwrap();
    assert_eq!(t.value.title.id, "t00010");
    assert!(t.value.degraded.is_empty(), "{:?}", t.value.degraded);
    let page = c
        .list_titles(Some("comedy"), Some(3), None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(page.items.len(), 3);
    let next = c
        .list_titles(
            Some("comedy"),
            Some(3),
            page.next_cursor.as_deref(),
            &opts(),
        )
        .await
        .unwrap()
        .value;
    assert!(next.items[0].id > page.items[2].id, "the cursor moves on");

    let rated = c
        .rate_title("e2e-user", "t00010", 5, &opts())
        .await
        .unwrap()
        .value;
    assert!(rated.applied);
    let p = c
        .record_progress("e2e-user", "t00010", 300, &opts())
        .await
        .unwrap()
        .value;
    assert!(p.applied);
    let home = c.home("e2e-user", &opts()).await.unwrap().value;
    assert!(home.degraded.is_empty(), "{:?}", home.degraded);
    // Built from the store: the row of what this user is watching holds
    // exactly the title with its position, and the other rows are filled.
    assert_eq!(home.rows[0].items.len(), 1, "{:?}", home.rows[0]);
    assert_eq!(home.rows[0].items[0].title.id, "t00010");
    assert_eq!(home.rows[0].items[0].position_s, Some(300));
    assert!(
        home.rows.iter().skip(1).all(|r| !r.items.is_empty()),
        "{:?}",
        home.rows
    );
    let mine = c
        .list_ratings("e2e-user", None, None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(mine.items[0].stars, 5);

    // Both catalog releases serve side by side; a pin picks one.
    for (pin, version) in [("1.2", "1.2.4"), ("1.3", "1.3.0")] {
        let r = c
            .get_title("t00011", &opts().pin("catalog", pin))
            .await
            .unwrap();
        let served: Vec<&str> = r
            .served_by
            .iter()
            .filter_map(|s| s.strip_prefix("catalog/"))
            .collect();
        assert!(
            served.iter().all(|s| s.starts_with(version)) && !served.is_empty(),
            "pin {pin}: {served:?}"
        );
        let page = c
            .list_titles(None, Some(100), None, &opts().pin("catalog", pin))
            .await
            .unwrap()
            .value;
        let badged = page.items.iter().filter(|t| !t.badges.is_empty()).count();
        assert_eq!(badged > 0, pin == "1.3", "only 1.3 adds badges ({badged})");
    }
    assert!(sys.served_calls("dal").await > 0);

    // SIGTERM drains every instance: each exits 0 within its grace period.
    for (id, status, killed) in sys.topology.stop(Duration::from_secs(10)).await {
        assert!(!killed, "{id} had to be killed ({status})");
        assert!(status.contains("exit status: 0"), "{id}: {status}");
    }
}

async fn losing_a_ratings_instance_costs_no_request(mode: Mode) {
    let Some(mut sys) = System::start_in(mode, Size::default(), &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    // Ordinary traffic first: it earns the retry budget (retries are at
    // most 10% of requests) that failing over will spend.
    for _ in 0..80 {
        c.list_ratings("u00001", Some(1), None, &opts())
            .await
            .unwrap();
    }
    let victim = sys
        .topology
        .instances()
        .find(|i| i.spec.service == "ratings")
        .map(|i| i.spec.instance_id.clone())
        .unwrap();
    sys.topology.instance_mut(&victim).unwrap().kill().unwrap();

    // Every write still succeeds: retried on the other instance, and the
    // dead one is ejected.
    for n in 0..40u32 {
        let title = format!("t{:05}", 100 + n);
        let r = c.rate_title("e2e-kill", &title, 1 + n % 5, &opts()).await;
        assert!(r.is_ok(), "write {n} failed: {r:?}");
    }
    let mine = c
        .list_ratings("e2e-kill", Some(100), None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(mine.items.len(), 40, "every acknowledged write is stored");
    sys.topology.stop(Duration::from_secs(10)).await;
}

async fn the_request_id_and_trace_reach_every_hop_every_log_line_names_them_and_none_has_a_token(
    mode: Mode,
) {
    let Some(mut sys) = System::start_in(
        mode,
        Size::default(),
        &[(
            "RUST_LOG",
            "info,fleet_server=debug,fleet_edge=debug,fleet_discovery=debug",
        )],
    )
    .await
    else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let rid = "e2e-trace-req-1";
    let o = RequestOptions {
        request_id: Some(rid.into()),
        ..RequestOptions::default()
    }
    .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"));
    // A home page: the edge fans out to catalog and ratings, both call the
    // dal — all four services serve this one request.
    let r = c.home("u00007", &o).await.unwrap();
    assert_eq!(r.request_id, rid);
    // Credentials pass through too: a change with the admin token, the
    // stream with it in the query (as browsers send it), a wrong token.
    let edge_admin = sys.admin_addrs("edge")[0];
    let id = fleet_tests::add_fault(
        edge_admin,
        serde_json::json!({"action": {"type": "delay", "ms": 1}}),
    )
    .await;
    assert!(id > 0);
    fleet_tests::clear_faults(edge_admin).await;
    let http = reqwest::Client::new();
    let stream = http
        .get(format!(
            "http://{edge_admin}/hystrix.stream?access_token={}",
            fleet_tests::ADMIN_TOKEN
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);
    let wrong = http
        .post(format!("http://{edge_admin}/admin/faults"))
        .bearer_auth("not-the-admin-token-at-all")
        .json(&serde_json::json!({"action": {"type": "delay", "ms": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    sys.topology.stop(Duration::from_secs(10)).await;

    // Every service logged this request, and every line that names the
    // request names its trace too (and the other way round).
    let logs = sys.data.path().join("logs");
    for service in ["edge", "catalog", "ratings", "dal"] {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(&logs).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with(service) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            lines.extend(
                text.lines()
                    .filter(|l| l.contains(rid) || l.contains(trace))
                    .map(str::to_owned),
            );
        }
        assert!(!lines.is_empty(), "no {service} log line names the request");
        // No credential is ever logged, at debug level either.
        for entry in std::fs::read_dir(&logs).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for secret in [fleet_tests::ADMIN_TOKEN, "not-the-admin-token-at-all"] {
                assert!(
                    !text.contains(secret),
                    "{} logged a token: {}",
                    path.display(),
                    text.lines()
                        .find(|l| l.contains(secret))
                        .unwrap_or_default()
                );
            }
        }
        for l in &lines {
            assert!(
                l.contains(&format!("\"request_id\":\"{rid}\"")) && l.contains(trace),
                "{service} logged a line of the request without both ids: {l}"
            );
        }
    }
}

/// Pages of 7 through one genre (the dal pages Cassandra with its own
/// paging state, embedded redb by key): every title of the genre, as the
/// seed made them, exactly once and in id order.
async fn cursors_walk_every_title_of_a_genre_exactly_once_in_order(mode: Mode) {
    let Some(mut sys) = System::start_in(mode, Size::default(), &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let genre = "drama";
    let expected: Vec<String> = fleet_seed::titles(&fleet_seed::SeedConfig::default())
        .into_iter()
        .filter(|t| t.genre == genre)
        .map(|t| t.id)
        .collect();
    assert!(expected.len() > 20, "the seed has a real genre to page");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = c
            .list_titles(Some(genre), Some(7), cursor.as_deref(), &opts())
            .await
            .unwrap()
            .value;
        pages += 1;
        assert!(page.items.len() <= 7);
        assert!(page.items.iter().all(|t| t.genre == genre));
        seen.extend(page.items.into_iter().map(|t| t.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages <= expected.len(), "the cursor never ends");
    }
    assert_eq!(seen, expected, "{mode:?}: every title once, in order");
    assert_eq!(
        pages,
        expected.len().div_ceil(7).max(1),
        "no empty extra page beyond one"
    );
    sys.topology.stop(Duration::from_secs(10)).await;
}

/// A rating sent twice, re-rated, and raced by many users and by one
/// user's concurrent changes: the title's summary moves by exactly what
/// the stored ratings say.
async fn repeated_and_concurrent_ratings_through_the_edge_never_double_count(mode: Mode) {
    let Some(mut sys) = System::start_in(mode, Size::default(), &[]).await else {
        return;
    };
    let c = EdgeClient::new(&sys.edge_url()).unwrap();
    let title = "t00321";
    let summary = |r: &fleet_edge_client::model::TitleResponse| {
        let s = r
            .title
            .rating
            .clone()
            .unwrap_or(fleet_edge_client::model::RatingSummary {
                count: 0,
                average: 0.0,
            });
        let sum = (s.average * s.count as f64).round() as u64;
        (s.count, sum)
    };
    let (count0, sum0) = summary(&c.get_title(title, &opts()).await.unwrap().value);

    // The same rating twice (a client retry), then a change of mind.
    let first = c
        .rate_title("idem-1", title, 4, &opts())
        .await
        .unwrap()
        .value;
    let again = c
        .rate_title("idem-1", title, 4, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(first.summary.count, count0 + 1);
    assert_eq!(again.summary.count, count0 + 1, "a repeat counts once");
    let changed = c
        .rate_title("idem-1", title, 2, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(changed.summary.count, count0 + 1, "a change replaces");

    // 12 users at once, and one user changing their mind 5 times at once.
    // A write whose answer was lost (504: the budget ran out while the
    // writes to this one partition queued) is sent again, as a client
    // would: the retry must not count twice either.
    async fn rate_until_ok(c: EdgeClient, user: String, title: &str, stars: u32) {
        for attempt in 1..=5 {
            match c.rate_title(&user, title, stars, &opts()).await {
                Ok(_) => return,
                Err(e) if e.status() == Some(504) && attempt < 5 => {}
                Err(e) => panic!("{user} {stars}: {e:?}"),
            }
        }
    }
    let mut tasks = Vec::new();
    for u in 0..12u32 {
        tasks.push(tokio::spawn(rate_until_ok(
            c.clone(),
            format!("idem-many-{u}"),
            title,
            1 + u % 5,
        )));
    }
    for stars in 1..=5u32 {
        tasks.push(tokio::spawn(rate_until_ok(
            c.clone(),
            "idem-racer".to_owned(),
            title,
            stars,
        )));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let racer = c
        .list_ratings("idem-racer", None, None, &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(racer.items.len(), 1, "one rating per user and title");
    let racer_stars = u64::from(racer.items[0].stars);
    let many: u64 = (0..12u64).map(|u| 1 + u % 5).sum();
    let (count, sum) = summary(&c.get_title(title, &opts()).await.unwrap().value);
    assert_eq!(count, count0 + 1 + 12 + 1, "{mode:?}: every user once");
    assert_eq!(
        sum,
        sum0 + 2 + many + racer_stars,
        "{mode:?}: the sum is the stored ratings'"
    );
    sys.topology.stop(Duration::from_secs(10)).await;
}
