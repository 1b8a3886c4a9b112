//! TLS (wss) through rustls with the ring provider, from PEM certificate and key files.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Builds a TLS acceptor from PEM files.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_chain)
        .and_then(|it| it.collect())
        .map_err(|e| format!("reading certificates from {}: {e}", files.cert_chain.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", files.cert_chain.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|e| format!("reading the private key from {}: {e}", files.private_key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
