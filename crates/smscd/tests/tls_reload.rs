//! Certificate rotation: the TLS listener serves a renewed certificate after a reload, without a
//! restart, and a bad new certificate leaves the old one serving.

mod common;

use common::*;
use smsc_api::smscd_config::{BindConfig, ServerTlsConfig, UpstreamTlsConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Write a fresh self-signed certificate for `localhost` as `cert`/`key` and a copy of the
/// certificate as `trust` (what a client of that certificate trusts).
fn new_cert(cert: &Path, key: &Path, trust: &Path) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    std::fs::write(cert, ck.cert.pem()).expect("write cert");
    std::fs::write(key, ck.signing_key.serialize_pem()).expect("write key");
    std::fs::write(trust, ck.cert.pem()).expect("write trust");
}

/// Whether a TLS handshake with `addr` succeeds for a client trusting only `trust`.
async fn handshake_ok(addr: SocketAddr, trust: &Path) -> bool {
    let tls = UpstreamTlsConfig {
        ca_file: Some(trust.display().to_string()),
        server_name: Some("localhost".into()),
    };
    let cfg = smscd::tls::client_config(&tls).expect("client config");
    let bind = BindConfig { tls: Some(tls), ..upstream("x", addr.port(), "x", "x") };
    let name = smscd::tls::server_name(&bind).expect("server name");
    let tcp = within("connect", tokio::net::TcpStream::connect(addr)).await.expect("connect");
    let connector = smscd::tls::TlsConnector::from(cfg);
    matches!(tokio::time::timeout(STEP, connector.connect(name, tcp)).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_is_served_after_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (old_ca, new_ca) = (dir.path().join("old-ca.pem"), dir.path().join("new-ca.pem"));
    new_cert(&cert, &key, &old_ca);

    let mut cfg = base_config(vec![account("esme", "pw")]);
    cfg.server.tls = Some(ServerTlsConfig {
        port: 0,
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
    });
    let d = Daemon::start(cfg.clone()).await;
    let addr = d.handle.as_ref().and_then(|h| h.tls_addr).expect("TLS listener");
    assert!(handshake_ok(addr, &old_ca).await, "the first certificate is served");

    // A broken renewal (key missing its body): refused, the old certificate keeps serving.
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n").expect("write");
    d.reload.send(Arc::new(cfg.clone())).expect("reload");
    assert!(handshake_ok(addr, &old_ca).await, "a bad renewal leaves the old certificate");

    // The renewal (cert-manager or a Secret update rewrites the files; the reload watcher
    // republishes the config when they change).
    new_cert(&cert, &key, &new_ca);
    d.reload.send(Arc::new(cfg)).expect("reload");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !handshake_ok(addr, &new_ca).await {
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate is never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!handshake_ok(addr, &old_ca).await, "the old certificate is no longer served");
}
