//! Scripted handlers (issue 15): the document's script run byte for byte by the smscd binary,
//! on_bind and on_pdu verdicts, the cache shared by two daemons on a real Redis, hot reload
//! under traffic (through a ConfigMap-style `..data` swap), and bad scripts.
//!
//! The carrier here is the smpp crate's SMSC role (it records destinations, which the shared
//! `Carrier` does not); ESMEs are the smpp crate's ESME role.

mod common;

use bytes::Bytes;
use common::*;
use smpp::session::{esme, BindKind, Handler, Reply, Request, SessionConfig, SessionError};
use smpp::{Bind, Body, CommandStatus, SubmitSmResp};
use smsc_api::smscd_config::{HandlersConfig, OnHandlerError, SmscdConfig, StoreConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smscd");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/document").join(name)
}

fn handlers(script: &Path) -> HandlersConfig {
    HandlersConfig {
        script: script.display().to_string(),
        timeout_ms: 300,
        import_timeout_ms: 2000,
        on_error: OnHandlerError::Reject,
        window: 64,
        reload_interval_ms: 20,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// A config with `script` as its handlers, the sim as default route.
fn config_with(script: &Path, accounts: Vec<smsc_api::smscd_config::AccountConfig>) -> SmscdConfig {
    let mut c = base_config(accounts);
    c.handlers = Some(handlers(script));
    c
}

async fn submit_status(e: &Esme, body: Body) -> Result<String, CommandStatus> {
    let pdu = match within("submit", e.session.request(body)).await {
        Ok(pdu) => pdu,
        Err(e) => panic!("submit failed: {e}"),
    };
    if !pdu.command_status.is_ok() {
        return Err(pdu.command_status);
    }
    match pdu.body {
        Body::SubmitSmResp(r) => Ok(String::from_utf8_lossy(&r.message_id).into_owned()),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn bind_status<T>(r: Result<T, SessionError>) -> CommandStatus {
    match r {
        Ok(_) => CommandStatus::ESME_ROK,
        Err(SessionError::BindRejected(s)) => s,
        Err(e) => panic!("bind failed without a status: {e}"),
    }
}

/// Bind from `local` (any 127/8 address) instead of 127.0.0.1.
async fn bind_from(
    local: &str,
    addr: SocketAddr,
    system_id: &str,
    password: &str,
) -> Result<Esme, SessionError> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{local}:0").parse().expect("local addr")).expect("bind local");
    let stream = within("connect", sock.connect(addr)).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let bind = Bind {
        system_id: Bytes::from(system_id.to_owned()),
        password: Bytes::from(password.to_owned()),
        ..Bind::default()
    };
    let cfg = SessionConfig { bind_timeout: Duration::from_secs(5), ..SessionConfig::default() };
    let (session, _) =
        within("bind", esme::bind(stream, BindKind::Transceiver, bind, cfg, Collect(tx))).await?;
    Ok(Esme { session, delivered: rx })
}

// ---- the document's script, by the smscd binary -------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Smscd(Child);

impl Drop for Smscd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The document's smpp.yaml and smpp_script.py as its ConfigMap has them, the config with one line
/// added (`handlers:`, which the document's SIPhon wires up by itself); its upstream `alpha` is
/// pointed at a closed port on 127.0.0.1 through SMPP_BIND_ALPHA_* (tests talk only to 127/8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_script_binds_anyone_and_answers_replace_me() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = std::fs::read_to_string(fixture("smpp.yaml")).expect("fixture");
    let script = std::fs::read(fixture("smpp_script.py")).expect("fixture");
    std::fs::write(dir.path().join("smpp_script.py"), &script).expect("script");
    let cfg = write(dir.path(), "smpp.yaml", &format!("{yaml}handlers: {{ script: smpp_script.py }}\n"));
    let (smpp_port, admin_port, closed) = (free_port(), free_port(), free_port());
    let child = Command::new(BIN)
        .args(["--config", &cfg.display().to_string()])
        .args([
            "--listen",
            &format!("127.0.0.1:{smpp_port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .env_clear()
        .envs([
            ("SMPP_ALPHA_SYSTEM_ID", "alpha_esme"),
            ("SMPP_ALPHA_PASSWORD", "changeme"),
            ("SMPP_BIND_ALPHA_HOST", "127.0.0.1"),
            ("SMPP_BIND_ALPHA_PORT", &closed.to_string()),
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn smscd");
    let mut child = Smscd(child);
    let addr: SocketAddr = format!("127.0.0.1:{smpp_port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("smscd exited: {st}");
        }
        assert!(Instant::now() < deadline, "smscd did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No accounts at all: the script's on_bind accepts any credentials.
    for (id, pw) in [("anyone", "whatever"), ("x", "")] {
        let e = bind(addr, BindKind::Transceiver, id, pw).await.expect("the script accepts every bind");
        for _ in 0..3 {
            assert_eq!(submit_status(&e, submit("447700900123", 0)).await, Ok("replace-me".to_string()));
        }
        within("unbind", e.session.unbind()).await;
    }
}

/// check-config compiles the script: a syntax error names the script's file and line.
#[test]
fn check_config_reports_script_syntax_errors_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(dir.path(), "smpp_script.py", "from siphon import smpp\n\ndef broken(:\n    pass\n");
    let cfg = write(
        dir.path(),
        "smpp.yaml",
        "routing: { default_chain: [sim] }\nhandlers: { script: smpp_script.py }\n",
    );
    let out = Command::new(BIN)
        .args(["check-config", &cfg.display().to_string()])
        .env_clear()
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let at = format!("{}:3: SyntaxError", script.display());
    assert!(err.contains(&at), "want {at} in: {err}");
    // The document's script compiles.
    std::fs::copy(fixture("smpp_script.py"), &script).expect("copy");
    let out = Command::new(BIN)
        .args(["check-config", &cfg.display().to_string()])
        .env_clear()
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

// ---- on_bind ------------------------------------------------------------------------------------

const BIND_POLICY: &str = r#"from siphon import smpp

@smpp.on_bind
def authorise(bind):
    if bind.system_id == "blocked":
        return bind.reject(smpp.ESME_RINVSYSID)
    if bind.client_addr == "127.0.0.2":
        return bind.reject("ESME_RINVPASWD")
    if bind.system_id.startswith("guest"):
        return bind.accept(window=2)
    return None
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_bind_rejects_by_address_and_system_id_and_accepts_unknown_esmes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(dir.path(), "policy.py", BIND_POLICY);
    let mut d = Daemon::start(config_with(&script, vec![account("acct", "pw")])).await;
    let blocked = bind(d.smpp, BindKind::Transceiver, "blocked", "pw").await;
    assert_eq!(bind_status(blocked), CommandStatus::ESME_RINVSYSID);
    // A configured account with the right password, but from an address the script refuses.
    let other = bind_from("127.0.0.2", d.smpp, "acct", "pw").await;
    assert_eq!(bind_status(other), CommandStatus::ESME_RINVPASWD);
    // None: the accounts decide.
    let wrong = bind(d.smpp, BindKind::Transceiver, "acct", "nope").await;
    assert_eq!(bind_status(wrong), CommandStatus::ESME_RBINDFAIL);
    let acct = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("account binds");
    assert!(submit_status(&acct, submit("1", 0)).await.is_ok());
    // Not in accounts, accepted by the script, and served (sim route).
    let guest = bind(d.smpp, BindKind::Transceiver, "guest-7", "anything").await.expect("guest binds");
    assert!(submit_status(&guest, submit("1", 0)).await.is_ok());
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_handler_calls_total", &["on_bind", "result=\"ok\""]), 5.0, "{m}");
    d.shutdown().await;
}

// ---- on_pdu -------------------------------------------------------------------------------------

/// An upstream SMSC that answers every submit_sm (ids `up1`, `up2`, ... per session) and records
/// its destination; `session` is its latest session to smscd, for sending deliver_sm / data_sm.
struct Upstream {
    port: u16,
    destinations: Arc<Mutex<Vec<String>>>,
    session: Arc<Mutex<Option<smpp::session::Session>>>,
    /// Submits not answered yet (while `hold` is set), with the id each is to get.
    held: Held,
    task: tokio::task::JoinHandle<()>,
}

type Held = Arc<Mutex<(bool, Vec<(smpp::session::Responder, String)>)>>;

struct Record(Arc<Mutex<Vec<String>>>, u64, Held);

impl Handler for Record {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        let Body::SubmitSm(sm) = &req.pdu.body else { return Reply::Error(CommandStatus::ESME_RINVCMDID) };
        self.0.lock().unwrap().push(String::from_utf8_lossy(&sm.destination.addr).into_owned());
        self.1 += 1;
        let id = format!("up{}", self.1);
        let mut held = self.2.lock().unwrap();
        if held.0 {
            let (_, responder) = req.defer();
            held.1.push((responder, id));
            return Reply::Deferred;
        }
        Reply::Ok(Body::SubmitSmResp(SubmitSmResp { message_id: id.into(), ..Default::default() }))
    }
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let port = listener.local_addr().expect("addr").port();
        let destinations = Arc::new(Mutex::new(Vec::new()));
        let session = Arc::new(Mutex::new(None));
        let held: Held = Arc::default();
        let (d, latest, h) = (destinations.clone(), session.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, peer)) = listener.accept().await {
                let (d, latest, h) = (d.clone(), latest.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(b) = smpp::session::smsc::accept(s, Some(peer), SessionConfig::default()).await
                    else {
                        return;
                    };
                    if let Ok(session) = b.accept(Bytes::from_static(b"up"), None, Record(d, 0, h)).await {
                        *latest.lock().unwrap() = Some(session.clone());
                        session.closed().await;
                    }
                });
            }
        });
        Upstream { port, destinations, session, held, task }
    }
    /// Hold the next submits unanswered (`true`), or answer them as they come.
    fn hold(&self, on: bool) {
        self.held.lock().unwrap().0 = on;
    }
    fn held(&self) -> usize {
        self.held.lock().unwrap().1.len()
    }
    /// Answer every held submit with its id.
    fn release(&self) {
        for (r, id) in std::mem::take(&mut self.held.lock().unwrap().1) {
            r.respond(Body::SubmitSmResp(SubmitSmResp { message_id: id.into(), ..Default::default() }))
                .expect("submit_sm_resp sent");
        }
    }
    /// The upstream's session to smscd (once bound).
    fn session(&self) -> smpp::session::Session {
        self.session.lock().unwrap().clone().expect("upstream session")
    }
    fn seen(&self) -> Vec<String> {
        self.destinations.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PDU_POLICY: &str = r#"from siphon import smpp

@smpp.on_pdu("submit_sm")
def on_submit(pdu, session):
    d = pdu.destination_addr
    if d.startswith("00"):
        pdu.destination_addr = "+" + d[2:]
        pdu.text = "rewritten for " + session.system_id
        return None
    if d == "local":
        return pdu.reply(message_id="local-" + pdu.text)
    if d == "tosim":
        return pdu.route(["sim"])
    if d == "bad":
        return pdu.reject(smpp.ESME_RINVDSTADR)
    return None
"#;

/// smscd running PDU_POLICY in front of one upstream (the default chain), that upstream bound:
/// bound, not only registered, since a submit before the session is up is refused.
async fn policy_daemon() -> (Upstream, Daemon, tempfile::TempDir) {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(dir.path(), "policy.py", PDU_POLICY);
    let mut cfg = config_with(&script, vec![account("acct", "pw")]);
    cfg.binds = vec![upstream("up", up.port, "u", "p")];
    cfg.routing.default_chain = vec!["bind:up".into()];
    let d = Daemon::start(cfg).await;
    eventually("upstream bound", Duration::from_secs(20), || {
        d.core().upstreams.get("up").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    (up, d, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_pdu_rewrites_answers_routes_and_rejects() {
    let (up, mut d, _dir) = policy_daemon().await;
    let e = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind");
    // Rewritten destination, default routing: the carrier sees the new number.
    let first = submit_status(&e, submit("0031612345678", 0)).await;
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(up.seen(), vec!["+31612345678".to_string()]);
    // Answered here, nothing sent upstream.
    assert_eq!(submit_status(&e, submit_text("local", 0, "hi")).await, Ok("local-hi".into()));
    // A chain of the script's choosing: the sim, not the default bind.
    assert!(submit_status(&e, submit("tosim", 0)).await.is_ok());
    assert_eq!(submit_status(&e, submit("bad", 0)).await, Err(CommandStatus::ESME_RINVDSTADR));
    // Untouched: default routing as it came.
    assert!(submit_status(&e, submit("4477", 0)).await.is_ok());
    assert_eq!(up.seen(), vec!["+31612345678".to_string(), "4477".to_string()]);
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_submits_total", &["route=\"sim\""]), 1.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_submits_total", &["route=\"handler\""]), 2.0, "{m}");
    d.shutdown().await;
}

/// A submit_multi of `dests` (TON/NPI 1/1) with text "fan".
fn multi(dests: &[&str]) -> Body {
    Body::SubmitMulti(smpp::SubmitMulti {
        source: smpp::Address::new(0, 0, "12345"),
        destinations: dests
            .iter()
            .map(|d| smpp::DestAddress::Sme(smpp::Address::new(1, 1, d.to_string())))
            .collect(),
        short_message: Bytes::from_static(b"fan"),
        ..Default::default()
    })
}

/// A submit_multi of `dests`: the destinations in unsuccess_smes with their statuses, or the
/// PDU's own error status.
async fn multi_unsuccess(e: &Esme, dests: &[&str]) -> Result<Vec<(String, CommandStatus)>, CommandStatus> {
    let r = within("submit_multi", e.session.request(multi(dests))).await.expect("submit_multi_resp");
    match r.body {
        Body::SubmitMultiResp(resp) if r.command_status.is_ok() => {
            assert!(!resp.message_id.is_empty());
            Ok(resp
                .unsuccess_smes
                .iter()
                .map(|u| (String::from_utf8_lossy(&u.address.addr).into_owned(), u.error_status_code))
                .collect())
        }
        _ if !r.command_status.is_ok() => Err(r.command_status),
        other => panic!("submit_multi: {:?} {other:?}", r.command_status),
    }
}

/// Each destination of a submit_multi goes through on_pdu("submit_sm") as the submit_sm it
/// becomes, so the script's policy cannot be bypassed: rewritten (the carrier sees the new
/// number), answered here, routed to the script's chain, or rejected (in unsuccess_smes with the
/// script's status, named as the ESME wrote it); every destination rejected refuses the PDU
/// with that status. The npm smpp ESME gets the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_multi_destinations_go_through_on_pdu_submit_sm() {
    let (up, mut d, _dir) = policy_daemon().await;
    let e = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind");
    let dests = ["0031612345678", "local", "tosim", "bad", "4477"];
    assert_eq!(
        multi_unsuccess(&e, &dests).await,
        Ok(vec![("bad".to_string(), CommandStatus::ESME_RINVDSTADR)])
    );
    // Only the rewritten and the untouched destinations reach the carrier (in either order).
    let mut seen = up.seen();
    seen.sort();
    assert_eq!(seen, vec!["+31612345678".to_string(), "4477".to_string()]);
    // Every destination refused by the script: the PDU gets the script's status, nothing is sent.
    assert_eq!(multi_unsuccess(&e, &["bad"]).await, Err(CommandStatus::ESME_RINVDSTADR));
    assert_eq!(up.seen().len(), 2);
    let m = d.metrics().await;
    assert_eq!(
        metric_sum(&m, "smscd_handler_calls_total", &["on_pdu:submit_sm", "result=\"ok\""]),
        6.0,
        "{m}"
    );
    // A third-party ESME: its submit_multi to `bad` and `bad1` gets `bad` back in unsuccess_smes.
    let args =
        esme_args(d.smpp.port(), "acct", "pw", &["--ops", "multi", "--dest-addr", "bad", "--timeout", "20"]);
    let mut esme = Peer::spawn(Lang::Node, "esme_node.js", &args);
    assert_eq!(esme.finish().await, 0, "ESME run failed\n{}", esme.context());
    let ops = esme.events_named("op");
    assert_eq!(ops.len(), 1, "{}", esme.context());
    assert_eq!(ops[0]["status"], 0, "{}", esme.context());
    assert_eq!(
        ops[0]["unsuccess"],
        serde_json::json!([{ "addr": "bad", "status": 0x0B }]),
        "{}",
        esme.context()
    );
    assert!(up.seen().contains(&"bad1".to_string()), "{:?}", up.seen());
    d.shutdown().await;
}

/// on_bind's `accept(throttle=1)` holds for submit_multi and data_sm as for submit_sm: sent
/// back to back, at most one a second (plus the first) is taken, the rest ESME_RTHROTTLED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_throttle_from_on_bind_covers_submit_multi_and_data_sm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(
        dir.path(),
        "throttle.py",
        "from siphon import smpp\n@smpp.on_bind\ndef b(bind):\n    return bind.accept(throttle=1)\n",
    );
    let mut d = Daemon::start(config_with(&script, vec![])).await;
    let e = bind(d.smpp, BindKind::Transceiver, "anyone", "x").await.expect("bind");
    let data = || {
        let mut d = smpp::DataSm {
            source: smpp::Address::new(0, 0, "12345"),
            destination: smpp::Address::new(1, 1, "3161"),
            ..Default::default()
        };
        d.tlvs.set_message_payload(&b"hi"[..]);
        Body::DataSm(d)
    };
    let started = Instant::now();
    let mut statuses = Vec::new();
    for n in 0..6 {
        let body = if n % 2 == 0 { multi(&["3161", "3162"]) } else { data() };
        statuses.push(within("request", e.session.request(body)).await.expect("response").command_status);
    }
    let allowed = 1 + started.elapsed().as_secs_f64().ceil() as usize;
    let taken = statuses.iter().filter(|s| s.is_ok()).count();
    assert!(taken >= 1 && taken <= allowed, "{taken} taken in {:?}: {statuses:?}", started.elapsed());
    assert!(statuses.iter().all(|s| s.is_ok() || *s == CommandStatus::ESME_RTHROTTLED), "{statuses:?}");
    d.shutdown().await;
}

// ---- deliver_sm and data_sm ---------------------------------------------------------------------

const DELIVER_POLICY: &str = r#"from siphon import smpp

@smpp.on_pdu("deliver_sm")
async def on_deliver(pdu, session):
    if pdu.is_receipt:
        r = pdu.receipt
        if pdu.text.endswith("text:reject"):
            return pdu.reject(smpp.ESME_RX_R_APPN)
        if pdu.text.endswith("text:raise"):
            raise ValueError("a bug in the billing hook")
        if r.account is None and r.id.startswith("vendor-"):
            # An upstream that prefixes its ids: repaired here, then matched.
            pdu.text = pdu.text.replace("id:vendor-", "id:", 1)
            return None
        # Observed, and marked for the ESME in a vendor TLV: the id the ESME knows (TLV, and
        # the text's first word), the upstream's and the account.
        pdu.set_tlv(0x1400, f"{session.upstream}:{r.id}:{pdu.text.split()[0]}:{r.upstream_id}:{r.account}:{r.stat}:{r.message_state}:{r.err}".encode())
        return None
    if pdu.text.startswith("spam"):
        return pdu.reject(smpp.ESME_RX_R_APPN)
    if pdu.text == "local":
        return pdu.reply()
    if pdu.source_addr.startswith("0"):
        pdu.source_addr = "+44" + pdu.source_addr[1:]
        pdu.text = pdu.text.upper() + " via " + session.upstream
    return None

@smpp.on_pdu("data_sm")
def on_data(pdu, session):
    if session.upstream is not None:
        pdu.text = "data from " + session.upstream + ": " + pdu.text
        return None
    if pdu.destination_addr == "bad":
        return pdu.reject(smpp.ESME_RINVDSTADR)
    if pdu.destination_addr == "local":
        return pdu.reply(message_id="data-" + session.system_id + "-" + pdu.text)
    return None
"#;

/// smscd with DELIVER_POLICY, account `acct` (every MO routed to it, submits to the upstream),
/// the upstream bound, and `acct` bound as a transceiver.
async fn deliver_setup() -> (Daemon, Upstream, Esme, tempfile::TempDir) {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(dir.path(), "policy.py", DELIVER_POLICY);
    let mut cfg = config_with(&script, vec![account("acct", "pw")]);
    cfg.binds = vec![upstream("up", up.port, "u", "p")];
    cfg.routing.default_chain = vec!["bind:up".into()];
    cfg.routing.mo = vec![smsc_api::smscd_config::MoRule {
        destination_prefix: None,
        upstream: None,
        account: "acct".into(),
    }];
    let d = Daemon::start(cfg).await;
    let core = d.core().clone();
    eventually("upstream bound", Duration::from_secs(20), || {
        core.upstreams.get("up").is_some_and(|u| u.bound_sessions() == 1)
            && up.session.lock().unwrap().is_some()
    })
    .await;
    let e = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind");
    (d, up, e, dir)
}

/// An MO deliver_sm from the upstream: its deliver_sm_resp status.
async fn mo(up: &smpp::session::Session, source: &str, text: &str) -> CommandStatus {
    let d = smpp::DeliverSm {
        source: smpp::Address::new(1, 1, source.to_owned()),
        destination: smpp::Address::new(0, 0, "12345"),
        short_message: Bytes::from(text.to_owned()),
        ..Default::default()
    };
    within("deliver_sm", up.request(Body::DeliverSm(d))).await.expect("deliver_sm_resp").command_status
}

async fn next_delivered(e: &mut Esme) -> smpp::DeliverSm {
    within("deliver_sm at the ESME", e.delivered.recv()).await.expect("deliver_sm")
}

/// on_pdu("deliver_sm") on MO from an upstream: a rewrite reaches the ESME rewritten, a reject
/// goes back to the upstream as its status and a local answer is 0, neither reaching the ESME
/// (the queue is in order: the next MO is the next the ESME gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_sm_handler_rewrites_rejects_and_answers_mo() {
    let (mut d, up, mut e, _dir) = deliver_setup().await;
    let s = up.session();
    assert_eq!(mo(&s, "07700900123", "hello").await, CommandStatus::ESME_ROK);
    let got = next_delivered(&mut e).await;
    assert_eq!(&got.source.addr[..], b"+447700900123");
    assert_eq!(String::from_utf8_lossy(got.payload()), "HELLO via up");
    // Rejected: the upstream gets the script's status, the ESME nothing.
    assert_eq!(mo(&s, "447700900123", "spam offer").await, CommandStatus::ESME_RX_R_APPN);
    // Answered here: 0 to the upstream, nothing forwarded.
    assert_eq!(mo(&s, "447700900123", "local").await, CommandStatus::ESME_ROK);
    // None, nothing changed: as it came.
    assert_eq!(mo(&s, "447700900123", "plain").await, CommandStatus::ESME_ROK);
    let got = next_delivered(&mut e).await;
    assert_eq!((&got.source.addr[..], &got.short_message[..]), (&b"447700900123"[..], &b"plain"[..]));
    // data_sm from the upstream goes through on_pdu("data_sm") and reaches the ESME.
    let mut data = smpp::DataSm {
        source: smpp::Address::new(1, 1, "447700900123"),
        destination: smpp::Address::new(0, 0, "12345"),
        ..Default::default()
    };
    data.tlvs.set_message_payload(&b"hi"[..]);
    let r = within("data_sm", s.request(Body::DataSm(data))).await.expect("data_sm_resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let got = next_delivered(&mut e).await;
    assert_eq!(String::from_utf8_lossy(got.payload()), "data from up: hi");
    assert!(e.delivered.try_recv().is_err(), "the rejected or answered MO reached the ESME");
    let m = d.metrics().await;
    assert_eq!(
        metric_sum(&m, "smscd_handler_calls_total", &["on_pdu:deliver_sm", "result=\"ok\""]),
        4.0,
        "{m}"
    );
    d.shutdown().await;
}

/// An upstream's receipt for message `upstream_id` (in the text; also in receipted_message_id
/// when `tlv`).
fn upstream_receipt(upstream_id: &str, tlv: bool) -> Body {
    upstream_receipt_saying(upstream_id, tlv, "hello")
}

/// [`upstream_receipt`] whose text field (the receipt text's last) is `text`.
fn upstream_receipt_saying(upstream_id: &str, tlv: bool, text: &str) -> Body {
    let mut r = smpp::DeliverSm {
        source: smpp::Address::new(1, 1, "3161"),
        destination: smpp::Address::new(0, 0, "12345"),
        esm_class: 0x04,
        short_message: Bytes::from(format!(
            "id:{upstream_id} sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD err:000 text:{text}"
        )),
        ..Default::default()
    };
    if tlv {
        r.tlvs.set_receipted_message_id(upstream_id.as_bytes());
    }
    Body::DeliverSm(r)
}

/// A delivery receipt goes through on_pdu("deliver_sm") matched first: the handler sees the id
/// the ESME knows (smscd's, in receipted_message_id and in the text), with the upstream's id and
/// the submitting account beside it, so a hook keyed on the ESME's id matches. A receipt that
/// matches nothing is shown as it came, and the id the script repairs is matched after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_sm_handler_sees_receipts_with_our_id_the_upstream_id_and_the_account() {
    let (mut d, up, mut e, _dir) = deliver_setup().await;
    let ours = submit_status(&e, submit("3161", 1)).await.expect("submit relayed");
    assert_eq!(up.seen(), vec!["3161".to_string()]);
    let r = within("receipt", up.session().request(upstream_receipt("up1", true))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let got = next_delivered(&mut e).await;
    assert_eq!(got.esm_class, 0x04);
    let text = String::from_utf8_lossy(got.payload()).into_owned();
    let id = smpp::receipt::Receipt::parse(&text).map(|r| r.id).unwrap_or_default();
    assert_eq!(id, ours, "the ESME gets our id: {text}");
    assert_eq!(receipt_id(&got), ours);
    let seen = got.tlvs.get(smpp::Tag(0x1400)).map(|b| String::from_utf8_lossy(b).into_owned());
    let want = format!("up:{ours}:id:{ours}:up1:acct:DELIVRD:2:000");
    assert_eq!(seen.as_deref(), Some(want.as_str()), "what the handler saw");
    // An id the upstream mangled: unmatched, repaired by the script, then matched.
    let second = submit_status(&e, submit("3161", 1)).await.expect("submit relayed");
    let r =
        within("receipt", up.session().request(upstream_receipt("vendor-up2", false))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let got = next_delivered(&mut e).await;
    let text = String::from_utf8_lossy(got.payload()).into_owned();
    let id = smpp::receipt::Receipt::parse(&text).map(|r| r.id).unwrap_or_default();
    assert_eq!(id, second, "the repaired receipt matched: {text}");
    d.shutdown().await;
}

/// A submit the upstream holds, a receipt for it (upstream id `upstream_id`, text field `text`)
/// sent before the submit_sm_resp, so it is parked (answered 0 at once); then the submit is
/// answered. Our id.
async fn submit_with_parked_receipt(
    up: &Upstream,
    e: &Esme,
    upstream_id: &str,
    tlv: bool,
    text: &str,
) -> String {
    up.hold(true);
    let submitted = tokio::spawn({
        let session = e.session.clone();
        async move { within("submit", session.request(submit("3161", 1))).await }
    });
    eventually("submit held by the upstream", Duration::from_secs(10), || up.held() == 1).await;
    let r = within("receipt", up.session().request(upstream_receipt_saying(upstream_id, tlv, text)))
        .await
        .expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK, "{upstream_id}: parked, answered at once");
    up.hold(false);
    up.release();
    let resp = submitted.await.expect("task").expect("submit_sm_resp");
    match resp.body {
        Body::SubmitSmResp(r) if resp.command_status.is_ok() => {
            String::from_utf8_lossy(&r.message_id).into_owned()
        }
        other => panic!("submit: {:?} {other:?}", resp.command_status),
    }
}

/// The id a delivered receipt reports on, and the handler's mark (TLV 0x1400) if any.
fn receipt_seen(got: &smpp::DeliverSm) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(got.payload()).into_owned();
    let id = smpp::receipt::Receipt::parse(&text).map(|r| r.id).unwrap_or_default();
    (id, got.tlvs.get(smpp::Tag(0x1400)).map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// A receipt that overtakes its submit_sm_resp is parked (the upstream answered 0 at once) and
/// reaches the handler once matched, still with our id and the account; one that never matches
/// reaches it as it came when its wait ends, and the id the script repairs is matched then.
/// The upstream has its answer already, so nobody is left to refuse a parked receipt to: the
/// handler's reject drops it (counted), and a handler that fails forwards it as it came even
/// with `on_error: reject` (losing a receipt to a script bug is worse than an unmarked one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_receipts_reach_the_deliver_handler_matched_or_as_they_came() {
    let (mut d, up, mut e, _dir) = deliver_setup().await;
    for (n, upstream_id) in [(1, "up1"), (2, "vendor-up2")] {
        let ours = submit_with_parked_receipt(&up, &e, upstream_id, n == 1, "hello").await;
        let (id, seen) = receipt_seen(&next_delivered(&mut e).await);
        assert_eq!(id, ours, "{upstream_id}: the ESME gets our id");
        if n == 1 {
            let want = format!("up:{ours}:id:{ours}:up1:acct:DELIVRD:2:000");
            assert_eq!(seen.as_deref(), Some(want.as_str()), "what the handler saw");
        }
    }
    // Rejected by the handler once matched: dropped and counted, never delivered.
    submit_with_parked_receipt(&up, &e, "up3", true, "reject").await;
    d.wait_metric(
        "smscd_upstream_receipts_total",
        &["result=\"handler_rejected\""],
        1.0,
        Duration::from_secs(20),
    )
    .await;
    // The handler raises (on_error is reject): forwarded as it came, with our id, unmarked; and
    // it is the next receipt the ESME gets, so the rejected one was not delivered.
    let ours = submit_with_parked_receipt(&up, &e, "up4", true, "raise").await;
    let (id, seen) = receipt_seen(&next_delivered(&mut e).await);
    assert_eq!((id, seen), (ours, None), "the receipt the failing handler saw, as it came");
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["result=\"parked\""]), 4.0, "{m}");
    // Each matched (none shown as it came but the vendor's, which is not counted unmatched).
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["result=\"unmatched\""]), 0.0, "{m}");
    assert_eq!(
        metric_sum(&m, "smscd_handler_errors_total", &["on_pdu:deliver_sm", "kind=\"exception\""]),
        1.0,
        "{m}"
    );
    d.shutdown().await;
}

const SIM_POLICY: &str = r#"from siphon import smpp

@smpp.on_pdu("deliver_sm")
def on_deliver(pdu, session):
    if not pdu.is_receipt:
        return None
    r = pdu.receipt
    if pdu.source_addr == "drop":
        return pdu.reply()
    pdu.set_tlv(0x1400, f"{session.upstream}:{r.id}:{r.account}:{r.stat}".encode())
    return None
"#;

/// The sim's receipts go through on_pdu("deliver_sm") as an upstream's do (session.upstream is
/// "sim"), with the id the ESME knows: marked, or answered there and never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_receipts_go_through_on_pdu_deliver_sm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(dir.path(), "policy.py", SIM_POLICY);
    let mut cfg = config_with(&script, vec![account("acct", "pw")]);
    cfg.sim.outcomes = [("DELIVRD".to_string(), 1.0)].into_iter().collect();
    let mut d = Daemon::start(cfg).await;
    let mut e = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind");
    // The sim makes its receipts in order: once the second is here, the first was decided.
    let dropped = submit_status(&e, submit("drop", 1)).await.expect("submit to the sim");
    let ours = submit_status(&e, submit("keep", 1)).await.expect("submit to the sim");
    let got = next_delivered(&mut e).await;
    assert_eq!(receipt_id(&got), ours, "the receipt the handler dropped ({dropped}) reached the ESME");
    let seen = got.tlvs.get(smpp::Tag(0x1400)).map(|b| String::from_utf8_lossy(b).into_owned());
    let want = format!("sim:{ours}:acct:DELIVRD");
    assert_eq!(seen.as_deref(), Some(want.as_str()), "what the handler saw");
    let m = d.metrics().await;
    assert_eq!(
        metric_sum(&m, "smscd_handler_calls_total", &["on_pdu:deliver_sm", "result=\"ok\""]),
        2.0,
        "{m}"
    );
    assert!(e.delivered.try_recv().is_err(), "the dropped receipt reached the ESME");
    d.shutdown().await;
}

/// data_sm from an ESME goes through on_pdu("data_sm"): answered there, rejected, or routed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sm_from_an_esme_goes_through_on_pdu_data_sm() {
    let (mut d, up, e, _dir) = deliver_setup().await;
    let data = |dest: &str, text: &str| {
        let mut d = smpp::DataSm {
            source: smpp::Address::new(0, 0, "12345"),
            destination: smpp::Address::new(1, 1, dest.to_owned()),
            ..Default::default()
        };
        d.tlvs.set_message_payload(text.as_bytes().to_vec());
        Body::DataSm(d)
    };
    let ask = async |body: Body| {
        let r = within("data_sm", e.session.request(body)).await.expect("data_sm_resp");
        match r.body {
            Body::DataSmResp(b) if r.command_status.is_ok() => {
                Ok(String::from_utf8_lossy(&b.message_id).into_owned())
            }
            _ => Err(r.command_status),
        }
    };
    assert_eq!(ask(data("local", "hi")).await, Ok("data-acct-hi".into()));
    assert_eq!(ask(data("bad", "hi")).await, Err(CommandStatus::ESME_RINVDSTADR));
    assert!(up.seen().is_empty(), "answered or rejected by the handler, yet relayed");
    // None: the default chain (the upstream) takes it.
    assert!(ask(data("3161", "hi")).await.is_ok());
    assert_eq!(up.seen(), vec!["3161".to_string()]);
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_handler_calls_total", &["on_pdu:data_sm", "result=\"ok\""]), 3.0, "{m}");
    d.shutdown().await;
}

// ---- the cache on a shared Redis ----------------------------------------------------------------

/// redis-server in a temp dir (kept until drop), killed on drop.
struct RedisServer(Child, #[allow(dead_code)] tempfile::TempDir, u16);

impl RedisServer {
    fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it with `tools/deps.sh apt`")
            });
        let r = RedisServer(child, dir, port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const COUNTER: &str = r#"from siphon import smpp

@smpp.on_pdu("submit_sm")
async def count(pdu, session):
    n = await smpp.cache.incr("sent:" + session.system_id, ttl=600)
    return pdu.reply(message_id=str(n))
"#;

/// Two daemons (two engines, two Redis connections) count in one key: the ids they hand out are
/// exactly 1..=2N, so no increment was lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handler_counts_in_redis_shared_by_two_replicas() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(dir.path(), "count.py", COUNTER);
    let mut daemons = Vec::new();
    for _ in 0..2 {
        let mut cfg = config_with(&script, vec![account("acct", "pw")]);
        cfg.store = StoreConfig::Redis {
            url: format!("redis://127.0.0.1:{}/", redis.2),
            sentinel: None,
            cluster: None,
            wait: None,
            key_prefix: "h15:".into(),
            ttl: Duration::from_secs(60),
        };
        daemons.push(Daemon::start(cfg).await);
    }
    let a = bind(daemons[0].smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind a");
    let b = bind(daemons[1].smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind b");
    const N: usize = 50;
    let (ra, rb) = tokio::join!(
        futures::future::join_all((0..N).map(|_| submit_status(&a, submit("1", 0)))),
        futures::future::join_all((0..N).map(|_| submit_status(&b, submit("1", 0)))),
    );
    let mut ids: Vec<u64> =
        ra.into_iter().chain(rb).map(|r| r.expect("submit answered").parse().expect("a count")).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=2 * N as u64).collect::<Vec<_>>());
    for mut d in daemons {
        d.shutdown().await;
    }
}

const ASYNC_SEMANTICS: &str = r#"import asyncio, traceback
from siphon import smpp

def first_step():
    # Called from smscd's eager start (<smscd-runtime>'s `start`), not from a loop iteration.
    return any(f.name == "start" and f.filename == "<smscd-runtime>" for f in traceback.extract_stack())

@smpp.on_pdu("submit_sm")
async def on_submit(pdu, session):
    d = pdu.destination_addr
    async with asyncio.timeout(1):
        if d == "suspend":
            await asyncio.sleep(0)
        if d == "cache":
            await smpp.cache.set("k", d)
    if d == "raise":
        raise ValueError("boom")
    return pdu.reply(message_id=f"{d}-{asyncio.current_task() is not None}-{first_step()}")
"#;

/// An async handler's first step runs at once, so one that never suspends (an await on the
/// memory cache does not) finishes with no loop iteration; yet it runs inside its own Task:
/// current_task() and asyncio.timeout() work whether or not it suspends, and an exception in
/// the first step is an exception like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_run_in_their_task_whether_or_not_they_suspend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(dir.path(), "semantics.py", ASYNC_SEMANTICS);
    let mut d = Daemon::start(config_with(&script, vec![account("acct", "pw")])).await;
    let e = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind");
    // In the first step: answered from the eager start. Suspended: from a later loop iteration.
    for (dest, first) in [("now", "True"), ("cache", "True"), ("suspend", "False")] {
        assert_eq!(submit_status(&e, submit(dest, 0)).await, Ok(format!("{dest}-True-{first}")));
    }
    assert_eq!(submit_status(&e, submit("raise", 0)).await, Err(CommandStatus::ESME_RSYSERR));
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_handler_errors_total", &["kind=\"exception\""]), 1.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_handler_calls_total", &["result=\"ok\""]), 3.0, "{m}");
    d.shutdown().await;
}

// ---- bad scripts --------------------------------------------------------------------------------

const BAD: &str = r#"import asyncio
from siphon import smpp

@smpp.on_pdu("submit_sm")
def on_submit(pdu, session):
    d = pdu.destination_addr
    if d == "raise":
        raise ValueError("boom")
    if d == "type":
        return 42
    if d == "spin":
        while True:
            pass
    if d == "await":
        return forever()
    return pdu.reply(message_id="fine")

async def forever():
    await asyncio.Event().wait()
"#;

/// Each failure is answered per on_error (reject: ESME_RSYSERR; continue: routed as it came),
/// counted by kind, and the next call is served: a busy loop holding the GIL is interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handlers_are_answered_counted_and_never_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write(dir.path(), "bad.py", BAD);
    let mut d = Daemon::start(config_with(&script, vec![account("acct", "pw")])).await;
    let e = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind");
    for (dest, kind) in
        [("raise", "exception"), ("type", "wrong_type"), ("spin", "timeout"), ("await", "timeout")]
    {
        assert_eq!(submit_status(&e, submit(dest, 0)).await, Err(CommandStatus::ESME_RSYSERR), "{dest}");
        assert_eq!(submit_status(&e, submit("ok", 0)).await, Ok("fine".into()), "after {dest}");
        let m = d.metrics().await;
        assert!(
            metric_sum(&m, "smscd_handler_errors_total", &["on_pdu:submit_sm", &format!("kind=\"{kind}\"")])
                >= 1.0,
            "{dest}: {m}"
        );
    }
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_handler_errors_total", &["kind=\"timeout\""]), 2.0, "{m}");
    // A submit_multi: a destination whose call fails is in unsuccess_smes with ESME_RSYSERR, the
    // others go on; every one failing refuses the PDU with it.
    let r = multi_unsuccess(&e, &["raise", "ok", "type"]).await;
    let sys = CommandStatus::ESME_RSYSERR;
    assert_eq!(r, Ok(vec![("raise".to_string(), sys), ("type".to_string(), sys)]));
    assert_eq!(multi_unsuccess(&e, &["raise"]).await, Err(sys));
    // on_error: continue routes the PDU as it came (the sim answers with our id).
    let mut cfg = d.core().config.get().as_ref().clone();
    cfg.handlers.as_mut().expect("handlers").on_error = OnHandlerError::Continue;
    d.reload.send_replace(Arc::new(cfg));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match submit_status(&e, submit("raise", 0)).await {
            Ok(id) => {
                assert_ne!(id, "fine");
                break;
            }
            Err(s) => assert_eq!(s, CommandStatus::ESME_RSYSERR),
        }
        assert!(Instant::now() < deadline, "on_error: continue not applied");
    }
    assert!(submit_status(&e, submit("spin", 0)).await.is_ok(), "a timeout routed on with continue");
    // And for each destination of a submit_multi: none is unsuccessful.
    assert_eq!(multi_unsuccess(&e, &["raise", "ok", "type"]).await, Ok(vec![]));
    d.shutdown().await;
}

/// A script that loops at import is stopped at import_timeout_ms and smscd does not start; one
/// that raises at import names its file and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_failing_at_import_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spin = write(dir.path(), "spin.py", "from siphon import smpp\nwhile True:\n    pass\n");
    let mut cfg = config_with(&spin, vec![]);
    cfg.handlers.as_mut().expect("handlers").import_timeout_ms = 300;
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(cfg.clone()));
    let err = match within("start", smscd::start(Arc::new(cfg), rx, Default::default())).await {
        Ok(_) => panic!("started with a script looping at import"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("import_timeout_ms") && err.contains("spin.py:"), "{err}");
    let raising = write(dir.path(), "raising.py", "from siphon import smpp\n\n\nundefined_name()\n");
    let cfg = config_with(&raising, vec![]);
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(cfg.clone()));
    let err = match within("start", smscd::start(Arc::new(cfg), rx, Default::default())).await {
        Ok(_) => panic!("started with a script raising at import"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&format!("{}:4: NameError", raising.display())), "{err}");
}

// ---- hot reload ---------------------------------------------------------------------------------

/// A ConfigMap volume as the kubelet lays it out: `NAME -> ..data/NAME`, `..data -> ..<version>`,
/// a new version swapped in by renaming a fresh `..data` link over the old one.
struct Projected {
    dir: tempfile::TempDir,
    version: u32,
}

impl Projected {
    fn new(name: &str, text: &str) -> Projected {
        let mut p = Projected { dir: tempfile::tempdir().expect("tempdir"), version: 0 };
        p.swap(name, text);
        std::os::unix::fs::symlink(format!("..data/{name}"), p.dir.path().join(name)).expect("link");
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn swap(&mut self, name: &str, text: &str) {
        self.version += 1;
        let v = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.path().join(&v)).expect("version dir");
        std::fs::write(self.dir.path().join(&v).join(name), text).expect("write version");
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&v, &tmp).expect("tmp link");
        std::fs::rename(&tmp, self.dir.path().join("..data")).expect("swap ..data");
    }
}

const V1: &str = r#"from siphon import smpp

@smpp.on_pdu("submit_sm")
def on_submit(pdu, session):
    return None
"#;

const V2: &str = r#"from siphon import smpp

@smpp.on_pdu("submit_sm")
def on_submit(pdu, session):
    if pdu.destination_addr.startswith("2"):
        return pdu.reject(smpp.ESME_RINVDSTADR)
    return None
"#;

const BROKEN: &str =
    "from siphon import smpp\n\n@smpp.on_pdu(\"submit_sm\")\ndef on_submit(pdu, session)\n    return None\n";

/// Traffic runs while the script changes through `..data` swaps: the new behaviour shows, the
/// bind stays up, every acknowledged submit gets its receipt, and a broken version is refused
/// while the running one keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_traffic_keeps_binds_and_receipts() {
    let mut cm = Projected::new("smpp_script.py", V1);
    let mut d = Daemon::start(config_with(&cm.path("smpp_script.py"), vec![account("acct", "pw")])).await;
    let mut e = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind");
    let mut acked = Vec::new();
    let mut sent = 0u32;
    let mut send = async |e: &Esme, dest: &str, acked: &mut Vec<String>| {
        sent += 1;
        let r = submit_status(e, submit(dest, 1)).await;
        if let Ok(id) = &r {
            acked.push(id.clone());
        }
        r
    };
    for _ in 0..20 {
        assert!(send(&e, "2000", &mut acked).await.is_ok(), "v1 routes every submit");
    }
    cm.swap("smpp_script.py", V2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(send(&e, "1000", &mut acked).await.is_ok());
        match send(&e, "2000", &mut acked).await {
            Err(s) => {
                assert_eq!(s, CommandStatus::ESME_RINVDSTADR);
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "v2 never took over"),
        }
    }
    cm.swap("smpp_script.py", BROKEN);
    eventually("broken version refused", Duration::from_secs(20), || {
        d.core()
            .metrics
            .handler_reloads
            .get_or_create(&smscd::metrics::ResultLabel { result: "refused".into() })
            .get()
            == 1
    })
    .await;
    for _ in 0..10 {
        assert!(send(&e, "1000", &mut acked).await.is_ok(), "the running version keeps serving");
        assert_eq!(send(&e, "2000", &mut acked).await, Err(CommandStatus::ESME_RINVDSTADR));
    }
    assert!(e.session.close_reason().is_none(), "the bind was dropped");
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_handler_reloads_total", &["applied"]), 1.0, "{m}");
    // Every acknowledged submit's receipt arrives (the sim answers each one).
    let mut want: Vec<String> = acked.clone();
    want.sort();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let r = within("receipt", e.delivered.recv()).await.expect("receipt");
        got.push(receipt_id(&r));
    }
    got.sort();
    assert_eq!(got, want, "after {sent} submits");
    d.shutdown().await;
}

const OLD: &str = r#"import asyncio
from siphon import smpp

@smpp.on_pdu("submit_sm")
async def on_submit(pdu, session):
    if pdu.destination_addr == "slow":
        while await smpp.cache.get("released") is None:
            await asyncio.sleep(0.005)
        return pdu.reply(message_id="old")
    return pdu.reply(message_id="old")
"#;

const NEW: &str = r#"from siphon import smpp

@smpp.on_pdu("submit_sm")
async def on_submit(pdu, session):
    await smpp.cache.set("released", "1")
    return pdu.reply(message_id="new")
"#;

/// A call running when the script changes finishes on the version it started on: the old
/// handler waits until the new one has run, then still answers as the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_calls_finish_on_the_old_version() {
    let mut cm = Projected::new("smpp_script.py", OLD);
    let mut cfg = config_with(&cm.path("smpp_script.py"), vec![account("acct", "pw")]);
    cfg.handlers.as_mut().expect("handlers").timeout_ms = 4000;
    let mut d = Daemon::start(cfg).await;
    let e = bind(d.smpp, BindKind::Transceiver, "acct", "pw").await.expect("bind");
    let session = e.session.clone();
    let slow = tokio::spawn(async move { session.request(submit("slow", 0)).await });
    assert_eq!(submit_status(&e, submit("x", 0)).await, Ok("old".into()));
    cm.swap("smpp_script.py", NEW);
    let deadline = Instant::now() + Duration::from_secs(20);
    while submit_status(&e, submit("x", 0)).await != Ok("new".into()) {
        assert!(Instant::now() < deadline, "the new version never took over");
    }
    let answer = within("slow answer", slow).await.expect("task").expect("slow submit answered");
    match answer.body {
        Body::SubmitSmResp(r) => assert_eq!(&r.message_id[..], b"old"),
        other => panic!("{other:?}"),
    }
    d.shutdown().await;
}
