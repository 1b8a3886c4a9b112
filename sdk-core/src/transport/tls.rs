//! TLS settings of the native transport (rustls with the ring provider).
//!
//! The default verifies the server's certificate chain against the web PKI roots. A private CA
//! can be trusted instead, a leaf certificate can be pinned by its SHA-256, and — for local
//! development only — verification can be switched off explicitly, with a warning in the logs.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// How the native transport checks the server's certificate.
#[derive(Debug, Clone)]
pub enum Verification {
    /// The chain must lead to one of the web PKI roots (the default).
    WebPki,
    /// The chain must lead to one of these DER certificates (a private CA, a test certificate).
    TrustedCertificates(Vec<Vec<u8>>),
    /// The leaf certificate's SHA-256 must be one of these (certificate pinning).
    PinnedSha256(Vec<[u8; 32]>),
    /// No verification at all. For a development server on loopback only: anyone on the path
    /// can read and change the traffic.
    InsecureDevelopmentOnly,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `verification`.
pub fn client_config(verification: &Verification) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match verification {
        Verification::WebPki => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verification::TrustedCertificates(ders) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in ders {
                roots.add(CertificateDer::from(der.clone())).map_err(|e| format!("bad certificate: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verification::PinnedSha256(pins) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pins: pins.clone(), algorithms: provider.signature_verification_algorithms, insecure: false }))
            .with_no_client_auth(),
        Verification::InsecureDevelopmentOnly => {
            tracing::warn!("TLS certificate verification is OFF: for local development only");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { pins: vec![], algorithms: provider.signature_verification_algorithms, insecure: true }))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// Accepts a leaf whose SHA-256 is pinned (or any leaf when `insecure`); handshake signatures
/// are still checked, so the peer must hold the certificate's private key.
#[derive(Debug)]
struct Pinned {
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
    insecure: bool,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if self.insecure || self.pins.contains(&digest) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SHA-256 of a DER certificate, for `Verification::PinnedSha256`.
pub fn certificate_sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}
