//! TLS for the agent's web view, from the same files as its API listener (`--tls-cert-file`,
//! `--tls-key-file`, `--tls-client-ca-files`). The relay hands its own reloading configuration
//! instead ([`crate::TlsSource`]).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::UiError;

/// Certificate files of the listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CAs whose client certificates are required; empty: none required.
    pub client_cas: Vec<PathBuf>,
}

fn tls_err(what: &'static str, path: &std::path::Path) -> impl FnOnce(crate::BoxError) -> UiError {
    let path = path.to_path_buf();
    move |source| UiError::Tls { what, path, source }
}

fn certs(
    path: &std::path::Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, UiError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(what, path)(e.into()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(what, path)(e.into()))?;
    if certs.is_empty() {
        return Err(tls_err(what, path)("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The rustls configuration for `files`: HTTP/1.1 by ALPN, client certificates required when
/// `client_cas` is not empty.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, UiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_err("private key", &files.key)(e.into()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("certificate", &files.cert)(e.into()))?;
    let builder = if files.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for path in &files.client_cas {
            for cert in certs(path, "client CA")? {
                roots
                    .add(cert)
                    .map_err(|e| tls_err("client CA", path)(e.into()))?;
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| tls_err("client CA", &files.client_cas[0])(e.into()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("certificate", &files.cert)(e.into()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
