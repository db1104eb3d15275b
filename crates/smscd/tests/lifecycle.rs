//! Hot reload and shutdown under traffic: no bind dropped by a reload, and every submit_sm that
//! got a submit_sm_resp with status 0 gets its receipt.

mod common;

use common::*;
use futures::future::join_all;
use smpp::session::{BindKind, Session};
use smpp::{Body, CommandStatus};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Submits with registered_delivery 1 in batches until `stop`; returns the ids acknowledged.
fn traffic(
    session: Session,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut refused = 0;
        while !stop.load(Ordering::Relaxed) {
            let batch = join_all((0..10).map(|_| session.request(submit("3161", 1)))).await;
            let mut closed = false;
            for r in batch {
                match r {
                    Ok(p) if p.command_status.is_ok() => {
                        if let Body::SubmitSmResp(r) = p.body {
                            acked.lock().unwrap().push(String::from_utf8_lossy(&r.message_id).into_owned());
                        }
                    }
                    Ok(_) => refused += 1,
                    Err(_) => closed = true,
                }
            }
            if closed {
                break;
            }
        }
        refused
    })
}

async fn collect_receipts(e: &mut Esme, want: &BTreeSet<String>, limit: Duration) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !want.is_subset(&got) {
        match tokio::time::timeout_at(deadline, e.delivered.recv()).await {
            Ok(Some(d)) => {
                got.insert(receipt_id(&d));
            }
            Ok(None) | Err(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_traffic_keeps_binds_and_receipts() {
    let b = Daemon::start(base_config(vec![account("up", "uppw")])).await;
    let c = Daemon::start(base_config(vec![account("up", "uppw")])).await;
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.binds = vec![upstream("b", b.smpp.port(), "up", "uppw")];
    cfg.routing.default_chain = vec!["bind:b".into(), "sim".into()];
    let a = Daemon::start(cfg.clone()).await;
    let core = a.core().clone();
    eventually("b bound", Duration::from_secs(10), || {
        core.upstreams.get("b").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let b_before = core.upstreams.get("b").expect("b");
    let mut e = bind(a.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let t = traffic(e.session.clone(), stop.clone(), acked.clone());
    eventually("traffic flowing", Duration::from_secs(10), || acked.lock().unwrap().len() >= 50).await;

    // Reload 1: new upstream c first in the chain, account limits changed; b unchanged.
    let mut cfg2 = cfg.clone();
    cfg2.binds.push(upstream("c", c.smpp.port(), "up", "uppw"));
    cfg2.routing.default_chain = vec!["bind:c".into(), "bind:b".into(), "sim".into()];
    cfg2.accounts[0].max_msg_per_sec = Some(1_000_000);
    cfg2.accounts[0].window = 32;
    a.reload.send(Arc::new(cfg2.clone())).expect("reload");
    eventually("c bound", Duration::from_secs(10), || {
        core.upstreams.get("c").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let n = acked.lock().unwrap().len();
    eventually("traffic after reload", Duration::from_secs(10), || acked.lock().unwrap().len() >= n + 50)
        .await;
    assert!(
        Arc::ptr_eq(&b_before, &core.upstreams.get("b").expect("b")),
        "unchanged upstream b was not re-bound"
    );

    // Reload 2: b's window changes (applied in place), c removed (out of routing, receive-only).
    let mut cfg3 = cfg2.clone();
    cfg3.binds = vec![upstream("b", b.smpp.port(), "up", "uppw")];
    cfg3.binds[0].window = 5;
    cfg3.routing.default_chain = vec!["bind:b".into(), "sim".into()];
    a.reload.send(Arc::new(cfg3)).expect("reload");
    eventually("c removed", Duration::from_secs(10), || core.upstreams.get("c").is_none()).await;
    assert!(
        Arc::ptr_eq(&b_before, &core.upstreams.get("b").expect("b")) && b_before.bound_sessions() == 1,
        "b's window changed in place, without a rebind"
    );
    let n = acked.lock().unwrap().len();
    eventually("traffic after second reload", Duration::from_secs(10), || {
        acked.lock().unwrap().len() >= n + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let refused = within("traffic end", t).await.expect("traffic task");
    assert!(e.session.close_reason().is_none(), "the ESME bind survived both reloads");

    let want: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let got = collect_receipts(&mut e, &want, Duration::from_secs(20)).await;
    let missing: Vec<_> = want.difference(&got).collect();
    let m = a.metrics().await;
    if !missing.is_empty() {
        let keep = |t: String| {
            t.lines().filter(|l| !l.starts_with('#') && !l.contains("_bucket")).collect::<Vec<_>>().join("\n")
        };
        panic!(
            "{} of {} acknowledged submits without receipt ({refused} refused)\nA:\n{}\nB:\n{}\nC:\n{}",
            missing.len(),
            want.len(),
            keep(m),
            keep(b.metrics().await),
            keep(c.metrics().await)
        );
    }
    assert_eq!(metric_sum(&m, "smscd_config_reloads_total", &[]), 2.0);
    assert!(metric_sum(&m, "smscd_submits_total", &["route=\"c\"", "ESME_ROK"]) > 0.0, "c took traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_traffic_delivers_every_receipt() {
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.sim.receipt_delay_ms = 300;
    cfg.shutdown.drain_secs = 10;
    let mut d = Daemon::start(cfg).await;
    let mut e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let t = traffic(e.session.clone(), stop.clone(), acked.clone());
    eventually("traffic flowing", Duration::from_secs(10), || acked.lock().unwrap().len() >= 200).await;
    let started = std::time::Instant::now();
    d.shutdown().await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = within("traffic end", t).await;
    assert!(took < Duration::from_secs(10), "drain took {took:?}");
    // The daemon unbound us after delivering.
    let reason = within("unbound", e.session.closed()).await;
    assert_eq!(reason, smpp::session::CloseReason::PeerUnbind);
    let want: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let mut got = BTreeSet::new();
    while let Ok(d) = e.delivered.try_recv() {
        got.insert(receipt_id(&d));
    }
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged submits without receipt", missing.len(), want.len());
    // New binds are refused once stopped.
    assert!(bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.is_err());
    let _ = CommandStatus::ESME_ROK;
}
