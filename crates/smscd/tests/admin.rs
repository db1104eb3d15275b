//! Admin HTTP: health, readiness through shutdown, and the metrics the runtime exports.

mod common;

use common::*;
use smpp::session::BindKind;
use smpp::CommandStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let mut d = Daemon::start(base_config(vec![account("esme", "secret")])).await;
    assert_eq!(http_get(d.admin, "/healthz").await.0, 200);
    assert_eq!(http_get(d.admin, "/readyz").await.0, 200);
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    for _ in 0..3 {
        let r = within("submit", e.session.request(submit("3161", 0))).await.expect("resp");
        assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    }
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_inbound_binds", &["account=\"esme\""]), 1.0, "{m}");
    assert_eq!(
        metric_sum(&m, "smscd_submits_total", &["account=\"esme\"", "route=\"sim\"", "status=\"ESME_ROK\""]),
        3.0
    );
    assert!(m.contains("smscd_pending_deliveries{account=\"esme\"} 0"), "{m}");
    // A reload is counted. (Families without samples are not printed at all.)
    let cfg = base_config(vec![account("esme", "secret")]);
    d.reload.send(std::sync::Arc::new(cfg)).expect("reload");
    let mut reloads = 0.0;
    for _ in 0..500 {
        reloads = metric_sum(&d.metrics().await, "smscd_config_reloads_total", &["result=\"applied\""]);
        if reloads >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(reloads, 1.0);
    d.shutdown().await;
    // The admin server goes with the daemon.
    assert!(tokio::net::TcpStream::connect(d.admin).await.is_err());
}

/// issue 13 item 16: an accept loop that ends without being told to (its task panicked or was
/// dropped) fails /healthz and /readyz, so the kubelet restarts a process that answers HTTP but
/// takes no binds. Stands in for the death with a second accept loop on the daemon's core whose
/// task is aborted: the same drop path a panic takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_listener_fails_liveness() {
    let mut d = Daemon::start(base_config(vec![account("esme", "secret")])).await;
    assert_eq!(http_get(d.admin, "/healthz").await.0, 200);
    let core = d.core().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a listener");
    let addr = listener.local_addr().expect("listener address");
    let extra = tokio::spawn(smscd::inbound::serve_with(
        core.clone(),
        std::sync::Arc::new(smscd::inbound::Sessions::default()),
        listener,
        tokio_util::sync::CancellationToken::new(),
        None,
        smscd::inbound::connection_slots(&core),
    ));
    // Running (an ESME binds through it; a task aborted before its first poll never started
    // its loop, which CI once did here after a bare yield), and still live.
    let e =
        bind(addr, BindKind::Transceiver, "esme", "secret").await.expect("bind through the extra listener");
    drop(e);
    assert_eq!(http_get(d.admin, "/healthz").await.0, 200);
    extra.abort();
    let _ = extra.await;
    let (code, body) = http_get(d.admin, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("listener"), "{body}");
    assert_eq!(http_get(d.admin, "/readyz").await.0, 503);
    // A shutdown stops the listeners on purpose: that is not a death.
    d.shutdown().await;
}

/// Stopping on purpose (shutdown) never fails liveness while the process drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_listener_is_not_dead() {
    let d = Daemon::start(base_config(vec![account("esme", "secret")])).await;
    let core = d.core().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a listener");
    let stop = tokio_util::sync::CancellationToken::new();
    let extra = tokio::spawn(smscd::inbound::serve_with(
        core.clone(),
        std::sync::Arc::new(smscd::inbound::Sessions::default()),
        listener,
        stop.clone(),
        None,
        smscd::inbound::connection_slots(&core),
    ));
    stop.cancel();
    within("the accept loop to stop", extra).await.expect("accept loop");
    assert_eq!(http_get(d.admin, "/healthz").await.0, 200);
}
