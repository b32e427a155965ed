//! The client side of internal mutual TLS: what a driver client presents
//! and what it accepts (see [`fleet_config::MutualTls`] for the scheme).
//! tonic's rustls support (ring provider, no C toolchain) does the
//! handshakes.

use fleet_config::{ConfigError, MutualTls};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The TLS config for calling `service`: the shared CA, the name the
/// server's certificate must carry (the service's), and this instance's
/// own certificate for the server to check.
pub fn client_config(tls: &MutualTls, service: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.cert_pem, tls.key_pem()))
        .domain_name(service)
        .assume_http2(true)
}

/// Loads the config once at start, so files rustls cannot use fail there,
/// naming the variable, rather than at the first call.
///
/// # Errors
/// [`ConfigError`] about the CA or the certificate file.
pub fn check(tls: &MutualTls) -> Result<(), ConfigError> {
    tonic::transport::Endpoint::from_static("https://127.0.0.1:1")
        .tls_config(client_config(tls, "check"))
        .map(drop)
        .map_err(|e| tls.cert_error(format!("unusable as a client identity with this CA: {e}")))
}
