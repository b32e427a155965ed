//! Internal mutual TLS on real sockets: a client → catalog → dal chain in
//! which every gRPC hop runs TLS with client certificates from one CA, and
//! every way around it is refused.

// Test code: a panic is how a test reports a broken system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_catalog_client::{
    CallOptions, CatalogClient, Dependency, DependencyConfig, InstanceSource,
};
use fleet_config::{Env, MutualTls};
use fleet_metrics::Metrics;
use fleet_testkit::{TestService, loopback_env};
use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

/// A CA that signs service certificates into a directory.
struct Ca {
    cert: Certificate,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// Writes `<service>.pem`/`<service>-key.pem` (a leaf naming
    /// `service`) and `ca.pem` into `dir`; returns the three paths.
    fn issue(&self, dir: &Path, service: &str) -> [PathBuf; 3] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![service.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("fleet {service} (test)"));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let paths = [
            dir.join("ca.pem"),
            dir.join(format!("{service}.pem")),
            dir.join(format!("{service}-key.pem")),
        ];
        std::fs::write(&paths[0], &self.pem).unwrap();
        std::fs::write(&paths[1], cert.pem()).unwrap();
        std::fs::write(&paths[2], key.serialize_pem()).unwrap();
        paths
    }

    fn tls(&self, dir: &Path, service: &str) -> MutualTls {
        let [ca, cert, key] = self.issue(dir, service);
        MutualTls::from_pem(
            &std::fs::read(ca).unwrap(),
            &std::fs::read(cert).unwrap(),
            &std::fs::read(key).unwrap(),
        )
        .unwrap()
    }
}

fn tls_env(files: &[PathBuf; 3]) -> [(&'static str, String); 3] {
    [
        ("GRPC_TLS_CA_FILE", files[0].display().to_string()),
        ("GRPC_TLS_CERT_FILE", files[1].display().to_string()),
        ("GRPC_TLS_KEY_FILE", files[2].display().to_string()),
    ]
}

/// A seeded dal serving TLS with `tls`'s files.
async fn dal(tls: &[PathBuf; 3]) -> TestService {
    let tls = tls_env(tls);
    let pairs: Vec<(&str, &str)> = tls.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fleet_dal::testing::start_seeded(20, 5, &pairs).await
}

fn catalog_env(dal: std::net::SocketAddr, tls: Option<&[PathBuf; 3]>) -> Env {
    let pairs = [
        ("SERVICE_VERSION", "1.3.0".to_owned()),
        ("DAL_ADDRS", dal.to_string()),
    ];
    loopback_env(pairs.into_iter().chain(tls.into_iter().flat_map(tls_env)))
}

/// A catalog started from `env` on its own task.
async fn catalog_from(env: &Env) -> TestService {
    TestService::start::<fleet_catalog::App>(env).await
}

fn client(catalog: &TestService, tls: Option<MutualTls>) -> CatalogClient {
    let instances =
        fleet_rpc::parse_instances(&catalog.addr.to_string(), &semver::Version::new(1, 3, 0))
            .unwrap();
    let mut config =
        DependencyConfig::new("catalog", "test", fleet_catalog_client::INTERFACE_MAJOR);
    config.tls = tls;
    // One attempt: a refused handshake is the answer, not a reason to retry.
    config.retry.max_retries = 0;
    CatalogClient::new(Dependency::new(
        config,
        InstanceSource::Static(instances),
        Metrics::new("test", "0.0.0").grpc_client(),
    ))
}

fn opts() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn every_hop_runs_mutual_tls_and_every_way_around_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fleet test CA");
    let dal_files = ca.issue(dir.path(), "dal");
    let catalog_files = ca.issue(dir.path(), "catalog");
    let dal = dal(&dal_files).await;
    let catalog = catalog_from(&catalog_env(dal.addr, Some(&catalog_files))).await;

    // The whole chain: client → catalog → dal, each hop with certificates.
    let good = client(&catalog, Some(ca.tls(dir.path(), "edge")));
    let title = good.get_title("t00001", opts()).await.unwrap();
    assert_eq!(title.id, "t00001");

    // No client certificate, or plaintext: refused.
    let plain = client(&catalog, None);
    assert!(plain.get_title("t00001", opts()).await.is_err());

    // A client certificate from another CA: refused by the server.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = Ca::new("rogue CA").tls(rogue_dir.path(), "edge");
    let mut mixed = rogue.clone();
    mixed.ca_pem = ca.pem.clone().into_bytes(); // trusts the real server
    let stranger = client(&catalog, Some(mixed));
    assert!(stranger.get_title("t00001", opts()).await.is_err());

    // A server whose certificate names another service (the dal's key
    // answering as a catalog): refused by the client.
    let impostor = catalog_from(&catalog_env(dal.addr, Some(&dal_files))).await;
    let fooled = client(&impostor, Some(ca.tls(dir.path(), "edge")));
    assert!(fooled.get_title("t00001", opts()).await.is_err());
    // …while the same client reaches the real catalog.
    assert!(
        client(&catalog, Some(ca.tls(dir.path(), "edge")))
            .get_title("t00002", opts())
            .await
            .is_ok()
    );

    impostor.stop().await;
    catalog.stop().await;
    dal.stop().await;
}

#[test]
fn half_a_tls_configuration_stops_the_service_at_start_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let files = Ca::new("fleet test CA").issue(dir.path(), "catalog");
    let env = Env::from_pairs([
        ("DAL_ADDRS", "127.0.0.1:1"),
        ("GRPC_TLS_CA_FILE", files[0].to_str().unwrap()),
        ("GRPC_TLS_CERT_FILE", files[1].to_str().unwrap()),
    ]);
    let e = fleet_catalog::Config::from_env(&env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("GRPC_TLS_KEY_FILE"), "{e}");
    // A key that is not the certificate's: refused at start too.
    let other = Ca::new("other CA").issue(dir.path(), "other");
    let env = Env::from_pairs([
        ("DAL_ADDRS", "127.0.0.1:1"),
        ("GRPC_TLS_CA_FILE", files[0].to_str().unwrap()),
        ("GRPC_TLS_CERT_FILE", files[1].to_str().unwrap()),
        ("GRPC_TLS_KEY_FILE", other[2].to_str().unwrap()),
    ]);
    let e = fleet_catalog::Config::from_env(&env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("GRPC_TLS_CERT_FILE"), "{e}");
}
