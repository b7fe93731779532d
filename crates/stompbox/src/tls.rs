//! TLS on the server's own listeners (`https`/`wss` and STOMP over TLS),
//! with a certificate that can be replaced while the server runs.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Where the server's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// TLS with the certificate chain in `cert_file` and the key in `key_file`.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        }
    }

    /// Reads and checks both files: the chain parses, the key parses, and
    /// the key belongs to the leaf certificate.
    ///
    /// # Errors
    ///
    /// A message naming the file that cannot be used, and why.
    pub fn check(&self) -> Result<(), String> {
        load(&self.cert_file, &self.key_file).map(drop)
    }
}

fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", key_file.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unsupported private key: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    // A key for another certificate would only fail in every handshake.
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not belong to the certificate in {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Hands every handshake the current certificate; a reload swaps it for
/// new handshakes while established sessions go on with the old one.
struct ReloadableCert {
    config: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Reloads the server's certificate and key from their files, e.g. on
/// SIGHUP after a renewal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    cert: Arc<ReloadableCert>,
}

impl TlsReloader {
    /// Reads the files again and uses them for every new connection. On an
    /// error the certificate in use stays.
    ///
    /// # Errors
    ///
    /// A message naming the file that cannot be used.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = load(&self.cert.config.cert_file, &self.cert.config.key_file)?;
        *self
            .cert
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// The acceptors of one server: HTTP (ALPN `http/1.1`) and STOMP over TCP.
#[derive(Clone)]
pub(crate) struct ServerTls {
    pub(crate) http: tokio_rustls::TlsAcceptor,
    pub(crate) tcp: tokio_rustls::TlsAcceptor,
    pub(crate) reloader: TlsReloader,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("reloader", &self.reloader)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    pub(crate) fn new(config: &TlsConfig) -> Result<ServerTls, String> {
        let cert = Arc::new(ReloadableCert {
            current: RwLock::new(load(&config.cert_file, &config.key_file)?),
            config: config.clone(),
        });
        let acceptor =
            |alpn: Vec<Vec<u8>>, tickets: usize| -> Result<tokio_rustls::TlsAcceptor, String> {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut server = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup: {e}"))?
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
                server.alpn_protocols = alpn;
                server.send_tls13_tickets = tickets;
                Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
            };
        Ok(ServerTls {
            // Only HTTP/1.1 is served: WebSocket upgrades need it.
            http: acceptor(vec![b"http/1.1".to_vec()], 2)?,
            // No session tickets for STOMP over TLS: clients that read and
            // write one TLS socket from two threads (stomp.py) lose their
            // CONNECT now and then when its first read handles the tickets
            // the server sends after a TLS 1.3 handshake. Such clients stay
            // connected, so resumption gains them little.
            tcp: acceptor(Vec::new(), 0)?,
            reloader: TlsReloader { cert },
        })
    }
}
