//! `fleet up` as a user runs it: one command, the whole system, Ctrl-C or
//! SIGTERM to stop, data kept between runs.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleet_tests::free_addr;
use std::time::Duration;

use fleet_edge_client::{EdgeClient, RequestOptions};
use fleet_testkit::FleetUp;
use tokio::process::Command;

/// Starts `fleet up` and waits for its "all N instances ready" line.
async fn up(data: &std::path::Path, edge: &str) -> FleetUp {
    up_with(data, edge, &[]).await
}

/// As [`up`], with more flags.
async fn up_with(data: &std::path::Path, edge: &str, more: &[&str]) -> FleetUp {
    FleetUp::up(fleet_tests::bin_dir().join("fleet"), edge, data)
        .instances(1, 1, 0, 1)
        .args(more)
        .embedded()
        .timeout(Duration::from_secs(90))
        .start()
        .await
}

#[tokio::test]
async fn fleet_up_runs_the_system_and_keeps_its_data_between_runs() {
    let data = tempfile::tempdir().unwrap();
    let edge = free_addr();
    let mut system = up(data.path(), &edge).await;
    let out = &system.seen;
    for service in ["dal", "catalog", "ratings", "edge"] {
        assert!(
            out.iter().any(|l| l.contains(service)),
            "{service} listed: {out:#?}"
        );
    }
    assert!(data.path().join("run/registry.json").exists());
    assert!(data.path().join("run/admin-token").exists());
    let c = EdgeClient::new(&format!("http://{edge}")).unwrap();
    let o = RequestOptions::default();
    assert_eq!(
        c.get_title("t00001", &o).await.unwrap().value.title.id,
        "t00001"
    );
    let rated = c
        .rate_title("up-user", "t00777", 2, &o)
        .await
        .unwrap()
        .value;
    assert!(rated.applied);
    system.stop().await;
    assert!(
        !data.path().join("run/registry.json").exists(),
        "registry removed on stop"
    );

    // Second run on the same data directory: the rating is still there.
    let mut system = up(data.path(), &edge).await;
    let mine = c
        .list_ratings("up-user", None, None, &o)
        .await
        .unwrap()
        .value;
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].title_id, "t00777");
    system.stop().await;
}

#[tokio::test]
async fn fleet_up_refuses_bad_flags_before_starting_anything() {
    let fleet = fleet_tests::bin_dir().join("fleet");
    for args in [
        vec!["up", "--ratings", "0"],
        vec!["up", "--edge-addr", "not-an-address"],
        vec!["up", "--ready-timeout", "soon"],
        vec!["up", "--dal", "2"],
    ] {
        let out = Command::new(&fleet)
            .args(&args)
            .arg("--data-dir")
            .arg(tempfile::tempdir().unwrap().path())
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `fleet <args>` as a user runs it; its stdout (it must succeed).
async fn fleet_cli(args: &[&str]) -> String {
    let out = Command::new(fleet_tests::bin_dir().join("fleet"))
        .args(args)
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("ROUTES_KV_PREFIX")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fleet {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// On Consul, `fleet up` seeds the default route tables where none exist
/// (a table set before is kept), the edge applies the seeded one, and
/// `fleet route rollback` restores what was in force before the last set —
/// the seeded table, or no table at all.
#[tokio::test]
async fn fleet_up_on_consul_seeds_route_tables_where_absent_and_rollback_restores_none_too() {
    let Some(bin) = fleet_testkit::backend("FLEET_TEST_CONSUL_BIN") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let agent = fleet_tests::ConsulAgent::start(&bin, &data.path().join("consul")).await;
    let consul = agent.http_addr().to_string();
    let store = fleet_discovery::RouteStore::Consul {
        client: fleet_discovery::ConsulClient::new(&consul).unwrap(),
        prefix: "fleet/routes/".into(),
    };
    // An operator's ratings table from before: seeding must keep it.
    let mine = fleet::route::parse_weights("ratings", "1.0=100", true).unwrap();
    store.set(&mine).await.unwrap();

    let edge = free_addr();
    let mut system = up_with(data.path(), &edge, &["--consul", &consul]).await;
    let out = &system.seen;
    assert!(
        out.iter()
            .any(|l| l.contains("default route tables seeded for catalog")),
        "{out:#?}"
    );
    let catalog = store.show("catalog").await.unwrap().expect("seeded");
    assert_eq!(catalog.weights["1.2"], 90);
    assert_eq!(catalog.weights["1.3"], 10);
    assert!(catalog.sticky);
    assert_eq!(store.show("ratings").await.unwrap(), Some(mine), "kept");
    agent
        .wait_passing("catalog", 2, Duration::from_secs(30))
        .await;

    let c = fleet_edge_client::EdgeClient::new(&format!("http://{edge}")).unwrap();
    let t = c
        .get_title("t00001", &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(t.value.title.id, "t00001");

    let show = fleet_cli(&["route", "show", "--consul", &consul]).await;
    assert!(
        show.contains("in force: catalog v1 1.2=90,1.3=10 sticky"),
        "{show}"
    );
    fleet_cli(&["route", "set", "--consul", &consul, "--weights", "1.3=100"]).await;
    let back = fleet_cli(&["route", "rollback", "--consul", &consul]).await;
    assert!(
        back.contains("in force: catalog v1 1.2=90,1.3=10 sticky"),
        "{back}"
    );
    // Before the operator's ratings table there was none: rolling back
    // removes it, and rolling back again brings it back.
    let none = fleet_cli(&[
        "route",
        "rollback",
        "--service",
        "ratings",
        "--consul",
        &consul,
    ])
    .await;
    assert!(
        none.contains("in force: none (every eligible version)"),
        "{none}"
    );
    assert_eq!(store.show("ratings").await.unwrap(), None);
    fleet_cli(&[
        "route",
        "rollback",
        "--service",
        "ratings",
        "--consul",
        &consul,
    ])
    .await;
    assert_eq!(store.show("ratings").await.unwrap(), Some(mine_again()));
    system.stop().await;
    drop(agent);
}

fn mine_again() -> fleet_rpc::RouteTable {
    fleet::route::parse_weights("ratings", "1.0=100", true).unwrap()
}
