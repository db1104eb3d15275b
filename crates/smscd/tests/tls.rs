//! SMPP over TLS both ways: an ESME -> smscd C (plain) -> upstream bind over TLS -> smscd A's TLS
//! listener -> sim; the receipt comes back the same way with C's id.

mod common;

use common::*;
use smpp::session::BindKind;
use smpp::{Body, CommandStatus};
use smsc_api::smscd_config::{ServerTlsConfig, UpstreamTlsConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_bind_over_tls_to_our_tls_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");

    let mut a_cfg = base_config(vec![account("c_up", "pw")]);
    a_cfg.server.tls = Some(ServerTlsConfig {
        port: 0,
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
    });
    let a = Daemon::start(a_cfg).await;
    let tls_port = a.handle.as_ref().and_then(|h| h.tls_addr).expect("TLS listener").port();

    let mut c_cfg = base_config(vec![account("esme", "secret")]);
    let mut up = upstream("a", tls_port, "c_up", "pw");
    up.tls = Some(UpstreamTlsConfig {
        ca_file: Some(cert.display().to_string()),
        server_name: Some("localhost".into()),
    });
    c_cfg.binds = vec![up];
    c_cfg.routing.default_chain = vec!["bind:a".into()];
    let c = Daemon::start(c_cfg).await;
    let core = c.core().clone();
    eventually("bound over TLS", Duration::from_secs(10), || {
        core.upstreams.get("a").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;

    let mut e = bind(c.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let r = within("submit", e.session.request(submit("3161", 1))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let id = match &r.body {
        Body::SubmitSmResp(s) => String::from_utf8_lossy(&s.message_id).into_owned(),
        other => panic!("{other:?}"),
    };
    let d = within("receipt", e.delivered.recv()).await.expect("receipt");
    assert_eq!(receipt_id(&d), id);
    // A plain-text bind on the TLS port does not get through.
    assert!(bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], tls_port)),
        BindKind::Transceiver,
        "c_up",
        "pw"
    )
    .await
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_listener_has_no_plain_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");

    let mut a_cfg = base_config(vec![account("c_up", "pw")]);
    a_cfg.server.plain_listener = false;
    a_cfg.server.tls = Some(ServerTlsConfig {
        port: 0,
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
    });
    let a = Daemon::start(a_cfg).await;
    let h = a.handle.as_ref().expect("running");
    assert_eq!(h.plain_addr, None, "no plain listener");
    let tls_addr = h.tls_addr.expect("TLS listener");
    assert_eq!(a.smpp, tls_addr, "ESMEs connect to the TLS listener");

    // TLS is the only way in, and it works.
    let mut c_cfg = base_config(vec![account("esme", "secret")]);
    let mut up = upstream("a", tls_addr.port(), "c_up", "pw");
    up.tls = Some(UpstreamTlsConfig {
        ca_file: Some(cert.display().to_string()),
        server_name: Some("localhost".into()),
    });
    c_cfg.binds = vec![up];
    c_cfg.routing.default_chain = vec!["bind:a".into()];
    let c = Daemon::start(c_cfg).await;
    let core = c.core().clone();
    eventually("bound over TLS", Duration::from_secs(10), || {
        core.upstreams.get("a").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let e = bind(c.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let r = within("submit", e.session.request(submit("3161", 0))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
}
