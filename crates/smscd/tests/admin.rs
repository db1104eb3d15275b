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
