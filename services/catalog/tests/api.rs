//! The catalog on real loopback sockets in front of a real dal, called
//! through its driver client.

mod support;

use fleet_catalog_client::Error;
use fleet_seed::SeedConfig;
use std::time::Duration;

use fleet_catalog_client::CallOptions;
use fleet_testkit::probe::{ready_and_stays, unready_but_alive};
use fleet_testkit::{black_hole, closed_port};
use support::{add_fault, client, opts, start_catalog, start_catalog_on, start_dal};

fn seed_titles() -> Vec<fleet_seed::SeedTitle> {
    fleet_seed::titles(&SeedConfig {
        titles: support::SEED_TITLES,
        ..SeedConfig::default()
    })
}

#[tokio::test]
async fn titles_come_from_the_dal_in_request_order() {
    let dal = start_dal().await;
    let catalog = start_catalog(dal.addr, "1.3.0").await;
    let c = client(&catalog);
    let seed = seed_titles();

    let t = c.get_title("t00001", opts()).await.unwrap();
    assert_eq!(t.id, "t00001");
    assert_eq!(t.name, seed[0].name);
    assert_eq!(t.genre, seed[0].genre);
    assert_eq!((t.year, t.runtime_min), (seed[0].year, seed[0].runtime_min));

    let ids = ["t00003", "t99999", "t00001"].map(String::from);
    let batch = c.batch_get_titles(&ids, opts()).await.unwrap();
    let got: Vec<&str> = batch.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(got, ["t00003", "t00001"], "unknown ids are left out");
    assert!(c.batch_get_titles(&[], opts()).await.unwrap().is_empty());

    catalog.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn an_unknown_title_is_not_found() {
    let dal = start_dal().await;
    let catalog = start_catalog(dal.addr, "1.3.0").await;
    let e = client(&catalog)
        .get_title("t99999", opts())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    catalog.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn browsing_pages_through_all_titles_and_by_genre() {
    let dal = start_dal().await;
    let catalog = start_catalog(dal.addr, "1.3.0").await;
    let c = client(&catalog);

    // Every title exactly once, in id order, following the cursor.
    let mut seen = Vec::new();
    let mut token: Option<Vec<u8>> = None;
    loop {
        let page = c
            .list_titles(None, 64, token.as_deref(), opts())
            .await
            .unwrap();
        assert!(page.items.len() <= 64);
        seen.extend(page.items.into_iter().map(|t| t.id));
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (1..=support::SEED_TITLES)
        .map(fleet_seed::title_id)
        .collect();
    assert_eq!(seen, expected);

    // limit 0 means the default page size.
    let page = c.list_titles(None, 0, None, opts()).await.unwrap();
    assert_eq!(page.items.len(), 20);

    // Genres add up to the catalogue, and a genre page holds only that genre.
    let genres = c.list_genres(opts()).await.unwrap();
    let total: u64 = genres.iter().map(|g| g.title_count).sum();
    assert_eq!(total, u64::from(support::SEED_TITLES));
    let genre = genres.iter().max_by_key(|g| g.title_count).unwrap();
    let page = c
        .list_titles(Some(&genre.name), 100, None, opts())
        .await
        .unwrap();
    assert_eq!(page.items.len() as u64, genre.title_count);
    assert!(page.items.iter().all(|t| t.genre == genre.name));

    catalog.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn release_1_3_adds_badges_and_release_1_2_does_not() {
    let dal = start_dal().await;
    let v12 = start_catalog(dal.addr, "1.2.4").await;
    let v13 = start_catalog(dal.addr, "1.3.0").await;
    let seed = seed_titles();
    let ids: Vec<String> = seed.iter().take(100).map(|t| t.id.clone()).collect();

    let old = client(&v12).batch_get_titles(&ids, opts()).await.unwrap();
    let new = client(&v13).batch_get_titles(&ids, opts()).await.unwrap();
    assert_eq!(old.len(), 100);
    assert_eq!(new.len(), 100);
    assert!(old.iter().all(|t| t.badges.is_empty()), "1.2 never badges");
    for t in &new {
        let expected = fleet_catalog::badges::badges(t.year, t.runtime_min);
        assert_eq!(t.badges, expected, "{}", t.id);
    }

    // Concretely: a recent title is a new release on 1.3 only.
    let recent = seed.iter().find(|t| t.year >= 2020).unwrap();
    let t = client(&v13).get_title(&recent.id, opts()).await.unwrap();
    assert!(t.badges.contains(&"new-release".to_owned()), "{t:?}");
    let t = client(&v12).get_title(&recent.id, opts()).await.unwrap();
    assert!(t.badges.is_empty(), "{t:?}");
    // Apart from badges, both releases return the same titles.
    for (a, b) in old.iter().zip(&new) {
        assert_eq!((&a.id, &a.name, a.year), (&b.id, &b.name, b.year));
    }

    v12.stop().await;
    v13.stop().await;
    dal.stop().await;
}

#[tokio::test]
async fn bad_input_is_rejected_naming_the_field_without_calling_the_dal() {
    // No dal at all: had any of these reached it, the answer would be
    // UNAVAILABLE, not INVALID_ARGUMENT.
    let catalog = start_catalog(closed_port(), "1.3.0").await;
    let c = client(&catalog);

    async fn expect_invalid<T: std::fmt::Debug>(r: Result<T, Error>, field: &str) {
        match r {
            Err(Error::InvalidArgument { message, .. }) => {
                assert!(message.starts_with(field), "{field}: {message}");
            }
            other => panic!("{field}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    expect_invalid(c.get_title("", opts()).await, "id is required").await;
    expect_invalid(c.get_title("t 1", opts()).await, "id may contain").await;
    expect_invalid(c.get_title(&"t".repeat(65), opts()).await, "id is longer").await;

    let too_many: Vec<String> = (1..=101).map(fleet_seed::title_id).collect();
    expect_invalid(c.batch_get_titles(&too_many, opts()).await, "ids holds 101").await;
    let bad_item = vec!["t00001".to_owned(), "t/2".to_owned()];
    expect_invalid(c.batch_get_titles(&bad_item, opts()).await, "ids[1]").await;

    expect_invalid(c.list_titles(None, 101, None, opts()).await, "limit").await;
    expect_invalid(
        c.list_titles(None, 10, Some(&[7; 1025]), opts()).await,
        "page_token",
    )
    .await;
    expect_invalid(
        c.list_titles(Some("sci fi"), 10, None, opts()).await,
        "genre",
    )
    .await;

    // A well-formed request does go to the (absent) dal.
    let e = c.get_title("t00001", opts()).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");

    catalog.stop().await;
}

#[tokio::test]
async fn with_no_dal_instance_known_the_catalog_is_not_ready() {
    // The only dal listed speaks interface 2, which this catalog cannot
    // call: no dal instance it could use is known.
    let catalog = start_catalog_on(&format!("{}@2.0.0", closed_port()), "1.3.0").await;
    let c = client(&catalog);
    unready_but_alive(catalog.admin, "no dal instance is known").await;
    assert!(c.probe().await.is_err(), "gRPC health is NOT_SERVING");
    catalog.stop().await;
}

/// Readiness means "I can serve": a dal that is known but slow or hung is
/// the breakers' and deadlines' business per request, not a reason to
/// take every catalog out of rotation at once.
#[tokio::test]
async fn a_hung_or_delayed_dal_leaves_the_catalog_ready() {
    // A dal that answers nothing at all, gRPC health included.
    let (hung, hole) = black_hole().await;
    let catalog = start_catalog(hung, "1.3.0").await;
    ready_and_stays(catalog.admin, 5).await;
    // The hang is felt by a call, which runs out of its budget.
    let e = client(&catalog)
        .get_title("t00001", CallOptions::timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");

    // A real dal whose every call a fault rule delays by 3 s.
    let dal = start_dal().await;
    add_fault(dal.admin, r#"{"action": {"type": "delay", "ms": 3000}}"#).await;
    let slow = start_catalog(dal.addr, "1.3.0").await;
    ready_and_stays(slow.admin, 5).await;
    let e = client(&slow)
        .get_title("t00001", CallOptions::timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
    catalog.stop().await;
    slow.stop().await;
    dal.stop().await;
    hole.abort();
}
