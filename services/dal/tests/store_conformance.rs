//! One conformance suite for every implementation of the dal's storage
//! seam (`fleet_dal::store::Store`): the same function runs against the
//! embedded store (redb in a temporary directory) and against the real
//! Cassandra of `FLEET_TEST_SCYLLA_NODES`, in a fresh keyspace per run. A
//! new backend is done when it passes this suite.
//!
//! Every expectation is stated by the store's contract (last write wins on
//! `(time, value)`, summaries by delta, pages that cover everything once,
//! best first by average, then count, then id), never read back from the
//! backend under test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_dal::store::{SharedStore, StoreError};
use fleet_proto::dal::v1::{Progress, Rating, RatingSummary};
use fleet_seed::SeedConfig;

use support::{Backend, StoreEnv};

/// The seed of this suite: small enough for Cassandra's conditional
/// writes, big enough to page.
const SEED: SeedConfig = SeedConfig {
    titles: 50,
    users: 20,
    seed: 7,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_conforms() {
    let env = StoreEnv::new(Backend::Embedded, "conformance").unwrap();
    conformance(env.open_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cassandra_store_conforms() {
    let Some(env) = StoreEnv::new(Backend::Cassandra, "conformance") else {
        return;
    };
    conformance(env.open_store().await).await;
}

fn rating(user: &str, title: &str, stars: u32, at: i64) -> Rating {
    Rating {
        user_id: user.into(),
        title_id: title.into(),
        stars,
        rated_at_ms: at,
    }
}

/// The suite: every method of the seam, against `store`.
async fn conformance(store: SharedStore) {
    let suite = async {
        store.ping().await.unwrap();
        let version = store.migrate().await.unwrap();
        assert_eq!(
            store.migrate().await.unwrap(),
            version,
            "migrate is idempotent"
        );
        seeding_happens_once_and_is_consistent(&store).await;
        titles_read_by_id_and_page_by_id(&store).await;
        ratings_are_last_write_wins_and_never_double_count(&store).await;
        concurrent_writes_of_one_rating_count_once(&store).await;
        summaries_and_top_rated_follow_the_ratings(&store).await;
        progress_is_last_write_wins_and_newest_first(&store).await;
        repair_finds_and_fixes_drift(&store).await;
    };
    tokio::time::timeout(Duration::from_secs(300), suite)
        .await
        .unwrap_or_else(|_| panic!("{} suite did not finish in 300 s", store.backend()));
}

async fn seeding_happens_once_and_is_consistent(store: &SharedStore) {
    let first = store.seed(SEED).await.unwrap();
    assert!(first.seeded);
    assert_eq!(first.titles, 50);
    assert!(first.ratings > 0 && first.progress > 0, "{first:?}");
    let again = store.seed(SEED).await.unwrap();
    assert!(!again.seeded, "seeding twice writes nothing");
    assert_eq!(again.titles, 0);
    assert_eq!(store.repair().await.unwrap().found(), 0, "seed left drift");
    let genres = store.list_genres().await.unwrap();
    assert_eq!(genres.iter().map(|g| g.title_count).sum::<u64>(), 50);
    let names: Vec<_> = genres.iter().map(|g| g.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "genres by name");
}

async fn titles_read_by_id_and_page_by_id(store: &SharedStore) {
    let t = store.get_title("t00003".into()).await.unwrap().unwrap();
    assert_eq!(t.id, "t00003");
    assert!(!t.name.is_empty() && !t.genre.is_empty());
    assert_eq!(store.get_title("t99999".into()).await.unwrap(), None);

    let batch = store
        .batch_get_titles(vec!["t00007".into(), "t99999".into(), "t00002".into()])
        .await
        .unwrap();
    let ids: Vec<_> = batch.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t00007", "t00002"], "request order, unknown left out");

    let genre = t.genre.clone();
    for filter in [None, Some(genre.clone())] {
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let page = store
                .list_titles(filter.clone(), 7, token.clone())
                .await
                .unwrap();
            assert!(page.items.len() <= 7);
            if let Some(g) = &filter {
                assert!(page.items.iter().all(|t| &t.genre == g), "{g}");
            }
            seen.extend(page.items.into_iter().map(|t| t.id));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seen, sorted, "ordered by id, no duplicates ({filter:?})");
        let expected = match &filter {
            None => 50,
            Some(g) => {
                store
                    .list_genres()
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|x| &x.name == g)
                    .unwrap()
                    .title_count
            }
        };
        assert_eq!(seen.len() as u64, expected, "every title once ({filter:?})");
        assert!(filter.is_none() || seen.contains(&"t00003".to_owned()));
    }
    let bad = store.list_titles(None, 5, Some(b"\x02junk".to_vec())).await;
    assert!(matches!(bad, Err(StoreError::BadToken(_))), "{bad:?}");
}

async fn ratings_are_last_write_wins_and_never_double_count(store: &SharedStore) {
    let before = store.summaries(vec!["t00003".into()]).await.unwrap()[0].clone();
    let r = rating("u99999", "t00003", 4, 2_000_000_000_000);
    let first = store.put_rating(r.clone()).await.unwrap();
    assert!(first.applied);
    assert_eq!(first.rating, r);
    assert_eq!(first.summary.count, before.count + 1);
    assert_eq!(first.summary.stars_sum, before.stars_sum + 4);

    let dup = store.put_rating(r.clone()).await.unwrap();
    assert!(!dup.applied, "the same write again changes nothing");
    assert_eq!(dup.summary, first.summary);

    let stale = store
        .put_rating(rating("u99999", "t00003", 1, 1_999_999_999_999))
        .await
        .unwrap();
    assert!(!stale.applied, "an older write loses");
    assert_eq!(stale.rating, r, "and answers what is stored");

    // Same time, higher stars: the value breaks the tie.
    let tie = store
        .put_rating(rating("u99999", "t00003", 5, 2_000_000_000_000))
        .await
        .unwrap();
    assert!(tie.applied);
    assert_eq!(tie.summary.stars_sum, before.stars_sum + 5);

    let newer = store
        .put_rating(rating("u99999", "t00003", 2, 2_000_000_000_001))
        .await
        .unwrap();
    assert!(newer.applied);
    assert_eq!(newer.summary.count, before.count + 1, "replaced, not added");
    assert_eq!(newer.summary.stars_sum, before.stars_sum + 2);

    let mine = store
        .list_ratings_by_user("u99999".into(), 10, None)
        .await
        .unwrap();
    assert_eq!(
        mine.items,
        vec![rating("u99999", "t00003", 2, 2_000_000_000_001)]
    );
    assert_eq!(mine.next, None);

    let missing = store
        .put_rating(rating("u99999", "t99999", 3, 2_000_000_000_000))
        .await;
    assert!(
        matches!(missing, Err(StoreError::TitleNotFound(ref id)) if id == "t99999"),
        "{missing:?}"
    );

    // A user's ratings: newest first; pages of 2 add up to the whole list.
    for (i, title) in ["t00010", "t00011", "t00012", "t00013", "t00014"]
        .into_iter()
        .enumerate()
    {
        let at = 2_100_000_000_000 + i64::try_from(i).unwrap();
        assert!(
            store
                .put_rating(rating("u88888", title, 3, at))
                .await
                .unwrap()
                .applied
        );
    }
    let all = store
        .list_ratings_by_user("u88888".into(), 1000, None)
        .await
        .unwrap()
        .items;
    let order: Vec<_> = all.iter().map(|r| r.title_id.as_str()).collect();
    assert_eq!(order, ["t00014", "t00013", "t00012", "t00011", "t00010"]);
    let mut paged = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list_ratings_by_user("u88888".into(), 2, token.clone())
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        paged.extend(page.items);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, all);

    // A title's ratings: by user id, paged; they add up to its summary.
    let mut by_title = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list_ratings_by_title("t00003".into(), 3, token.clone())
            .await
            .unwrap();
        by_title.extend(page.items);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let users: Vec<_> = by_title.iter().map(|r| r.user_id.clone()).collect();
    let mut sorted = users.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(users, sorted, "by user id, once each");
    let summary = store.summaries(vec!["t00003".into()]).await.unwrap()[0].clone();
    assert_eq!(by_title.len() as u64, summary.count);
    assert_eq!(
        by_title.iter().map(|r| u64::from(r.stars)).sum::<u64>(),
        summary.stars_sum
    );
    assert!(by_title.contains(&rating("u99999", "t00003", 2, 2_000_000_000_001)));
}

async fn concurrent_writes_of_one_rating_count_once(store: &SharedStore) {
    let before = store.summaries(vec!["t00020".into()]).await.unwrap()[0].clone();
    let writes: Vec<_> = (0..8u32)
        .map(|i| {
            let store = store.clone();
            // Half send the same write, half a newer one.
            let at = 2_000_000_000_000 + i64::from(i % 2);
            tokio::spawn(async move {
                store
                    .put_rating(rating("u77777", "t00020", 3 + (i % 2), at))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    let after = store.summaries(vec!["t00020".into()]).await.unwrap()[0].clone();
    assert_eq!(after.count, before.count + 1);
    assert_eq!(after.stars_sum, before.stars_sum + 4, "the newer write won");
}

async fn summaries_and_top_rated_follow_the_ratings(store: &SharedStore) {
    // t00040 gets exactly these three ratings on top of the seed's; the
    // seed's users are u00001…u00020, these are not.
    let base = store.summaries(vec!["t00040".into()]).await.unwrap()[0].clone();
    for (user, stars) in [("u60001", 5), ("u60002", 5), ("u60003", 2)] {
        store
            .put_rating(rating(user, "t00040", stars, 2_200_000_000_000))
            .await
            .unwrap();
    }
    let got = store
        .summaries(vec!["t00040".into(), "t99999".into(), "t00040".into()])
        .await
        .unwrap();
    let expected = RatingSummary {
        title_id: "t00040".into(),
        count: base.count + 3,
        stars_sum: base.stars_sum + 12,
    };
    assert_eq!(
        got,
        vec![
            expected.clone(),
            RatingSummary {
                title_id: "t99999".into(),
                count: 0,
                stars_sum: 0,
            },
            expected,
        ],
        "request order; never rated is count 0"
    );

    // Every title's summary, computed from the store's own summaries, then
    // ranked by the contract: average, then count, then id.
    let ids: Vec<String> = (1..=50).map(|i| format!("t{i:05}")).collect();
    let all = store.summaries(ids).await.unwrap();
    let rank = |min_count: u64, only: Option<&BTreeSet<String>>| {
        let mut v: Vec<RatingSummary> = all
            .iter()
            .filter(|s| s.count > 0 && s.count >= min_count)
            .filter(|s| only.is_none_or(|ids| ids.contains(&s.title_id)))
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (u128::from(b.stars_sum) * u128::from(a.count))
                .cmp(&(u128::from(a.stars_sum) * u128::from(b.count)))
                .then(b.count.cmp(&a.count))
                .then_with(|| a.title_id.cmp(&b.title_id))
        });
        v
    };
    let mut top = rank(0, None);
    top.truncate(10);
    assert_eq!(store.top_rated(10, None, 0).await.unwrap(), top);
    let mut top = rank(3, None);
    top.truncate(5);
    assert_eq!(store.top_rated(5, None, 3).await.unwrap(), top);

    let genre = store
        .get_title("t00040".into())
        .await
        .unwrap()
        .unwrap()
        .genre;
    let in_genre: BTreeSet<String> = store
        .list_titles(Some(genre.clone()), 1000, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.id)
        .collect();
    let mut top = rank(0, Some(&in_genre));
    top.truncate(50);
    let got = store.top_rated(50, Some(genre), 0).await.unwrap();
    assert_eq!(got, top);
    assert!(got.iter().any(|s| s.title_id == "t00040"));
}

async fn progress_is_last_write_wins_and_newest_first(store: &SharedStore) {
    let p = |title: &str, pos, at| Progress {
        user_id: "u55555".into(),
        title_id: title.into(),
        position_s: pos,
        updated_at_ms: at,
    };
    let first = store.put_progress(p("t00001", 10, 100)).await.unwrap();
    assert!(first.applied);
    assert_eq!(first.current, p("t00001", 10, 100));
    assert!(
        store
            .put_progress(p("t00002", 20, 200))
            .await
            .unwrap()
            .applied
    );
    let stale = store.put_progress(p("t00001", 5, 50)).await.unwrap();
    assert!(!stale.applied, "an older position loses");
    assert_eq!(stale.current, p("t00001", 10, 100));
    assert!(
        store
            .put_progress(p("t00001", 30, 300))
            .await
            .unwrap()
            .applied
    );
    let again = store.put_progress(p("t00001", 30, 300)).await.unwrap();
    assert!(again.applied, "the stored value again is what is stored");
    assert_eq!(again.current, p("t00001", 30, 300));

    let list = store.list_progress("u55555".into(), 10).await.unwrap();
    assert_eq!(list, vec![p("t00001", 30, 300), p("t00002", 20, 200)]);
    assert_eq!(
        store.list_progress("u55555".into(), 1).await.unwrap(),
        vec![p("t00001", 30, 300)]
    );
    let missing = store.put_progress(p("t99999", 1, 1)).await;
    assert!(
        matches!(missing, Err(StoreError::TitleNotFound(_))),
        "{missing:?}"
    );
}

async fn repair_finds_and_fixes_drift(store: &SharedStore) {
    assert_eq!(store.repair().await.unwrap().found(), 0, "no drift yet");
    let before = store.summaries(vec!["t00001".into()]).await.unwrap();
    store.inject_drift().await.unwrap();
    let report = store.repair().await.unwrap();
    assert!(report.found() >= 5, "{report:?}");
    assert_eq!(report.found(), report.fixed(), "{report:?}");
    assert_eq!(store.repair().await.unwrap().found(), 0);
    assert_eq!(
        store.summaries(vec!["t00001".into()]).await.unwrap(),
        before,
        "the summary is the truth's again"
    );
}
