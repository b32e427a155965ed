//! Regenerates `docs/dashboard.png` without the whole `fleet up`: a real
//! dal and two real catalogs in-process, traffic through the catalog's
//! driver client, the dashboard on port 0, the dal made to fail `GetTitle`
//! through its fault API until the page shows the circuit open, then
//! Debian's headless Chromium takes the picture.
//!
//! `cargo run -p fleet-dashboard --example screenshot -- docs/dashboard.png`

// An example run by hand: a panic is how it reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use fleet_catalog_client::{
    CallOptions, CatalogClient, Dependency, DependencyConfig, InstanceSource,
};
use fleet_config::Env;
use fleet_metrics::Metrics;
use fleet_server::App as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "screenshot-admin-token";

#[tokio::main]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/dashboard.png".into());
    let data = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("DATA_DIR", data.path().to_str().unwrap()),
        ("SEED_TITLES", "50"),
        ("SEED_USERS", "10"),
        ("ADMIN_TOKEN", TOKEN),
        ("SERVICE_VERSION", "1.0.0"),
    ]);
    let dal = fleet_dal::App::build(fleet_dal::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let (dal_grpc, dal_admin) = (dal.main_addr(), dal.admin_addr());
    tokio::spawn(dal.run());
    let mut entries = vec![
        json!({"service":"dal","version":"1.0.0","instance_id":"dal-1","admin_addr":dal_admin.to_string()}),
    ];
    let mut clients = Vec::new();
    for (i, version) in ["1.2.4", "1.3.0"].iter().enumerate() {
        let env = Env::from_pairs([
            ("GRPC_ADDR", "127.0.0.1:0"),
            ("ADMIN_ADDR", "127.0.0.1:0"),
            ("SERVICE_VERSION", version),
            ("DAL_ADDRS", &dal_grpc.to_string()),
            // The streams the dashboard reads are closed without a token.
            ("ADMIN_TOKEN", TOKEN),
        ]);
        let app = fleet_catalog::App::build(fleet_catalog::Config::from_env(&env).unwrap())
            .await
            .unwrap();
        entries.push(
            json!({"service":"catalog","version":version,"instance_id":format!("catalog-{}", i + 1),
            "admin_addr":app.admin_addr().to_string()}),
        );
        let v = semver::Version::parse(version).unwrap();
        let instances = fleet_rpc::parse_instances(&app.main_addr().to_string(), &v).unwrap();
        clients.push(CatalogClient::new(Dependency::new(
            DependencyConfig::new("catalog", "demo", fleet_catalog_client::INTERFACE_MAJOR),
            InstanceSource::Static(instances),
            Metrics::new("demo", "0.0.0").grpc_client(),
        )));
        tokio::spawn(app.run());
    }
    let run = tempfile::tempdir().unwrap();
    let registry = run.path().join("registry.json");
    std::fs::write(&registry, serde_json::to_vec(&entries).unwrap()).unwrap();
    let mut config = fleet_dashboard::Config::new(
        "127.0.0.1:0".parse().unwrap(),
        fleet_dashboard::Source::Registry(registry),
    );
    config.admin_token = Some(TOKEN.into());
    let dashboard = fleet_dashboard::Dashboard::bind(config).await.unwrap();
    let page = format!("http://{}/", dashboard.local_addr());
    tokio::spawn(dashboard.run(CancellationToken::new()));
    for (i, c) in clients.into_iter().enumerate() {
        tokio::spawn(async move {
            let mut n = 0u32;
            loop {
                n += 1;
                let _ = c
                    .get_title(
                        &format!("t{:05}", n % 50 + 1),
                        CallOptions::timeout(Duration::from_secs(1)),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(if i == 0 { 15 } else { 40 })).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let http = reqwest::Client::new();
    http.post(format!("http://{dal_admin}/admin/faults"))
        .bearer_auth(TOKEN)
        .json(&json!({"operation":"GetTitle","action":{"type":"abort","code":"UNAVAILABLE"}}))
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        let v: Value = http
            .get(format!("{page}api/view"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["tiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "dal.GetTitle" && t["circuit"] == "open")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // chromedriver (WebDriver): headless Chromium keeps the page's event
    // stream open, so `chromium --screenshot` alone never finishes loading.
    let driver = fleet_testkit::webdriver::chromedriver().expect("chromedriver (scripts/browser)");
    let (_chromedriver, browser) =
        fleet_testkit::webdriver::Browser::start(&driver, 1400, 1000).await;
    browser.goto(&page).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser.screenshot(std::path::Path::new(&out)).await;
    browser.close().await;
    println!("wrote {out}");
    std::process::exit(0);
}
