//! Loopback tests (127.0.0.1 and in-memory duplex streams) of our ESME session against our SMSC
//! session, and of each against raw bytes written to the socket.
//!
//! Every wait is bounded by `within`; timer-driven cases use tokio's paused clock over
//! `tokio::io::duplex`, so no test sleeps to synchronise.

use bytes::{Bytes, BytesMut};
use smpp::session::{
    esme, smsc, BindKind, CloseReason, Handler, Reply, Request, Responder, Session, SessionConfig,
    SessionError,
};
use smpp::{
    Address, Bind, Body, CommandId, CommandStatus, DeliverSm, Outbind, Pdu, SmppCodec, SubmitSm, SubmitSmResp,
};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

const LIMIT: Duration = Duration::from_secs(10);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("test step timed out")
}

fn bind_params(system_id: &str, password: &str) -> Bind {
    Bind {
        system_id: Bytes::copy_from_slice(system_id.as_bytes()),
        password: Bytes::copy_from_slice(password.as_bytes()),
        ..Bind::default()
    }
}

fn submit(text: &str) -> Body {
    Body::SubmitSm(SubmitSm {
        source: Address::new(1, 1, "12345"),
        destination: Address::new(1, 1, "31600000000"),
        registered_delivery: 1,
        short_message: Bytes::copy_from_slice(text.as_bytes()),
        ..SubmitSm::default()
    })
}

fn receipt(id: &str) -> Body {
    let text = format!(
        "id:{id} sub:001 dlvrd:001 submit date:2611251200 done date:2611251201 stat:DELIVRD err:000 text:hi"
    );
    let mut d = DeliverSm {
        source: Address::new(1, 1, "31600000000"),
        destination: Address::new(1, 1, "12345"),
        esm_class: smpp::esm_class::DELIVERY_RECEIPT,
        short_message: Bytes::from(text),
        ..DeliverSm::default()
    };
    d.tlvs.set_receipted_message_id(id.as_bytes());
    d.tlvs.set_message_state(2);
    Body::DeliverSm(d)
}

// ---- handlers ---------------------------------------------------------------------------------

/// SMSC side: answers submit_sm with a counter id at once.
#[derive(Default)]
struct SubmitOk {
    next: u64,
}

impl Handler for SubmitOk {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::SubmitSm(_) => {
                self.next += 1;
                let message_id = Bytes::from(format!("{:08x}", self.next));
                Reply::Ok(Body::SubmitSmResp(SubmitSmResp { message_id, ..Default::default() }))
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }
}

/// Defers every request and parks the responder for the test to answer.
#[derive(Clone, Default)]
struct Hold {
    held: Arc<Mutex<Vec<Responder>>>,
}

impl Hold {
    fn count(&self) -> usize {
        self.held.lock().unwrap().len()
    }
    fn take(&self) -> Vec<Responder> {
        std::mem::take(&mut *self.held.lock().unwrap())
    }
}

impl Handler for Hold {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        let (_pdu, responder) = req.defer();
        self.held.lock().unwrap().push(responder);
        Reply::Deferred
    }
}

/// ESME side: records deliver_sm and answers deliver_sm_resp.
struct Record {
    tx: mpsc::Sender<Pdu>,
}

impl Handler for Record {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        let ok = self.tx.try_send(req.pdu).is_ok();
        if ok {
            Reply::Ok(Body::DeliverSmResp(SubmitSmResp::default()))
        } else {
            Reply::Error(CommandStatus::ESME_RX_T_APPN)
        }
    }
}

// ---- a test SMSC ------------------------------------------------------------------------------

/// Accepts binds with password "secret" (others ESME_RINVPASWD) and hands each session out.
async fn smsc_server<H, F>(cfg: SessionConfig, make: F) -> (SocketAddr, mpsc::Receiver<Session>)
where
    H: Handler,
    F: Fn() -> H + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let Ok(incoming) = smsc::accept(stream, Some(peer), cfg.clone()).await else { continue };
            if incoming.bind.password.as_ref() != b"secret" {
                let _ = incoming.reject(CommandStatus::ESME_RINVPASWD).await;
                continue;
            }
            if let Ok(s) = incoming.accept("testsmsc", Some(0x34), make()).await {
                let _ = tx.send(s).await;
            }
        }
    });
    (addr, rx)
}

fn fast_cfg() -> SessionConfig {
    SessionConfig { bind_timeout: Duration::from_secs(5), ..SessionConfig::default() }
}

async fn bound_pair<H: Handler>(
    kind: BindKind,
    esme_cfg: SessionConfig,
    esme_handler: H,
    smsc_make: impl Fn() -> Box<dyn Handler> + Send + 'static,
) -> (Session, Session) {
    let (addr, mut sessions) = smsc_server(fast_cfg(), smsc_make).await;
    let (esme, _) = within(esme::connect(addr, kind, bind_params("esme1", "secret"), esme_cfg, esme_handler))
        .await
        .expect("bind");
    let server = within(sessions.recv()).await.expect("server session");
    (esme, server)
}

// ---- raw socket helpers -----------------------------------------------------------------------

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    codec: SmppCodec,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = within(TcpStream::connect(addr)).await.unwrap();
        Raw { stream, buf: BytesMut::new(), codec: SmppCodec::default() }
    }

    async fn send(&mut self, pdu: &Pdu) {
        self.write(&pdu.to_bytes().unwrap()).await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.unwrap();
    }

    /// The next PDU, or None at EOF.
    async fn recv(&mut self) -> Option<Pdu> {
        loop {
            if let Some(item) = self.codec.decode(&mut self.buf).expect("framing") {
                return Some(item.expect("decodable"));
            }
            if within(self.stream.read_buf(&mut self.buf)).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    async fn bind(&mut self, kind: BindKind) -> Pdu {
        let b = bind_params("raw", "secret");
        let body = match kind {
            BindKind::Transmitter => Body::BindTransmitter(b),
            BindKind::Receiver => Body::BindReceiver(b),
            BindKind::Transceiver => Body::BindTransceiver(b),
        };
        self.send(&Pdu::new(1, body)).await;
        self.recv().await.expect("bind_resp")
    }
}

fn header(len: u32, id: u32, status: u32, seq: u32) -> Vec<u8> {
    [len, id, status, seq].iter().flat_map(|w| w.to_be_bytes()).collect()
}

// ---- tests: binds -----------------------------------------------------------------------------

#[tokio::test]
async fn bind_all_three_types() {
    for kind in [BindKind::Transmitter, BindKind::Receiver, BindKind::Transceiver] {
        let (addr, mut sessions) = smsc_server(fast_cfg(), SubmitOk::default).await;
        let (tx, _rx) = mpsc::channel(4);
        let (esme, resp) = within(esme::connect(
            addr,
            kind,
            bind_params("esme1", "secret"),
            SessionConfig::default(),
            Record { tx },
        ))
        .await
        .expect("bind");
        assert_eq!(resp.system_id.as_ref(), b"testsmsc");
        assert_eq!(resp.tlvs.sc_interface_version(), Some(0x34));
        assert_eq!(esme.info().kind, kind);
        let server = within(sessions.recv()).await.unwrap();
        assert_eq!(server.info().kind, kind);
        assert_eq!(server.info().peer_system_id.as_ref(), b"esme1");
        assert!(server.info().peer_addr.is_some());
        assert_eq!(within(esme.unbind()).await, CloseReason::LocalUnbind);
        assert_eq!(within(server.closed()).await, CloseReason::PeerUnbind);
    }
}

#[tokio::test]
async fn bind_rejected_with_status() {
    let (addr, _sessions) = smsc_server(fast_cfg(), SubmitOk::default).await;
    let r = within(esme::connect(
        addr,
        BindKind::Transmitter,
        bind_params("esme1", "wrong"),
        SessionConfig::default(),
        SubmitOk::default(),
    ))
    .await;
    match r {
        Err(SessionError::BindRejected(s)) => assert_eq!(s, CommandStatus::ESME_RINVPASWD),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn bind_timeout_closes_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let cfg = SessionConfig { bind_timeout: Duration::from_millis(200), ..SessionConfig::default() };
        smsc::accept(stream, Some(peer), cfg).await.map(|_| ())
    });
    let mut raw = Raw::connect(addr).await;
    // enquire_link before the bind is answered; then silence until the timeout.
    raw.send(&Pdu::new(9, Body::EnquireLink)).await;
    let el = raw.recv().await.unwrap();
    assert_eq!((el.command_id(), el.sequence_number), (CommandId::ENQUIRE_LINK_RESP, 9));
    assert!(raw.recv().await.is_none(), "closed after the bind timeout");
    assert!(matches!(within(server).await.unwrap(), Err(SessionError::BindTimeout(_))));
}

#[tokio::test]
async fn bind_state_errors() {
    let (addr, _sessions) = smsc_server(fast_cfg(), SubmitOk::default).await;
    let mut raw = Raw::connect(addr).await;
    // Before any bind: ESME_RINVBNDSTS, and unbind too.
    raw.send(&Pdu::new(2, submit("early"))).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status),
        (CommandId::SUBMIT_SM_RESP, CommandStatus::ESME_RINVBNDSTS)
    );
    raw.send(&Pdu::new(3, Body::Unbind)).await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.command_id(), r.command_status), (CommandId::UNBIND_RESP, CommandStatus::ESME_RINVBNDSTS));

    // Bound as receiver: submit_sm is not allowed.
    let resp = raw.bind(BindKind::Receiver).await;
    assert_eq!(
        (resp.command_id(), resp.command_status),
        (CommandId::BIND_RECEIVER_RESP, CommandStatus::ESME_ROK)
    );
    raw.send(&Pdu::new(4, submit("rx"))).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status),
        (CommandId::SUBMIT_SM_RESP, CommandStatus::ESME_RINVBNDSTS)
    );
    assert_eq!(r.sequence_number, 4);

    // A second bind: ESME_RALYBND, and the session stays bound.
    raw.send(&Pdu::new(5, Body::BindTransmitter(bind_params("raw", "secret")))).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status),
        (CommandId::BIND_TRANSMITTER_RESP, CommandStatus::ESME_RALYBND)
    );
    raw.send(&Pdu::new(6, Body::EnquireLink)).await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.command_id(), r.command_status), (CommandId::ENQUIRE_LINK_RESP, CommandStatus::ESME_ROK));
}

#[tokio::test]
async fn outbind_then_bind_receiver() {
    // The ESME listens; our SMSC connects and sends outbind.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dtx, mut drx) = mpsc::channel(4);
    let esme_side = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let req = esme::wait_outbind(stream, fast_cfg()).await?;
        assert_eq!(req.outbind.system_id.as_ref(), b"esme1");
        req.bind(BindKind::Receiver, bind_params("esme1", "secret"), Record { tx: dtx }).await
    });
    let stream = within(TcpStream::connect(addr)).await.unwrap();
    let outbind =
        Outbind { system_id: Bytes::from_static(b"esme1"), password: Bytes::from_static(b"secret") };
    let incoming = within(smsc::outbind(stream, outbind, None, fast_cfg())).await.unwrap();
    assert_eq!(incoming.kind, BindKind::Receiver);
    let server = within(incoming.accept("testsmsc", None, SubmitOk::default())).await.unwrap();
    let (esme, _) = within(esme_side).await.unwrap().unwrap();
    let resp = within(server.request(receipt("abc"))).await.unwrap();
    assert_eq!(
        (resp.command_id(), resp.command_status),
        (CommandId::DELIVER_SM_RESP, CommandStatus::ESME_ROK)
    );
    assert!(within(drx.recv()).await.is_some());
    assert_eq!(within(server.unbind()).await, CloseReason::LocalUnbind);
    assert_eq!(within(esme.closed()).await, CloseReason::PeerUnbind);
}

// ---- tests: traffic ---------------------------------------------------------------------------

#[tokio::test]
async fn submit_and_receipt_round_trip() {
    let (dtx, mut drx) = mpsc::channel(4);
    let (esme, server) =
        bound_pair(BindKind::Transceiver, SessionConfig::default(), Record { tx: dtx }, || {
            Box::new(SubmitOk::default())
        })
        .await;

    let resp = within(esme.request(submit("hello"))).await.unwrap();
    assert_eq!(resp.command_status, CommandStatus::ESME_ROK);
    let Body::SubmitSmResp(r) = resp.body else { panic!("not a submit_sm_resp: {resp:?}") };
    assert_eq!(r.message_id.as_ref(), b"00000001");

    let dresp = within(server.request(receipt("00000001"))).await.unwrap();
    assert_eq!(
        (dresp.command_id(), dresp.command_status),
        (CommandId::DELIVER_SM_RESP, CommandStatus::ESME_ROK)
    );
    let got = within(drx.recv()).await.unwrap();
    let Body::DeliverSm(d) = got.body else { panic!("not a deliver_sm") };
    assert!(d.is_delivery_receipt());
    assert_eq!(d.tlvs.receipted_message_id(), Some(&b"00000001"[..]));
    assert_eq!(d.tlvs.message_state(), Some(2));
    assert!(d.short_message.starts_with(b"id:00000001 sub:001 dlvrd:001"));

    // Explicit enquire_link either way.
    for s in [&esme, &server] {
        let r = within(s.request(Body::EnquireLink)).await.unwrap();
        assert_eq!(
            (r.command_id(), r.command_status),
            (CommandId::ENQUIRE_LINK_RESP, CommandStatus::ESME_ROK)
        );
    }

    // Not allowed locally: an SMSC does not submit, a response is not a request.
    assert!(matches!(
        within(server.request(submit("x"))).await,
        Err(SessionError::NotAllowed { status: CommandStatus::ESME_RINVBNDSTS, .. })
    ));
    assert!(matches!(within(esme.request(Body::EnquireLinkResp)).await, Err(SessionError::NotARequest(_))));

    assert_eq!(within(server.unbind()).await, CloseReason::LocalUnbind);
    assert_eq!(within(esme.closed()).await, CloseReason::PeerUnbind);
    assert!(matches!(within(esme.request(submit("late"))).await, Err(SessionError::Closed(_))));
}

#[tokio::test]
async fn deferred_responses_and_window_full() {
    let hold = Hold::default();
    let h = hold.clone();
    let cfg = SessionConfig { window: 2, ..SessionConfig::default() };
    let (esme, _server) =
        bound_pair(BindKind::Transmitter, cfg, SubmitOk::default(), move || Box::new(h.clone())).await;

    let a = tokio::spawn({
        let e = esme.clone();
        async move { e.request(submit("a")).await }
    });
    let b = tokio::spawn({
        let e = esme.clone();
        async move { e.request(submit("b")).await }
    });
    within(async {
        while hold.count() < 2 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(esme.window_available(), 0);
    assert!(matches!(esme.try_request(submit("c")).await, Err(SessionError::WindowFull)));

    // `request` waits for a slot instead.
    let c = tokio::spawn({
        let e = esme.clone();
        async move { e.request(submit("c")).await }
    });
    for (i, r) in hold.take().into_iter().enumerate() {
        let id = Bytes::from(format!("d{i}"));
        r.respond(Body::SubmitSmResp(SubmitSmResp { message_id: id, ..Default::default() })).unwrap();
    }
    for j in [a, b] {
        let pdu = within(j).await.unwrap().unwrap();
        assert_eq!(pdu.command_status, CommandStatus::ESME_ROK);
    }
    within(async {
        while hold.count() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    for r in hold.take() {
        r.reject(CommandStatus::ESME_RTHROTTLED).unwrap();
    }
    let pdu = within(c).await.unwrap().unwrap();
    assert_eq!(pdu.command_status, CommandStatus::ESME_RTHROTTLED);
    assert_eq!(esme.window_available(), 2);
}

#[tokio::test]
async fn send_with_callback_answers_once_and_fails_on_close() {
    let hold = Hold::default();
    let h = hold.clone();
    let cfg = SessionConfig { window: 2, ..SessionConfig::default() };
    let (esme, server) =
        bound_pair(BindKind::Transmitter, cfg, SubmitOk::default(), move || Box::new(h.clone())).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for tag in ["answered", "closed"] {
        let tx = tx.clone();
        let slot = esme.try_reserve().expect("a free slot");
        slot.send_with(submit(tag), Box::new(move |body, r| tx.send((tag, body, r)).unwrap()));
    }
    assert!(matches!(esme.try_reserve(), Err(SessionError::WindowFull)));
    within(async {
        while hold.count() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut held = hold.take();
    let last = held.pop().unwrap();
    held.pop()
        .unwrap()
        .respond(Body::SubmitSmResp(SubmitSmResp { message_id: "x1".into(), ..Default::default() }))
        .unwrap();
    let (tag, body, r) = within(rx.recv()).await.unwrap();
    assert_eq!(tag, "answered");
    assert_eq!(body, submit("answered"));
    assert!(matches!(r, Ok(Pdu { body: Body::SubmitSmResp(ref s), .. }) if s.message_id.as_ref() == b"x1"));
    // The session ends with one request outstanding (still held by the peer): its callback learns
    // that, once.
    server.close().await;
    let (tag, _, r) = within(rx.recv()).await.unwrap();
    assert_eq!(tag, "closed");
    assert!(matches!(r, Err(SessionError::Closed(_))), "{r:?}");
    within(esme.closed()).await;
    drop(last);
    drop(tx);
    assert!(within(rx.recv()).await.is_none(), "each callback runs once");
    assert!(matches!(esme.try_reserve(), Err(SessionError::Closed(_))));
}

#[tokio::test]
async fn request_timeout_frees_the_slot() {
    let hold = Hold::default();
    let h = hold.clone();
    let cfg =
        SessionConfig { window: 1, request_timeout: Duration::from_millis(200), ..SessionConfig::default() };
    let (esme, _server) =
        bound_pair(BindKind::Transmitter, cfg, SubmitOk::default(), move || Box::new(h.clone())).await;
    match within(esme.request(submit("slow"))).await {
        Err(SessionError::Timeout(d)) => assert_eq!(d, Duration::from_millis(200)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(esme.window_available(), 1);
    // The late answer is dropped quietly; the session keeps working.
    for r in hold.take() {
        r.respond(Body::SubmitSmResp(SubmitSmResp::default())).unwrap();
    }
    let r = within(esme.request(Body::EnquireLink)).await.unwrap();
    assert_eq!(r.command_id(), CommandId::ENQUIRE_LINK_RESP);
}

#[tokio::test]
async fn inbound_window_overflow_gets_msgqful() {
    let hold = Hold::default();
    let h = hold.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let cfg = SessionConfig { inbound_window: 2, ..SessionConfig::default() };
        let incoming = smsc::accept(stream, Some(peer), cfg).await.unwrap();
        let s = incoming.accept("testsmsc", None, h).await.unwrap();
        s.closed().await
    });
    let mut raw = Raw::connect(addr).await;
    raw.bind(BindKind::Transmitter).await;
    for seq in 10..13 {
        raw.send(&Pdu::new(seq, submit("x"))).await;
    }
    let r = raw.recv().await.unwrap();
    assert_eq!((r.sequence_number, r.command_status), (12, CommandStatus::ESME_RMSGQFUL));
    // Answering one frees a slot.
    let mut held = hold.take();
    assert_eq!(held.len(), 2);
    held.pop().unwrap().respond(Body::SubmitSmResp(SubmitSmResp::default())).unwrap();
    let r = raw.recv().await.unwrap();
    assert_eq!((r.sequence_number, r.command_status), (11, CommandStatus::ESME_ROK));
    raw.send(&Pdu::new(13, submit("y"))).await;
    within(async {
        while hold.count() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // A dropped responder still answers (ESME_RSYSERR).
    drop(held);
    let r = raw.recv().await.unwrap();
    assert_eq!((r.sequence_number, r.command_status), (10, CommandStatus::ESME_RSYSERR));
}

#[tokio::test]
async fn malformed_pdus_get_the_spec_answer() {
    let (addr, _sessions) = smsc_server(fast_cfg(), SubmitOk::default).await;
    let mut raw = Raw::connect(addr).await;
    raw.bind(BindKind::Transceiver).await;

    // Unknown command_id: generic_nack ESME_RINVCMDID.
    raw.write(&header(16, 0x0000_0077, 0, 21)).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status, r.sequence_number),
        (CommandId::GENERIC_NACK, CommandStatus::ESME_RINVCMDID, 21)
    );

    // submit_sm whose source_addr has no NUL within 21 octets: submit_sm_resp ESME_RINVSRCADR.
    let mut body = vec![0u8, 1, 1];
    body.extend_from_slice(&[b'7'; 30]);
    body.push(0);
    let mut frame = header(16 + body.len() as u32, 0x0000_0004, 0, 22);
    frame.extend_from_slice(&body);
    raw.write(&frame).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status, r.sequence_number),
        (CommandId::SUBMIT_SM_RESP, CommandStatus::ESME_RINVSRCADR, 22)
    );

    // A body cut short: the command's response with ESME_RINVCMDLEN.
    let mut frame = header(18, 0x0000_0004, 0, 23);
    frame.extend_from_slice(&[0, 1]);
    raw.write(&frame).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status, r.sequence_number),
        (CommandId::SUBMIT_SM_RESP, CommandStatus::ESME_RINVCMDLEN, 23)
    );

    // enquire_link with trailing bytes: enquire_link_resp ESME_RINVCMDLEN.
    let mut frame = header(20, 0x0000_0015, 0, 24);
    frame.extend_from_slice(&[1, 2, 3, 4]);
    raw.write(&frame).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status),
        (CommandId::ENQUIRE_LINK_RESP, CommandStatus::ESME_RINVCMDLEN)
    );

    // The session is still usable.
    raw.send(&Pdu::new(25, submit("fine"))).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status, r.sequence_number),
        (CommandId::SUBMIT_SM_RESP, CommandStatus::ESME_ROK, 25)
    );

    // An impossible command_length: generic_nack ESME_RINVCMDLEN, then the connection closes.
    raw.write(&header(8, 0x0000_0004, 0, 26)).await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.command_id(), r.command_status), (CommandId::GENERIC_NACK, CommandStatus::ESME_RINVCMDLEN));
    assert!(raw.recv().await.is_none(), "closed after a bad command_length");
}

#[tokio::test]
async fn oversized_command_length_closes() {
    let (addr, _sessions) = smsc_server(fast_cfg(), SubmitOk::default).await;
    let mut raw = Raw::connect(addr).await;
    raw.bind(BindKind::Transmitter).await;
    raw.write(&header(0x7FFF_0000, 0x0000_0004, 0, 30)).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.command_id(), r.command_status, r.sequence_number),
        (CommandId::GENERIC_NACK, CommandStatus::ESME_RINVCMDLEN, 30)
    );
    assert!(raw.recv().await.is_none());
}

#[tokio::test]
async fn dropping_every_handle_unbinds() {
    let (dtx, _drx) = mpsc::channel(4);
    let (esme, server) = bound_pair(BindKind::Receiver, SessionConfig::default(), Record { tx: dtx }, || {
        Box::new(SubmitOk::default())
    })
    .await;
    drop(esme);
    assert_eq!(within(server.closed()).await, CloseReason::PeerUnbind);
}

// ---- tests: keepalive and dead peers (paused clock, in-memory stream) --------------------------

/// A bound ESME session over a duplex stream whose other end the test drives by hand.
async fn esme_over_duplex(cfg: SessionConfig) -> (Session, tokio::io::DuplexStream, BytesMut) {
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    let bind = tokio::spawn(esme::bind(
        ours,
        BindKind::Transceiver,
        bind_params("e", "secret"),
        cfg,
        SubmitOk::default(),
    ));
    let mut buf = BytesMut::new();
    let req = read_pdu(&mut theirs, &mut buf).await.unwrap();
    let resp = Body::BindTransceiverResp(smpp::BindResp {
        system_id: Bytes::from_static(b"raw"),
        ..Default::default()
    });
    theirs.write_all(&Pdu::new(req.sequence_number, resp).to_bytes().unwrap()).await.unwrap();
    let (session, _) = bind.await.unwrap().unwrap();
    (session, theirs, buf)
}

async fn read_pdu(s: &mut tokio::io::DuplexStream, buf: &mut BytesMut) -> Option<Pdu> {
    let mut codec = SmppCodec::default();
    loop {
        if let Some(item) = codec.decode(buf).unwrap() {
            return Some(item.unwrap());
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn keepalive_then_dead_peer_on_missing_enquire_link_resp() {
    let cfg = SessionConfig {
        enquire_link_interval: Duration::from_secs(30),
        enquire_link_timeout: Duration::from_secs(10),
        ..SessionConfig::default()
    };
    let (session, mut peer, mut buf) = esme_over_duplex(cfg).await;
    let start = tokio::time::Instant::now();
    // First enquire_link after one idle interval; we answer it.
    let el = read_pdu(&mut peer, &mut buf).await.unwrap();
    assert_eq!(el.command_id(), CommandId::ENQUIRE_LINK);
    assert!(start.elapsed() >= Duration::from_secs(30));
    peer.write_all(&Pdu::new(el.sequence_number, Body::EnquireLinkResp).to_bytes().unwrap()).await.unwrap();
    // The next one we ignore: the session closes after the enquire_link timeout.
    let el2 = read_pdu(&mut peer, &mut buf).await.unwrap();
    assert_eq!(el2.command_id(), CommandId::ENQUIRE_LINK);
    let t2 = tokio::time::Instant::now();
    assert_eq!(session.closed().await, CloseReason::EnquireLinkTimeout);
    assert!(t2.elapsed() >= Duration::from_secs(10));
    assert!(read_pdu(&mut peer, &mut buf).await.is_none(), "stream shut down");
}

#[tokio::test(start_paused = true)]
async fn dead_peer_when_nothing_is_read_for_n_intervals() {
    let cfg = SessionConfig {
        enquire_link_interval: Duration::from_secs(10),
        enquire_link_timeout: Duration::from_secs(3600),
        dead_after_idle_intervals: 3,
        ..SessionConfig::default()
    };
    let (session, _peer, _buf) = esme_over_duplex(cfg).await;
    let start = tokio::time::Instant::now();
    match session.closed().await {
        CloseReason::Idle(d) => assert!(d >= Duration::from_secs(30)),
        other => panic!("expected idle, got {other}"),
    }
    assert!(start.elapsed() >= Duration::from_secs(30));
    assert!(start.elapsed() < Duration::from_secs(45));
}

#[tokio::test(start_paused = true)]
async fn peer_enquire_link_is_answered_and_unbind_times_out() {
    let cfg = SessionConfig { unbind_timeout: Duration::from_secs(5), ..SessionConfig::default() };
    let (session, mut peer, mut buf) = esme_over_duplex(cfg).await;
    peer.write_all(&Pdu::new(77, Body::EnquireLink).to_bytes().unwrap()).await.unwrap();
    let r = read_pdu(&mut peer, &mut buf).await.unwrap();
    assert_eq!((r.command_id(), r.sequence_number), (CommandId::ENQUIRE_LINK_RESP, 77));
    let unbinding = tokio::spawn({
        let s = session.clone();
        async move { s.unbind().await }
    });
    let u = read_pdu(&mut peer, &mut buf).await.unwrap();
    assert_eq!(u.command_id(), CommandId::UNBIND);
    // While unbinding, new requests are refused locally.
    assert!(matches!(session.request(submit("x")).await, Err(SessionError::NotAllowed { .. })));
    assert_eq!(unbinding.await.unwrap(), CloseReason::UnbindTimeout);
}

#[tokio::test(start_paused = true)]
async fn window_accounting_with_timeouts() {
    let cfg =
        SessionConfig { window: 3, request_timeout: Duration::from_secs(20), ..SessionConfig::default() };
    let (session, mut peer, mut buf) = esme_over_duplex(cfg).await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let s = session.clone();
        tasks.push(tokio::spawn(async move { s.try_request(submit(&format!("m{i}"))).await }));
    }
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(read_pdu(&mut peer, &mut buf).await.unwrap().sequence_number);
    }
    assert_eq!(session.window_available(), 0);
    assert!(matches!(session.try_request(submit("over")).await, Err(SessionError::WindowFull)));
    // Answer one (out of order), let the others time out.
    let resp =
        Pdu::new(seqs[1], Body::SubmitSmResp(SubmitSmResp { message_id: "x".into(), ..Default::default() }));
    peer.write_all(&resp.to_bytes().unwrap()).await.unwrap();
    let mut ok = 0;
    let mut timeouts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => {
                assert_eq!(p.sequence_number, seqs[1]);
                ok += 1;
            }
            Err(SessionError::Timeout(_)) => timeouts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, timeouts), (1, 2));
    assert_eq!(session.window_available(), 3);
}

/// A handler that panics: the session ends and every waiter is told, nothing hangs.
struct Panics;

impl Handler for Panics {
    fn on_request(&mut self, _req: Request<'_>) -> Reply {
        panic!("handler bug");
    }
}

#[tokio::test]
async fn panicking_handler_ends_the_session_without_hanging() {
    let (esme, server) =
        bound_pair(BindKind::Transmitter, SessionConfig::default(), SubmitOk::default(), || Box::new(Panics))
            .await;
    assert!(matches!(within(esme.request(submit("boom"))).await, Err(SessionError::Closed(_))));
    assert!(matches!(within(server.closed()).await, CloseReason::Io(_)));
    assert!(matches!(within(esme.closed()).await, CloseReason::PeerClosed));
    assert!(matches!(within(esme.request(Body::Unbind)).await, Err(SessionError::NotAllowed { .. })));
}

/// Not ready until the test opens it: the session must stop reading meanwhile.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<std::sync::atomic::AtomicBool>,
    waker: Arc<futures::task::AtomicWaker>,
    handled: Arc<std::sync::atomic::AtomicUsize>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        self.waker.wake();
    }
}

impl Handler for Gate {
    fn on_request(&mut self, _req: Request<'_>) -> Reply {
        self.handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reply::Ok(Body::SubmitSmResp(SubmitSmResp::default()))
    }

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.waker.register(cx.waker());
        if self.open.load(std::sync::atomic::Ordering::SeqCst) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

#[tokio::test]
async fn handler_back_pressure_stops_reading() {
    let gate = Gate::default();
    let g = gate.clone();
    let (esme, _server) =
        bound_pair(BindKind::Transmitter, SessionConfig::default(), SubmitOk::default(), move || {
            Box::new(g.clone())
        })
        .await;
    let pending = tokio::spawn({
        let e = esme.clone();
        async move { e.request(submit("gated")).await }
    });
    // Nothing is handled (or answered) while the handler is not ready.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gate.handled.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(!pending.is_finished());
    gate.open();
    let r = within(pending).await.unwrap().unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    assert_eq!(gate.handled.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_without_unbind() {
    let (esme, server) =
        bound_pair(BindKind::Transceiver, SessionConfig::default(), SubmitOk::default(), || {
            Box::new(SubmitOk::default())
        })
        .await;
    assert_eq!(within(esme.close()).await, CloseReason::LocalClose);
    assert_eq!(esme.close_reason(), Some(CloseReason::LocalClose));
    assert_eq!(within(server.closed()).await, CloseReason::PeerClosed);
    assert!(matches!(
        within(esme.try_request(submit("x"))).await,
        Err(SessionError::Closed(CloseReason::LocalClose))
    ));
}

#[tokio::test]
async fn pdus_pipelined_behind_the_bind_are_kept() {
    let (addr, _sessions) = smsc_server(fast_cfg(), SubmitOk::default).await;
    let mut raw = Raw::connect(addr).await;
    // bind, submit_sm and enquire_link in one write: the session must not lose what followed the bind.
    let mut bytes =
        Pdu::new(1, Body::BindTransceiver(bind_params("raw", "secret"))).to_bytes().unwrap().to_vec();
    bytes.extend_from_slice(&Pdu::new(2, submit("right behind")).to_bytes().unwrap());
    bytes.extend_from_slice(&Pdu::new(3, Body::EnquireLink).to_bytes().unwrap());
    raw.write(&bytes).await;
    let ids: Vec<(CommandId, u32, CommandStatus)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let p = raw.recv().await.unwrap();
            v.push((p.command_id(), p.sequence_number, p.command_status));
        }
        v
    };
    assert_eq!(
        ids,
        vec![
            (CommandId::BIND_TRANSCEIVER_RESP, 1, CommandStatus::ESME_ROK),
            (CommandId::SUBMIT_SM_RESP, 2, CommandStatus::ESME_ROK),
            (CommandId::ENQUIRE_LINK_RESP, 3, CommandStatus::ESME_ROK),
        ]
    );
}

#[tokio::test]
async fn unbind_waits_for_deferred_responses() {
    let hold = Hold::default();
    let h = hold.clone();
    let (esme, server) =
        bound_pair(BindKind::Transceiver, SessionConfig::default(), SubmitOk::default(), move || {
            Box::new(h.clone())
        })
        .await;
    let first = tokio::spawn({
        let e = esme.clone();
        async move { e.request(submit("in flight")).await }
    });
    within(async {
        while hold.count() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let unbinding = tokio::spawn({
        let s = server.clone();
        async move { s.unbind().await }
    });
    // While draining, new submits are refused; the deferred one is still answered.
    let refused = within(esme.request(submit("too late"))).await.unwrap();
    assert_eq!(refused.command_status, CommandStatus::ESME_RINVBNDSTS);
    assert!(esme.close_reason().is_none(), "no unbind before the deferred response");
    for r in hold.take() {
        r.respond(Body::SubmitSmResp(SubmitSmResp { message_id: "kept".into(), ..Default::default() }))
            .unwrap();
    }
    let ok = within(first).await.unwrap().unwrap();
    assert_eq!(ok.command_status, CommandStatus::ESME_ROK);
    assert_eq!(within(unbinding).await.unwrap(), CloseReason::LocalUnbind);
    assert_eq!(within(esme.closed()).await, CloseReason::PeerUnbind);
}

#[tokio::test]
async fn peer_unbind_gets_every_deferred_response_before_unbind_resp() {
    let hold = Hold::default();
    let h = hold.clone();
    let (esme, server) =
        bound_pair(BindKind::Transceiver, SessionConfig::default(), SubmitOk::default(), move || {
            Box::new(h.clone())
        })
        .await;
    let n = 5;
    let inflight: Vec<_> = (0..n)
        .map(|i| {
            let e = esme.clone();
            tokio::spawn(async move { e.request(submit(&format!("in flight {i}"))).await })
        })
        .collect();
    within(async {
        while hold.count() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // The ESME unbinds with every submit still unanswered.
    let unbinding = tokio::spawn({
        let e = esme.clone();
        async move { e.unbind().await }
    });
    // Once the server has the unbind, it refuses to send anything new (it is unbinding); the
    // session itself stays open while responses are owed.
    within(async {
        loop {
            match server.request(receipt("probe")).await {
                Err(SessionError::NotAllowed { .. }) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("server session ended with responses owed: {e}"),
            }
        }
    })
    .await;
    assert!(!unbinding.is_finished(), "unbind_resp sent with responses still owed");
    assert!(server.close_reason().is_none(), "unbind_resp sent with responses still owed");
    for (i, r) in hold.take().into_iter().enumerate() {
        let message_id = format!("late{i}").into();
        r.respond(Body::SubmitSmResp(SubmitSmResp { message_id, ..Default::default() })).unwrap();
    }
    for t in inflight {
        let resp = within(t).await.unwrap().expect("submit_sm_resp before unbind_resp");
        assert_eq!(resp.command_status, CommandStatus::ESME_ROK);
    }
    assert_eq!(within(unbinding).await.unwrap(), CloseReason::LocalUnbind);
    assert_eq!(within(server.closed()).await, CloseReason::PeerUnbind);
}

#[tokio::test]
async fn peer_unbind_drain_is_bounded() {
    let hold = Hold::default();
    let h = hold.clone();
    let (addr, mut sessions) = smsc_server(
        SessionConfig { unbind_drain_timeout: Duration::from_millis(200), ..fast_cfg() },
        move || h.clone(),
    )
    .await;
    let (esme, _) = within(esme::connect(
        addr,
        BindKind::Transceiver,
        bind_params("esme1", "secret"),
        SessionConfig::default(),
        SubmitOk::default(),
    ))
    .await
    .expect("bind");
    let server = within(sessions.recv()).await.expect("server session");
    let stuck = tokio::spawn({
        let e = esme.clone();
        async move { e.request(submit("never answered")).await }
    });
    within(async {
        while hold.count() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(within(esme.unbind()).await, CloseReason::LocalUnbind);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "unbind_resp came before the drain limit: {took:?}");
    assert!(took < Duration::from_secs(4), "the ESME's unbind timed out instead: {took:?}");
    assert!(matches!(within(stuck).await.unwrap(), Err(SessionError::Closed(_))));
    assert_eq!(within(server.closed()).await, CloseReason::PeerUnbind);
    drop(hold.take());
}

// ---- robustness: arbitrary frames never panic the session --------------------------------------

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    const IDS: [u32; 12] = [
        0x0000_0004,
        0x0000_0005,
        0x0000_0103,
        0x0000_0021,
        0x0000_0009,
        0x0000_0006,
        0x0000_0015,
        0x8000_0004,
        0x8000_0000,
        0x0000_000B,
        0x0000_0102,
        0x0000_0777,
    ];

    /// One frame: a command_id (mostly known ones), a body, and whether command_length is honest.
    fn frame() -> impl Strategy<Value = Vec<u8>> {
        (0..IDS.len(), proptest::collection::vec(any::<u8>(), 0..120), any::<u32>(), 0u8..20).prop_map(
            |(i, body, seq, lie)| {
                let len = if lie == 0 { 3 } else { 16 + body.len() as u32 };
                let mut f = header(len, IDS[i], 0, seq);
                f.extend_from_slice(&body);
                f
            },
        )
    }

    fn run(frames: Vec<Vec<u8>>) {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let (ours, mut theirs) = tokio::io::duplex(1 << 20);
            let server = tokio::spawn(async move {
                let incoming = smsc::accept(ours, None, SessionConfig::default()).await?;
                let s = incoming.accept("fuzz", None, SubmitOk::default()).await?;
                Ok::<CloseReason, SessionError>(s.closed().await)
            });
            let mut input =
                Pdu::new(1, Body::BindTransceiver(bind_params("f", "p"))).to_bytes().unwrap().to_vec();
            for f in frames {
                input.extend_from_slice(&f);
            }
            theirs.write_all(&input).await.unwrap();
            theirs.shutdown().await.unwrap();
            // Everything we get back must be well-formed SMPP.
            let mut out = BytesMut::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while theirs.read_buf(&mut out).await.unwrap_or(0) > 0 {}
            })
            .await;
            let mut codec = SmppCodec::default();
            let mut answers = Vec::new();
            while let Some(item) = codec.decode(&mut out).expect("our output frames") {
                answers.push(item.expect("our output decodes"));
            }
            assert_eq!(answers.first().map(|p| p.command_id()), Some(CommandId::BIND_TRANSCEIVER_RESP));
            let joined = tokio::time::timeout(Duration::from_secs(60), server).await.expect("session ends");
            let result = joined.expect("session task did not panic");
            if let Ok(CloseReason::Io(e)) = &result {
                assert!(!e.contains("unexpectedly"), "session task ended unexpectedly");
            }
        });
    }

    /// Before any bind: the accept phase answers or gives up, never panics.
    fn run_unbound(frames: Vec<Vec<u8>>) {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let (ours, mut theirs) = tokio::io::duplex(1 << 20);
            let server =
                tokio::spawn(
                    async move { smsc::accept(ours, None, SessionConfig::default()).await.map(|_| ()) },
                );
            for f in frames {
                theirs.write_all(&f).await.unwrap();
            }
            let mut out = BytesMut::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while theirs.read_buf(&mut out).await.unwrap_or(0) > 0 {}
            })
            .await;
            let mut codec = SmppCodec::default();
            while let Some(item) = codec.decode(&mut out).expect("our output frames") {
                item.expect("our output decodes");
            }
            let joined = tokio::time::timeout(Duration::from_secs(60), server).await.expect("accept ends");
            joined.expect("accept did not panic").ok();
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_frames_after_bind(frames in proptest::collection::vec(frame(), 0..12)) {
            run(frames);
        }

        #[test]
        fn arbitrary_frames_before_bind(frames in proptest::collection::vec(frame(), 0..12)) {
            run_unbound(frames);
        }
    }
}

/// Answers at once, but before answering the last of `total` requests waits (bounded) for the
/// peer to have read an answer: only possible when the early answers were written mid-batch.
struct WaitsForPeer {
    n: usize,
    total: usize,
    peer_read: Arc<std::sync::atomic::AtomicBool>,
    seen_before_last: Arc<std::sync::atomic::AtomicBool>,
}

impl Handler for WaitsForPeer {
    fn on_request(&mut self, _req: Request<'_>) -> Reply {
        use std::sync::atomic::Ordering;
        self.n += 1;
        if self.n == self.total {
            // Polled with a deadline on this (blocked) session thread; the peer reads on its own
            // OS thread, so nothing here depends on this runtime making progress.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !self.peer_read.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            self.seen_before_last.store(self.peer_read.load(Ordering::Acquire), Ordering::Release);
        }
        Reply::Ok(Body::SubmitSmResp(SubmitSmResp::default()))
    }
}

/// A window of requests that arrives in one read is answered as a pipeline: the answers to the
/// first few go out before the rest are handled, so the peer can refill its window meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_batches_are_answered_early() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    const TOTAL: usize = 64;
    let peer_read = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicBool::new(false));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let h = WaitsForPeer { n: 0, total: TOTAL, peer_read: peer_read.clone(), seen_before_last: seen.clone() };
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let incoming = smsc::accept(stream, Some(peer), fast_cfg()).await.unwrap();
        let s = incoming.accept("testsmsc", None, h).await.unwrap();
        s.closed().await
    });
    let flag = peer_read.clone();
    let client = std::thread::spawn(move || -> Vec<u32> {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut codec = SmppCodec::default();
        let mut buf = BytesMut::new();
        let mut next = |s: &mut std::net::TcpStream| loop {
            if let Some(item) = codec.decode(&mut buf).expect("framing") {
                return item.expect("decodable");
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).expect("read within the limit");
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
        };
        let bind = Pdu::new(1, Body::BindTransmitter(bind_params("raw", "secret")));
        s.write_all(&bind.to_bytes().unwrap()).unwrap();
        assert!(next(&mut s).command_status.is_ok());
        // The whole window in one write, so the session reads it as one batch.
        let mut batch = Vec::new();
        for seq in 0..TOTAL as u32 {
            batch.extend_from_slice(&Pdu::new(10 + seq, submit("x")).to_bytes().unwrap());
        }
        s.write_all(&batch).unwrap();
        let mut seqs = Vec::new();
        for _ in 0..TOTAL {
            seqs.push(next(&mut s).sequence_number);
            flag.store(true, Ordering::Release);
        }
        seqs
    });
    let seqs = within(tokio::task::spawn_blocking(move || client.join().unwrap())).await.unwrap();
    assert_eq!(seqs, (10..10 + TOTAL as u32).collect::<Vec<_>>(), "every answer, in order");
    assert!(seen.load(Ordering::Acquire), "no answer reached the peer before the last request was handled");
}

/// A window resized on a running session: a smaller one takes the free slots at once and the
/// rest as requests in flight complete; a larger one frees its slots at once.
#[tokio::test]
async fn window_resizes_in_place() {
    let hold = Hold::default();
    let h = hold.clone();
    let cfg = SessionConfig { window: 3, ..SessionConfig::default() };
    let (esme, _server) =
        bound_pair(BindKind::Transmitter, cfg, SubmitOk::default(), move || Box::new(h.clone())).await;
    let inflight: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|id| {
            let e = esme.clone();
            tokio::spawn(async move { e.request(submit(id)).await })
        })
        .collect();
    within(async {
        while hold.count() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(esme.window_available(), 1);
    assert_eq!(esme.set_window(1), 1);
    assert_eq!(esme.window_available(), 0, "the free slot is taken at once");
    for r in hold.take() {
        r.respond(Body::SubmitSmResp(SubmitSmResp::default())).unwrap();
    }
    for j in inflight {
        within(j).await.unwrap().unwrap();
    }
    // One of the two slots that came back is owed to the smaller window.
    within(async {
        while esme.window_available() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(esme.set_window(5), 5);
    assert_eq!(esme.window_available(), 5);
}

/// `abort` drops the connection at once, with no unbind: the peer sees it closed.
#[tokio::test]
async fn abort_drops_the_connection_without_unbinding() {
    let hold = Hold::default();
    let h = hold.clone();
    let (esme, server) =
        bound_pair(BindKind::Transmitter, fast_cfg(), SubmitOk::default(), move || Box::new(h.clone())).await;
    esme.abort();
    assert_eq!(esme.close_reason(), Some(CloseReason::LocalClose));
    let reason = within(server.closed()).await;
    assert!(!matches!(reason, CloseReason::PeerUnbind), "no unbind was sent: {reason:?}");
}
