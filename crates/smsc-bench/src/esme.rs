//! The ESME fleet: N transceiver binds, each keeping up to `window` submit_sm in flight.

use crate::report::{Latency, Report};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use smpp::concat::{self, Method};
use smpp::{Address, Bind, Body, Pdu, SubmitSm};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SUBMIT_SM_RESP: u32 = 0x8000_0004;
const DELIVER_SM: u32 = 0x0000_0005;
const UNBIND: u32 = 0x0000_0006;
const UNBIND_RESP: u32 = 0x8000_0006;
const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
const ENQUIRE_LINK: u32 = 0x0000_0015;
const GENERIC_NACK: u32 = 0x8000_0000;
/// Larger frames are a broken peer, not a message.
const MAX_FRAME: usize = 64 * 1024;
/// Longest run accepted (bounds every loop below together with `drain`).
const MAX_SEND: Duration = Duration::from_secs(3600);
/// Bind or unbind answer wait.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Poll interval while waiting on other binds or the rate budget.
const TICK: Duration = Duration::from_millis(2);
/// The first destination number; `--destinations N` uses this one and the N - 1 after it.
const DESTINATION_BASE: u64 = 31_600_000_000;
/// The most distinct destinations (they keep DESTINATION_BASE's 11 digits).
pub const MAX_DESTINATIONS: u64 = 100_000_000;

/// Relative weights of the message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub gsm7: u32,
    pub ucs2: u32,
    /// A 3-part GSM7 message concatenated with an 8-bit UDH (smpp::concat), sent as 3 submit_sm.
    pub long: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix { gsm7: 1, ucs2: 0, long: 0 }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;
    /// `gsm7=8,ucs2=1,long=1` (missing kinds weigh 0).
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut m = Mix { gsm7: 0, ucs2: 0, long: 0 };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, "1"));
            let v: u32 = v.parse().map_err(|_| format!("bad weight in {part:?}"))?;
            match k {
                "gsm7" => m.gsm7 = v,
                "ucs2" => m.ucs2 = v,
                "long" => m.long = v,
                _ => return Err(format!("unknown message kind {k:?} (gsm7, ucs2, long)")),
            }
        }
        if m.gsm7 + m.ucs2 + m.long == 0 {
            return Err("the mix has no weight".into());
        }
        if m.gsm7 + m.ucs2 + m.long > 1000 {
            return Err("weights add up to more than 1000".into());
        }
        Ok(m)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gsm7={},ucs2={},long={}", self.gsm7, self.ucs2, self.long)
    }
}

#[derive(Clone, Debug)]
pub struct EsmeConfig {
    /// SMSC addresses; bind i goes to `addrs[i % len]` (several replicas).
    pub addrs: Vec<SocketAddr>,
    pub system_id: String,
    pub password: String,
    /// Label in the report.
    pub target: String,
    pub binds: usize,
    pub window: usize,
    /// submit_sm/s across the fleet; None: as fast as the window allows.
    pub rate: Option<u64>,
    /// Sending phase length (capped at an hour).
    pub duration: Duration,
    /// Stop after this many messages across the fleet (a long message counts once), if that
    /// comes before the end of `duration`.
    pub count: Option<u64>,
    pub mix: Mix,
    pub registered_delivery: bool,
    /// Distinct destination numbers the messages are spread over (1 to [`MAX_DESTINATIONS`]):
    /// message `j` of bind `i` goes to destination `(i + j * binds) % destinations`, so every
    /// run sends the same sequence.
    pub destinations: u64,
    /// After sending: the longest wait for outstanding responses and receipts.
    pub drain: Duration,
    /// Server process whose CPU use to report (Linux /proc).
    pub server_pid: Option<u32>,
}

impl EsmeConfig {
    pub fn new(addr: SocketAddr) -> EsmeConfig {
        EsmeConfig {
            addrs: vec![addr],
            system_id: "bench".into(),
            password: "benchpw".into(),
            target: addr.to_string(),
            binds: 1,
            window: 64,
            rate: None,
            duration: Duration::from_secs(5),
            count: None,
            mix: Mix::default(),
            registered_delivery: false,
            destinations: 1,
            drain: Duration::from_secs(10),
            server_pid: None,
        }
    }
}

/// Fleet-wide counters the bind threads coordinate the drain with.
struct Shared {
    start: Instant,
    send_end: Instant,
    hard_end: Instant,
    /// Messages still allowed by `count` (fleet-wide).
    budget: AtomicU64,
    /// When the last bind stopped sending (ns since start): the rates are over [start, this].
    sent_until: AtomicU64,
    /// Binds still sending or waiting for submit_sm_resp.
    active: AtomicUsize,
    receipts_expected: AtomicU64,
    receipts_seen: AtomicU64,
}

/// One message kind, pre-encoded: its frames (one per part) and where to patch them.
struct Template {
    frames: Vec<Bytes>,
    /// Offset of the UDH reference octet in each frame (long messages).
    udh_ref_at: Option<usize>,
    /// Offset of the destination's digits in each frame (same in every part).
    dest_at: usize,
}

/// The 11 digits of destination number `k` (below [`MAX_DESTINATIONS`]).
fn destination_digits(k: u64) -> [u8; 11] {
    let mut n = DESTINATION_BASE + k % MAX_DESTINATIONS;
    let mut out = [b'0'; 11];
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out
}

fn templates(mix: Mix, rd: bool, source: &str) -> Result<Vec<(u32, Template)>, String> {
    let gsm = "Hello from smsc-bench: a GSM 7-bit message of ordinary length @ 42";
    let ucs = "Привет из smsc-bench — UCS2 сообщение ☺";
    let long: String = "Long concatenated benchmark text in GSM 7-bit. ".repeat(9);
    let mut out = Vec::new();
    for (weight, text) in [(mix.gsm7, gsm), (mix.ucs2, ucs), (mix.long, long.as_str())] {
        if weight == 0 {
            continue;
        }
        let (dc, parts) = concat::split_text(text, Method::Udh8(0)).map_err(|e| e.to_string())?;
        let mut frames = Vec::new();
        let mut udh_ref_at = None;
        // Header, empty service_type, source ton/npi/addr\0, destination ton/npi.
        let dest_at = 16 + 1 + 2 + source.len() + 1 + 2;
        for part in &parts {
            let sm = part.short_message();
            let body = Body::SubmitSm(SubmitSm {
                source: Address::new(1, 1, source.to_string()),
                destination: Address::new(1, 1, destination_digits(0).to_vec()),
                esm_class: if part.esm_class_udhi { concat::ESM_CLASS_UDHI } else { 0 },
                registered_delivery: u8::from(rd),
                data_coding: dc.0,
                short_message: Bytes::from(sm.clone()),
                ..SubmitSm::default()
            });
            let frame = Pdu::new(1, body).to_bytes().map_err(|e| e.to_string())?;
            if frame.get(dest_at..dest_at + 11) != Some(&destination_digits(0)[..]) {
                return Err("destination not where the template expects it".into());
            }
            if part.udh.is_some() {
                // short_message is the frame's tail (no TLVs); the reference is UDH octet 3.
                udh_ref_at = Some(frame.len() - sm.len() + 3);
            }
            frames.push(frame);
        }
        out.push((weight, Template { frames, udh_ref_at, dest_at }));
    }
    Ok(out)
}

/// What one bind thread hands back for the merge.
#[derive(Default)]
struct BindResult {
    messages: u64,
    sent: u64,
    ok: u64,
    ok_in_window: u64,
    failed: u64,
    unanswered: u64,
    errors: BTreeMap<u32, u64>,
    resp_hist: Option<Histogram<u64>>,
    /// (message id, sent at ns since start) of submits that asked for a receipt. Matched against
    /// `receipts` after the run: a hash insert per answer cost the bind threads about half their
    /// CPU (CPU the servers under test share on a small machine).
    submitted: Vec<(Id, u64)>,
    /// (receipted message id, received at ns since start).
    receipts: Vec<(Id, u64)>,
    receipts_in_window: u64,
    thread_cpu: f64,
    thread_wall: f64,
    problems: Vec<String>,
}

pub(crate) fn hist() -> Histogram<u64> {
    // 1 us .. 60 s at 3 significant digits (ns); constant bounds, so this cannot fail.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("constant histogram bounds are valid")
}

fn cpu_secs(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// utime + stime of a process, in seconds, from /proc.
pub(crate) fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

/// Runs the fleet to completion (bounded by duration/count plus drain) and reports.
pub fn run(cfg: &EsmeConfig) -> Report {
    let binds = cfg.binds.clamp(1, 1024);
    let window = cfg.window.clamp(1, 65_536);
    let start = Instant::now();
    let send = cfg.duration.min(MAX_SEND);
    let shared = Arc::new(Shared {
        start,
        send_end: start + send,
        hard_end: start + send + cfg.drain + HANDSHAKE,
        budget: AtomicU64::new(cfg.count.unwrap_or(u64::MAX)),
        sent_until: AtomicU64::new(0),
        active: AtomicUsize::new(binds),
        receipts_expected: AtomicU64::new(0),
        receipts_seen: AtomicU64::new(0),
    });
    let cpu0 = cpu_secs(libc::RUSAGE_SELF);
    let srv0 = cfg.server_pid.and_then(proc_cpu_secs);
    let mut threads = Vec::new();
    for i in 0..binds {
        let shared = Arc::clone(&shared);
        let cfg = cfg.clone();
        let per_bind_rate = cfg.rate.map(|r| r as f64 / binds as f64);
        threads.push(std::thread::Builder::new().name(format!("bind-{i}")).spawn(move || {
            let t0 = Instant::now();
            let c0 = cpu_secs(libc::RUSAGE_THREAD);
            let mut r = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(bind_task(i, &cfg, window, per_bind_rate, &shared)),
                Err(e) => BindResult { problems: vec![format!("runtime: {e}")], ..BindResult::default() },
            };
            r.thread_cpu = cpu_secs(libc::RUSAGE_THREAD) - c0;
            r.thread_wall = t0.elapsed().as_secs_f64();
            r
        }));
    }
    let srv1 = cfg.server_pid.and_then(|pid| {
        // Sample the server at the end of the sending phase, not after the drain.
        std::thread::sleep(shared.send_end.saturating_duration_since(Instant::now()));
        proc_cpu_secs(pid)
    });
    let mut results = Vec::new();
    let mut problems = Vec::new();
    for t in threads {
        match t {
            Ok(h) => match h.join() {
                Ok(r) => results.push(r),
                Err(_) => problems.push("a bind thread panicked".to_string()),
            },
            Err(e) => problems.push(format!("spawn: {e}")),
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(libc::RUSAGE_SELF) - cpu0;
    // The sending phase as it happened (a count can end it before `duration`).
    let until = shared.sent_until.load(Ordering::Relaxed);
    let send_secs = if until > 0 { until as f64 / 1e9 } else { send.as_secs_f64() };
    merge(cfg, binds, window, results, problems, send_secs, wall, cpu, srv0.zip(srv1))
}

#[allow(clippy::too_many_arguments)]
fn merge(
    cfg: &EsmeConfig,
    binds: usize,
    window: usize,
    results: Vec<BindResult>,
    mut problems: Vec<String>,
    send_secs: f64,
    wall: f64,
    cpu: f64,
    server: Option<(f64, f64)>,
) -> Report {
    let mut rep = Report {
        target: cfg.target.clone(),
        binds,
        window,
        rate_target: cfg.rate,
        registered_delivery: cfg.registered_delivery,
        destinations: cfg.destinations.clamp(1, MAX_DESTINATIONS),
        mix: cfg.mix.to_string(),
        send_secs,
        wall_secs: wall,
        ..Report::default()
    };
    let mut resp = hist();
    let mut submitted = Vec::new();
    let mut receipts = Vec::new();
    let mut ok_in_window = 0;
    let mut receipts_in_window = 0;
    for r in results {
        rep.messages_sent += r.messages;
        rep.submit_sm_sent += r.sent;
        rep.submit_sm_ok += r.ok;
        rep.submit_sm_failed += r.failed;
        rep.submit_sm_unanswered += r.unanswered;
        ok_in_window += r.ok_in_window;
        receipts_in_window += r.receipts_in_window;
        for (status, n) in r.errors {
            *rep.errors_by_status.entry(format!("0x{status:08X}")).or_default() += n;
        }
        if let Some(h) = &r.resp_hist {
            let _ = resp.add(h);
        }
        submitted.extend(r.submitted);
        receipts.extend(r.receipts);
        if r.thread_wall > 0.0 {
            rep.generator_max_thread_util = rep.generator_max_thread_util.max(r.thread_cpu / r.thread_wall);
        }
        problems.extend(r.problems);
    }
    let mut lat = hist();
    let m = match_receipts(submitted, receipts, |l| {
        let _ = lat.record(l.max(1));
    });
    rep.duplicate_message_ids = m.duplicate_ids;
    rep.receipts_expected = m.expected;
    rep.receipts_received = m.received;
    rep.receipts_matched = m.matched;
    rep.receipts_duplicated = m.duplicated;
    rep.receipts_unknown = m.unknown;
    rep.receipts_lost = m.expected.saturating_sub(m.matched);
    rep.resp_latency = Latency::from_hist(&resp);
    rep.receipt_latency = Latency::from_hist(&lat);
    if send_secs > 0.0 {
        rep.submit_sm_per_sec = ok_in_window as f64 / send_secs;
        rep.receipts_per_sec = receipts_in_window as f64 / send_secs;
        rep.server_cpu_cores = server.map(|(a, b)| (b - a) / send_secs);
    }
    rep.generator_cpu_cores = if wall > 0.0 { cpu / wall } else { 0.0 };
    rep.problems = problems;
    rep
}

/// A message id as the server wrote it (copied out of the frame).
type Id = Box<[u8]>;

/// Counts from matching receipts to submits by message id.
#[derive(Debug, Default, PartialEq, Eq)]
struct Matched {
    /// Distinct ids submit_sm_resp handed out (each expects one receipt).
    expected: u64,
    /// submit_sm_resp ids seen more than once (a server bug).
    duplicate_ids: u64,
    received: u64,
    matched: u64,
    /// Receipts for an id already matched.
    duplicated: u64,
    /// Receipts for an id no submit_sm_resp carried.
    unknown: u64,
}

/// Joins receipts to submits by id (sorting both: no hashing while the binds run); `latency` gets
/// received - sent (ns) of each first receipt.
fn match_receipts(
    mut submitted: Vec<(Id, u64)>,
    mut receipts: Vec<(Id, u64)>,
    mut latency: impl FnMut(u64),
) -> Matched {
    let mut m = Matched { received: receipts.len() as u64, ..Matched::default() };
    submitted.sort_unstable();
    let before = submitted.len();
    // The earliest send of a duplicated id stays (sorted by id, then time).
    submitted.dedup_by(|b, a| a.0 == b.0);
    m.duplicate_ids = (before - submitted.len()) as u64;
    m.expected = submitted.len() as u64;
    receipts.sort_unstable();
    let mut s = submitted.iter().peekable();
    let mut last: Option<&Id> = None;
    for (id, at) in &receipts {
        if last == Some(id) {
            m.duplicated += 1;
            continue;
        }
        // Bounded: each pass consumes one submitted entry.
        while s.peek().is_some_and(|(sid, _)| sid < id) {
            s.next();
        }
        match s.peek() {
            Some((sid, sent)) if sid == id => {
                m.matched += 1;
                latency(at.saturating_sub(*sent));
                last = Some(id);
            }
            _ => m.unknown += 1,
        }
    }
    m
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn header(out: &mut BytesMut, len: u32, id: u32, status: u32, seq: u32) {
    for v in [len, id, status, seq] {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

struct Bind1<'a> {
    shared: &'a Shared,
    window: usize,
    /// sent-at (ns since start) by sequence number modulo the ring size.
    slots: Vec<u64>,
    mask: u32,
    r: BindResult,
    outstanding: usize,
    rd: bool,
}

impl Bind1<'_> {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.shared.start).as_nanos() as u64
    }

    /// Handles every complete frame in `inbuf`; answers go to `out`.
    fn on_frames(&mut self, inbuf: &mut BytesMut, out: &mut BytesMut, now: Instant) -> Result<(), String> {
        let now_ns = self.ns(now);
        let in_window = now <= self.shared.send_end;
        // Bounded: each pass consumes one frame of at least 16 octets.
        while let Some(frame) = take_frame(inbuf)? {
            let (id, status, seq) = (be32(&frame, 4), be32(&frame, 8), be32(&frame, 12));
            match id {
                SUBMIT_SM_RESP | GENERIC_NACK => self.on_resp(&frame, status, seq, now_ns, in_window),
                DELIVER_SM => {
                    self.on_deliver(frame, now_ns, in_window);
                    // deliver_sm_resp with an empty message_id.
                    header(out, 17, 0x8000_0005, 0, seq);
                    out.extend_from_slice(&[0]);
                }
                ENQUIRE_LINK => header(out, 16, 0x8000_0015, 0, seq),
                UNBIND => {
                    header(out, 16, UNBIND_RESP, 0, seq);
                    return Err("peer unbound".into());
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn on_resp(&mut self, frame: &Bytes, status: u32, seq: u32, now_ns: u64, in_window: bool) {
        if self.outstanding == 0 {
            return;
        }
        self.outstanding -= 1;
        let sent = self.slots[(seq & self.mask) as usize];
        if status != 0 {
            self.r.failed += 1;
            *self.r.errors.entry(status).or_default() += 1;
            return;
        }
        self.r.ok += 1;
        if in_window {
            self.r.ok_in_window += 1;
        }
        if let Some(h) = self.r.resp_hist.as_mut() {
            let _ = h.record(now_ns.saturating_sub(sent).max(1));
        }
        if self.rd {
            // message_id: C-octet string right after the header.
            // Copied: a slice would keep the whole read buffer alive until the end of the run.
            let body = frame.get(16..).unwrap_or_default();
            let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            self.r.submitted.push((body[..end].into(), sent));
            self.shared.receipts_expected.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_deliver(&mut self, frame: Bytes, now_ns: u64, in_window: bool) {
        let d = match Pdu::decode(frame) {
            Ok(Pdu { body: Body::DeliverSm(d), .. }) => d,
            Ok(_) => return,
            Err(e) => {
                if self.r.problems.len() < 10 {
                    self.r.problems.push(format!("deliver_sm decode: {e}"));
                }
                return;
            }
        };
        if !d.is_delivery_receipt() {
            return;
        }
        let id: Id = match d.tlvs.receipted_message_id() {
            Some(id) => id.into(),
            None => match smpp::receipt::Receipt::parse(&String::from_utf8_lossy(d.payload())) {
                Ok(r) => r.id.as_bytes().into(),
                Err(_) => Id::default(),
            },
        };
        self.r.receipts.push((id, now_ns));
        if in_window {
            self.r.receipts_in_window += 1;
        }
        self.shared.receipts_seen.fetch_add(1, Ordering::Relaxed);
    }
}

async fn handshake(s: &mut TcpStream, cfg: &EsmeConfig, inbuf: &mut BytesMut) -> Result<(), String> {
    let bind = Bind {
        system_id: Bytes::from(cfg.system_id.clone()),
        password: Bytes::from(cfg.password.clone()),
        ..Bind::default()
    };
    let frame = Pdu::new(1, Body::BindTransceiver(bind)).to_bytes().map_err(|e| e.to_string())?;
    s.write_all(&frame).await.map_err(|e| format!("write bind: {e}"))?;
    let deadline = tokio::time::Instant::now() + HANDSHAKE;
    // Bounded by the deadline: each pass reads or times out.
    loop {
        while let Some(frame) = take_frame(inbuf)? {
            let (id, status) = (be32(&frame, 4), be32(&frame, 8));
            if id == BIND_TRANSCEIVER_RESP || id == GENERIC_NACK {
                return if status == 0 {
                    Ok(())
                } else {
                    Err(format!("bind refused: status 0x{status:08X}"))
                };
            }
        }
        match tokio::time::timeout_at(deadline, s.read_buf(inbuf)).await {
            Ok(Ok(0)) => return Err("closed during bind".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Err(_) => return Err("no bind response".into()),
        }
    }
}

/// The next whole PDU in `inbuf`, if one has arrived; a command_length outside 16..=MAX_FRAME is
/// an error (never trusted for a reservation).
fn take_frame(inbuf: &mut BytesMut) -> Result<Option<Bytes>, String> {
    if inbuf.len() < 16 {
        return Ok(None);
    }
    let len = be32(inbuf, 0) as usize;
    if !(16..=MAX_FRAME).contains(&len) {
        return Err(format!("bad command_length {len}"));
    }
    if inbuf.len() < len {
        return Ok(None);
    }
    Ok(Some(inbuf.split_to(len).freeze()))
}

async fn bind_task(
    idx: usize,
    cfg: &EsmeConfig,
    window: usize,
    rate: Option<f64>,
    shared: &Shared,
) -> BindResult {
    let mut b = Bind1 {
        shared,
        window,
        slots: vec![0; (window * 2).next_power_of_two()],
        mask: ((window * 2).next_power_of_two() - 1) as u32,
        r: BindResult { resp_hist: Some(hist()), ..BindResult::default() },
        outstanding: 0,
        rd: cfg.registered_delivery,
    };
    let mut inbuf = BytesMut::with_capacity(1 << 16);
    let mut active = true;
    let result = async {
        let templates = templates(cfg.mix, cfg.registered_delivery, &format!("1000{idx}"))?;
        // Weighted round robin over the kinds: a fixed, repeatable order.
        let schedule: Vec<usize> = templates
            .iter()
            .enumerate()
            .flat_map(|(i, (w, _))| std::iter::repeat_n(i, *w as usize))
            .collect();
        let addr = *cfg.addrs.get(idx % cfg.addrs.len().max(1)).ok_or("no address")?;
        let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        handshake(&mut s, cfg, &mut inbuf).await?;
        let (mut rd, mut wr) = s.into_split();
        let mut out = BytesMut::with_capacity(1 << 16);
        let mut seq: u32 = 1;
        let mut sending = true;
        let mut stopped = false;
        let send_start = Instant::now();
        let mut msg_no: u64 = 0;
        let destinations = cfg.destinations.clamp(1, MAX_DESTINATIONS);
        let binds = cfg.binds.clamp(1, 1024) as u64;
        // Bounded by hard_end (checked every pass; every await below is either I/O that makes
        // progress or a TICK sleep).
        loop {
            let now = Instant::now();
            if now >= shared.hard_end {
                b.r.problems.push(format!("bind {idx}: drain timed out"));
                break;
            }
            if sending && now >= shared.send_end {
                sending = false;
            }
            if !sending && !stopped {
                stopped = true;
                shared.sent_until.fetch_max(b.ns(now), Ordering::Relaxed);
            }
            let mut rate_limited = false;
            if sending {
                let allowed = match rate {
                    Some(r) => (now.duration_since(send_start).as_secs_f64() * r) as u64 + 1,
                    None => u64::MAX,
                };
                let now_ns = b.ns(now);
                // Bounded by the window.
                while b.outstanding < b.window {
                    if b.r.sent >= allowed {
                        rate_limited = true;
                        break;
                    }
                    let (_, t) = &templates[schedule[(msg_no % schedule.len() as u64) as usize]];
                    let parts = t.frames.len();
                    if b.outstanding > 0 && b.outstanding + parts > b.window {
                        break;
                    }
                    let taken = shared
                        .budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
                    if taken.is_err() {
                        sending = false;
                        break;
                    }
                    let dest = (destinations > 1).then(|| {
                        let k = (idx as u64).wrapping_add(msg_no.wrapping_mul(binds)) % destinations;
                        destination_digits(k)
                    });
                    for f in &t.frames {
                        seq = if seq >= 0x7FFF_FFFF { 2 } else { seq + 1 };
                        let at = out.len();
                        out.extend_from_slice(f);
                        out[at + 12..at + 16].copy_from_slice(&seq.to_be_bytes());
                        if let Some(r) = t.udh_ref_at {
                            out[at + r] = msg_no as u8;
                        }
                        if let Some(d) = &dest {
                            out[at + t.dest_at..at + t.dest_at + 11].copy_from_slice(d);
                        }
                        b.slots[(seq & b.mask) as usize] = now_ns;
                        b.outstanding += 1;
                        b.r.sent += 1;
                    }
                    b.r.messages += 1;
                    msg_no += 1;
                }
            }
            if !sending && b.outstanding == 0 && out.is_empty() {
                if active {
                    active = false;
                    shared.active.fetch_sub(1, Ordering::AcqRel);
                }
                let receipts_done = !cfg.registered_delivery
                    || shared.receipts_seen.load(Ordering::Relaxed)
                        >= shared.receipts_expected.load(Ordering::Relaxed);
                if shared.active.load(Ordering::Acquire) == 0 && receipts_done {
                    break;
                }
            }
            let timer = out.is_empty() && (rate_limited || !sending || b.outstanding == 0);
            tokio::select! {
                r = wr.write_buf(&mut out), if !out.is_empty() => {
                    r.map_err(|e| format!("write: {e}"))?;
                }
                r = rd.read_buf(&mut inbuf) => {
                    match r {
                        Ok(0) => return Err("connection closed by peer".to_string()),
                        Ok(_) => b.on_frames(&mut inbuf, &mut out, Instant::now())?,
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
                _ = tokio::time::sleep(TICK), if timer => {}
            }
        }
        // Unbind politely; the answer is waited for only briefly.
        let mut bye = BytesMut::new();
        header(&mut bye, 16, UNBIND, 0, 1);
        let mut s = rd.reunite(wr).map_err(|e| e.to_string())?;
        if s.write_all(&bye).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), s.read_buf(&mut inbuf)).await;
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = result {
        b.r.problems.push(format!("bind {idx}: {e}"));
    }
    if active {
        shared.active.fetch_sub(1, Ordering::AcqRel);
    }
    b.r.unanswered = b.outstanding as u64;
    b.r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[(&str, u64)]) -> Vec<(Id, u64)> {
        v.iter().map(|(id, t)| (id.as_bytes().into(), *t)).collect()
    }

    #[test]
    fn receipts_join_submits_by_id() {
        let submitted = ids(&[("b", 10), ("a", 5), ("c", 7), ("a", 9)]);
        let receipts = ids(&[("c", 20), ("a", 30), ("x", 1), ("a", 40), ("x", 2)]);
        let mut lat = Vec::new();
        let m = match_receipts(submitted, receipts, |l| lat.push(l));
        let want =
            Matched { expected: 3, duplicate_ids: 1, received: 5, matched: 2, duplicated: 1, unknown: 2 };
        assert_eq!(m, want);
        lat.sort_unstable();
        // a: first receipt 30 against the earliest send 5; c: 20 - 7.
        assert_eq!(lat, vec![13, 25]);
    }

    /// Each part of each kind, patched for destination `k`, decodes with that destination (and
    /// the rest of the submit as the template had it).
    #[test]
    fn destinations_are_patched_in_place() {
        let mix = Mix { gsm7: 1, ucs2: 1, long: 1 };
        let t = templates(mix, true, "10003").expect("templates");
        for (_, t) in &t {
            for f in &t.frames {
                for (k, want) in [(0, "31600000000"), (7, "31600000007"), (99_999_999, "31699999999")] {
                    let mut b = BytesMut::from(&f[..]);
                    b[t.dest_at..t.dest_at + 11].copy_from_slice(&destination_digits(k));
                    let Ok(Pdu { body: Body::SubmitSm(sm), .. }) = Pdu::decode(b.freeze()) else {
                        panic!("patched frame does not decode as submit_sm");
                    };
                    assert_eq!(&sm.destination.addr[..], want.as_bytes());
                    assert_eq!(&sm.source.addr[..], b"10003");
                    assert_eq!(sm.registered_delivery, 1);
                }
            }
        }
    }

    #[test]
    fn nothing_to_match() {
        let m = match_receipts(Vec::new(), Vec::new(), |_| {});
        assert_eq!(m, Matched::default());
        let m = match_receipts(ids(&[("a", 1)]), Vec::new(), |_| {});
        assert_eq!((m.expected, m.matched), (1, 0));
    }
}
