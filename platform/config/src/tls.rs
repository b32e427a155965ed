//! The files of internal mutual TLS, read once at start.
//!
//! With `GRPC_TLS_CA_FILE`, `GRPC_TLS_CERT_FILE` and `GRPC_TLS_KEY_FILE`
//! (PEM; all three or none) every gRPC server of the instance requires a
//! client certificate signed by the CA, and every driver client presents
//! the instance's own certificate and accepts only a server whose
//! certificate the CA signed *for the dependency's name*: a dal's
//! certificate carries the DNS name `dal`, a catalog's `catalog`, so one
//! service's key cannot answer for another (the service name is the
//! identity, as in a service mesh). Instances are dialled by address; the
//! name checked is the dependency's, not the address's.
//!
//! This crate only reads and checks the files; the server side
//! (`fleet-server`) and the client side (`fleet-rpc`) each build their own
//! rustls config from them through tonic, so neither depends on the other.

use std::path::PathBuf;

use crate::{ConfigError, Env};

/// The variables, in the order a message names them.
const VARS: [&str; 3] = [
    "GRPC_TLS_CA_FILE",
    "GRPC_TLS_CERT_FILE",
    "GRPC_TLS_KEY_FILE",
];

/// The CA and this instance's certificate and key (PEM), read at start.
#[derive(Clone, PartialEq, Eq)]
pub struct MutualTls {
    /// Where the CA came from (for messages).
    pub ca_file: PathBuf,
    /// Where the certificate came from (for messages).
    pub cert_file: PathBuf,
    /// The CA certificate(s) every peer's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// This instance's certificate chain.
    pub cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// Paths only: the key's bytes are never printed.
impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutualTls")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl MutualTls {
    /// Reads `GRPC_TLS_CA_FILE`, `GRPC_TLS_CERT_FILE` and
    /// `GRPC_TLS_KEY_FILE`: `None` when none is set.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable when only some are set, a file
    /// cannot be read, or it holds no PEM certificate (or key).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let [ca, cert, key] = VARS.map(|v| env.get(v));
        let (ca_file, cert_file, key_file) = match (ca, cert, key) {
            (None, None, None) => return Ok(None),
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => {
                let missing = VARS
                    .iter()
                    .find(|v| env.get(v).is_none())
                    .copied()
                    .unwrap_or(VARS[0]);
                return Err(ConfigError::invalid(
                    missing,
                    "",
                    "internal mTLS needs GRPC_TLS_CA_FILE, GRPC_TLS_CERT_FILE and \
                     GRPC_TLS_KEY_FILE together (or none of them)",
                ));
            }
        };
        let read = |var: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| ConfigError::invalid(var, path, format!("cannot read: {e}")))
        };
        let tls = Self {
            ca_pem: read(VARS[0], ca_file)?,
            cert_pem: read(VARS[1], cert_file)?,
            key_pem: read(VARS[2], key_file)?,
            ca_file: ca_file.into(),
            cert_file: cert_file.into(),
        };
        tls.check()?;
        Ok(Some(tls))
    }

    /// From PEM bytes already in memory (tests, embedders).
    ///
    /// # Errors
    /// [`ConfigError`] when the PEM does not hold what it should.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, ConfigError> {
        let tls = Self {
            ca_file: PathBuf::from("<memory>"),
            cert_file: PathBuf::from("<memory>"),
            ca_pem: ca.to_vec(),
            cert_pem: cert.to_vec(),
            key_pem: key.to_vec(),
        };
        tls.check()?;
        Ok(tls)
    }

    /// This instance's private key (PEM), for the TLS config that uses it.
    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }

    /// An error about the CA file, for the sides that load it further.
    pub fn ca_error(&self, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError::invalid(VARS[0], &self.ca_file.display().to_string(), reason)
    }

    /// An error about the certificate/key pair, for the sides that load
    /// it further.
    pub fn cert_error(&self, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError::invalid(VARS[1], &self.cert_file.display().to_string(), reason)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !has_block(&self.ca_pem, "CERTIFICATE") {
            return Err(self.ca_error("holds no PEM certificate"));
        }
        if !has_block(&self.cert_pem, "CERTIFICATE") {
            return Err(self.cert_error("holds no PEM certificate"));
        }
        if !has_block(&self.key_pem, "PRIVATE KEY") {
            return Err(ConfigError::invalid(
                VARS[2],
                "<redacted>",
                "holds no PEM private key",
            ));
        }
        Ok(())
    }
}

/// Whether `pem` has a `-----BEGIN … <label>-----` line (`PRIVATE KEY`
/// matches PKCS#8, RSA and EC keys alike).
fn has_block(pem: &[u8], label: &str) -> bool {
    let end = format!("{label}-----");
    String::from_utf8_lossy(pem)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_configured_and_all_three_or_none() {
        assert!(MutualTls::from_env(&Env::of(&[])).unwrap().is_none());
        let e = MutualTls::from_env(&Env::of(&[("GRPC_TLS_CA_FILE", "/x")])).unwrap_err();
        assert!(e.to_string().contains("GRPC_TLS_CERT_FILE"), "{e}");
        let e = MutualTls::from_env(&Env::of(&[
            ("GRPC_TLS_CA_FILE", "/x"),
            ("GRPC_TLS_CERT_FILE", "/y"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("GRPC_TLS_KEY_FILE"), "{e}");
    }

    #[test]
    fn unreadable_and_non_pem_files_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("fleet-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, b"not pem at all").unwrap();
        let junk = junk.to_str().unwrap();
        let e = MutualTls::from_env(&Env::of(&[
            ("GRPC_TLS_CA_FILE", "/nonexistent/ca.pem"),
            ("GRPC_TLS_CERT_FILE", junk),
            ("GRPC_TLS_KEY_FILE", junk),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GRPC_TLS_CA_FILE") && e.contains("cannot read"),
            "{e}"
        );
        let e = MutualTls::from_env(&Env::of(&[
            ("GRPC_TLS_CA_FILE", junk),
            ("GRPC_TLS_CERT_FILE", junk),
            ("GRPC_TLS_KEY_FILE", junk),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GRPC_TLS_CA_FILE") && e.contains("no PEM certificate"),
            "{e}"
        );
        let cert = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let e = MutualTls::from_pem(cert.as_bytes(), cert.as_bytes(), cert.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("GRPC_TLS_KEY_FILE") && !e.contains("AA=="),
            "{e}"
        );
        assert!(
            !format!(
                "{:?}",
                MutualTls::from_pem(
                    cert.as_bytes(),
                    cert.as_bytes(),
                    b"-----BEGIN PRIVATE KEY-----\nSECRETKEY\n"
                )
                .unwrap()
            )
            .contains("SECRETKEY")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_blocks_are_recognised_by_label() {
        assert!(has_block(
            b"-----BEGIN CERTIFICATE-----\nAA\n",
            "CERTIFICATE"
        ));
        assert!(has_block(
            b"x\n-----BEGIN EC PRIVATE KEY-----\n",
            "PRIVATE KEY"
        ));
        assert!(has_block(b"-----BEGIN PRIVATE KEY-----\r\n", "PRIVATE KEY"));
        assert!(!has_block(b"-----BEGIN PUBLIC KEY-----\n", "PRIVATE KEY"));
        assert!(!has_block(b"CERTIFICATE", "CERTIFICATE"));
    }
}
