//! Our session against real third-party SMPP implementations, both directions.
//!
//! - Our session in the SMSC role (a small test SMSC: accepts binds, answers submit_sm with an id,
//!   sends a deliver_sm receipt with Appendix B text plus receipted_message_id and message_state)
//!   against the ESME drivers in tests/peers (Python smpplib, PyPI smpp34, npm smpp).
//! - Our session in the ESME role against the peers that have a server (npm smpp's
//!   smsc_node.js, smsc_smpp34.py).
//!
//! The drivers and their CLI/JSON-lines contract are described in tests/peers/README.md. They
//! need `tools/deps.sh python node` (`make test` runs it); a missing script or dependency fails
//! the test with a message, it never skips. Every wait is bounded; children die with the test.

use bytes::Bytes;
use serde_json::Value;
use smpp::session::{
    esme, smsc, BindKind, CloseReason, Handler, Reply, Request, SessionConfig, SessionError,
};
use smpp::{Address, Bind, Body, CommandId, CommandStatus, DeliverSm, Pdu, SubmitSm, SubmitSmResp};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

const STEP: Duration = Duration::from_secs(20);
const SYSTEM_ID: &str = "esme";
const PASSWORD: &str = "secret";

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

// ---- locating peers and dependencies ----------------------------------------------------------

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers")
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("SMSC_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/smsc-operator")
        }
    }
}

fn need(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} not found at {}: run `tools/deps.sh python node` (make test does) and make sure tests/peers \
         is complete",
        path.display()
    );
}

#[derive(Clone, Copy, Debug)]
enum Lang {
    Python,
    Node,
}

fn command(lang: Lang, script: &str) -> Command {
    let script_path = peers_dir().join(script);
    need(&script_path, &format!("peer script {script}"));
    match lang {
        Lang::Python => {
            let py = cache_dir().join("venv/bin/python");
            need(&py, "Python venv with smpplib and smpp34");
            let mut c = Command::new(py);
            c.arg(script_path);
            c
        }
        Lang::Node => {
            let modules = cache_dir().join("node/node_modules");
            need(&modules.join("smpp"), "npm package smpp");
            let mut c = Command::new("node");
            c.arg(script_path).env("NODE_PATH", modules);
            c
        }
    }
}

// ---- child processes --------------------------------------------------------------------------

/// A running peer: JSON events from stdout, stderr kept for failure messages, killed on drop.
struct Peer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    events: Vec<Value>,
}

impl Peer {
    fn spawn(lang: Lang, script: &str, args: &[String]) -> Peer {
        let mut cmd = command(lang, script);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot start {script} ({lang:?}): {e}; is it installed (tools/deps.sh)?"),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut s = sink.lock().unwrap();
                    if s.len() < 64 * 1024 {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let name = format!("{script} {}", args.join(" "));
        Peer { name, child, stdin, lines: BufReader::new(stdout).lines(), stderr, events: Vec::new() }
    }

    fn context(&self) -> String {
        let events: Vec<String> = self.events.iter().map(|e| e.to_string()).collect();
        format!(
            "peer: {}\nevents:\n  {}\nstderr:\n{}",
            self.name,
            events.join("\n  "),
            self.stderr.lock().unwrap()
        )
    }

    /// The next event, or None at EOF.
    async fn next_event(&mut self) -> Option<Value> {
        let line = match tokio::time::timeout(STEP, self.lines.next_line()).await {
            Ok(Ok(line)) => line?,
            Ok(Err(e)) => panic!("reading peer output: {e}\n{}", self.context()),
            Err(_) => panic!("no event from peer within {STEP:?}\n{}", self.context()),
        };
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => panic!("peer printed a non-JSON line {line:?}: {e}\n{}", self.context()),
        };
        self.events.push(v.clone());
        Some(v)
    }

    /// Skip to the event named `name`.
    async fn expect_event(&mut self, name: &str) -> Value {
        loop {
            match self.next_event().await {
                Some(v) if v["event"] == name => return v,
                Some(_) => {}
                None => panic!("peer ended before event {name}\n{}", self.context()),
            }
        }
    }

    async fn send_control(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("peer stdin");
        within("write peer stdin", stdin.write_all(format!("{line}\n").as_bytes())).await.unwrap();
        within("flush peer stdin", stdin.flush()).await.unwrap();
    }

    /// Read every remaining event and wait for the exit status.
    async fn finish(&mut self) -> ExitStatus {
        while self.next_event().await.is_some() {}
        let status = within("peer exit", self.child.wait()).await;
        status.unwrap_or_else(|e| panic!("waiting for peer: {e}\n{}", self.context()))
    }

    fn events_named(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == name).collect()
    }

    async fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.start_kill();
        let _ = within("peer kill", self.child.wait()).await;
    }
}

// ---- our test SMSC (session in the SMSC role) -------------------------------------------------

/// What the test SMSC saw.
#[derive(Default)]
struct Seen {
    binds: Mutex<Vec<BindKind>>,
    closes: Mutex<Vec<CloseReason>>,
    receipts_acked: AtomicU64,
}

/// Answers submit_sm with a fresh id and queues a receipt when registered_delivery asks.
struct TestSmsc {
    ids: Arc<AtomicU64>,
    receipts: mpsc::Sender<(String, Bytes, Address, Address)>,
    seen: Arc<Seen>,
}

impl Handler for TestSmsc {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::SubmitSm(s) => {
                let id = format!("{:010x}", self.ids.fetch_add(1, Ordering::Relaxed) + 0xA0_0000);
                if s.registered_delivery & 0x03 == 1 {
                    // Bounded: when full the receipt is dropped (the test would then fail).
                    let _ = self.receipts.try_send((id.clone(), s.short_message, s.source, s.destination));
                }
                let message_id = Bytes::from(id);
                Reply::Ok(Body::SubmitSmResp(SubmitSmResp { message_id, ..Default::default() }))
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }

    fn on_close(&mut self, reason: &CloseReason) {
        self.seen.closes.lock().unwrap().push(reason.clone());
    }
}

fn receipt_body(id: &str, text: &[u8], submit_src: Address, submit_dst: Address) -> Body {
    let now = "2611251200";
    let text20: String = String::from_utf8_lossy(&text[..text.len().min(20)]).into_owned();
    let sm = format!(
        "id:{id} sub:001 dlvrd:001 submit date:{now} done date:{now} stat:DELIVRD err:000 text:{text20}"
    );
    let mut d = DeliverSm {
        source: submit_dst,
        destination: submit_src,
        esm_class: smpp::esm_class::DELIVERY_RECEIPT,
        short_message: Bytes::from(sm),
        ..DeliverSm::default()
    };
    d.tlvs.set_receipted_message_id(format!("{id}\0").as_bytes());
    d.tlvs.set_message_state(2);
    Body::DeliverSm(d)
}

/// Our keepalive interval in the test SMSC: short, so peers see (and must answer) enquire_link.
const SMSC_KEEPALIVE: Duration = Duration::from_millis(150);
/// Receivers (rx binds) get one unsolicited receipt this long after binding, so a receiver-only
/// ESME has something to wait for and sits idle long enough to get our enquire_links.
const RX_RECEIPT_DELAY: Duration = Duration::from_millis(600);

/// Start the test SMSC.
async fn start_test_smsc() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let ids = Arc::new(AtomicU64::new(1));
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let seen = Arc::clone(&seen2);
            let ids = Arc::clone(&ids);
            tokio::spawn(async move {
                let cfg = SessionConfig {
                    bind_timeout: Duration::from_secs(10),
                    enquire_link_interval: SMSC_KEEPALIVE,
                    ..SessionConfig::default()
                };
                let Ok(incoming) = smsc::accept(stream, Some(peer), cfg).await else { return };
                if incoming.bind.system_id.as_ref() != SYSTEM_ID.as_bytes() {
                    let _ = incoming.reject(CommandStatus::ESME_RINVSYSID).await;
                    return;
                }
                if incoming.bind.password.as_ref() != PASSWORD.as_bytes() {
                    let _ = incoming.reject(CommandStatus::ESME_RINVPASWD).await;
                    return;
                }
                let kind = incoming.kind;
                seen.binds.lock().unwrap().push(kind);
                let (rtx, mut rrx) = mpsc::channel(64);
                let handler = TestSmsc { ids, receipts: rtx.clone(), seen: Arc::clone(&seen) };
                let Ok(session) = incoming.accept("oursmsc", Some(0x34), handler).await else { return };
                if kind == BindKind::Receiver {
                    let a = Address::new(0, 0, "12345");
                    let b = Address::new(0, 0, "31600000000");
                    let rtx = rtx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RX_RECEIPT_DELAY).await;
                        let _ = rtx.try_send(("ffffffff01".to_string(), Bytes::from_static(b"rx"), a, b));
                    });
                }
                drop(rtx);
                // Receipts go out through the session handle, after the submit_sm_resp.
                let sender = {
                    let session = session.clone();
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        while let Some((id, text, src, dst)) = rrx.recv().await {
                            if !kind.can_receive() {
                                continue;
                            }
                            match session.request(receipt_body(&id, &text, src, dst)).await {
                                Ok(p) if p.command_status.is_ok() => {
                                    seen.receipts_acked.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {}
                            }
                        }
                    })
                };
                session.closed().await;
                // Ends once the handler (and its receipt sender) is gone: an answered receipt is
                // still counted.
                let _ = tokio::time::timeout(STEP, sender).await;
            });
        }
    });
    (addr, seen)
}

fn esme_args(port: u16, bind: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["--port", &port.to_string(), "--system-id", SYSTEM_ID, "--password", PASSWORD]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--bind-type".to_string(), bind.to_string(), "--timeout".to_string(), "15".to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// One third-party ESME against our SMSC: each bind type, submit_sm, receipts, enquire_link, unbind.
async fn third_party_esme_against_our_smsc(lang: Lang, script: &str, has_enquire_link: bool) {
    let (addr, seen) = start_test_smsc().await;
    let port = addr.port();

    // Transceiver: enquire_link, 2 submits with receipts, unbind.
    let mut p = Peer::spawn(
        lang,
        script,
        &esme_args(
            port,
            "trx",
            &["--enquire-link", "--submit", "2", "--registered-delivery", "1", "--wait-receipts", "2"],
        ),
    );
    let status = p.finish().await;
    let ctx = p.context();
    assert!(status.success(), "trx run failed: {status}\n{ctx}");
    assert_eq!(p.events_named("bound").len(), 1, "{ctx}");
    if has_enquire_link {
        assert_eq!(p.events_named("enquire_link_resp").len(), 1, "{ctx}");
    }
    let resps = p.events_named("submit_resp");
    assert_eq!(resps.len(), 2, "{ctx}");
    let mut ids: Vec<String> = Vec::new();
    for r in &resps {
        assert_eq!(r["status"], 0, "{ctx}");
        ids.push(r["message_id"].as_str().unwrap_or_else(|| panic!("message_id\n{ctx}")).to_string());
    }
    let receipts = p.events_named("deliver");
    assert_eq!(receipts.len(), 2, "{ctx}");
    for d in &receipts {
        assert_eq!(d["receipt"], true, "{ctx}");
        let id = d["id"].as_str().unwrap_or_default().to_string();
        assert!(ids.contains(&id), "receipt id {id} not among {ids:?}\n{ctx}");
        assert_eq!(d["receipted_message_id"].as_str(), Some(id.as_str()), "{ctx}");
        assert_eq!(d["message_state"], 2, "{ctx}");
        assert_eq!(d["stat"], "DELIVRD", "{ctx}");
        assert_eq!(d["err"], "000", "{ctx}");
    }
    assert_eq!(p.events_named("unbound").len(), 1, "{ctx}");
    let summary = p.events.last().cloned().unwrap_or_default();
    assert_eq!(summary["event"], "summary", "{ctx}");
    assert_eq!(summary["acked"], 2, "{ctx}");

    // Transmitter: submit without receipt, enquire_link, unbind.
    let extra: &[&str] =
        if has_enquire_link { &["--enquire-link", "--submit", "1"] } else { &["--submit", "1"] };
    let mut p = Peer::spawn(lang, script, &esme_args(port, "tx", extra));
    let status = p.finish().await;
    assert!(status.success(), "tx run failed: {status}\n{}", p.context());
    assert_eq!(p.events_named("submit_resp").len(), 1, "{}", p.context());

    // Receiver: the test SMSC pushes one receipt after the bind.
    let extra: &[&str] = if has_enquire_link {
        &["--enquire-link", "--wait-receipts", "1"]
    } else {
        &["--wait-receipts", "1"]
    };
    let mut p = Peer::spawn(lang, script, &esme_args(port, "rx", extra));
    let status = p.finish().await;
    assert!(status.success(), "rx run failed: {status}\n{}", p.context());
    let d = p.events_named("deliver");
    assert_eq!(d.len(), 1, "{}", p.context());
    assert_eq!(d[0]["receipted_message_id"], "ffffffff01", "{}", p.context());
    if has_enquire_link {
        // Idle while waiting: our keepalive reached the peer and was answered (else we would
        // have closed the session and the run would have failed).
        assert!(!p.events_named("enquire_link_received").is_empty(), "{}", p.context());
    }

    // What our side saw: three binds of the right types, each ended by the peer's unbind.
    let deadline = tokio::time::Instant::now() + STEP;
    let settled =
        || seen.closes.lock().unwrap().len() >= 3 && seen.receipts_acked.load(Ordering::Relaxed) >= 3;
    while !settled() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *seen.binds.lock().unwrap(),
        vec![BindKind::Transceiver, BindKind::Transmitter, BindKind::Receiver]
    );
    let closes = seen.closes.lock().unwrap().clone();
    assert_eq!(closes.len(), 3, "{closes:?}");
    // smpp34's client may close right after its unbind without waiting: PeerClosed is fine then.
    for c in closes {
        assert!(matches!(c, CloseReason::PeerUnbind | CloseReason::PeerClosed), "{c}");
    }
    assert_eq!(seen.receipts_acked.load(Ordering::Relaxed), 3);
}

async fn third_party_esme_bad_password(lang: Lang, script: &str) {
    let (addr, _seen) = start_test_smsc().await;
    let mut args = esme_args(addr.port(), "trx", &[]);
    if let Some(i) = args.iter().position(|a| a == PASSWORD) {
        args[i] = "wrong".to_string();
    }
    let mut p = Peer::spawn(lang, script, &args);
    let status = p.finish().await;
    assert_eq!(status.code(), Some(2), "expected bind failure\n{}", p.context());
    let failed = p.events_named("bind_failed");
    assert_eq!(failed.len(), 1, "{}", p.context());
    assert_eq!(failed[0]["status"], CommandStatus::ESME_RINVPASWD.0, "{}", p.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpplib_esme_against_our_smsc() {
    third_party_esme_against_our_smsc(Lang::Python, "esme_smpplib.py", true).await;
    third_party_esme_bad_password(Lang::Python, "esme_smpplib.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpp34_esme_against_our_smsc() {
    // smpp34's client has no enquire_link call (README: quirks); ours answers its keepalives.
    third_party_esme_against_our_smsc(Lang::Python, "esme_smpp34.py", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_smpp_esme_against_our_smsc() {
    third_party_esme_against_our_smsc(Lang::Node, "esme_node.js", true).await;
    third_party_esme_bad_password(Lang::Node, "esme_node.js").await;
}

// ---- our ESME against third-party SMSCs -------------------------------------------------------

/// ESME side: forwards every deliver_sm to the test and answers deliver_sm_resp.
struct Deliveries {
    tx: mpsc::Sender<Pdu>,
}

impl Handler for Deliveries {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        if self.tx.try_send(req.pdu).is_ok() {
            Reply::Ok(Body::DeliverSmResp(SubmitSmResp::default()))
        } else {
            Reply::Error(CommandStatus::ESME_RX_T_APPN)
        }
    }
}

fn our_bind(password: &str) -> Bind {
    Bind {
        system_id: Bytes::from_static(SYSTEM_ID.as_bytes()),
        password: Bytes::copy_from_slice(password.as_bytes()),
        ..Bind::default()
    }
}

fn submit_with_receipt(text: &str) -> Body {
    Body::SubmitSm(SubmitSm {
        source: Address::new(0, 0, "12345"),
        destination: Address::new(1, 1, "31600000000"),
        registered_delivery: 1,
        short_message: Bytes::copy_from_slice(text.as_bytes()),
        ..SubmitSm::default()
    })
}

async fn start_smsc_peer(lang: Lang, script: &str) -> (Peer, SocketAddr) {
    let args: Vec<String> =
        ["--port", "0", "--system-id", SYSTEM_ID, "--password", PASSWORD, "--receipt-delay-ms", "50"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut p = Peer::spawn(lang, script, &args);
    let first = p.next_event().await.unwrap_or_else(|| panic!("peer exited at start\n{}", p.context()));
    assert_eq!(first["event"], "listening", "{}", p.context());
    let port = first["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("listening port");
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn our_esme_against_third_party_smsc(lang: Lang, script: &str) {
    let (mut peer, addr) = start_smsc_peer(lang, script).await;
    let cfg = SessionConfig { bind_timeout: Duration::from_secs(10), ..SessionConfig::default() };

    // Transceiver: enquire_link, submit_sm, its receipt, unbind.
    let (dtx, mut drx) = mpsc::channel(16);
    let (s, resp) = within(
        "trx bind",
        esme::connect(addr, BindKind::Transceiver, our_bind(PASSWORD), cfg.clone(), Deliveries { tx: dtx }),
    )
    .await
    .unwrap_or_else(|e| panic!("trx bind: {e}\n{}", peer.context()));
    assert!(!resp.system_id.is_empty());
    let el = within("enquire_link", s.request(Body::EnquireLink)).await.unwrap();
    assert_eq!((el.command_id(), el.command_status), (CommandId::ENQUIRE_LINK_RESP, CommandStatus::ESME_ROK));
    let r = within("submit_sm", s.request(submit_with_receipt("hello peer"))).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK, "{}", peer.context());
    let Body::SubmitSmResp(sr) = r.body else { panic!("not a submit_sm_resp: {r:?}") };
    let id = String::from_utf8_lossy(&sr.message_id).into_owned();
    assert!(!id.is_empty());
    let d = within("receipt", drx.recv()).await.expect("receipt");
    let Body::DeliverSm(d) = d.body else { panic!("not a deliver_sm") };
    assert!(d.is_delivery_receipt(), "{d:?}");
    let rid =
        d.tlvs.receipted_message_id().map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_string());
    assert_eq!(rid.as_deref(), Some(id.as_str()));
    assert_eq!(d.tlvs.message_state(), Some(2));
    let text = String::from_utf8_lossy(&d.short_message).into_owned();
    assert!(text.starts_with(&format!("id:{id} ")) && text.contains("stat:DELIVRD"), "{text}");
    assert_eq!(within("trx unbind", s.unbind()).await, CloseReason::LocalUnbind, "{}", peer.context());
    peer.expect_event("unbind").await;

    // Transmitter: submit without receipt, unbind.
    let (s, _) = within(
        "tx bind",
        esme::connect(
            addr,
            BindKind::Transmitter,
            our_bind(PASSWORD),
            cfg.clone(),
            Deliveries { tx: mpsc::channel(1).0 },
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("tx bind: {e}\n{}", peer.context()));
    let mut body = submit_with_receipt("tx");
    if let Body::SubmitSm(ref mut sm) = body {
        sm.registered_delivery = 0;
    }
    let r = within("tx submit_sm", s.request(body)).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    assert_eq!(within("tx unbind", s.unbind()).await, CloseReason::LocalUnbind);

    // Receiver: an MO deliver_sm asked for on the peer's control channel, unbind.
    let (dtx, mut drx) = mpsc::channel(16);
    let (s, _) = within(
        "rx bind",
        esme::connect(addr, BindKind::Receiver, our_bind(PASSWORD), cfg.clone(), Deliveries { tx: dtx }),
    )
    .await
    .unwrap_or_else(|e| panic!("rx bind: {e}\n{}", peer.context()));
    peer.expect_event("bind").await;
    peer.send_control(
        r#"{"cmd":"deliver","source_addr":"31600000000","dest_addr":"12345","text":"mo text"}"#,
    )
    .await;
    let mo = within("MO deliver_sm", drx.recv()).await.expect("MO");
    let Body::DeliverSm(mo) = mo.body else { panic!("not a deliver_sm") };
    assert!(!mo.is_delivery_receipt());
    assert_eq!(mo.short_message.as_ref(), b"mo text");
    assert_eq!(within("rx unbind", s.unbind()).await, CloseReason::LocalUnbind);

    // A wrong password is refused with its status.
    match within(
        "bad bind",
        esme::connect(
            addr,
            BindKind::Transceiver,
            our_bind("wrong"),
            cfg,
            Deliveries { tx: mpsc::channel(1).0 },
        ),
    )
    .await
    {
        Err(SessionError::BindRejected(s)) => assert_eq!(s, CommandStatus::ESME_RINVPASWD),
        other => panic!("expected ESME_RINVPASWD, got {other:?}\n{}", peer.context()),
    }
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_esme_against_node_smpp_smsc() {
    our_esme_against_third_party_smsc(Lang::Node, "smsc_node.js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_esme_against_smpp34_smsc() {
    our_esme_against_third_party_smsc(Lang::Python, "smsc_smpp34.py").await;
}
