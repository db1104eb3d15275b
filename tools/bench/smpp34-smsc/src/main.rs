//! smpp34 1.5.1's `examples/perf_smsc.rs` as a benchmark peer: accepts a transceiver bind and
//! answers every submit_sm with ESME_ROK (no receipts). Changes from the example: the address
//! is `127.0.0.1:<port>` from argv (only loopback), and no per-second logging.
//!
//! `smpp34-smsc <port>`; stops on SIGTERM/SIGINT.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use smpp34::{
    bind_transceiver, bind_transceiver_resp, submit_sm, submit_sm_resp, SmppConnectionInformation,
    SmppServer, SmppServerListener,
};

struct Counter {
    received: AtomicU64,
}

#[async_trait]
impl SmppServerListener for Counter {
    async fn on_bind_transceiver(
        &self,
        req: bind_transceiver,
        _c: &SmppConnectionInformation,
        _s: &String,
    ) -> bind_transceiver_resp {
        req.accept("PERF-SMSC".to_string(), Some(0x34))
    }

    async fn on_submit_sm(
        &self,
        req: submit_sm,
        _c: &SmppConnectionInformation,
        _s: &String,
    ) -> submit_sm_resp {
        self.received.fetch_add(1, Ordering::Relaxed);
        req.accept("0".to_string())
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = match std::env::args().nth(1).and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => {
            eprintln!("usage: smpp34-smsc <port>");
            std::process::exit(64);
        }
    };
    let counter = Arc::new(Counter { received: AtomicU64::new(0) });
    let mut server = SmppServer::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port, counter.clone());
    server.start().await;
    eprintln!("smpp34-smsc listening on 127.0.0.1:{port}");
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("signal: {e}");
            std::process::exit(1);
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.stop().await;
    eprintln!("smpp34-smsc: {} submit_sm answered", counter.received.load(Ordering::Relaxed));
}
