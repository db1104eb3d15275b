//! Loopback throughput of the session (not a test: prints figures, asserts nothing).
//!
//! `cargo run --release -p smpp --example session_loopback -- [secs] [window] [mode]`
//!
//! Modes:
//! - `smsc` (default): our SMSC session with an inline handler answering submit_sm_resp, driven by
//!   a raw pipelined client that keeps `window` submit_sm outstanding. This is smscd's inbound
//!   path.
//! - `esme`: our ESME session (`Session::request` from `window` tasks) against our SMSC session.
//!
//! Both ends share one 2-worker runtime. Measured on the 2-core dev VM (release, window 64,
//! 3-5 s runs; the spread is other builds sharing the cores): `smsc` 0.67-2.55 M submit_sm/s,
//! `esme` 0.24-0.38 M requests/s.

use bytes::{Bytes, BytesMut};
use smpp::session::{esme, smsc, BindKind, Handler, Reply, Request, SessionConfig};
use smpp::{Address, Bind, Body, Pdu, SubmitSm, SubmitSmResp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Answer {
    next: u64,
}

impl Handler for Answer {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::SubmitSm(_) => {
                self.next += 1;
                let message_id = Bytes::from(format!("{:016x}", self.next));
                Reply::Ok(Body::SubmitSmResp(SubmitSmResp { message_id, ..Default::default() }))
            }
            _ => Reply::Error(smpp::CommandStatus::ESME_RINVCMDID),
        }
    }
}

fn submit() -> Body {
    Body::SubmitSm(SubmitSm {
        source: Address::new(1, 1, "12345"),
        destination: Address::new(1, 1, "31600000000"),
        short_message: Bytes::from_static(b"hello world, a loopback throughput message"),
        ..SubmitSm::default()
    })
}

fn bind() -> Bind {
    Bind { system_id: Bytes::from_static(b"bench"), password: Bytes::from_static(b"pw"), ..Bind::default() }
}

async fn server(cfg: SessionConfig) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let cfg = cfg.clone();
            tokio::spawn(async move {
                if let Ok(incoming) = smsc::accept(stream, Some(peer), cfg).await {
                    if let Ok(s) = incoming.accept("bench", None, Answer { next: 0 }).await {
                        s.closed().await;
                    }
                }
            });
        }
    });
    addr
}

/// Raw pipelined client: keeps `window` submit_sm in flight, counts responses.
async fn raw_client(addr: std::net::SocketAddr, window: usize, secs: u64) -> u64 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut out = BytesMut::new();
    Pdu::new(1, Body::BindTransmitter(bind())).encode(&mut out).expect("encode bind");
    s.write_all(&out).await.expect("write bind");
    let mut inbuf = BytesMut::with_capacity(1 << 16);
    let frame = Pdu::new(0, submit()).to_bytes().expect("encode submit");
    let mut seq: u32 = 1;
    let mut outstanding = 1usize; // the bind
    let mut done = 0u64;
    let mut failed = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    loop {
        out.clear();
        while outstanding < window {
            seq = if seq >= 0x7FFF_FFFF { 1 } else { seq + 1 };
            let at = out.len();
            out.extend_from_slice(&frame);
            out[at + 12..at + 16].copy_from_slice(&seq.to_be_bytes());
            outstanding += 1;
        }
        if !out.is_empty() {
            s.write_all(&out).await.expect("write");
        }
        if s.read_buf(&mut inbuf).await.expect("read") == 0 {
            break;
        }
        // Count complete frames without decoding them.
        while inbuf.len() >= 4 {
            let len = u32::from_be_bytes([inbuf[0], inbuf[1], inbuf[2], inbuf[3]]) as usize;
            if len < 16 || inbuf.len() < len {
                break;
            }
            let status = u32::from_be_bytes([inbuf[8], inbuf[9], inbuf[10], inbuf[11]]);
            let _ = inbuf.split_to(len);
            outstanding -= 1;
            if status == 0 {
                done += 1;
            } else {
                failed += 1;
            }
        }
        if Instant::now() >= end {
            break;
        }
    }
    if failed > 0 {
        println!("{failed} responses with a non-zero status");
    }
    done.saturating_sub(1)
}

async fn esme_client(addr: std::net::SocketAddr, window: usize, secs: u64) -> u64 {
    let cfg = SessionConfig { window, ..SessionConfig::default() };
    let (session, _) = esme::connect(addr, BindKind::Transmitter, bind(), cfg, smpp::session::RejectAll)
        .await
        .expect("bind");
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..window {
        let s = session.clone();
        let c = Arc::clone(&count);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                if s.request(submit()).await.is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    session.unbind().await;
    count.load(Ordering::Relaxed)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let window: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let mode = args.get(3).map(String::as_str).unwrap_or("smsc").to_string();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let cfg = SessionConfig { window, inbound_window: window, ..SessionConfig::default() };
        let addr = server(cfg).await;
        let start = Instant::now();
        let n = match mode.as_str() {
            "esme" => esme_client(addr, window, secs).await,
            _ => raw_client(addr, window, secs).await,
        };
        let dt = start.elapsed().as_secs_f64();
        println!(
            "mode={mode} window={window} secs={dt:.2} submit_sm answered ok={n} rate={:.0}/s",
            n as f64 / dt
        );
    });
}
