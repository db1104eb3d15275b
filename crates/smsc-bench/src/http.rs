//! `smsc-bench http`: drive smscd's HTTP API (`POST /v1/messages`) with `concurrency`
//! keep-alive connections, each with one request in flight, and optionally receive the
//! receipts' webhooks on a local HTTP server (counting them, per second).
//!
//! One current-thread runtime for the clients and one for the receiver, so the generator uses
//! at most two threads (the machine is shared with the server under test).

use crate::report::Latency;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// smscd's HTTP API (127.0.0.1).
    pub addr: SocketAddr,
    pub token: String,
    pub concurrency: usize,
    pub duration: Duration,
    /// Ask for receipts (they go to the account's dlr_url: point it at `webhook_port`).
    pub receipts: bool,
    /// Receive webhooks on 127.0.0.1:this port.
    pub webhook_port: Option<u16>,
    /// After sending: the longest wait for the webhooks.
    pub drain: Duration,
    pub server_pid: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct HttpReport {
    pub target: String,
    pub concurrency: usize,
    pub receipts: bool,
    pub send_secs: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Accepted submits (202) per second over the sending phase.
    pub submits_per_sec: f64,
    pub latency: Latency,
    pub webhooks_received: u64,
    /// Webhooks received during the sending phase, per second.
    pub webhooks_per_sec: f64,
    /// Webhooks received until the last one (sending phase and drain), per second of that time.
    pub webhooks_per_sec_overall: f64,
    pub server_cpu_cores: Option<f64>,
    pub problems: Vec<String>,
}

impl HttpReport {
    pub fn summary(&self) -> String {
        format!(
            "{} http concurrency={} receipts={}: {:.0} submits/s ok={} failed={} p50={:.0}us p99={:.0}us \
             max={:.0}us; webhooks {} ({:.0}/s while sending, {:.0}/s overall){}{}",
            self.target,
            self.concurrency,
            self.receipts,
            self.submits_per_sec,
            self.requests_ok,
            self.requests_failed,
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.max_us,
            self.webhooks_received,
            self.webhooks_per_sec,
            self.webhooks_per_sec_overall,
            self.server_cpu_cores.map(|c| format!("; server cpu {c:.2} cores")).unwrap_or_default(),
            if self.problems.is_empty() { String::new() } else { format!("; problems {:?}", self.problems) },
        )
    }
}

/// Webhooks received, and when the last one came.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

fn start_receiver(port: u16, got: Arc<Received>) -> Result<(), String> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("webhook port: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let app = axum::Router::new().fallback(move || {
                let got = got.clone();
                async move {
                    got.count.fetch_add(1, Ordering::Relaxed);
                    *got.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    "ok"
                }
            });
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok(())
}

pub fn run(cfg: &HttpConfig) -> HttpReport {
    let mut rep = HttpReport {
        target: cfg.addr.to_string(),
        concurrency: cfg.concurrency,
        receipts: cfg.receipts,
        ..HttpReport::default()
    };
    let got = Arc::new(Received::default());
    if let Some(p) = cfg.webhook_port {
        if let Err(e) = start_receiver(p, got.clone()) {
            rep.problems.push(e);
            return rep;
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            rep.problems.push(e.to_string());
            return rep;
        }
    };
    let srv0 = cfg.server_pid.and_then(crate::esme::proc_cpu_secs);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let url = format!("http://{}/v1/messages", cfg.addr);
    let (ok, failed, hist, problems) = rt.block_on(async {
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(cfg.concurrency).build_http();
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let problems = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut tasks = Vec::new();
        for w in 0..cfg.concurrency.clamp(1, 4096) {
            let (client, url, ok, failed, problems) =
                (client.clone(), url.clone(), ok.clone(), failed.clone(), problems.clone());
            let auth = format!("Bearer {}", cfg.token);
            let receipts = cfg.receipts;
            tasks.push(tokio::spawn(async move {
                let mut h = crate::esme::hist();
                let mut n: u64 = 0;
                // Bounded by the deadline.
                while Instant::now() < deadline {
                    n += 1;
                    let body = format!(
                        r#"{{"from":"12345","to":"+316{:04}{:04}","text":"bench {n}","receipt":{receipts}}}"#,
                        w % 10_000,
                        n % 10_000
                    );
                    let req = http::Request::post(&url)
                        .header(http::header::AUTHORIZATION, &auth)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)));
                    let Ok(req) = req else { continue };
                    let t0 = Instant::now();
                    match client.request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let _ = resp.into_body().collect().await;
                            if status == http::StatusCode::ACCEPTED {
                                ok.fetch_add(1, Ordering::Relaxed);
                                let _ = h.record(t0.elapsed().as_nanos() as u64);
                            } else {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            {
                                let mut p = problems.lock().unwrap_or_else(|p| p.into_inner());
                                if p.len() < 5 {
                                    p.push(e.to_string());
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                h
            }));
        }
        let mut all = crate::esme::hist();
        for t in tasks {
            if let Ok(h) = t.await {
                let _ = all.add(&h);
            }
        }
        let problems = problems.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), all, problems)
    });
    let send_secs = start.elapsed().as_secs_f64();
    let during = got.count.load(Ordering::Relaxed);
    let srv1 = cfg.server_pid.and_then(crate::esme::proc_cpu_secs);
    if cfg.receipts && cfg.webhook_port.is_some() {
        let until = Instant::now() + cfg.drain;
        // Bounded by the drain time.
        while got.count.load(Ordering::Relaxed) < ok && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    rep.send_secs = send_secs;
    rep.requests_ok = ok;
    rep.requests_failed = failed;
    rep.submits_per_sec = ok as f64 / send_secs.max(1e-9);
    rep.latency = Latency::from_hist(&hist);
    rep.webhooks_received = got.count.load(Ordering::Relaxed);
    rep.webhooks_per_sec = during as f64 / send_secs.max(1e-9);
    let last = *got.last.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(last) = last {
        rep.webhooks_per_sec_overall =
            rep.webhooks_received as f64 / last.duration_since(start).as_secs_f64().max(1e-9);
    }
    rep.server_cpu_cores = match (srv0, srv1) {
        (Some(a), Some(b)) => Some((b - a) / send_secs.max(1e-9)),
        _ => None,
    };
    rep.problems = problems;
    if cfg.receipts && cfg.webhook_port.is_some() && rep.webhooks_received < ok {
        rep.problems.push(format!("{} webhooks missing after the drain", ok - rep.webhooks_received));
    }
    rep
}
