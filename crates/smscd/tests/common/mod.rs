//! Shared helpers for smscd's integration tests: in-process daemons on port 0, our own ESME
//! (the smpp crate's session), third-party peers from tests/peers (killed on drop), and bounded
//! waits. A missing peer or dependency fails the test with a message; nothing is skipped.
#![allow(dead_code)]

pub mod replicas;

use bytes::Bytes;
use serde_json::Value;
use smpp::session::{esme, BindKind, Handler, Reply, Request, Session, SessionConfig, SessionError};
use smpp::{Address, Bind, Body, CommandStatus, DeliverSm, DeliverSmResp, SubmitSm};
use smsc_api::smscd_config::{AccountConfig, BindConfig, RoutingConfig, SmscdConfig};
use smscd::DaemonHandle;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub const STEP: Duration = Duration::from_secs(30);

pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Poll `f` until true, at most `limit`.
pub async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "not reached within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn account(system_id: &str, password: &str) -> AccountConfig {
    AccountConfig {
        system_id: system_id.into(),
        password: password.into(),
        allowed_cidrs: vec![],
        bind_types: vec![],
        max_msg_per_sec: None,
        window: 64,
        max_binds: None,
    }
}

pub fn upstream(name: &str, port: u16, system_id: &str, password: &str) -> BindConfig {
    BindConfig {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        system_id: system_id.into(),
        password: password.into(),
        system_type: String::new(),
        bind_type: smsc_api::smscd_config::BindType::Transceiver,
        max_msg_per_sec: None,
        window: 10,
        binds: 1,
        max_binds: None,
        enquire_link_secs: 30,
        reconnect: smsc_api::smscd_config::ReconnectConfig { min_ms: 50, max_ms: 500 },
        tls: None,
        message_id_format: Default::default(),
    }
}

/// A config listening on 127.0.0.1 port 0 (SMPP and admin) with the sim as default route.
pub fn base_config(accounts: Vec<AccountConfig>) -> SmscdConfig {
    let mut c = SmscdConfig::default();
    c.server.bind_address = "127.0.0.1".into();
    c.server.port = 0;
    c.server.bind_timeout_secs = 2;
    c.admin.bind_address = "127.0.0.1".into();
    c.admin.port = 0;
    c.accounts = accounts;
    c.routing = RoutingConfig { default_chain: vec!["sim".into()], ..Default::default() };
    c.sim.receipt_delay_ms = 10;
    c.shutdown.drain_secs = 10;
    c
}

/// A daemon running in this process; shut down (not waited) on drop.
pub struct Daemon {
    pub handle: Option<DaemonHandle>,
    pub token: CancellationToken,
    pub reload: watch::Sender<Arc<SmscdConfig>>,
    pub smpp: SocketAddr,
    pub admin: SocketAddr,
}

impl Daemon {
    pub async fn start(cfg: SmscdConfig) -> Daemon {
        let cfg = Arc::new(cfg);
        let (tx, rx) = watch::channel(cfg.clone());
        let token = CancellationToken::new();
        let handle = match smscd::start(cfg, rx, token.clone()).await {
            Ok(h) => h,
            Err(e) => panic!("daemon did not start: {e}"),
        };
        let (smpp, admin) = (handle.smpp_addr, handle.admin_addr);
        Daemon { handle: Some(handle), token, reload: tx, smpp, admin }
    }

    pub fn core(&self) -> &Arc<smscd::core::Core> {
        &self.handle.as_ref().expect("running").core
    }

    /// Cancel and wait for the drain to finish.
    pub async fn shutdown(&mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            within("daemon shutdown", h.wait()).await.expect("daemon ended cleanly");
        }
    }

    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.1
    }

    /// [`metric_sum`] of the daemon's metrics now.
    pub async fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        metric_sum(&self.metrics().await, name, filters)
    }

    /// Poll the metric until it is `want`; fails past `limit`.
    pub async fn wait_metric(&self, name: &str, filters: &[&str], want: f64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = self.metric(name, filters).await;
            if v == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name}{filters:?} = {v}, want {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Minimal HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = within("admin connect", tokio::net::TcpStream::connect(addr)).await.expect("admin connect");
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("admin write");
    let mut buf = Vec::new();
    within("admin read", s.read_to_end(&mut buf)).await.expect("admin read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The wall clock in unix ms (the clock smscd schedules by).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Sum of a metric's samples whose label text contains every `filters` entry.
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

// ---- our own ESME --------------------------------------------------------------------------------

/// Collects deliver_sm (answered ESME_ROK).
pub struct Collect(pub mpsc::UnboundedSender<DeliverSm>);

impl Handler for Collect {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::DeliverSm(d) => {
                let _ = self.0.send(d);
                Reply::Ok(Body::DeliverSmResp(DeliverSmResp::default()))
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }
}

pub struct Esme {
    pub session: Session,
    pub delivered: mpsc::UnboundedReceiver<DeliverSm>,
}

pub async fn bind(
    addr: SocketAddr,
    kind: BindKind,
    system_id: &str,
    password: &str,
) -> Result<Esme, SessionError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let bind = Bind {
        system_id: Bytes::from(system_id.to_owned()),
        password: Bytes::from(password.to_owned()),
        ..Bind::default()
    };
    let cfg = SessionConfig { bind_timeout: Duration::from_secs(5), ..SessionConfig::default() };
    let (session, _) = within("bind", esme::connect(addr, kind, bind, cfg, Collect(tx))).await?;
    Ok(Esme { session, delivered: rx })
}

pub fn submit(dest: &str, registered_delivery: u8) -> Body {
    Body::SubmitSm(SubmitSm {
        source: Address::new(0, 0, "12345"),
        destination: Address::new(1, 1, dest.to_owned()),
        registered_delivery,
        short_message: Bytes::from_static(b"hello"),
        ..SubmitSm::default()
    })
}

/// receipted_message_id of a receipt (without NUL).
pub fn receipt_id(d: &DeliverSm) -> String {
    d.tlvs.receipted_message_id().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
}

// ---- third-party peers --------------------------------------------------------------------------

pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers")
}

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("SMSC_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/smsc-operator"),
    }
}

fn need(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} not found at {}: run `tools/deps.sh python node apt` (make test does)",
        path.display()
    );
}

#[derive(Clone, Copy, Debug)]
pub enum Lang {
    Python,
    Node,
    Bash,
}

/// A running peer: JSON events from stdout, stderr kept for failure messages, killed on drop.
pub struct Peer {
    pub name: String,
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: Option<tokio::process::ChildStdin>,
    stderr: Arc<Mutex<String>>,
    pub events: Vec<Value>,
}

impl Peer {
    pub fn spawn(lang: Lang, script: &str, args: &[String]) -> Peer {
        let script_path = peers_dir().join(script);
        need(&script_path, &format!("peer script {script}"));
        let mut cmd = match lang {
            Lang::Python => {
                let py = cache_dir().join("venv/bin/python");
                need(&py, "Python venv with smpplib");
                let mut c = Command::new(py);
                c.arg(&script_path);
                c
            }
            Lang::Node => {
                let modules = cache_dir().join("node/node_modules");
                need(&modules.join("smpp"), "npm package smpp");
                let mut c = Command::new("node");
                c.arg(&script_path).env("NODE_PATH", modules);
                c
            }
            Lang::Bash => {
                let mut c = Command::new("bash");
                c.arg(&script_path);
                c
            }
        };
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
        Peer { name, child, lines: BufReader::new(stdout).lines(), stdin, stderr, events: Vec::new() }
    }

    pub fn context(&self) -> String {
        let events: Vec<String> = self.events.iter().map(|e| e.to_string()).collect();
        format!(
            "peer: {}\nevents:\n  {}\nstderr:\n{}",
            self.name,
            events.join("\n  "),
            self.stderr.lock().unwrap()
        )
    }

    pub async fn next_event(&mut self) -> Option<Value> {
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

    pub async fn expect_event(&mut self, name: &str) -> Value {
        loop {
            match self.next_event().await {
                Some(v) if v["event"] == name => return v,
                Some(_) => {}
                None => panic!("peer ended before event {name}\n{}", self.context()),
            }
        }
    }

    /// Read to EOF and return the exit code.
    pub async fn finish(&mut self) -> i32 {
        while self.next_event().await.is_some() {}
        let status = within("peer exit", self.child.wait()).await;
        let status = status.unwrap_or_else(|e| panic!("waiting for peer: {e}\n{}", self.context()));
        status.code().unwrap_or(-1)
    }

    pub fn events_named(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == name).collect()
    }

    /// One line on the peer's control channel (stdin).
    pub async fn send_control(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("peer stdin");
        within("write peer stdin", stdin.write_all(format!("{line}\n").as_bytes())).await.expect("stdin");
        within("flush peer stdin", stdin.flush()).await.expect("stdin");
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// SIGTERM (peers like kannel/run.sh clean up their own children on it).
    pub fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The ESME driver's arguments for a run against `port`.
pub fn esme_args(port: u16, system_id: &str, password: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["--port", &port.to_string(), "--system-id", system_id, "--password", password]
        .map(String::from)
        .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

// ---- a carrier on our own SMSC session ------------------------------------------------------------

/// How [`Carrier`] answers submit_sm.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// ESME_ROK after this long.
    After(Duration),
    /// Never (the responders are kept until the carrier is dropped).
    Never,
}

/// An upstream SMSC (the smpp crate's SMSC role on 127.0.0.1) that records when each submit_sm
/// arrived and answers it as told.
pub struct Carrier {
    pub port: u16,
    /// Arrival time and short_message of every submit_sm, in arrival order.
    pub received: Arc<Mutex<Vec<(tokio::time::Instant, String)>>>,
    held: Arc<Mutex<Held>>,
    task: tokio::task::JoinHandle<()>,
}

/// [`Answer::Never`]'s responders, until [`Carrier::answer_all_from_now`].
#[derive(Default)]
struct Held {
    responders: Vec<smpp::session::Responder>,
    answer_now: bool,
}

struct CarrierHandler {
    answer: Answer,
    received: Arc<Mutex<Vec<(tokio::time::Instant, String)>>>,
    held: Arc<Mutex<Held>>,
    next: u64,
}

impl Handler for CarrierHandler {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        let Body::SubmitSm(sm) = &req.pdu.body else { return Reply::Error(CommandStatus::ESME_RINVCMDID) };
        let text = String::from_utf8_lossy(&sm.short_message).into_owned();
        self.received.lock().unwrap().push((tokio::time::Instant::now(), text));
        self.next += 1;
        let id = format!("c{}", self.next);
        let (_, responder) = req.defer();
        match self.answer {
            Answer::After(d) => {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let body = Body::SubmitSmResp(smpp::SubmitSmResp {
                        message_id: id.into(),
                        ..Default::default()
                    });
                    let _ = responder.respond(body);
                });
            }
            Answer::Never => {
                let mut held = self.held.lock().unwrap();
                if held.answer_now {
                    let body = Body::SubmitSmResp(smpp::SubmitSmResp {
                        message_id: id.into(),
                        ..Default::default()
                    });
                    let _ = responder.respond(body);
                } else {
                    held.responders.push(responder);
                }
            }
        }
        Reply::Deferred
    }
}

impl Carrier {
    pub async fn start(answer: Answer) -> Carrier {
        Carrier::start_on(0, answer).await
    }

    /// On 127.0.0.1:`port` (0: any free port).
    pub async fn start_on(port: u16, answer: Answer) -> Carrier {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("carrier listen");
        let port = listener.local_addr().expect("carrier addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Held::default()));
        let (r, h) = (received.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, peer)) = listener.accept().await {
                let (received, held) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let cfg = SessionConfig { inbound_window: 1024, ..SessionConfig::default() };
                    let Ok(b) = smpp::session::smsc::accept(s, Some(peer), cfg).await else { return };
                    let handler = CarrierHandler { answer, received, held, next: 0 };
                    if let Ok(session) = b.accept(Bytes::from_static(b"carrier"), None, handler).await {
                        session.closed().await;
                    }
                });
            }
        });
        Carrier { port, received, held, task }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Texts of the submit_sm received, in arrival order.
    pub fn texts(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().map(|(_, t)| t.clone()).collect()
    }

    /// [`Answer::Never`]: answer the oldest held submit with ESME_ROK; false if none is held.
    pub fn answer_oldest(&self) -> bool {
        let mut held = self.held.lock().unwrap();
        if held.responders.is_empty() {
            return false;
        }
        let r = held.responders.remove(0);
        drop(held);
        let body = Body::SubmitSmResp(smpp::SubmitSmResp { message_id: "held".into(), ..Default::default() });
        r.respond(body).is_ok()
    }

    /// [`Answer::Never`]: answer every held submit with ESME_ROK, oldest first, and from now on
    /// every submit as it arrives.
    pub fn answer_all_from_now(&self) {
        let mut held = self.held.lock().unwrap();
        held.answer_now = true;
        for (i, r) in held.responders.drain(..).enumerate() {
            let body = Body::SubmitSmResp(smpp::SubmitSmResp {
                message_id: format!("held{i}").into(),
                ..Default::default()
            });
            let _ = r.respond(body);
        }
    }

    /// The most submit_sm that arrived within any one-second window.
    pub fn max_per_second(&self) -> usize {
        let times: Vec<tokio::time::Instant> =
            self.received.lock().unwrap().iter().map(|(t, _)| *t).collect();
        let second = Duration::from_secs(1);
        times
            .iter()
            .map(|start| times.iter().filter(|t| **t >= *start && **t < *start + second).count())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        self.task.abort();
        self.held.lock().unwrap().responders.clear();
    }
}

/// A submit_sm with `text` as its short_message.
pub fn submit_text(dest: &str, registered_delivery: u8, text: &str) -> Body {
    match submit(dest, registered_delivery) {
        Body::SubmitSm(mut sm) => {
            sm.short_message = Bytes::from(text.to_owned());
            Body::SubmitSm(sm)
        }
        other => other,
    }
}
