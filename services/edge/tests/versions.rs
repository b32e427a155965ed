//! Catalog 1.x and 2.x live side by side behind the edge: `/api/v1/` is
//! served by 1.x only, `/api/v2/titles/{id}` by 2.x only.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[tokio::test]
async fn api_v1_reaches_only_catalog_1_x_and_api_v2_only_catalog_2_x() {
    let (backends, edge) = support::start_v1_and_v2().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", edge.addr);
    for _ in 0..20 {
        let r = http
            .get(format!("{base}/api/v1/titles/t00001"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let served = r.headers()["x-fleet-served-by"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(served.contains("catalog/1.3.0/"), "{served}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["title"]["runtime_min"].as_u64().unwrap() > 0);

        let r = http
            .get(format!("{base}/api/v2/titles/t00001"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let served = r.headers()["x-fleet-served-by"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(served.contains("catalog/2.0.0/"), "{served}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["id"], "t00001");
        assert!(body["genres"].is_array());
        assert!(body["runtime_s"].as_u64().unwrap() >= 60);
    }
    let r = http
        .get(format!("{base}/api/v2/titles/t99999"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{base}/api/v2/titles/bad%20id"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    edge.stop().await;
    for b in backends {
        b.stop().await;
    }
}
