//! Who may read the dashboard: its data (every instance's state and fault
//! rules) is behind the viewer token when one is set, and it refuses to
//! serve beyond loopback without one.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use fleet_dashboard::{Config, Dashboard, DashboardError, Source};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "dashboard-viewer-token-0123";

fn config(addr: &str, token: Option<&str>) -> Config {
    let mut c = Config::new(
        addr.parse().unwrap(),
        Source::Registry("/nonexistent/registry.json".into()),
    );
    c.viewer_token = token.map(Into::into);
    c
}

async fn serve(token: Option<&str>) -> (SocketAddr, CancellationToken) {
    let d = Dashboard::bind(config("127.0.0.1:0", token)).await.unwrap();
    let addr = d.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(d.run(stop.clone()));
    (addr, stop)
}

async fn status(url: String, bearer: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    // Headers are enough: the streams never end.
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn with_a_viewer_token_the_data_needs_it_and_the_page_does_not() {
    let (addr, stop) = serve(Some(TOKEN)).await;
    for path in [
        "/api/view",
        "/dashboard.stream",
        "/turbine.stream?cluster=ratings",
    ] {
        assert_eq!(
            status(format!("http://{addr}{path}"), None).await,
            401,
            "{path}"
        );
        assert_eq!(
            status(
                format!("http://{addr}{path}"),
                Some("wrong-token-0123456789")
            )
            .await,
            401,
            "{path}"
        );
        assert_eq!(
            status(format!("http://{addr}{path}"), Some(TOKEN)).await,
            200,
            "{path}"
        );
        let sep = if path.contains('?') { '&' } else { '?' };
        assert_eq!(
            status(
                format!("http://{addr}{path}{sep}access_token={TOKEN}"),
                None
            )
            .await,
            200,
            "{path}"
        );
    }
    let refused = reqwest::get(format!("http://{addr}/api/view"))
        .await
        .unwrap();
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    // The page, its assets and the health check hold no data.
    for path in ["/", "/app.js", "/app.css", "/healthz"] {
        assert_eq!(
            status(format!("http://{addr}{path}"), None).await,
            200,
            "{path}"
        );
    }
    stop.cancel();
}

#[tokio::test]
async fn without_a_token_it_serves_loopback_only() {
    let (addr, stop) = serve(None).await;
    assert_eq!(status(format!("http://{addr}/api/view"), None).await, 200);
    stop.cancel();
    match Dashboard::bind(config("0.0.0.0:0", None)).await {
        Err(e @ DashboardError::Unprotected { .. }) => {
            assert!(e.to_string().contains("viewer token"), "{e}");
        }
        other => panic!("bound beyond loopback without a token: {other:?}"),
    }
    assert!(
        Dashboard::bind(config("0.0.0.0:0", Some(TOKEN)))
            .await
            .is_ok()
    );
}
