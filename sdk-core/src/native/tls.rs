//! TLS for `wss://`: rustls with the webpki roots, plus any CA certificates the app adds
//! (a private CA, or a self-signed certificate in tests).

use std::sync::Arc;

use tokio_tungstenite::Connector;

/// TLS settings of the native driver.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Extra trusted CA certificates, PEM encoded (one or more per string).
    pub extra_ca_pem: Vec<String>,
    /// Trust only `extra_ca_pem`, not the public webpki roots.
    pub only_extra_roots: bool,
}

impl TlsOptions {
    /// Trust this PEM CA certificate in addition to the public roots.
    pub fn with_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.extra_ca_pem.push(pem.into());
        self
    }

    /// The connector for a URL: `None` (plain) for `ws://`.
    pub(crate) fn connector(&self, url: &str) -> Result<Option<Connector>, String> {
        if !url.starts_with("wss://") {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        if !self.only_extra_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for pem in &self.extra_ca_pem {
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("bad CA certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate: {e}"))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Some(Connector::Rustls(Arc::new(config))))
    }
}
