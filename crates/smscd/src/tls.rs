//! TLS material: the SMPP-over-TLS listener's server config and upstream binds' client config
//! (rustls with the ring provider, chosen per config rather than process-wide so a second provider
//! elsewhere in the build cannot make the default ambiguous).
//!
//! Certificates are re-read on reload: [`ServerTls::refresh`] rebuilds the server config when the
//! certificate or key files' contents changed since the last load (cert-manager renews them in
//! place; the listener keeps its socket and new handshakes get the new certificate).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use smsc_api::smscd_config::{BindConfig, ServerTlsConfig, UpstreamTlsConfig};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), what: format!("bad PEM: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), what: "no CERTIFICATE block found".into() });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

/// The listener's config from the PEM certificate chain and key the config names.
pub fn server_config(cfg: &ServerTlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs(Path::new(&cfg.cert_file))?;
    let key = key(Path::new(&cfg.key_file))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// A client config for an upstream bind: trusts `ca_file` when given, else the webpki roots
/// (Mozilla's list, compiled in, so it works in a distroless image without a CA bundle).
pub fn client_config(cfg: &UpstreamTlsConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(ca) => {
            for cert in certs(Path::new(ca))? {
                roots.add(cert)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify for an upstream: `tls.server_name`, else `host`.
pub fn server_name(bind: &BindConfig) -> Result<ServerName<'static>, TlsError> {
    let name = bind.tls.as_ref().and_then(|t| t.server_name.clone()).unwrap_or_else(|| bind.host.clone());
    ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))
}

/// The contents of a set of files, as hashes: tells whether any changed since it was taken.
/// Hashes rather than bytes so private keys are not kept twice in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesFingerprint {
    files: Vec<(PathBuf, Option<u64>)>,
}

impl FilesFingerprint {
    /// Reads the files now; one that cannot be read counts as `None` (a change when it appears).
    pub fn of<P: AsRef<Path>>(paths: &[P]) -> FilesFingerprint {
        let files = paths
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let hash = std::fs::read(p).ok().map(|bytes| {
                    let mut h = DefaultHasher::new();
                    bytes.hash(&mut h);
                    h.finish()
                });
                (p.to_path_buf(), hash)
            })
            .collect();
        FilesFingerprint { files }
    }

    /// Whether any file's contents differ from when this fingerprint was taken.
    pub fn changed(&self) -> bool {
        let paths: Vec<&Path> = self.files.iter().map(|(p, _)| p.as_path()).collect();
        FilesFingerprint::of(&paths) != *self
    }
}

/// The listener's TLS config with what it was built from.
#[derive(Clone)]
pub struct ServerTls {
    settings: ServerTlsConfig,
    files: FilesFingerprint,
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    pub fn load(settings: &ServerTlsConfig) -> Result<ServerTls, TlsError> {
        // Fingerprint first: a file replaced while we read it then shows as changed next time.
        let files = FilesFingerprint::of(&[&settings.cert_file, &settings.key_file]);
        let config = server_config(settings)?;
        Ok(ServerTls { settings: settings.clone(), files, config })
    }

    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// Rebuilds when `settings` or the files' contents changed; `Ok(true)` when it did. On error
    /// the current config stays.
    pub fn refresh(&mut self, settings: &ServerTlsConfig) -> Result<bool, TlsError> {
        if *settings == self.settings && !self.files.changed() {
            return Ok(false);
        }
        *self = ServerTls::load(settings)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    fn write_self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        (cert, key)
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_self_signed(dir.path(), "localhost");
        Pki { dir, cert, key }
    }

    fn settings(p: &Pki) -> ServerTlsConfig {
        ServerTlsConfig {
            port: 3550,
            cert_file: p.cert.display().to_string(),
            key_file: p.key.display().to_string(),
        }
    }

    #[test]
    fn server_config_from_pem() {
        let p = pki();
        assert!(server_config(&settings(&p)).is_ok());
    }

    #[test]
    fn errors_name_the_file() {
        let p = pki();
        let mut s = settings(&p);
        s.key_file = p.cert.display().to_string();
        let e = server_config(&s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("localhost.crt") && e.contains("private key"), "{e}");
        s.cert_file = p.dir.path().join("missing.pem").display().to_string();
        let e = server_config(&s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::write(&p.key, "not pem").expect("write");
        let e = server_config(&settings(&p)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("localhost.key"), "{e}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let p = pki();
        let (_, other_key) = write_self_signed(p.dir.path(), "other");
        let mut s = settings(&p);
        s.key_file = other_key.display().to_string();
        assert!(server_config(&s).is_err());
    }

    #[test]
    fn refresh_follows_file_contents() {
        let p = pki();
        let mut tls = ServerTls::load(&settings(&p)).expect("load");
        assert!(!tls.refresh(&settings(&p)).expect("unchanged"));
        // Renewal in place: a new pair under the same names.
        let (c2, k2) = write_self_signed(p.dir.path(), "renewed");
        std::fs::rename(&c2, &p.cert).expect("rename");
        std::fs::rename(&k2, &p.key).expect("rename");
        assert!(tls.refresh(&settings(&p)).expect("reloaded"));
        assert!(!tls.refresh(&settings(&p)).expect("settled"));
        // A broken renewal keeps the old config.
        std::fs::write(&p.key, "garbage").expect("write");
        assert!(tls.refresh(&settings(&p)).is_err());
        let _still = tls.acceptor();
    }

    #[test]
    fn client_config_with_ca_file_and_roots() {
        let p = pki();
        let with_ca = UpstreamTlsConfig { ca_file: Some(p.cert.display().to_string()), server_name: None };
        assert!(client_config(&with_ca).is_ok());
        assert!(client_config(&UpstreamTlsConfig::default()).is_ok());
        let bad = UpstreamTlsConfig { ca_file: Some(p.key.display().to_string()), server_name: None };
        assert!(client_config(&bad).is_err());
    }

    #[tokio::test]
    async fn handshake_over_loopback() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let p = pki();
        let acceptor = ServerTls::load(&settings(&p)).expect("load").acceptor();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("server handshake");
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.expect("read");
            tls.write_all(&buf).await.expect("echo");
            tls.flush().await.expect("flush");
        });
        let client = client_config(&UpstreamTlsConfig {
            ca_file: Some(p.cert.display().to_string()),
            server_name: Some("localhost".into()),
        })
        .expect("client config");
        let bind: BindConfig = serde_norway::from_str(
            "{ name: a, host: 127.0.0.1, system_id: s, tls: { server_name: localhost } }",
        )
        .expect("bind");
        let name = server_name(&bind).expect("name");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut tls = TlsConnector::from(client).connect(name, tcp).await.expect("client handshake");
        tls.write_all(b"smpp").await.expect("write");
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"smpp");
        server.await.expect("server task");
    }
}
