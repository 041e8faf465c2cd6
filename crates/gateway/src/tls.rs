//! TLS at the edge (rustls, ring): the certificate chain and key of
//! `GATEWAY_TLS_CERT_FILE` / `GATEWAY_TLS_KEY_FILE`, ALPN `h2` then
//! `http/1.1`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the certificate chain and its key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The ALPN protocols offered, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The acceptor for `files`; the message says what is wrong with them.
pub fn acceptor(files: &Files) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("GATEWAY_TLS_CERT_FILE {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "GATEWAY_TLS_CERT_FILE {}: no certificate in it",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("GATEWAY_TLS_KEY_FILE {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE: {e}"))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
