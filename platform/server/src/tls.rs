//! TLS for the public HTTP listener (the edge): rustls (with the `ring`
//! provider) terminating TLS 1.2/1.3 with a certificate chain and key read
//! from PEM files, ALPN offering HTTP/2 and HTTP/1.1.
//!
//! `TLS_CERT_FILE` (the chain, leaf first) and `TLS_KEY_FILE` (PKCS#8,
//! PKCS#1 or SEC1) are read once at start-up; a file that cannot be read or
//! parsed stops the service with an error naming the variable. Admin ports
//! stay plaintext on the private network; internal gRPC can run mutual TLS
//! with a shared CA ([`grpc_server_config`], `GRPC_TLS_*`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate chain and private key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `TLS_CERT_FILE`: PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// `TLS_KEY_FILE`: PEM private key.
    pub key: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("TLS_CERT_FILE {path}: {message}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The key file could not be read or holds no private key.
    #[error("TLS_KEY_FILE {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// TLS was asked of a gRPC server: only the public HTTP listener
    /// terminates TLS with `TLS_*` (internal gRPC uses `GRPC_TLS_*`).
    #[error(
        "TLS_CERT_FILE {path}: TLS is for the edge's HTTP listener; this gRPC server does not terminate TLS"
    )]
    NotForGrpc {
        /// The certificate file given.
        path: PathBuf,
    },
    /// The gRPC server's mutual TLS could not be set up.
    #[error("GRPC_TLS_*: {0}")]
    Grpc(String),
    /// rustls refused the pair (e.g. the key does not match the leaf).
    #[error("TLS_CERT_FILE/TLS_KEY_FILE: {0}")]
    Config(#[source] rustls::Error),
}

/// A gRPC server's side of internal mutual TLS: its certificate, and the
/// CA every client certificate must chain to (a client without one is
/// refused in the handshake). See [`fleet_config::MutualTls`].
pub fn grpc_server_config(tls: &fleet_config::MutualTls) -> tonic::transport::ServerTlsConfig {
    tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &tls.cert_pem,
            tls.key_pem(),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(&tls.ca_pem))
}

/// Loads the server side once at start, so files rustls cannot use fail
/// there, naming the variable.
///
/// # Errors
/// [`fleet_config::ConfigError`] about the certificate or CA file.
pub fn check_grpc(tls: &fleet_config::MutualTls) -> Result<(), fleet_config::ConfigError> {
    tonic::transport::Server::builder()
        .tls_config(grpc_server_config(tls))
        .map(drop)
        .map_err(|e| tls.cert_error(format!("unusable as a server identity with this CA: {e}")))
}

/// A TLS acceptor for `files`.
///
/// # Errors
/// [`TlsError`] naming the file and what is wrong with it.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = certs(&files.cert)?;
    let key = key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert {
        path: path.to_owned(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |message: String| TlsError::Key {
        path: path.to_owned(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err(e.to_string()))
}
