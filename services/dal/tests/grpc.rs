//! The dal on real loopback sockets, called through its driver client.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_config::Env;
use fleet_dal::{App, Config};
use fleet_dal_client::{
    CallOptions, DalClient, Dependency, DependencyConfig, Error, InstanceSource, Progress, Rating,
};
use fleet_metrics::Metrics;

struct Running {
    grpc: SocketAddr,
    admin: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &std::path::Path) -> Running {
    let env = Env::from_pairs([
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("DATA_DIR", dir.to_str().unwrap()),
        ("SEED_TITLES", "200"),
        ("SEED_USERS", "50"),
        ("READINESS_INTERVAL", "50ms"),
        ("SHUTDOWN_GRACE", "2s"),
    ]);
    let app = App::build(Config::from_env(&env).unwrap()).await.unwrap();
    let (grpc, admin, stop) = (app.grpc_addr(), app.admin_addr(), app.shutdown_token());
    let task = tokio::spawn(async move { app.run().await.unwrap() });
    Running {
        grpc,
        admin,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn client(addr: SocketAddr) -> DalClient {
    let instances = fleet_rpc::parse_instances(&addr.to_string(), &semver_v1()).unwrap();
    DalClient::new(Dependency::new(
        DependencyConfig::new("dal", "test", 1),
        InstanceSource::Static(instances),
        Metrics::new("test", "1.0.0").grpc_client(),
    ))
}

fn semver_v1() -> semver::Version {
    semver::Version::new(1, 0, 0)
}

fn opts() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn reads_writes_validation_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dal = start(dir.path()).await;
    let c = client(dal.grpc);

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
    assert_eq!(genres.iter().map(|g| g.title_count).sum::<u64>(), 200);
    let genre = genres[0].name.clone();
    let mut seen = 0;
    let mut token: Option<Vec<u8>> = None;
    loop {
        let page = c
            .list_titles(Some(&genre), 7, token.as_deref(), opts())
            .await
            .unwrap();
        assert!(page.items.iter().all(|t| t.genre == genre));
        seen += page.items.len() as u64;
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, genres[0].title_count);

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
    let rating = |stars, at| Rating {
        user_id: "u_test".into(),
        title_id: "t00005".into(),
        stars,
        rated_at_ms: at,
    };
    for bad in [rating(0, 1), rating(6, 1), rating(3, 0), rating(3, -1)] {
        assert!(matches!(
            c.put_rating(bad, opts()).await,
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        c.put_rating(
            Rating {
                title_id: "t99999".into(),
                ..rating(3, 1)
            },
            opts()
        )
        .await,
        Err(Error::NotFound { .. })
    ));

    // A rating sent twice, and concurrently, counts once.
    let before = c
        .batch_get_rating_summaries(&["t00005".into()], opts())
        .await
        .unwrap()[0]
        .clone();
    let at = 1_900_000_000_000;
    let writes = (0..6).map(|_| c.put_rating(rating(4, at), opts()));
    let outcomes = futures::future::join_all(writes).await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.as_ref().unwrap().applied)
            .count(),
        1,
        "exactly one of the duplicates applied"
    );
    let after = c
        .batch_get_rating_summaries(&["t00005".into()], opts())
        .await
        .unwrap()[0]
        .clone();
    assert_eq!(after.count, before.count + 1);
    assert_eq!(after.stars_sum, before.stars_sum + 4);
    let changed = c.put_rating(rating(2, at + 1), opts()).await.unwrap();
    assert!(changed.applied);
    assert_eq!(changed.summary.count, before.count + 1);
    assert_eq!(changed.summary.stars_sum, before.stars_sum + 2);
    let mine = c
        .list_ratings_by_user("u_test", 10, None, opts())
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].stars, 2);
    let top = c.top_rated(5, None, 1, opts()).await.unwrap();
    assert_eq!(top.len(), 5);
    assert!(top.windows(2).all(|w| w[0].average() >= w[1].average()));

    // Progress: last write wins, newest first.
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
    assert!(matches!(
        c.put_progress(p("t00001", 86_401, 30), opts()).await,
        Err(Error::InvalidArgument { .. })
    ));
    let list = c.list_progress("u_test", 10, opts()).await.unwrap();
    assert_eq!(
        list.iter().map(|p| p.title_id.as_str()).collect::<Vec<_>>(),
        ["t00002", "t00001"]
    );

    // Admin port: ready, metrics per operation.
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://{}/readyz", dal.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http
        .get(format!("http://{}/metrics", dal.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("operation=\"PutRating\""), "{metrics}");
    assert!(
        metrics.contains("fleet_dal_cache_lookups_total"),
        "{metrics}"
    );

    // Everything survives a restart on the same directory.
    dal.stop().await;
    let dal = start(dir.path()).await;
    let c = client(dal.grpc);
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
}

#[test]
fn one_off_commands_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("DATA_DIR", dir.path().to_str().unwrap()),
        ("SEED_TITLES", "30"),
        ("SEED_USERS", "10"),
    ]);
    let ok = format!("{:?}", std::process::ExitCode::SUCCESS);
    let usage = format!("{:?}", std::process::ExitCode::from(64));
    for cmd in ["migrate", "migrate", "seed", "seed", "repair"] {
        let code = fleet_dal::main_with_args(env.clone(), ["dal", cmd]);
        assert_eq!(format!("{code:?}"), ok, "dal {cmd}");
    }
    let code = fleet_dal::main_with_args(env.clone(), ["dal", "drop-everything"]);
    assert_eq!(format!("{code:?}"), usage);
    let code = fleet_dal::main_with_args(
        Env::from_pairs([
            ("DATA_DIR", dir.path().to_str().unwrap()),
            ("SEED", "perhaps"),
        ]),
        ["dal", "seed"],
    );
    assert_eq!(format!("{code:?}"), usage, "bad config exits 64");
}
