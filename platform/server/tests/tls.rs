//! TLS on the public HTTP listener, on real loopback sockets: a CA and a
//! leaf certificate for 127.0.0.1 issued here with rcgen, the host started
//! with `TLS_CERT_FILE`/`TLS_KEY_FILE`, and curl (a client nobody here
//! wrote) verifying the chain over HTTP/1.1 and HTTP/2.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use fleet_config::Env;
use fleet_metrics::Metrics;
use fleet_server::{ServerConfig, ServerError, ServiceHost};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

fn config(pairs: &[(&str, &str)]) -> Result<ServerConfig, fleet_config::ConfigError> {
    let env = Env::from_pairs([("READINESS_INTERVAL", "50ms"), ("SHUTDOWN_GRACE", "2s")]);
    let env = pairs.iter().fold(env, |env, (k, v)| env.with(*k, *v));
    ServerConfig::from_env(
        &env,
        "test",
        "HTTP_ADDR",
        "127.0.0.1:0",
        "127.0.0.1:0",
        "1.0.0",
        &["1.0"],
    )
}

/// Writes `ca.pem`, `cert.pem` (a leaf for 127.0.0.1 signed by the CA) and
/// `key.pem` into `dir`.
fn issue(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf named like its issuer looks self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fleet test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "fleet edge (test)");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

async fn tls_host(dir: &Path) -> SocketAddr {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let config = config(&[
        ("TLS_CERT_FILE", cert.to_str().unwrap()),
        ("TLS_KEY_FILE", key.to_str().unwrap()),
    ])
    .unwrap();
    let host = ServiceHost::bind(config, Metrics::new("test", "1.0.0"))
        .await
        .unwrap();
    let addr = host.main_addr();
    let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    tokio::spawn(host.run_http(router));
    addr
}

/// curl's exit code and its stdout.
async fn curl(args: Vec<String>) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_port_speaks_tls_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path());
    let addr = tls_host(dir.path()).await;
    let ca = dir.path().join("ca.pem").to_str().unwrap().to_owned();
    let url = format!("https://{addr}/hello");

    // The chain verifies against the CA; HTTP/1.1 and HTTP/2 (ALPN) both
    // serve.
    for version in ["--http1.1", "--http2"] {
        let (code, body) = curl(vec![
            "--cacert".into(),
            ca.clone(),
            version.into(),
            "--write-out".into(),
            " %{http_code} %{http_version}".into(),
            url.clone(),
        ])
        .await;
        assert_eq!(code, 0, "{version}: curl failed");
        let want = if version == "--http2" {
            "hello 200 2"
        } else {
            "hello 200 1.1"
        };
        assert_eq!(body, want, "{version}");
    }
    // Without the CA the client refuses the certificate (curl 60).
    let (code, _) = curl(vec![url.clone()]).await;
    assert_eq!(code, 60, "an unknown CA must fail verification");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let (code, body) = curl(vec![format!("http://{addr}/hello")]).await;
    assert_ne!(code, 0, "plaintext was served: {body}");
    // The server still serves TLS afterwards.
    let (code, body) = curl(vec!["--cacert".into(), ca, url]).await;
    assert_eq!((code, body.as_str()), (0, "hello"));
}

#[tokio::test]
async fn a_missing_or_broken_certificate_stops_the_start_with_a_clear_error() {
    // One of the two variables alone: a configuration error naming the other.
    let e = config(&[("TLS_CERT_FILE", "/nonexistent/cert.pem")]).unwrap_err();
    assert!(e.to_string().contains("TLS_KEY_FILE"), "{e}");
    let e = config(&[("TLS_KEY_FILE", "/nonexistent/key.pem")]).unwrap_err();
    assert!(e.to_string().contains("TLS_CERT_FILE"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    issue(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    for (c, k, names) in [
        (
            Path::new("/nonexistent/cert.pem"),
            key.as_path(),
            "TLS_CERT_FILE",
        ),
        (garbage.as_path(), key.as_path(), "TLS_CERT_FILE"),
        (cert.as_path(), garbage.as_path(), "TLS_KEY_FILE"),
        // A key that does not belong to the certificate.
        (
            cert.as_path(),
            dir.path().join("ca-key.pem").as_path(),
            "TLS_KEY_FILE",
        ),
    ] {
        if !k.exists() && k.ends_with("ca-key.pem") {
            std::fs::write(k, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        }
        let config = config(&[
            ("TLS_CERT_FILE", c.to_str().unwrap()),
            ("TLS_KEY_FILE", k.to_str().unwrap()),
        ])
        .unwrap();
        let host = ServiceHost::bind(config, Metrics::new("test", "1.0.0"))
            .await
            .unwrap();
        let router = axum::Router::new();
        let err = tokio::time::timeout(std::time::Duration::from_secs(5), host.run_http(router))
            .await
            .unwrap_or_else(|_| panic!("{c:?} {k:?}: served instead of refusing to start"))
            .unwrap_err();
        let ServerError::Tls(tls) = &err else {
            panic!("expected a TLS error, got {err:?}");
        };
        let text = tls.to_string();
        assert!(text.contains(names), "{c:?} {k:?}: {text}");
    }

    // A gRPC server does not terminate TLS: asked to, it refuses to start
    // rather than serve plaintext.
    let config = config(&[
        ("TLS_CERT_FILE", cert.to_str().unwrap()),
        ("TLS_KEY_FILE", key.to_str().unwrap()),
    ])
    .unwrap();
    let host = ServiceHost::bind(config, Metrics::new("test", "1.0.0"))
        .await
        .unwrap();
    let err = host
        .run_grpc(tonic::service::Routes::default(), &[])
        .await
        .unwrap_err();
    let why = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("does not terminate TLS")),
        "{err:?}"
    );
}
