//! The ratings service on real loopback sockets in front of a real dal,
//! called through its driver client.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fleet_ratings_client::CallOptions;
use fleet_ratings_client::{Error, Progress, Rating};
use fleet_seed::SeedConfig;
use fleet_testkit::probe::{ready_and_stays, unready_but_alive};
use fleet_testkit::{black_hole, closed_port};
use support::{add_fault, client, now_ms, opts, start_dal, start_ratings, start_ratings_on};

fn rating(user: &str, title: &str, stars: u32, at: i64) -> Rating {
    Rating {
        user_id: user.into(),
        title_id: title.into(),
        stars,
        rated_at_ms: at,
    }
}

fn progress(user: &str, title: &str, position_s: u32, at: i64) -> Progress {
    Progress {
        user_id: user.into(),
        title_id: title.into(),
        position_s,
        updated_at_ms: at,
    }
}

#[tokio::test]
async fn rating_twice_never_double_counts() {
    let dal = start_dal().await;
    let ratings = start_ratings(dal.addr).await;
    let c = client(&ratings);
    let title = "t00150".to_owned();
    let before = c
        .get_summaries(std::slice::from_ref(&title), opts())
        .await
        .unwrap()
        .remove(0);
    let sum_before = (before.average * before.count as f64).round();
    let at = now_ms() - 60_000;

    let first = c
        .rate_title(rating("tester01", &title, 4, at), opts())
        .await
        .unwrap();
    assert!(first.applied);
    assert_eq!(first.rating.stars, 4);
    assert_eq!(first.rating.rated_at_ms, at);
    assert_eq!(first.summary.title_id, title);
    assert_eq!(first.summary.count, before.count + 1);
    let expected = (sum_before + 4.0) / (before.count + 1) as f64;
    assert!((first.summary.average - expected).abs() < 1e-9);

    // The same call again (a retry) changes nothing.
    let retry = c
        .rate_title(rating("tester01", &title, 4, at), opts())
        .await
        .unwrap();
    assert!(!retry.applied);
    assert_eq!(retry.summary.count, before.count + 1);

    // A newer rating by the same user replaces the first, not adds to it.
    let changed = c
        .rate_title(rating("tester01", &title, 2, at + 1), opts())
        .await
        .unwrap();
    assert!(changed.applied);
    let after = c
        .get_summaries(std::slice::from_ref(&title), opts())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(after.count, before.count + 1);
    let expected = (sum_before + 2.0) / (before.count + 1) as f64;
    assert!((after.average - expected).abs() < 1e-9, "{after:?}");

    // An older one loses: last write wins.
    let stale = c
        .rate_title(rating("tester01", &title, 5, at - 1), opts())
        .await
        .unwrap();
    assert!(!stale.applied);
    assert_eq!(stale.rating.stars, 2, "the stored rating comes back");

    let mine = c
        .list_user_ratings("tester01", 10, None, opts())
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].stars, 2);
    assert_eq!(mine.next_page_token, None);

    ratings.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn a_rating_without_a_timestamp_is_stamped_now() {
    let dal = start_dal().await;
    let ratings = start_ratings(dal.addr).await;
    let start = now_ms();
    let out = client(&ratings)
        .rate_title(rating("tester02", "t00010", 5, 0), opts())
        .await
        .unwrap();
    assert!(out.applied);
    assert!(
        (start..=now_ms()).contains(&out.rating.rated_at_ms),
        "{}",
        out.rating.rated_at_ms
    );
    ratings.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn a_users_ratings_come_newest_first_in_pages() {
    let dal = start_dal().await;
    let ratings = start_ratings(dal.addr).await;
    let c = client(&ratings);
    let at = now_ms() - 60_000;
    for (i, title) in ["t00011", "t00012", "t00013"].iter().enumerate() {
        c.rate_title(rating("tester03", title, 3, at + i as i64), opts())
            .await
            .unwrap();
    }
    let first = c
        .list_user_ratings("tester03", 2, None, opts())
        .await
        .unwrap();
    let ids: Vec<&str> = first.items.iter().map(|r| r.title_id.as_str()).collect();
    assert_eq!(ids, ["t00013", "t00012"]);
    let token = first.next_page_token.expect("a second page");
    let second = c
        .list_user_ratings("tester03", 2, Some(&token), opts())
        .await
        .unwrap();
    let ids: Vec<&str> = second.items.iter().map(|r| r.title_id.as_str()).collect();
    assert_eq!(ids, ["t00011"]);
    ratings.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn summaries_cover_never_rated_titles() {
    let dal = start_dal().await;
    let ratings = start_ratings(dal.addr).await;
    let c = client(&ratings);
    // "t00001" is the most popular seed title; "t99999" does not exist.
    let ids = ["t00001", "t99999"].map(String::from);
    let summaries = c.get_summaries(&ids, opts()).await.unwrap();
    let by_id: HashMap<&str, _> = summaries.iter().map(|s| (s.title_id.as_str(), s)).collect();
    let popular = by_id["t00001"];
    assert!(popular.count > 0);
    assert!((1.0..=5.0).contains(&popular.average));
    let never = by_id["t99999"];
    assert_eq!((never.count, never.average), (0, 0.0));
    assert!(c.get_summaries(&[], opts()).await.unwrap().is_empty());
    ratings.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn top_rated_lists_the_best_first_optionally_by_genre() {
    let dal = start_dal().await;
    let ratings = start_ratings(dal.addr).await;
    let c = client(&ratings);

    let top = c.top_rated(10, None, opts()).await.unwrap();
    assert_eq!(top.len(), 10);
    assert!(top.iter().all(|s| s.count >= 1));
    assert!(
        top.windows(2).all(|w| w[0].average >= w[1].average),
        "{top:?}"
    );

    let genres: HashMap<String, &str> = fleet_seed::titles(&SeedConfig {
        titles: support::SEED_TITLES,
        ..SeedConfig::default()
    })
    .into_iter()
    .map(|t| (t.id, t.genre))
    .collect();
    let drama = c.top_rated(5, Some("drama"), opts()).await.unwrap();
    assert!(!drama.is_empty());
    assert!(
        drama.iter().all(|s| genres[&s.title_id] == "drama"),
        "{drama:?}"
    );
    ratings.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn continue_watching_is_newest_first_without_finished_titles() {
    let dal = start_dal().await;
    let ratings = start_ratings(dal.addr).await;
    let c = client(&ratings);
    let at = now_ms() - 60_000;
    for (i, title) in ["t00021", "t00022", "t00023"].iter().enumerate() {
        let out = c
            .record_progress(progress("tester04", title, 600, at + 10 * i as i64), opts())
            .await
            .unwrap();
        assert!(out.applied);
    }
    // Watched to the end (a whole day is longer than any title): finished.
    c.record_progress(progress("tester04", "t00024", 86_400, at + 100), opts())
        .await
        .unwrap();

    let items = c.continue_watching("tester04", 10, opts()).await.unwrap();
    let ids: Vec<&str> = items.iter().map(|p| p.title_id.as_str()).collect();
    assert_eq!(ids, ["t00023", "t00022", "t00021"]);
    let items = c.continue_watching("tester04", 2, opts()).await.unwrap();
    let ids: Vec<&str> = items.iter().map(|p| p.title_id.as_str()).collect();
    assert_eq!(ids, ["t00023", "t00022"]);

    // Moving on in the oldest makes it the newest.
    c.record_progress(progress("tester04", "t00021", 1200, at + 200), opts())
        .await
        .unwrap();
    let items = c.continue_watching("tester04", 10, opts()).await.unwrap();
    assert_eq!(items[0].title_id, "t00021");
    assert_eq!(items[0].position_s, 1200);

    // An update older than the stored one is not applied.
    let stale = c
        .record_progress(progress("tester04", "t00021", 30, at + 150), opts())
        .await
        .unwrap();
    assert!(!stale.applied);
    assert_eq!(stale.current.position_s, 1200);

    // Without a timestamp, now.
    let start = now_ms();
    let out = c
        .record_progress(progress("tester05", "t00021", 5, 0), opts())
        .await
        .unwrap();
    assert!(out.current.updated_at_ms >= start);

    assert!(
        c.continue_watching("nobody", 10, opts())
            .await
            .unwrap()
            .is_empty()
    );
    ratings.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn writes_to_unknown_titles_are_not_found() {
    let dal = start_dal().await;
    let ratings = start_ratings(dal.addr).await;
    let c = client(&ratings);
    let e = c
        .rate_title(rating("tester06", "t99999", 3, 0), opts())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let e = c
        .record_progress(progress("tester06", "t99999", 10, 0), opts())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert!(
        c.list_user_ratings("tester06", 10, None, opts())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing was written"
    );
    ratings.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn bad_input_is_rejected_naming_the_field_without_calling_the_dal() {
    // No dal at all: had any of these reached it, the answer would be
    // UNAVAILABLE, not INVALID_ARGUMENT.
    let ratings = start_ratings(closed_port()).await;
    let c = client(&ratings);

    fn expect_invalid<T: std::fmt::Debug>(r: Result<T, Error>, field: &str) {
        match r {
            Err(Error::InvalidArgument { message, .. }) => {
                assert!(message.starts_with(field), "{field}: {message}");
            }
            other => panic!("{field}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    let far_future = now_ms() + 2 * 24 * 3600 * 1000;
    for (r, field) in [
        (rating("", "t00001", 3, 0), "user_id is required"),
        (rating("u 1", "t00001", 3, 0), "user_id may contain"),
        (
            rating("u00001", &"t".repeat(65), 3, 0),
            "title_id is longer",
        ),
        (rating("u00001", "t00001", 0, 0), "stars"),
        (rating("u00001", "t00001", 6, 0), "stars"),
        (rating("u00001", "t00001", 3, -1), "rated_at_ms"),
        (rating("u00001", "t00001", 3, far_future), "rated_at_ms"),
    ] {
        expect_invalid(c.rate_title(r, opts()).await, field);
    }

    expect_invalid(c.list_user_ratings("", 10, None, opts()).await, "user_id");
    expect_invalid(
        c.list_user_ratings("u00001", 101, None, opts()).await,
        "limit",
    );
    expect_invalid(
        c.list_user_ratings("u00001", 10, Some(&[1; 1025]), opts())
            .await,
        "page_token",
    );

    let too_many: Vec<String> = (1..=101).map(fleet_seed::title_id).collect();
    expect_invalid(
        c.get_summaries(&too_many, opts()).await,
        "title_ids holds 101",
    );
    let bad_item = vec!["t00001".to_owned(), "t 2".to_owned()];
    expect_invalid(c.get_summaries(&bad_item, opts()).await, "title_ids[1]");

    expect_invalid(c.top_rated(101, None, opts()).await, "limit");
    expect_invalid(c.top_rated(10, Some("sci fi"), opts()).await, "genre");

    for (p, field) in [
        (progress("", "t00001", 10, 0), "progress.user_id"),
        (progress("u00001", "t.1", 10, 0), "progress.title_id"),
        (
            progress("u00001", "t00001", 86_401, 0),
            "progress.position_s",
        ),
        (
            progress("u00001", "t00001", 10, -5),
            "progress.updated_at_ms",
        ),
    ] {
        expect_invalid(c.record_progress(p, opts()).await, field);
    }

    expect_invalid(c.continue_watching("u/1", 10, opts()).await, "user_id");
    expect_invalid(c.continue_watching("u00001", 101, opts()).await, "limit");

    // A well-formed request does go to the (absent) dal.
    let e = c.top_rated(10, None, opts()).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");

    ratings.stop().await;
}

#[tokio::test]
async fn with_no_dal_instance_known_the_ratings_service_is_not_ready() {
    // The only dal listed speaks interface 2, which this ratings cannot
    // call: no dal instance it could use is known.
    let ratings = start_ratings_on(&format!("{}@2.0.0", closed_port())).await;
    let c = client(&ratings);
    unready_but_alive(ratings.admin, "no dal instance is known").await;
    assert!(c.probe().await.is_err(), "gRPC health is NOT_SERVING");
    ratings.stop().await;
}

/// Readiness means "I can serve": a dal that is known but slow or hung is
/// the breakers' and deadlines' business per request, not a reason to
/// take every ratings instance out of rotation at once.
#[tokio::test]
async fn a_hung_or_delayed_dal_leaves_the_ratings_service_ready() {
    // A dal that answers nothing at all, gRPC health included.
    let (hung, hole) = black_hole().await;
    let ratings = start_ratings(hung).await;
    ready_and_stays(ratings.admin, 5).await;
    // The hang is felt by a call, which runs out of its budget.
    let e = client(&ratings)
        .top_rated(10, None, CallOptions::timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");

    // A real dal whose every call a fault rule delays by 3 s.
    let dal = start_dal().await;
    add_fault(dal.admin, r#"{"action": {"type": "delay", "ms": 3000}}"#).await;
    let slow = start_ratings(dal.addr).await;
    ready_and_stays(slow.admin, 5).await;
    let e = client(&slow)
        .top_rated(10, None, CallOptions::timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
    ratings.stop().await;
    slow.stop().await;
    dal.stop().await;
    hole.abort();
}
