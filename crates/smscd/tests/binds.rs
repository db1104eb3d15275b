//! Bad inputs on the ESME side: each gets its status, and the session stays usable where the
//! spec says it does.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use smpp::session::{BindKind, SessionError};
use smpp::{Bind, Body, CommandStatus, Pdu};
use smsc_api::smscd_config::BindType;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rejected(r: Result<Esme, SessionError>) -> CommandStatus {
    match r {
        Err(SessionError::BindRejected(s)) => s,
        Err(e) => panic!("bind failed otherwise: {e}"),
        Ok(_) => panic!("bind accepted"),
    }
}

async fn send(s: &mut TcpStream, pdu: &Pdu) {
    let mut b = BytesMut::new();
    pdu.encode(&mut b).expect("encode");
    s.write_all(&b).await.expect("write");
}

async fn send_raw(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).await.expect("write");
}

async fn recv(s: &mut TcpStream) -> Pdu {
    let mut len = [0u8; 4];
    within("read header", s.read_exact(&mut len)).await.expect("read");
    let n = u32::from_be_bytes(len) as usize;
    let mut frame = vec![0u8; n];
    frame[..4].copy_from_slice(&len);
    within("read body", s.read_exact(&mut frame[4..])).await.expect("read");
    Pdu::decode(Bytes::from(frame)).expect("decodable response")
}

fn bind_pdu(seq: u32, kind: BindKind, id: &str, pw: &str) -> Pdu {
    let b = Bind {
        system_id: Bytes::from(id.to_owned()),
        password: Bytes::from(pw.to_owned()),
        interface_version: 0x34,
        ..Bind::default()
    };
    let body = match kind {
        BindKind::Transmitter => Body::BindTransmitter(b),
        BindKind::Receiver => Body::BindReceiver(b),
        BindKind::Transceiver => Body::BindTransceiver(b),
    };
    Pdu::new(seq, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_refusals_have_their_status() {
    let mut outside = account("walled", "pw");
    outside.allowed_cidrs = vec!["10.0.0.0/8".into()];
    let mut tx_only = account("txonly", "pw");
    tx_only.bind_types = vec![BindType::Transmitter];
    let mut one = account("one", "pw");
    one.max_binds = Some(1);
    let d = Daemon::start(base_config(vec![account("esme", "secret"), outside, tx_only, one])).await;
    let t = BindKind::Transceiver;
    // Issue 14: whatever was wrong (password, system_id, address), the same status.
    assert_eq!(rejected(bind(d.smpp, t, "esme", "wrong").await), CommandStatus::ESME_RBINDFAIL);
    assert_eq!(rejected(bind(d.smpp, t, "nobody", "secret").await), CommandStatus::ESME_RBINDFAIL);
    assert_eq!(rejected(bind(d.smpp, t, "walled", "pw").await), CommandStatus::ESME_RBINDFAIL);
    assert_eq!(rejected(bind(d.smpp, t, "walled", "wrong").await), CommandStatus::ESME_RBINDFAIL);
    assert_eq!(
        rejected(bind(d.smpp, BindKind::Receiver, "txonly", "pw").await),
        CommandStatus::ESME_RBINDFAIL
    );
    assert!(bind(d.smpp, BindKind::Transmitter, "txonly", "pw").await.is_ok());
    let first = bind(d.smpp, t, "one", "pw").await.expect("first bind");
    assert_eq!(rejected(bind(d.smpp, t, "one", "pw").await), CommandStatus::ESME_RBINDFAIL);
    // The first session is unaffected.
    let r = within("submit", first.session.request(submit("3161", 0))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    // Its slot frees when it unbinds.
    first.session.unbind().await;
    let core = d.core().clone();
    eventually("bind slot freed", Duration::from_secs(5), || {
        core.accounts.get("one").is_some_and(|a| a.binds() == 0)
    })
    .await;
    assert!(bind(d.smpp, t, "one", "pw").await.is_ok());
}

/// Issue 14: failed binds are throttled per address (after `failed_binds_per_address` failures
/// in the window even the right password is refused, unchecked), and connections per address
/// are capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_binds_are_throttled_and_connections_capped_per_address() {
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.server.failed_binds_per_address = 3;
    cfg.server.failed_bind_window_secs = 3600;
    cfg.server.max_connections_per_address = 2;
    let d = Daemon::start(cfg).await;
    let t = BindKind::Transceiver;
    // Before any failure the right password binds (and unbinds, freeing its connection).
    let ok = bind(d.smpp, t, "esme", "secret").await.expect("bind");
    ok.session.unbind().await;
    for pw in ["a", "b", "c"] {
        assert_eq!(rejected(bind(d.smpp, t, "esme", pw).await), CommandStatus::ESME_RBINDFAIL);
    }
    // The address used up its failures: the right password is refused too.
    assert_eq!(rejected(bind(d.smpp, t, "esme", "secret").await), CommandStatus::ESME_RBINDFAIL);

    // Connection cap, on a daemon with no failures behind it.
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.server.max_connections_per_address = 2;
    // Far beyond the test: a connection closed below is closed by the cap, not the bind timeout.
    cfg.server.bind_timeout_secs = 120;
    let d = Daemon::start(cfg).await;
    let _one = TcpStream::connect(d.smpp).await.expect("connect");
    let two = TcpStream::connect(d.smpp).await.expect("connect");
    // Both are counted once the listener took them: a third is closed at once.
    let core = d.core().clone();
    eventually("two connections counted", Duration::from_secs(5), || core.metrics.connections.get() == 2)
        .await;
    let mut third = TcpStream::connect(d.smpp).await.expect("connect");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the third connection is closed at once: {read:?}");
    // One closed: a new connection binds again.
    drop(two);
    eventually("connection released", Duration::from_secs(5), || core.metrics.connections.get() == 1).await;
    assert!(bind(d.smpp, t, "esme", "secret").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_before_bind_and_on_receiver_and_malformed() {
    let d = Daemon::start(base_config(vec![account("esme", "secret")])).await;
    let mut s = TcpStream::connect(d.smpp).await.expect("connect");
    // Before bind: ESME_RINVBNDSTS, and the connection can still bind.
    send(&mut s, &Pdu::new(1, submit("3161", 0))).await;
    let r = recv(&mut s).await;
    assert_eq!(r.command_status, CommandStatus::ESME_RINVBNDSTS);
    send(&mut s, &bind_pdu(2, BindKind::Receiver, "esme", "secret")).await;
    let r = recv(&mut s).await;
    assert_eq!((r.sequence_number, r.command_status), (2, CommandStatus::ESME_ROK));
    // On a receiver bind: ESME_RINVBNDSTS.
    send(&mut s, &Pdu::new(3, submit("3161", 0))).await;
    let r = recv(&mut s).await;
    assert_eq!((r.sequence_number, r.command_status), (3, CommandStatus::ESME_RINVBNDSTS));
    // A second bind on a bound session: ESME_RALYBND.
    send(&mut s, &bind_pdu(4, BindKind::Transceiver, "esme", "secret")).await;
    let r = recv(&mut s).await;
    assert_eq!((r.sequence_number, r.command_status), (4, CommandStatus::ESME_RALYBND));
    // Malformed submit_sm (body cut short): an error answer, not a dropped session.
    let mut bad = vec![0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5];
    bad.extend_from_slice(&[0x41, 0x42, 0x43, 0x44]);
    send_raw(&mut s, &bad).await;
    let r = recv(&mut s).await;
    assert_eq!(r.sequence_number, 5);
    assert!(!r.command_status.is_ok(), "{r:?}");
    // Still usable.
    send(&mut s, &Pdu::new(6, Body::EnquireLink)).await;
    let r = recv(&mut s).await;
    assert_eq!((r.sequence_number, r.command_id()), (6, smpp::CommandId::ENQUIRE_LINK_RESP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmitter_session_works_with_submit() {
    let d = Daemon::start(base_config(vec![account("esme", "secret")])).await;
    let e = bind(d.smpp, BindKind::Transmitter, "esme", "secret").await.expect("bind");
    let r = within("submit", e.session.request(submit("3161", 0))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_throttle_gets_rthrottled() {
    let mut a = account("esme", "secret");
    a.max_msg_per_sec = Some(5);
    let d = Daemon::start(base_config(vec![a])).await;
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let mut ok = 0;
    let mut throttled = 0;
    for _ in 0..30 {
        let r = within("submit", e.session.request(submit("3161", 0))).await.expect("resp");
        match r.command_status {
            CommandStatus::ESME_ROK => ok += 1,
            CommandStatus::ESME_RTHROTTLED => throttled += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!((5..=7).contains(&ok), "ok {ok}");
    assert_eq!(ok + throttled, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_and_connections_are_capped() {
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.server.bind_timeout_secs = 1;
    cfg.server.max_connections = 2;
    let d = Daemon::start(cfg).await;
    let mut a = TcpStream::connect(d.smpp).await.expect("connect");
    let _b = TcpStream::connect(d.smpp).await.expect("connect");
    // A third connection is over the cap: closed at once.
    let mut c = TcpStream::connect(d.smpp).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = within("cap close", c.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0);
    // The silent one is closed after the bind timeout.
    let started = std::time::Instant::now();
    let n = within("bind timeout close", a.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
}
