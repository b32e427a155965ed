//! Catalog 2.0 serves the breaking `catalog.v2` interface: the v2 driver
//! client gets titles in the new shape, a v1 client never reaches a 2.x
//! instance, and a v1 call that reached one anyway would be refused.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod support;

use fleet_catalog_client::v2::CatalogV2Client;
use fleet_catalog_client::{
    CatalogClient, Dependency, DependencyConfig, Error, InstanceSource, Unavailable,
};
use fleet_metrics::Metrics;
use support::{opts, start_catalog, start_dal};

fn dependency(list: &str, major: u64) -> Dependency {
    let instances = fleet_rpc::parse_instances(list, &semver::Version::new(1, 0, 0)).unwrap();
    Dependency::new(
        DependencyConfig::new("catalog", "test", major),
        InstanceSource::Static(instances),
        Metrics::new("test", "0.0.0").grpc_client(),
    )
}

#[tokio::test]
async fn catalog_2_serves_v2_titles_and_v1_clients_never_reach_it() {
    let dal = start_dal().await;
    let v13 = start_catalog(dal.addr, "1.3.0").await;
    let v20 = start_catalog(dal.addr, "2.0.0").await;
    let list = format!("{}@1.3.0,{}@2.0.0", v13.addr, v20.addr);

    let v2 = CatalogV2Client::new(dependency(&list, 2));
    let t = v2.get_title("t00001", opts()).await.unwrap();
    assert_eq!(t.id, "t00001");
    assert_eq!(t.genres.len(), 1);
    assert!(
        t.runtime_s >= 60 && t.runtime_s % 60 == 0,
        "{}",
        t.runtime_s
    );
    assert!(matches!(
        v2.get_title("t99999", opts()).await,
        Err(Error::NotFound { .. })
    ));

    // A v1 client on the same list only ever reaches 1.3 (a v1 call that
    // reached 2.0 would fail: 2.0 does not serve catalog.v1, see below).
    let v1 = CatalogClient::new(dependency(&list, 1));
    assert_eq!(v1.dependency().instances().len(), 1);
    for _ in 0..50 {
        assert_eq!(v1.get_title("t00001", opts()).await.unwrap().id, "t00001");
    }
    // Only 2.x listed: a v1 client has nowhere to go, rather than calling it.
    let only_v2 = CatalogClient::new(dependency(&format!("{}@2.0.0", v20.addr), 1));
    assert!(matches!(
        only_v2.get_title("t00001", opts()).await,
        Err(Error::Unavailable {
            reason: Unavailable::NoInstances,
            ..
        })
    ));
    // And 2.x does not serve catalog.v1 at all (a mislabelled instance
    // would be refused, not misread).
    let mislabelled = CatalogClient::new(dependency(&format!("{}@1.3.0", v20.addr), 1));
    let e = mislabelled.get_title("t00001", opts()).await.unwrap_err();
    assert!(!matches!(e, Error::NotFound { .. }), "{e:?}");

    v13.stop().await;
    v20.stop().await;
    dal.stop().await;
}
