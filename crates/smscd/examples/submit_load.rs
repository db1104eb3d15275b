//! Submit throughput through the sim path: one in-process smscd, one ESME bind, a raw pipelined
//! client keeping `WINDOW` submit_sm outstanding (no receipts), for `SECS` seconds.
//!
//! `cargo run --release -p smscd --example submit_load -- [secs] [window] [chain|receipts]`
//!
//! With `chain`, the bind's account routes to a second in-process smscd over one upstream bind
//! (window 256) instead: the deferred path (task per submit, upstream round trip). With
//! `receipts`, every submit asks for a receipt (registered_delivery 1, sim delay 0) and the
//! client answers each deliver_sm.

use bytes::{Buf, BytesMut};
use smpp::{Address, Bind, Body, Pdu, SubmitSm};
use smsc_api::smscd_config::{AccountConfig, SmscdConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let window: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let mode = args.next().unwrap_or_default();
    let chain = mode == "chain";
    let receipts = mode == "receipts";
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(secs, window, chain, receipts))
}

fn config(window: usize) -> SmscdConfig {
    let mut cfg = SmscdConfig::default();
    cfg.server.bind_address = "127.0.0.1".into();
    cfg.server.port = 0;
    cfg.admin.bind_address = "127.0.0.1".into();
    cfg.admin.port = 0;
    cfg.accounts = vec![AccountConfig {
        system_id: "bench".into(),
        password: "pw".into(),
        allowed_cidrs: vec![],
        bind_types: vec![],
        max_msg_per_sec: None,
        window,
        max_binds: None,
    }];
    cfg.routing.default_chain = vec!["sim".into()];
    cfg
}

async fn run(
    secs: u64,
    window: usize,
    chain: bool,
    receipts: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = config(window);
    cfg.sim.receipt_delay_ms = 0;
    let upstream_token = CancellationToken::new();
    if chain {
        let b_cfg = Arc::new(config(4096));
        let (_btx, brx) = tokio::sync::watch::channel(b_cfg.clone());
        let b = smscd::start(b_cfg, brx, upstream_token.clone()).await?;
        let bind: smsc_api::smscd_config::BindConfig = serde_json::from_value(serde_json::json!({
            "name": "b", "host": "127.0.0.1", "port": b.smpp_addr.port(), "system_id": "bench",
            "password": "pw", "window": 256
        }))?;
        cfg.binds = vec![bind];
        cfg.routing.default_chain = vec!["bind:b".into()];
        std::mem::forget(b);
    }
    let cfg = Arc::new(cfg);
    let (_tx, rx) = tokio::sync::watch::channel(cfg.clone());
    let token = CancellationToken::new();
    let d = smscd::start(cfg, rx, token.clone()).await?;
    if chain {
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.core.upstreams.get("b").is_none_or(|u| u.bound_sessions() == 0) {
            if Instant::now() > deadline {
                return Err("upstream did not bind".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let mut s = TcpStream::connect(d.smpp_addr).await?;
    s.set_nodelay(true)?;
    let mut out = BytesMut::new();
    let bind =
        Bind { system_id: "bench".into(), password: "pw".into(), interface_version: 0x34, ..Bind::default() };
    Pdu::new(1, Body::BindTransceiver(bind)).encode(&mut out)?;
    s.write_all(&out).await?;
    out.clear();
    let mut inb = BytesMut::with_capacity(1 << 20);
    read_one(&mut s, &mut inb).await?;

    let sm = SubmitSm {
        source: Address::new(0, 0, "12345"),
        destination: Address::new(1, 1, "31600000000"),
        short_message: bytes::Bytes::from_static(b"benchmark message"),
        registered_delivery: u8::from(receipts),
        ..SubmitSm::default()
    };
    let mut template = BytesMut::new();
    Pdu::new(0, Body::SubmitSm(sm)).encode(&mut template)?;
    let (mut rd, mut wr) = s.into_split();
    let (mut seq, mut outstanding, mut done, mut errors, mut delivered) = (2u32, 0usize, 0u64, 0u64, 0u64);
    let mut by_status = std::collections::BTreeMap::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        while outstanding < window {
            let at = out.len();
            out.extend_from_slice(&template);
            out[at + 12..at + 16].copy_from_slice(&seq.to_be_bytes());
            seq = if seq >= 0x7FFF_FFFF { 1 } else { seq + 1 };
            outstanding += 1;
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        if rd.read_buf(&mut inb).await? == 0 {
            return Err("closed".into());
        }
        while inb.len() >= 16 {
            let len = u32::from_be_bytes([inb[0], inb[1], inb[2], inb[3]]) as usize;
            if inb.len() < len {
                break;
            }
            let status = u32::from_be_bytes([inb[8], inb[9], inb[10], inb[11]]);
            let id = u32::from_be_bytes([inb[4], inb[5], inb[6], inb[7]]);
            if id == 0x0000_0005 {
                // deliver_sm: answer deliver_sm_resp (empty message_id) with its sequence.
                out.extend_from_slice(&[0, 0, 0, 17, 0x80, 0, 0, 5, 0, 0, 0, 0]);
                out.extend_from_slice(&inb[12..16]);
                out.extend_from_slice(&[0]);
                delivered += 1;
                inb.advance(len);
                continue;
            }
            if status != 0 || id != 0x8000_0004 {
                errors += 1;
                *by_status.entry((id, status)).or_insert(0u64) += 1;
            }
            inb.advance(len);
            outstanding -= 1;
            done += 1;
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "submit_sm answered: {done} in {el:.2} s = {:.0}/s (window {window}, errors {errors}); receipts {delivered} = {:.0}/s",
        done as f64 / el,
        delivered as f64 / el
    );
    for ((id, status), n) in &by_status {
        println!("  command_id 0x{id:08x} status 0x{status:08x}: {n}");
    }
    token.cancel();
    upstream_token.cancel();
    drop(rd);
    drop(wr);
    let _ = tokio::time::timeout(Duration::from_secs(15), d.wait()).await;
    Ok(())
}

async fn read_one(s: &mut TcpStream, buf: &mut BytesMut) -> Result<(), Box<dyn std::error::Error>> {
    while buf.len() < 4 || buf.len() < u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize {
        if s.read_buf(buf).await? == 0 {
            return Err("closed".into());
        }
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    buf.advance(len);
    Ok(())
}
